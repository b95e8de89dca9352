"""Decisions pinned to the ledger position the node evaluated.

anvil may answer an ``eth_call`` "at block N" (N the head) from a state that already holds block
N+1's transactions: the state is changed while N+1 is mined, before the head number moves on
(pinning by block hash does the same). A decision logged "at block N" was then taken on N+1's
state, and an audit that judges it at N reports ``read_without_consent`` / ``wrong_denial``.

So the gateway asks ``accessDecision``, which returns, in the same ``eth_call``, the event
digest's count and ``block.timestamp`` of the state it evaluated; the leaf carries them
(``events``, ``chain_time``) and the audit judges the decision on the state after exactly that
many events, at that time, after checking the position against the block the leaf names.

Covered here: the timeline's evaluation by event count (against the contract's own count), the
audit on crafted leaves (the race's shape audits clean, impossible positions are named), leaf
parsing, the gateway's leaf and response, and the race itself end to end: concurrent grants and
revokes while fetching through the gateway must audit clean.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_utils.address import to_checksum_address

from ledger.audit.export import load_access_log
from ledger.audit.replay import BlockClock, replay
from ledger.audit.report import FindingKind, Severity
from ledger.audit.run import run_audit
from ledger.audit.state import ConsentTimeline
from ledger.chain.node import connect, dev_accounts
from ledger.chain.rpc import RpcClient
from ledger.devstack.services import AnvilNode, IpfsNode
from ledger.protocol.access_leaf import Decision, canonical_leaf
from ledger.protocol.consent_types import Basis, Purpose, ScopeKind, purposes_mask
from ledger.protocol.events import EventDecoder, registry_event_abi
from tests.helpers.audit_world import World
from tests.helpers.gateway import (
    Stack,
    build_stack,
    close_stack,
    deploy_registry,
    login,
    new_account,
    relay,
    signed_grant,
    upload,
)


def _replayed(world: World) -> tuple[ConsentTimeline, BlockClock]:
    rpc = world.rpc()
    result = replay(
        rpc,
        address=world.address,
        from_block=world.deploy_block,
        decoder=world.decoder(),
        target_block=world.end_block,
    )
    return ConsentTimeline(result.events), BlockClock(rpc)


def _audit(world: World, leaves: list[bytes]) -> Any:
    rpc = world.rpc()
    return run_audit(
        rpc,
        registry=world.address,
        deploy_block=world.deploy_block,
        decoder=world.decoder(),
        access_logs=[world.export([*world.leaves, *leaves])],
        target_block=world.end_block,
    )


def _audit_before_revoke(world: World, leaves: list[bytes]) -> Any:
    """``leaves`` after the world's first checkpoint, audited at the revoke's block.

    The leaves name blocks just before the revoke; the log before them is the first anchored
    checkpoint (blocks earlier still), so the log's blocks never go backwards."""
    rpc = world.rpc()
    first = world.checkpoints[0]
    return run_audit(
        rpc,
        registry=world.address,
        deploy_block=world.deploy_block,
        decoder=world.decoder(),
        access_logs=[
            world.export([*world.leaves[: first.tree_size], *leaves], checkpoints=[first])
        ],
        target_block=world.revoke_block,
    )


def _kinds(report: Any) -> set[FindingKind]:
    return {f.kind for f in report.findings}


def _leaf(
    world: World,
    requester: str,
    record: bytes,
    purpose: int,
    allowed: bool,
    block: int,
    events: int | None = None,
    chain_time: int | None = None,
) -> bytes:
    p = world.actors.patient.address
    reason = "owner" if requester == p else ("consent" if allowed else "no_consent")
    return canonical_leaf(
        Decision(
            requester,
            p,
            "0x" + record.hex(),
            purpose,
            allowed,
            reason,
            block,
            float(chain_time or 0),
            event_count=events,
            chain_time=chain_time,
        )
    )


# ------------------------------------------------------------------------------ the timeline


def test_event_count_states_match_block_states_and_the_contracts_count(world: World) -> None:
    timeline, clock = _replayed(world)
    registry = world.registry(connect(world.url))
    p = world.actors.patient.address
    blocks = range(world.deploy_block, world.end_block + 1)
    times = clock.timestamps(blocks)
    for block in blocks:
        count = timeline.events_through_block(block)
        assert count == registry.event_digest(block_identifier=block).count
        for requester, record, purpose in world.reads:
            at_block = timeline.access_basis_at(
                p, requester, record, purpose, block_number=block, block_timestamp=times[block]
            )
            after = timeline.access_basis_after_events(
                p, requester, record, purpose, events=count, timestamp=times[block]
            )
            assert after == at_block, (block, requester, purpose)
            decided = registry.access_decision(
                p, requester, record, purpose, block_identifier=block
            )
            assert (decided.event_count, decided.timestamp) == (count, times[block])
            assert (decided.basis, decided.until) == at_block
    assert timeline.events_through_block(world.end_block) == timeline.event_count
    assert timeline.event_position(0) == (-1, -1)
    with pytest.raises(ValueError, match="not among"):
        timeline.event_position(timeline.event_count + 1)


