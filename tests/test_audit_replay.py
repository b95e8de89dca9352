"""Replay against real and lying nodes: completeness is proven or each divergence is named."""

from __future__ import annotations

import httpx
import pytest

from ledger.audit.replay import DigestMismatchKind, fold_digest, read_event_digest, replay
from ledger.audit.report import FindingKind
from ledger.audit.run import run_audit
from ledger.audit.state import ConsentTimeline
from ledger.chain.logs import RangeTooLarge, fetch_logs, is_range_too_large
from ledger.chain.rpc import RpcClient, RpcError
from ledger.protocol.events import ConsentRevoked
from tests.helpers.audit_world import (
    ForwardingTransport,
    World,
    logs_rewriter,
    proxy_transport,
)


def lying(world: World, change) -> RpcClient:
    return world.rpc(proxy_transport(world.url, logs_rewriter(change)))


def do_replay(world: World, rpc: RpcClient, **kw):
    kw.setdefault("target_block", world.end_block)
    return replay(
        rpc, address=world.address, from_block=world.deploy_block, decoder=world.decoder(), **kw
    )


def test_honest_replay_is_complete_and_matches_the_chain(world, w3) -> None:
    result = do_replay(world, world.rpc())
    assert result.complete
    assert not result.problems
    assert not result.repaired
    onchain = world.registry(w3).event_digest(block_identifier=world.end_block)
    assert (result.onchain.head, result.onchain.count) == (onchain.head, onchain.count)
    assert len(result.events) == onchain.count
    positions = [e.position for e in result.events]
    assert positions == sorted(positions)


def test_dropped_event_is_named_and_the_history_repaired(world) -> None:
    def drop_revoke(logs):
        return [log for log in logs if int(log["blockNumber"], 16) != world.revoke_block]

    result = do_replay(world, lying(world, drop_revoke))
    (problem,) = result.problems
    assert problem.kind is DigestMismatchKind.MISSING
    assert problem.block_number == world.revoke_block
    assert problem.event == "ConsentRevoked"
    assert result.repaired
    assert result.computed == result.onchain
    assert any(isinstance(e, ConsentRevoked) for e in result.events)


def test_dropped_event_fails_the_audit_as_unverifiable(world) -> None:
    def drop_revoke(logs):
        return [log for log in logs if int(log["blockNumber"], 16) != world.revoke_block]

    rpc = lying(world, drop_revoke)
    report = run_audit(
        rpc, registry=world.address, deploy_block=world.deploy_block, decoder=world.decoder(),
        access_logs=[world.export()], target_block=world.end_block,
    )  # fmt: skip
    assert report.exit_code == 2
    (finding,) = [f for f in report.findings if f.kind is FindingKind.EVENT_MISSING]
    assert finding.details["block_number"] == world.revoke_block
    assert finding.details["event"] == "ConsentRevoked"
    # The repaired, proven history still judges the log correctly: no false violations.
    assert not report.violations


def test_several_dropped_events_are_each_named(world) -> None:
    dropped: list[tuple[int, int]] = []

    def drop_every_third(logs):
        kept = []
        for i, log in enumerate(logs):
            if i % 3 == 1:
                dropped.append((int(log["blockNumber"], 16), int(log["logIndex"], 16)))
            else:
                kept.append(log)
        return kept

    result = do_replay(world, lying(world, drop_every_third))
    named = {
        (p.block_number, p.log_index)
        for p in result.problems
        if p.kind is DigestMismatchKind.MISSING
    }
    assert named == set(dropped)
    assert result.repaired


def test_reordered_logs_in_a_block_are_named(world) -> None:
    block = world.two_in_one_block

    def swap(logs):
        same = [log for log in logs if int(log["blockNumber"], 16) == block]
        if len(same) == 2:
            same[0]["logIndex"], same[1]["logIndex"] = same[1]["logIndex"], same[0]["logIndex"]
        return logs

    result = do_replay(world, lying(world, swap))
    kinds = {p.kind for p in result.problems}
    assert kinds == {DigestMismatchKind.REORDERED}
    assert {p.block_number for p in result.problems} == {block}
    assert result.repaired


def test_altered_log_is_named(world) -> None:
    def alter(logs):
        for log in logs:
            if int(log["blockNumber"], 16) == world.revoke_block:
                log["data"] = log["data"][:-1] + ("1" if log["data"][-1] != "1" else "2")
        return logs

    result = do_replay(world, lying(world, alter))
    (problem,) = result.problems
    assert problem.kind is DigestMismatchKind.ALTERED
    assert problem.block_number == world.revoke_block


def test_injected_log_is_named_extra(world) -> None:
    def inject(logs):
        fake = dict(logs[-1])
        fake["logIndex"] = hex(int(fake["logIndex"], 16) + 7)
        return [*logs, fake]

    result = do_replay(world, lying(world, inject))
    assert {p.kind for p in result.problems} == {DigestMismatchKind.EXTRA}


