"""Benchmark: replay and verify 100,000 registry events end to end on a real anvil.

Generating the events honestly and fast: a small helper contract acts as a patient (the
registry takes ``msg.sender`` as the patient, and a contract account is a valid one) and calls
the deployed ``ConsentRegistry.grant`` thousands of times per transaction, cycling over 64
grantees with alternating purposes so no call is a no-op (``ConsentUnchanged``). Every event is
emitted by the real registry and folded into its on-chain event digest by the registry itself;
nothing touches storage directly. About 3,000 grants fit in one 30M-gas block, so 100,000
events take ~34 transactions and a few seconds.

Timed: ``ledger.audit.run.run_audit`` — eth_getLogs in adaptive chunks, ordering, recomputing the
digest and comparing it with ``eventDigest()`` at the target block, strict decoding of every
log, folding into the consent timeline, and the block timestamps for the report. Prints events
per second (``--json`` for machines). Goal: >= 20,000 events/s.

    .venv/bin/python bench/replay.py [--events 100000] [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import solcx  # noqa: E402

from ledger.audit.run import run_audit  # noqa: E402
from ledger.chain.build import EVM_VERSION, compile_contracts, solc_binary  # noqa: E402
from ledger.chain.node import TxSender, connect, deploy, dev_accounts  # noqa: E402
from ledger.chain.registry import ConsentRegistry  # noqa: E402
from ledger.chain.rpc import RpcClient  # noqa: E402
from ledger.devstack.services import AnvilNode, free_port  # noqa: E402
from ledger.protocol.events import EventDecoder, registry_event_abi  # noqa: E402

HELPER_SOURCE = """
// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

interface IGrant {
    function grant(address grantee, uint8 kind, bytes32 scopeId, uint32 purposes, uint64 expiresAt)
        external;
}

/// A patient account that grants in bulk: call i grants All-scope consent to grantee
/// 0x1000 + (i % 64) with purposes 1 or 2, alternating on each visit of a grantee.
contract BulkPatient {
    function burst(IGrant registry, uint256 start, uint256 count) external {
        for (uint256 i = start; i < start + count; ++i) {
            registry.grant(
                address(uint160(0x1000 + (i % 64))), 2, bytes32(0), uint32(1 + ((i / 64) % 2)),
                type(uint64).max
            );
        }
    }
}
"""


def compile_helper() -> tuple[list[dict[str, Any]], bytes]:
    output = solcx.compile_standard(
        {
            "language": "Solidity",
            "sources": {"BulkPatient.sol": {"content": HELPER_SOURCE}},
            "settings": {
                "evmVersion": EVM_VERSION,
                "optimizer": {"enabled": True, "runs": 200},
                "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object"]}},
            },
        },
        solc_binary=solc_binary(),
    )
    contract = output["contracts"]["BulkPatient.sol"]["BulkPatient"]
    return contract["abi"], bytes.fromhex(contract["evm"]["bytecode"]["object"])


def generate(url: str, events: int, per_tx: int) -> tuple[str, int, float, int]:
    """Deploy the registry and the helper, emit ``events`` grants; returns
    ``(registry, deploy block, seconds, transactions)``."""
    w3 = connect(url, timeout_s=300)
    admin, patient_sender = dev_accounts()[0], dev_accounts()[1]
    artifact = compile_contracts()["ConsentRegistry"]
    registry, receipt = ConsentRegistry.deploy(
        w3, admin=admin.address, sender=admin, artifact=artifact
    )
    abi, bytecode = compile_helper()
    sender = TxSender(w3, patient_sender)
    helper_address = deploy(w3, abi=abi, bytecode=bytecode, sender=sender).receipt[
        "contractAddress"
    ]
    helper = w3.eth.contract(address=helper_address, abi=abi)
    started = time.perf_counter()
    sent = 0
    for start in range(0, events, per_tx):
        count = min(per_tx, events - start)
        tx = helper.functions.burst(registry.address, start, count).build_transaction(
            {"from": patient_sender.address, "gas": 29_500_000}
        )
        sender.send(tx, timeout_s=300)
        sent += 1
    return registry.address, receipt.block_number, time.perf_counter() - started, sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--per-tx", type=int, default=3_000, help="grants per transaction")
    parser.add_argument("--runs", type=int, default=3, help="timed audits (the median is reported)")
    parser.add_argument("--chunk-blocks", type=int, default=10_000)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    decoder = EventDecoder(registry_event_abi(compile_contracts()["IConsentRegistry"].abi))
    with tempfile.TemporaryDirectory(prefix="consent-bench-") as tmp:
        node = AnvilNode(port=free_port(), log_path=Path(tmp) / "anvil.log")
        try:
            node.start()
            registry, deploy_block, gen_s, txs = generate(node.url, args.events, args.per_tx)
            timings: list[float] = []
            replayed = 0
            verdict = ""
            for _ in range(args.runs):
                rpc = RpcClient(node.url)
                try:
                    t0 = time.perf_counter()
                    report = run_audit(
                        rpc, registry=registry, deploy_block=deploy_block, decoder=decoder,
                        chunk_blocks=args.chunk_blocks,
                    )  # fmt: skip
                    timings.append(time.perf_counter() - t0)
                finally:
                    rpc.close()
                assert report.replay is not None, report.findings
                assert report.replay.complete, report.findings
                replayed = len(report.replay.events)
                verdict = report.verdict
        finally:
            node.stop()
    median = statistics.median(timings)
    result = {
        "events": replayed,
        "generated_events": args.events,
        "generation_seconds": round(gen_s, 2),
        "generation_transactions": txs,
        "runs": [round(t, 3) for t in timings],
        "median_seconds": round(median, 3),
        "events_per_second": round(replayed / median),
        "best_events_per_second": round(replayed / min(timings)),
        "verdict": verdict,
        "goal_events_per_second": 20_000,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"generated {args.events:,} events in {txs} transactions, {gen_s:.1f} s")
        print(
            f"replayed + verified {replayed:,} events: median {median:.2f} s over {args.runs} runs"
        )
        print(
            f"{result['events_per_second']:,} events/s "
            f"(best {result['best_events_per_second']:,}); goal 20,000"
        )
        print(f"audit verdict: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