def test_a_count_inside_a_block_is_the_state_between_its_events(world: World) -> None:
    """Two grants mined in one block: the count between them sees the first only."""
    timeline, clock = _replayed(world)
    a, b = world.actors, world.two_in_one_block
    p, ts = a.patient.address, clock.timestamp(b)
    first = timeline.events_through_block(b - 1) + 1
    assert timeline.event_position(first)[0] == b
    assert timeline.event_position(first + 1)[0] == b
    assert timeline.events_through_block(b) == first + 1
    lab = (a.researcher.address, world.rec_lab, int(Purpose.RESEARCH))
    img = (a.insurer.address, world.rec_img, int(Purpose.INSURANCE))
    assert timeline.access_after_events(p, *lab, first - 1, ts) == (False, Basis.NONE)
    assert timeline.access_after_events(p, *lab, first, ts) == (True, Basis.CATEGORY)
    assert timeline.access_after_events(p, *img, first, ts) == (False, Basis.NONE)
    assert timeline.access_after_events(p, *img, first + 1, ts) == (True, Basis.ALL)


# ------------------------------------------------------------------------------ the audit


def test_a_decision_on_the_next_blocks_state_audits_clean_when_positioned(world: World) -> None:
    """The race's shape: asked at N, answered on N+1's state (which holds a revoke)."""
    timeline, clock = _replayed(world)
    a = world.actors
    n = world.revoke_block - 1
    ts = clock.timestamps([n, n + 1])
    at_n, at_next = timeline.events_through_block(n), timeline.events_through_block(n + 1)
    assert at_next == at_n + 1  # the revoke
    insurer = (a.insurer.address, world.rec_img, int(Purpose.INSURANCE))

    # Logged "at block N" only, the denial looks wrong: at N the insurer held consent.
    report = _audit_before_revoke(world, [_leaf(world, *insurer, False, n)])
    assert FindingKind.WRONG_DENIAL in _kinds(report)

    # With the position the node evaluated (N+1's state, at N's or N+1's time) it is right.
    for chain_time in (ts[n], ts[n + 1]):
        report = _audit_before_revoke(
            world, [_leaf(world, *insurer, False, n, at_next, chain_time)]
        )
        assert report.exit_code == 0, [(f.kind, f.message) for f in report.findings]
    # An allowed read is judged on the state it names, not on the block.
    report = _audit_before_revoke(world, [_leaf(world, *insurer, True, n, at_n, ts[n])])
    assert report.exit_code == 0, [(f.kind, f.message) for f in report.findings]
    report = _audit_before_revoke(world, [_leaf(world, *insurer, True, n, at_next, ts[n])])
    (finding,) = [f for f in report.findings if f.kind is FindingKind.READ_WITHOUT_CONSENT]
    assert (finding.details["events"], finding.details["block"]) == (at_next, n)
    assert f"state after {at_next} events" in finding.message


@pytest.mark.parametrize("case", ["stale", "too_far_ahead", "time_before", "time_after"])
def test_positions_no_node_asked_at_the_block_evaluates_are_named(world: World, case: str) -> None:
    timeline, clock = _replayed(world)
    a = world.actors
    n = world.revoke_block - 1
    ts = clock.timestamps([n - 1, n, n + 1])
    insurer = (a.insurer.address, world.rec_img, int(Purpose.INSURANCE))
    at_n, at_next = timeline.events_through_block(n), timeline.events_through_block(n + 1)
    block, events, chain_time = {
        "stale": (n, at_n - 1, ts[n]),  # misses an event of a block up to N
        "too_far_ahead": (n - 1, at_next, ts[n - 1]),  # holds events past N (asked at N-1)
        "time_before": (n, at_n, ts[n] - 1),
        "time_after": (n, at_n, ts[n + 1] + 1),
    }[case]
    allowed, _ = timeline.access_after_events(
        a.patient.address, *insurer, events=events, timestamp=chain_time
    )
    report = _audit_before_revoke(
        world, [_leaf(world, *insurer, allowed, block, events, chain_time)]
    )
    assert _kinds(report) == {
        FindingKind.DECISION_POSITION_INCONSISTENT,
        FindingKind.UNANCHORED_ENTRIES,
    }
    (finding,) = [
        f for f in report.findings if f.kind is FindingKind.DECISION_POSITION_INCONSISTENT
    ]
    assert finding.severity is Severity.VIOLATION
    assert (finding.details["block"], finding.details["events"]) == (block, events)
    assert report.exit_code == 1