def test_without_receipts_a_gap_is_still_counted(world) -> None:
    def rewrite(request, result):
        if request["method"] == "eth_getLogs":
            return [log for log in result if int(log["blockNumber"], 16) != world.revoke_block]
        if request["method"] in ("eth_getBlockReceipts", "eth_getTransactionReceipt"):
            return None
        return result

    result = do_replay(world, world.rpc(proxy_transport(world.url, rewrite)))
    (problem,) = result.problems
    assert problem.kind is DigestMismatchKind.MISSING
    assert f"block {world.revoke_block}" in problem.message
    assert not result.repaired
    assert result.computed != result.onchain


def test_refused_ranges_are_halved(world) -> None:
    sizes: list[int] = []

    def refuse_wide(body):
        if body["method"] != "eth_getLogs":
            return None
        f = body["params"][0]
        size = int(f["toBlock"], 16) - int(f["fromBlock"], 16) + 1
        sizes.append(size)
        if size > 4:
            return {"error": {"code": -32602, "message": "eth_getLogs is limited to a 4 range"}}
        return None

    rpc = world.rpc(ForwardingTransport(world.url, intercept=refuse_wide))
    result = do_replay(world, rpc, chunk_blocks=1000)
    assert result.complete
    assert result.halvings > 0
    assert max(sizes) > 4  # the first, wide request was refused and split


def test_provider_suggested_range_is_used(world) -> None:
    calls: list[tuple[int, int]] = []

    def suggest(body):
        if body["method"] != "eth_getLogs":
            return None
        f = body["params"][0]
        lo, hi = int(f["fromBlock"], 16), int(f["toBlock"], 16)
        calls.append((lo, hi))
        if hi - lo + 1 > 3:
            msg = (
                "Log response size exceeded. "
                f"this block range should work: [{hex(lo)}, {hex(lo + 2)}]"
            )
            return {"error": {"code": -32602, "message": msg}}
        return None

    result = do_replay(
        world, world.rpc(ForwardingTransport(world.url, intercept=suggest)), chunk_blocks=100
    )
    assert result.complete
    refused = calls[0]
    assert calls[1] == (refused[0], refused[0] + 2)


def test_a_node_that_refuses_even_one_block_cannot_be_replayed(world) -> None:
    def refuse(body):
        if body["method"] == "eth_getLogs":
            return {"error": {"code": -32005, "message": "query returned more than 10000 results"}}
        return None

    with pytest.raises(RangeTooLarge):
        do_replay(world, world.rpc(ForwardingTransport(world.url, intercept=refuse)))


@pytest.mark.parametrize(
    "message",
    [
        "query returned more than 10000 results",
        "block range is too wide",
        "Requested range exceeds maximum range limit",
        "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range",
        "eth_getLogs is limited to a 10000 range",
        "exceed maximum block range: 5000",
        "Max range: 800",
        "too many blocks in range",
        "query timeout exceeded",
    ],
)
def test_range_refusals_of_common_providers_are_recognised(message: str) -> None:
    assert is_range_too_large(RpcError("eth_getLogs", -32000, message))


def test_other_errors_are_not_range_refusals() -> None:
    assert not is_range_too_large(
        RpcError("eth_getLogs", -32000, "invalid argument 0: hex string without 0x prefix")
    )
    assert is_range_too_large(RpcError("eth_getLogs", -32005, "whatever"))


def test_removed_logs_are_dropped(world) -> None:
    def add_removed(logs):
        ghost = dict(logs[0])
        ghost["removed"] = True
        ghost["data"] = "0x" + "00" * 32
        return [ghost, *logs]

    result = do_replay(world, lying(world, add_removed))
    assert result.complete
    assert result.removed_dropped >= 1


def test_confirmations_set_the_target_below_the_head(world, w3) -> None:
    head = w3.eth.block_number
    result = replay(
        world.rpc(),
        address=world.address,
        from_block=world.deploy_block,
        decoder=world.decoder(),
        confirmations=3,
    )
    assert result.target_block == head - 3
    assert result.complete


def test_unreachable_node_is_unverifiable(world) -> None:
    rpc = RpcClient("http://127.0.0.1:9", client=httpx.Client(timeout=1.0))
    try:
        report = run_audit(
            rpc, registry=world.address, deploy_block=world.deploy_block, decoder=world.decoder()
        )
    finally:
        rpc.close()
    assert report.exit_code == 2
    assert [f.kind for f in report.findings] == [FindingKind.REPLAY_FAILED]


def test_digest_at_past_blocks_matches_a_prefix_fold(world) -> None:
    rpc = world.rpc()
    logs = fetch_logs(
        rpc, address=world.address, from_block=world.deploy_block, to_block=world.end_block
    )
    for block in (world.two_in_one_block, world.revoke_block, world.end_block):
        prefix = [log for log in logs if log.block_number <= block]
        assert fold_digest(prefix) == read_event_digest(rpc, world.address, block)


def test_timeline_of_a_replay_has_the_checkpoints(world) -> None:
    result = do_replay(world, world.rpc())
    timeline = ConsentTimeline(result.events)
    assert [
        (c.tree_size, c.root_hash) for c in timeline.checkpoints(world.actors.gateway.address)
    ] == [(c.tree_size, c.root_hash) for c in world.checkpoints]
