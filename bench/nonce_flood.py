"""Benchmark: consent-checked fetch latency with and without an unauthenticated nonce flood.

A centre uploads one 64 KiB record and the patient grants N grantees treatment consent, as in
``bench/fetch.py``; then, on loopback, with the gateway's default per-address limit on nonces
and logins in force (60 at once, then 120 per minute):

- quiet phase: N connections, each a different grantee, fetch the record for ``--seconds``;
- flood phase: the same fetch load while M other connections, from a separate process and
  without a session, send ``POST /v1/auth/nonce`` back to back for the whole phase (past the
  first burst they get 429 ``rate_limited``, which writes nothing to the database).

Prints fetch p50/p99 and rate in both phases, the p99 ratio (flood / quiet), and what the flood
got (requests/s, statuses). A figure, not a pass/fail test; the README states the factor
(p99 ratio < 5 with one uvicorn worker on a 2-core machine).

    .venv/bin/python bench/nonce_flood.py [--clients 16] [--flooders 32] [--seconds 10] [--json]
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import emit, local_stack, parser, percentile
from bench._gateway import (
    AUDITOR_ENV,
    RECORD_BYTES,
    LoadResult,
    cpu_share,
    gateway_pid,
    get_request,
    new_account,
    process_tree_cpu,
    run_load,
    world,
)

#: The gateway's defaults (gateway.settings), set explicitly: the other benchmarks lift them.
DEFAULT_AUTH_LIMITS = {"CONSENT_AUTH_RATE_PER_MINUTE": "120", "CONSENT_AUTH_RATE_BURST": "60"}


def nonce_request(url: str) -> bytes:
    netloc = urlsplit(url).netloc
    return (
        f"POST /v1/auth/nonce HTTP/1.1\r\nHost: {netloc}\r\nContent-Length: 0\r\n"
        f"Accept: application/json\r\n\r\n"
    ).encode()


def _flood(url: str, connections: int, seconds: float, out: Any) -> None:
    result = run_load(url, [[nonce_request(url)]] * connections, seconds=seconds, warmup_s=0.5)
    out.put({"statuses": result.statuses, "seconds": result.seconds, "cpu": result.client_cpu_s})


def _fetch_phase(
    url: str, requests: list[list[bytes]], seconds: float, pid: int | None
) -> tuple[LoadResult, float | None]:
    before = process_tree_cpu(pid)
    result = run_load(url, requests, seconds=seconds)
    after = process_tree_cpu(pid)
    return result, (after - before if before is not None and after is not None else None)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=16, help="fetch connections (default 16)")
    p.add_argument("--flooders", type=int, default=32, help="nonce connections (default 32)")
    p.add_argument("--seconds", type=float, default=10.0, help="per phase (default 10)")
    args = p.parse_args(argv)
    with local_stack(args.url, gateway_env={**AUDITOR_ENV, **DEFAULT_AUTH_LIMITS}) as stack:
        w = world(stack)
        try:
            patient = new_account()
            record_id = w.upload(patient.address, os.urandom(RECORD_BYTES))
            patient_session = w.session(patient)
            grantees = [new_account() for _ in range(args.clients)]
            for grantee in grantees:
                w.grant(patient, patient_session, grantee.address, record_id)
            sessions = [w.session(g) for g in grantees]
            path = f"/v1/records/{record_id}?purpose=treatment"
            fetches = [[get_request(stack.gateway_url, path, s.token)] for s in sessions]
            pid = gateway_pid(stack)
            quiet, quiet_cpu = _fetch_phase(stack.gateway_url, fetches, args.seconds, pid)
            results: Any = multiprocessing.get_context("fork").Queue()
            flood = multiprocessing.get_context("fork").Process(
                target=_flood,
                args=(stack.gateway_url, args.flooders, args.seconds + 1.5, results),
            )
            flood.start()
            try:
                loud, loud_cpu = _fetch_phase(stack.gateway_url, fetches, args.seconds, pid)
                flooded = results.get(timeout=args.seconds + 60)
            finally:
                flood.join(timeout=30)
                if flood.is_alive():
                    flood.kill()
        finally:
            w.close()
    unexpected = {
        "quiet_phase": {k: v for k, v in quiet.statuses.items() if k != 200},
        "flood_phase": {k: v for k, v in loud.statuses.items() if k != 200},
        "flood": {k: v for k, v in flooded["statuses"].items() if k not in (200, 429)},
    }
    q_p50, q_p99 = percentile(quiet.latencies_ms, 50), percentile(quiet.latencies_ms, 99)
    l_p50, l_p99 = percentile(loud.latencies_ms, 50), percentile(loud.latencies_ms, 99)
    flood_total = sum(flooded["statuses"].values())
    rows: list[tuple[str, Any, str]] = [
        ("fetch_p99_ms_quiet", round(q_p99, 2), ""),
        ("fetch_p99_ms_flood", round(l_p99, 2), ""),
        ("p99_ratio", round(l_p99 / q_p99, 2) if q_p99 else None, "< 5 (README)"),
        ("p50_ratio", round(l_p50 / q_p50, 2) if q_p50 else None, ""),
        ("fetch_p50_ms_quiet", round(q_p50, 2), ""),
        ("fetch_p50_ms_flood", round(l_p50, 2), ""),
        ("fetches_per_s_quiet", round(quiet.rate(200), 1), ""),
        ("fetches_per_s_flood", round(loud.rate(200), 1), ""),
        ("flood_requests_per_s", round(flood_total / flooded["seconds"], 1), ""),
        ("flood_nonces_issued", flooded["statuses"].get(200, 0), "<= 60 + 2 per s"),
        ("flood_refused_429", flooded["statuses"].get(429, 0), ""),
        ("clients", args.clients, ""),
        ("flooders", args.flooders, ""),
    ]
    extra = {
        "seconds_per_phase": args.seconds,
        "unexpected_statuses": unexpected,
        "quiet_phase_cpu": cpu_share(quiet.client_cpu_s, quiet_cpu, args.seconds),
        "flood_phase_cpu": cpu_share(loud.client_cpu_s + flooded["cpu"], loud_cpu, args.seconds),
    }
    if not args.json:
        rows.append(("unexpected statuses", str(unexpected), "none"))
    emit("nonce flood", rows, as_json=args.json, extra=extra)
    return 0 if not any(unexpected.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