def test_a_position_past_the_replay_cannot_be_verified(world: World) -> None:
    timeline, clock = _replayed(world)
    a = world.actors
    end = world.end_block
    leaf = _leaf(
        world,
        a.doctor.address,
        world.rec_lab,
        0,
        True,
        end,
        timeline.event_count + 3,
        clock.timestamp(end),
    )
    report = _audit(world, [leaf])
    (finding,) = [f for f in report.findings if f.kind is FindingKind.ENTRY_AFTER_TARGET]
    assert finding.details["events"] == timeline.event_count + 3
    assert report.exit_code == 2


def test_position_keys_come_together_as_non_negative_integers(world: World) -> None:
    a = world.actors
    with pytest.raises(ValueError, match="both"):
        canonical_leaf(
            Decision(
                a.doctor.address, a.patient.address, "0x" + world.rec_lab.hex(), 0, True,
                "consent", world.end_block, 0.0, event_count=5,
            )
        )  # fmt: skip
    good = json.loads(_leaf(world, a.doctor.address, world.rec_lab, 0, True, 1, 5, 7))
    assert (good["events"], good["chain_time"]) == (5, 7)
    bad_bodies = [
        {k: v for k, v in good.items() if k != "chain_time"},
        {**good, "events": -1},
        {**good, "chain_time": True},
        {**good, "block": None, "decision": "denied", "reason": "chain_unavailable"},
    ]
    leaves = [json.dumps(b, sort_keys=True, separators=(",", ":")).encode() for b in bad_bodies]
    report = _audit(world, leaves)
    malformed = [f for f in report.findings if f.kind is FindingKind.LOG_MALFORMED]
    assert sorted(f.details["index"] for f in malformed) == [13, 14, 15, 16]


# ------------------------------------------------------------------------------ the gateway


def _hex(text: str) -> bytes:
    return bytes.fromhex(text[2:])


def test_the_gateway_logs_and_returns_the_position_it_was_answered_on(gateway: Stack) -> None:
    patient, doctor, stranger = new_account(), new_account(), new_account()
    r = upload(
        gateway, login(gateway, gateway.centre), patient=patient.address, data=os.urandom(32)
    )
    assert r.status_code == 201, r.text
    record_id = r.json()["record_id"]
    patient_headers = login(gateway, patient)
    relay(
        gateway,
        patient_headers,
        signed_grant(gateway, patient, doctor.address, scope_id=_hex(record_id)),
    )
    url = f"/v1/records/{record_id}?purpose=treatment"

    ok = gateway.client.get(url, headers=login(gateway, doctor))
    assert ok.status_code == 200, ok.text
    envelope = ok.json()
    denied = gateway.client.get(url, headers=login(gateway, stranger))
    assert denied.status_code == 403
    details = denied.json()["error"]["details"]

    registry, w3 = gateway.registry, gateway.w3
    for block, events, chain_time in (
        (envelope["block_number"], envelope["event_count"], envelope["chain_time"]),
        (details["block_number"], details["event_count"], details["chain_time"]),
    ):
        # The state the node evaluated lies between the ends of blocks N and N+1.
        assert registry.event_digest(block_identifier=block).count <= events
        if w3.eth.block_number > block:
            assert events <= registry.event_digest(block_identifier=block + 1).count
        assert chain_time >= int(w3.eth.get_block(block)["timestamp"])

    page = gateway.client.get("/v1/access-log/entries", headers=patient_headers).json()
    leaves = [e["entry"] for e in page["entries"]]
    assert [(x["decision"], x["block"], x["events"], x["chain_time"]) for x in leaves] == [
        ("allowed", envelope["block_number"], envelope["event_count"], envelope["chain_time"]),
        ("denied", details["block_number"], details["event_count"], details["chain_time"]),
    ]


# ------------------------------------------------------------------------------ the race


def _decoder(stack: Stack) -> EventDecoder:
    return EventDecoder(registry_event_abi(stack.registry.contract.abi))


def _raced_leaves(stack: Stack, url: str, deploy_block: int) -> list[dict[str, Any]]:
    """The logged decisions the node answered on a later state than the block they name, each
    with ``misjudged_by_block``: whether judging it at its block would call it wrong."""
    rpc = RpcClient(url, client=httpx.Client(timeout=60))
    try:
        result = replay(
            rpc, address=stack.registry.address, from_block=deploy_block, decoder=_decoder(stack)
        )
        timeline = ConsentTimeline(result.events)
        clock = BlockClock(rpc)
        raced = []
        for leaf in stack.state.access_log.leaves():
            body = json.loads(leaf)
            if body.get("events") is None or body["block"] >= result.target_block:
                continue
            if body["events"] > timeline.events_through_block(body["block"]):
                allowed_at_block, _ = timeline.access_at(
                    to_checksum_address(body["patient"]),
                    to_checksum_address(body["requester"]),
                    _hex(body["record"]),
                    body["purpose"],
                    body["block"],
                    clock.timestamp(body["block"]),
                )
                body["misjudged_by_block"] = allowed_at_block != (body["decision"] == "allowed")
                raced.append(body)
        return raced
    finally:
        rpc.close()


