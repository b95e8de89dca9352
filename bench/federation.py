"""Benchmark: threshold custody (2 of 3) next to the single-gateway mode, end to end, one run.

Two local stacks, one after the other, on this machine: the single-gateway mode (one gateway,
no federation: the gateway encrypts and wraps the key) and a 2-of-3 federation (three gateway
processes; the centre's client encrypts and splits, the reader gathers two shares). In each:

- uploads: ``--uploads`` records of 64 KiB from ``--clients`` threads through the Python client
  (single: ``Session.upload``; federation: ``ledger.federation.upload_sealed``, which encrypts,
  splits, seals three shares and attests on the client), each registered on-chain;
- fetches: ``--clients`` grantees, each signed in once per gateway, fetch and open the record
  for ``--seconds`` (single: the envelope, ECIES unseal, AES-GCM, digest check; federation:
  manifest + ciphertext from one gateway, two share releases each decided and logged by its
  own gateway, SLIP-39 combine, AES-GCM, digest check against the chain).

Prints uploads/s and fetches/s with p50/p99 for both modes and their ratio.

    .venv/bin/python bench/federation.py [--uploads 100] [--clients 8] [--seconds 10] [--json]
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from web3 import Web3

from bench._common import Stack, emit, local_stack, parser, percentile
from ledger.chain.abi import registry_abi
from ledger.chain.node import connect, dev_accounts
from ledger.chain.registry import ConsentRegistry
from ledger.client import Gateway, Session
from ledger.federation import ReaderState, fetch_federated, upload_sealed
from ledger.protocol.consent_types import CENTRE_ROLE, ScopeKind, category_id

RECORD_BYTES = 64 * 1024
LAB = category_id("laboratory")


def _timed(jobs: int, clients: int, job: Callable[[int], None]) -> tuple[float, list[float]]:
    """Run ``job(i)`` for i in range(jobs) on ``clients`` threads: (seconds, latencies ms)."""
    cursor = iter(range(jobs))
    lock = threading.Lock()
    latencies: list[float] = []

    def worker() -> None:
        while True:
            with lock:
                i = next(cursor, None)
            if i is None:
                return
            start = time.perf_counter()
            job(i)
            with lock:
                latencies.append((time.perf_counter() - start) * 1000)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, latencies


def _for_seconds(
    seconds: float, clients: int, job: Callable[[int], None]
) -> tuple[int, list[float]]:
    """Each of ``clients`` threads runs ``job(client)`` until ``seconds`` pass."""
    lock = threading.Lock()
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    def worker(client: int) -> None:
        while time.perf_counter() < stop:
            start = time.perf_counter()
            job(client)
            with lock:
                latencies.append((time.perf_counter() - start) * 1000)

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(latencies), latencies


def measure(mode: str, *, uploads: int, clients: int, seconds: float) -> dict[str, Any]:
    gateways, threshold = (3, 2) if mode == "federation" else (1, 0)
    with local_stack(None, gateways=gateways, threshold=threshold) as stack:
        return _measure(stack, mode, uploads=uploads, clients=clients, seconds=seconds)


def _measure(
    stack: Stack, mode: str, *, uploads: int, clients: int, seconds: float
) -> dict[str, Any]:
    admin, _gw, centre, patient = dev_accounts()[:4]
    w3 = connect(stack.chain_url)
    registry = ConsentRegistry(w3, Web3.to_checksum_address(stack.registry), abi=registry_abi())
    registry.grant_role(admin, CENTRE_ROLE, centre.address)
    gateway = Gateway(stack.gateway_url)
    centre_session = gateway.login(centre)
    data = [os.urandom(RECORD_BYTES) for _ in range(uploads)]
    record_ids: list[str] = [""] * uploads

    federation = registry.federation()  # read once for the batch, as `consent upload-dir` does

    def upload(i: int) -> None:
        if mode == "federation":
            up = upload_sealed(
                centre_session,
                data[i],
                registry=registry,
                patient=patient.address,
                category=LAB,
                federation=federation,
            )
            record_ids[i] = up.record.record_id
        else:
            record_ids[i] = centre_session.upload(
                data[i], domain=registry.domain, patient=patient.address, category=LAB
            ).record.record_id

    up_seconds, up_latencies = _timed(uploads, clients, upload)
    # Grantees: each granted the category by the patient (direct transactions).
    from eth_account import Account

    grantees = [Account.create() for _ in range(clients)]
    for g in grantees:
        registry.grant(patient, g.address, ScopeKind.CATEGORY, LAB, 1, 2**40)
    digest = registry.record_of(bytes.fromhex(record_ids[0][2:])).content_digest
    single: list[Session] = [gateway.login(g) for g in grantees] if mode != "federation" else []
    # Each reader signs in once per gateway and reads the federation and the record's chain
    # fields once, before the clock starts (the single mode's reader also holds the digest).
    states = [ReaderState() for _ in grantees]
    for c, g in enumerate(grantees):
        if mode == "federation":
            fetch_federated(g, record_ids[0], registry=registry, purpose=0, state=states[c])

    def fetch(client: int) -> None:
        if mode == "federation":
            opened = fetch_federated(
                grantees[client],
                record_ids[0],
                registry=registry,
                purpose=0,
                state=states[client],
            )
            assert opened.plaintext == data[0]
        else:
            got = single[client].open_record(record_ids[0], 0, expected_digest=digest)
            assert got.plaintext == data[0]

    fetched, fetch_latencies = _for_seconds(seconds, clients, fetch)
    for state in states:
        state.close()
    gateway.close()
    return {
        "uploads_per_s": round(uploads / up_seconds, 1),
        "upload_p50_ms": round(percentile(up_latencies, 50), 1),
        "upload_p99_ms": round(percentile(up_latencies, 99), 1),
        "fetches_per_s": round(fetched / seconds, 1),
        "fetch_p50_ms": round(percentile(fetch_latencies, 50), 1),
        "fetch_p99_ms": round(percentile(fetch_latencies, 99), 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--uploads", type=int, default=100)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args(argv)
    single = measure("single", uploads=args.uploads, clients=args.clients, seconds=args.seconds)
    fed = measure("federation", uploads=args.uploads, clients=args.clients, seconds=args.seconds)
    rows: list[tuple[str, Any, str]] = []
    for key in single:
        ratio = fed[key] / single[key] if single[key] else float("nan")
        rows.append((f"single_{key}", single[key], ""))
        rows.append((f"federation_2of3_{key}", fed[key], f"{ratio:.2f}x single"))
    emit(
        "threshold custody (2 of 3) vs single-gateway mode, end to end through the Python client",
        rows,
        as_json=args.json,
        extra={"uploads": args.uploads, "clients": args.clients, "seconds": args.seconds},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
