"""Benchmark: the verified consent index (``ledger.index``) on a real anvil.

Figures, each with its ceiling measured in the same run:

- catch-up: events per second for a fresh ``ConsentIndex`` to index and verify ``--events``
  registry events (eth_getLogs, the running digest, ``eventDigest()`` pinned to every block with
  logs in JSON-RPC batches, strict decoding, the fold), against the raw ``eth_getLogs`` speed
  over the same blocks (the node's answers, JSON-decoded, nothing else): the ratio is the share
  of the raw fetch speed the verified index keeps. Goal: >= 50,000 events/s. Events come from
  bench/replay.py's generator (a helper contract that is a patient and grants thousands of times
  per transaction through the real registry, so blocks are full); a second history of
  ``--sparse-blocks`` blocks with ``--sparse-per-block`` events each measures the cost of one
  verified block;
- decisions per second: ``ConsentIndex.access_decision`` (a lookup) vs ``accessDecision`` by
  ``eth_call`` on a keep-alive connection (what the gateway does per fetch today), and through
  ``FreshIndex`` (one head observation per request when alone, shared under concurrency);
- memory: state bytes per grant for ``--grants`` grants (1,000,000 by default) built directly
  from synthetic ``ConsentGranted`` events without a chain, measured with ``tracemalloc``.

    .venv/bin/python bench/index.py [--events 100000] [--grants 1000000] [--json]
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from bench._common import emit, parser
from bench.replay import generate
from ledger.chain.build import compile_contracts
from ledger.chain.logs import fetch_logs
from ledger.chain.node import connect, dev_accounts
from ledger.chain.registry import ConsentRegistry
from ledger.chain.rpc import KeepAliveRpc, RpcClient
from ledger.devstack.services import AnvilNode, free_port
from ledger.index import BlockRef, ConsentIndex, ConsentState, FreshIndex
from ledger.index.digest import gc_paused
from ledger.protocol import eip712
from ledger.protocol.consent_types import (
    CENTRE_ROLE,
    GATEWAY_ROLE,
    ScopeKind,
    category_id,
)
from ledger.protocol.events import ConsentGranted, EventDecoder, registry_event_abi

GOAL_EVENTS_PER_S = 50_000
_ACCESS_DECISION = keccak(text="accessDecision(address,address,bytes32,uint8)")[:4]


def raw_get_logs(rpc: RpcClient, address: str, start: int, end: int, chunk: int) -> int:
    """The node's eth_getLogs answers over ``[start, end]``, JSON-decoded (the collector
    paused, as the index pauses it): the fetch floor."""
    total = 0
    with gc_paused():
        for lo in range(start, end + 1, chunk):
            to = hex(min(end, lo + chunk - 1))
            query = {"address": address, "fromBlock": hex(lo), "toBlock": to}
            total += len(rpc.call("eth_getLogs", [query]))
    return total


def catch_up(url: str, registry: str, start: int, decoder: EventDecoder) -> tuple[float, int, Any]:
    rpc = RpcClient(url, timeout_s=300)
    try:
        index = ConsentIndex(rpc, address=registry, start_block=start, decoder=decoder)
        t0 = time.perf_counter()
        position = index.sync()
        return time.perf_counter() - t0, position.event_count, index
    finally:
        rpc.close()


def timed_raw(rpc: RpcClient, registry: str, start: int, end: int) -> float:
    t0 = time.perf_counter()
    raw_get_logs(rpc, registry, start, end, 10_000)
    return time.perf_counter() - t0


def register_record(url: str, registry: str, patient: str) -> bytes:
    """A record of ``patient`` (the bulk-granting helper), so decisions walk the grants."""
    w3 = connect(url)
    admin, gateway, centre = dev_accounts()[0], dev_accounts()[2], dev_accounts()[3]
    client = ConsentRegistry(w3, registry, abi=compile_contracts()["ConsentRegistry"].abi)
    client.grant_role(admin, GATEWAY_ROLE, gateway.address)
    client.grant_role(admin, CENTRE_ROLE, centre.address)
    attestation = eip712.RecordAttestation(
        patient=to_checksum_address(patient),
        category=category_id("laboratory"),
        content_digest=bytes(32),
        issued_at=1,
    )
    signature = eip712.sign(centre, client.domain, attestation)
    return client.register_record(gateway, attestation, signature, "bafkqaaa").record_id


def decisions(
    url: str, index: ConsentIndex, queries: Sequence[tuple[str, str, bytes, int]], seconds: float
) -> dict[str, float]:
    out: dict[str, float] = {}
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for query in queries:
            index.access_decision(*query)
        n += len(queries)
    out["index_decisions_per_s"] = n / (time.perf_counter() - t0)

    rpc = RpcClient(url, transport=KeepAliveRpc(url, timeout_s=10))
    try:
        block = hex(rpc.block_number())
        calls = [
            {
                "to": index.address,
                "data": "0x"
                + (
                    _ACCESS_DECISION
                    + abi_encode(["address", "address", "bytes32", "uint8"], list(q))
                ).hex(),
            }
            for q in queries
        ]
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for call in calls[:200]:
                rpc.call("eth_call", [call, block])
                n += 1
        out["eth_call_decisions_per_s"] = n / (time.perf_counter() - t0)

        fresh = FreshIndex(index, rpc=rpc)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for query in queries[:200]:
                fresh.access_decision(*query)
                n += 1
        out["fresh_decisions_per_s_1_thread"] = n / (time.perf_counter() - t0)

        threads = 8
        fresh = FreshIndex(index, rpc=rpc)
        stop = time.perf_counter() + seconds

        def worker(offset: int) -> int:
            done = 0
            while time.perf_counter() < stop:
                fresh.access_decision(*queries[(offset + done) % len(queries)])
                done += 1
            return done

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            n = sum(pool.map(worker, range(threads)))
        elapsed = time.perf_counter() - t0
        out[f"fresh_decisions_per_s_{threads}_threads"] = n / elapsed
        out[f"head_observations_per_decision_{threads}_threads"] = fresh.observations / n
    finally:
        rpc.close()
    return out


def memory_per_grant(grants: int, seed: int = 1) -> dict[str, float]:
    """State bytes per grant: ``grants`` ConsentGranted events over 1 patient in 10 grants and
    1,000 grantees, scopes half one record each, a quarter a category, a quarter All."""
    rng = random.Random(seed)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    patients = [to_checksum_address(f"0x{i + 1:040x}") for i in range(max(1, grants // 10))]
    grantees = [to_checksum_address(f"0x{0xA000000 + i:040x}") for i in range(1_000)]
    categories = [category_id(c) for c in ("checkup", "laboratory", "imaging", "prescription")]
    all_scope = bytes(32)
    state = ConsentState()
    t0 = time.perf_counter()
    for i in range(grants):
        patient = patients[i % len(patients)]
        grantee = grantees[(i // len(patients)) % len(grantees)]
        pick = i % 4
        if pick < 2:
            kind, scope_id = ScopeKind.RECORD, rng.randbytes(32)
        elif pick == 2:
            kind, scope_id = ScopeKind.CATEGORY, categories[i % 4]
        else:
            kind, scope_id = ScopeKind.ALL, all_scope
        state.apply(
            ConsentGranted(
                1 + i // 1000,
                i % 1000,
                "0x",
                patient,
                grantee,
                kind,
                scope_id,
                1 + i % 31,
                1_800_000_000 + i,
                patient,
            )
        )
    build_s = time.perf_counter() - t0
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert state.grant_count == grants, state.grant_count
    return {
        "memory_grants": grants,
        "state_bytes_per_grant": used / grants,
        "state_mb": used / 1e6,
        "fold_grants_per_s_traced": grants / build_s,
    }


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--per-tx", type=int, default=3_000, help="grants per transaction")
    p.add_argument("--sparse-blocks", type=int, default=500)
    p.add_argument("--sparse-per-block", type=int, default=20)
    p.add_argument("--grants", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=3, help="catch-up runs (the best is reported)")
    p.add_argument("--seconds", type=float, default=3.0, help="per decision figure")
    args = p.parse_args(argv)

    decoder = EventDecoder(registry_event_abi(compile_contracts()["IConsentRegistry"].abi))
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="consent-bench-") as tmp:
        node = AnvilNode(port=free_port(), log_path=Path(tmp) / "anvil.log")
        try:
            node.start()
            registry, deploy_block, gen_s, txs = generate(node.url, args.events, args.per_tx)
            rpc = RpcClient(node.url, timeout_s=300)
            head = rpc.block_number()
            helper = fetch_logs(rpc, address=registry, from_block=head, to_block=head)[0]
            patient = to_checksum_address(helper.topics[1][12:])
            timings = []
            for _ in range(args.runs):
                seconds, events, index = catch_up(node.url, registry, deploy_block, decoder)
                timings.append(seconds)
            raw_s = min(timed_raw(rpc, registry, deploy_block, head) for _ in range(args.runs))
            best = min(timings)
            figures.update(
                events=events,
                blocks=head - deploy_block + 1,
                generation_s=round(gen_s, 1),
                generation_transactions=txs,
                catch_up_s=round(best, 3),
                catch_up_median_s=round(statistics.median(timings), 3),
                catch_up_events_per_s=round(events / best),
                raw_get_logs_events_per_s=round(events / raw_s),
                index_to_raw_ratio=round(raw_s / best, 3),
                digest_checks=index.stats.digest_checks,
            )
            # Sparse history: few events per block, one eventDigest() per block.
            sparse_from = head + 1
            sparse_gen_s, _ = _sparse(node.url, args, registry)
            sparse_head = rpc.block_number()
            sparse = ConsentIndex(
                rpc, address=index.address, start_block=deploy_block, decoder=decoder
            )
            sparse.sync(BlockRef.from_header(rpc.call("eth_getBlockByNumber", [hex(head), False])))
            t0 = time.perf_counter()
            position = sparse.sync()
            sparse_s = time.perf_counter() - t0
            sparse_events = position.event_count - events
            figures.update(
                sparse_blocks=sparse_head - sparse_from + 1,
                sparse_events=sparse_events,
                sparse_events_per_s=round(sparse_events / sparse_s),
                sparse_blocks_per_s=round((sparse_head - sparse_from + 1) / sparse_s),
                sparse_generation_s=round(sparse_gen_s, 1),
            )
            # Decisions.
            record = register_record(node.url, registry, patient)
            sparse.sync()
            grantees = [to_checksum_address(f"0x{0x1000 + i:040x}") for i in range(64)]
            queries = [(patient, g, record, purpose) for g in grantees for purpose in (0, 1, 2)]
            figures.update(
                {
                    k: round(v, 3 if "per_decision" in k else 0)
                    for k, v in decisions(node.url, sparse, queries, args.seconds).items()
                }
            )
            figures["index_to_eth_call_ratio"] = round(
                figures["index_decisions_per_s"] / figures["eth_call_decisions_per_s"], 1
            )
            rpc.close()
        finally:
            node.stop()
    figures.update({k: round(v, 1) for k, v in memory_per_grant(args.grants).items()})
    rows: list[tuple[str, Any, str]] = [
        (
            "catch-up events/s (full blocks)",
            figures["catch_up_events_per_s"],
            f">= {GOAL_EVENTS_PER_S:,}",
        ),
        ("raw eth_getLogs events/s (same blocks)", figures["raw_get_logs_events_per_s"], ""),
        ("catch-up / raw eth_getLogs", figures["index_to_raw_ratio"], ""),
        ("catch-up events/s (sparse blocks)", figures["sparse_events_per_s"], ""),
        ("verified blocks/s (sparse)", figures["sparse_blocks_per_s"], ""),
        ("index decisions/s", figures["index_decisions_per_s"], ""),
        ("eth_call accessDecision/s", figures["eth_call_decisions_per_s"], ""),
        ("index / eth_call", figures["index_to_eth_call_ratio"], ""),
        ("FreshIndex decisions/s, 1 thread", figures["fresh_decisions_per_s_1_thread"], ""),
        ("FreshIndex decisions/s, 8 threads", figures["fresh_decisions_per_s_8_threads"], ""),
        (
            "head observations per decision, 8 threads",
            figures["head_observations_per_decision_8_threads"],
            "< 1",
        ),
        (f"state bytes per grant ({args.grants:,} grants)", figures["state_bytes_per_grant"], ""),
    ]
    emit("verified consent index", rows, as_json=args.json, extra=figures)
    return 0


def _sparse(url: str, args: Any, registry: str) -> tuple[float, int]:
    """``--sparse-blocks`` more transactions of ``--sparse-per-block`` grants each, one block
    each (anvil automines): returns (seconds, transactions)."""
    from bench.replay import compile_helper
    from ledger.chain.node import TxSender, deploy

    w3 = connect(url, timeout_s=300)
    sender_account = dev_accounts()[4]
    abi, bytecode = compile_helper()
    sender = TxSender(w3, sender_account)
    address = deploy(w3, abi=abi, bytecode=bytecode, sender=sender).receipt["contractAddress"]
    helper = w3.eth.contract(address=address, abi=abi)
    t0 = time.perf_counter()
    pending = []
    for i in range(args.sparse_blocks):
        tx = helper.functions.burst(
            registry, i * args.sparse_per_block, args.sparse_per_block
        ).build_transaction({"from": sender_account.address, "gas": 5_000_000})
        pending.append(sender.send(tx, timeout_s=300))
    return time.perf_counter() - t0, len(pending)


if __name__ == "__main__":
    raise SystemExit(main())