@pytest.mark.slow
@pytest.mark.parametrize("source", ["chain", "index"])
def test_concurrent_grants_and_revokes_while_fetching_audit_clean(
    tmp_path: Path,
    throwaway_anvil: AnvilNode,
    ipfs_node: IpfsNode,
    service_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    source: str,
) -> None:
    """Fetch through the gateway while the patient toggles the very consent being checked, until
    the node has answered some fetches on the next block's state (the race), then audit.

    With ``decision_source = "index"`` there is no such race to wait for: every decision is
    taken on the index's state after exactly its block's logs, so one round of toggles must
    show none, and audit clean as well."""
    w3 = connect(throwaway_anvil.url)
    registry, deployment = deploy_registry(w3, cache_dir=service_dir / "build")
    stack = build_stack(
        home=tmp_path / "gw",
        w3=w3,
        chain_url=throwaway_anvil.url,
        ipfs_url=ipfs_node.url,
        registry=registry,
        deployment=deployment,
        relayer=dev_accounts()[1],
        anchor_enabled=False,
        decision_source=source,
    )
    try:
        patient, grantee = dev_accounts()[3], new_account()
        r = upload(stack, login(stack, stack.centre), patient=patient.address, data=b"ECG " * 64)
        assert r.status_code == 201, r.text
        record_id = r.json()["record_id"]
        rid = _hex(record_id)
        url = f"/v1/records/{record_id}?purpose=treatment"
        headers = login(stack, grantee)
        statuses: dict[int, int] = {}
        lock = threading.Lock()

        def fetch(stop: threading.Event) -> None:
            with httpx.Client(base_url=str(stack.client.base_url), timeout=60) as http:
                while not stop.is_set():
                    code = http.get(url, headers=headers).status_code
                    with lock:
                        statuses[code] = statuses.get(code, 0) + 1

        granted = False
        expiry = 2**40
        raced: list[dict[str, Any]] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            stop = threading.Event()
            fetchers = [threading.Thread(target=fetch, args=(stop,)) for _ in range(4)]
            for t in fetchers:
                t.start()
            try:
                for _ in range(150):
                    if granted:
                        registry.revoke(patient, grantee.address, ScopeKind.RECORD, rid)
                    else:
                        expiry -= 1
                        registry.grant(
                            patient,
                            grantee.address,
                            ScopeKind.RECORD,
                            rid,
                            purposes_mask([Purpose.TREATMENT]),
                            expiry,
                        )
                    granted = not granted
            finally:
                stop.set()
                for t in fetchers:
                    t.join()
            raced = _raced_leaves(stack, throwaway_anvil.url, deployment.block)
            if source == "index" or any(leaf["misjudged_by_block"] for leaf in raced):
                break
        assert set(statuses) <= {200, 403}, statuses
        assert statuses.get(200), statuses
        assert statuses.get(403), statuses
        if source == "index":
            assert raced == [], raced[:3]  # each decision names exactly the state it was taken on
        else:
            # The race happened: some decisions were taken on the next block's state, and
            # judging them at their block (the old rule) would have reported a violation.
            misjudged = [leaf for leaf in raced if leaf["misjudged_by_block"]]
            assert misjudged, f"no fetch raced a block in 120 s ({statuses})"

        stack.state.anchorer.anchor_now()
        auditor = new_account()
        monkeypatch.setattr(stack.state, "auditors", frozenset({auditor.address}))
        with httpx.Client(headers=login(stack, auditor), timeout=60) as http:
            export = load_access_log(f"{stack.client.base_url}/v1/access-log/export", client=http)
        rpc = RpcClient(throwaway_anvil.url, client=httpx.Client(timeout=60))
        try:
            report = run_audit(
                rpc,
                registry=registry.address,
                deploy_block=deployment.block,
                decoder=_decoder(stack),
                access_logs=[export],
            )
        finally:
            rpc.close()
        assert report.exit_code == 0, [(f.kind, f.message) for f in report.findings[:5]]
        assert not report.findings, [(f.kind, f.message) for f in report.findings[:5]]
        (verified,) = report.logs
        assert verified.size == len(export.entries) >= sum(statuses.values())
        assert all(v.consistent for v in verified.verdicts)
    finally:
        close_stack(stack)
