"""Benchmark: consent-checked fetches of a 64 KiB record from N concurrent clients.

A centre uploads one 64 KiB record; the patient grants treatment consent (signed, relayed) to
N grantees; each grantee signs in (SIWE) and one fetch is opened and checked end to end
(ECIES unseal, AES-GCM, sha256 against the on-chain digest). Then, on loopback:

- allowed phase: N connections, each a different grantee, fetch the record for ``--seconds``;
  every response is a 200 with the sealed envelope (eth_blockNumber + hasConsent at that block,
  CID-verified ciphertext, the access-log entry durable before the answer);
- denied phase: N connections of accounts without consent fetch it; every response is a 403
  and its decision is appended to the access log too.

Prints allowed fetches/s, denied decisions/s, p50/p99 latency, and the CPU used by the load
generator and by the gateway (cores). Then, in the same run and with the same load generator
and requests, the ceiling (:mod:`bench.ceiling`: a bare uvicorn app returning a body of the
same size as each phase's responses), and each figure's ratio to it. Goals on a 2-core
machine: allowed >= 5 % of its ceiling, denied >= 17 % of its ceiling, p99 < 25 ms.

``--decision-source chain`` runs the gateway on one ``eth_call`` of ``accessDecision`` per
decision instead of the verified consent index (the default, ``index``).

    .venv/bin/python bench/fetch.py [--clients 16] [--seconds 10] [--workers 1]
        [--decision-source index|chain] [--no-ceiling] [--json]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

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
from bench.ceiling import ceiling
from ledger.client import open_checked


def _phase(
    url: str, requests: list[list[bytes]], seconds: float, pid: int | None
) -> tuple[LoadResult, float | None]:
    before = process_tree_cpu(pid)
    result = run_load(url, requests, seconds=seconds)
    after = process_tree_cpu(pid)
    server = after - before if before is not None and after is not None else None
    return result, server


def _against(
    bare: LoadResult | None, status: int, rate: float, name: str
) -> list[tuple[str, Any, str]]:
    """The ceiling of a phase (the bare app on the same requests) and the figure's ratio."""
    if bare is None:
        return []
    top = bare.rate(status)
    ratio = f"{100 * rate / top:.1f} %" if top else "n/a"
    return [
        (f"{name}_ceiling_per_s", round(top, 1), "bare uvicorn, same body size and load"),
        (f"{name}_ratio_to_ceiling", ratio, ""),
        (f"{name}_ceiling_p99_ms", round(percentile(bare.latencies_ms, 99), 2), ""),
    ]


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=16, help="concurrent connections (default 16)")
    p.add_argument("--seconds", type=float, default=10.0, help="per phase (default 10)")
    p.add_argument(
        "--workers", type=int, default=1, help="gateway worker processes when starting a stack"
    )
    p.add_argument(
        "--decision-source",
        choices=("index", "chain"),
        default="index",
        help="the gateway's decision_source when starting a stack (default index)",
    )
    p.add_argument("--no-ceiling", action="store_true", help="skip the bare-uvicorn ceiling phases")
    args = p.parse_args(argv)
    env = dict(AUDITOR_ENV)
    env["CONSENT_DECISION_SOURCE"] = args.decision_source
    if args.workers > 1:
        env["UVICORN_WORKERS"] = str(args.workers)
    with local_stack(args.url, gateway_env=env) as stack:
        w = world(stack)
        try:
            patient = new_account()
            data = os.urandom(RECORD_BYTES)
            record_id = w.upload(patient.address, data)
            patient_session = w.session(patient)
            grantees = [new_account() for _ in range(args.clients)]
            for grantee in grantees:
                w.grant(patient, patient_session, grantee.address, record_id)
            sessions = [w.session(g) for g in grantees]
            strangers = [w.session(new_account()) for _ in range(args.clients)]
            # One fetch opened and checked end to end before timing anything.
            envelope = sessions[0].fetch_envelope(record_id, "treatment")
            onchain = w.registry.record_of(bytes.fromhex(record_id[2:])).content_digest
            assert open_checked(envelope, grantees[0], expected_digest=onchain) == data
            path = f"/v1/records/{record_id}?purpose=treatment"
            allowed_req = [[get_request(stack.gateway_url, path, s.token)] for s in sessions]
            denied_req = [[get_request(stack.gateway_url, path, s.token)] for s in strangers]
            pid = gateway_pid(stack)
            allowed, allowed_cpu = _phase(stack.gateway_url, allowed_req, args.seconds, pid)
            denied, denied_cpu = _phase(stack.gateway_url, denied_req, args.seconds, pid)
        finally:
            w.close()
    unexpected = {
        "allowed_phase": {k: v for k, v in allowed.statuses.items() if k != 200},
        "denied_phase": {k: v for k, v in denied.statuses.items() if k != 403},
    }
    a_p50, a_p99 = percentile(allowed.latencies_ms, 50), percentile(allowed.latencies_ms, 99)
    d_p50, d_p99 = percentile(denied.latencies_ms, 50), percentile(denied.latencies_ms, 99)
    a_bytes = allowed.bytes_received // max(1, allowed.statuses.get(200, 1))
    d_bytes = denied.bytes_received // max(1, denied.statuses.get(403, 1))
    a_ceiling = d_ceiling = None
    if not args.no_ceiling:
        a_ceiling = ceiling(allowed_req, body_bytes=a_bytes, status=200, seconds=args.seconds)
        d_ceiling = ceiling(denied_req, body_bytes=d_bytes, status=403, seconds=args.seconds)
    rows: list[tuple[str, Any, str]] = [
        ("allowed_fetches_per_s", round(allowed.rate(200), 1), ">= 5 % of ceiling"),
        *_against(a_ceiling, 200, allowed.rate(200), "allowed"),
        ("allowed_p50_ms", round(a_p50, 2), ""),
        ("allowed_p99_ms", round(a_p99, 2), "< 25"),
        ("denied_decisions_per_s", round(denied.rate(403), 1), ">= 17 % of ceiling"),
        *_against(d_ceiling, 403, denied.rate(403), "denied"),
        ("denied_p50_ms", round(d_p50, 2), ""),
        ("denied_p99_ms", round(d_p99, 2), "< 25"),
        ("clients", args.clients, ""),
        ("record_bytes", RECORD_BYTES, ""),
        ("decision_source", args.decision_source if args.url is None else "as deployed", ""),
    ]
    extra = {
        "response_bytes_denied": d_bytes,
        "seconds_per_phase": args.seconds,
        "workers": args.workers if args.url is None else None,
        "unexpected_statuses": unexpected,
        "allowed_phase_cpu": cpu_share(allowed.client_cpu_s, allowed_cpu, args.seconds),
        "denied_phase_cpu": cpu_share(denied.client_cpu_s, denied_cpu, args.seconds),
        "response_bytes_allowed": allowed.bytes_received // max(1, allowed.statuses.get(200, 1)),
    }
    a_cpu, d_cpu = extra["allowed_phase_cpu"], extra["denied_phase_cpu"]
    if not args.json:
        rows += [
            (
                "client CPU, allowed phase (cores)",
                str(a_cpu["client_cpu_cores"]),
                "",
            ),
            (
                "gateway CPU, allowed phase (cores)",
                str(a_cpu.get("gateway_cpu_cores", "n/a")),
                "",
            ),
            (
                "client CPU, denied phase (cores)",
                str(d_cpu["client_cpu_cores"]),
                "",
            ),
            (
                "gateway CPU, denied phase (cores)",
                str(d_cpu.get("gateway_cpu_cores", "n/a")),
                "",
            ),
            ("unexpected statuses", str(unexpected), "none"),
        ]
    emit("fetch", rows, as_json=args.json, extra=extra)
    return 0 if not any(unexpected.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
