"""Soak: a longer mixed load (fetches allowed and denied, grants and revokes, uploads) for
``--seconds``, then the auditor exports the gateway's access log and the audit must verify.

Threads, all bounded by the deadline: ``--fetchers`` grantees fetch records in a loop (some
consents get revoked and re-granted under them, so both decisions occur), one patient loop
grants / revokes, one centre loop uploads 64 KiB records. Every status other than 200 / 403
(or 201 for uploads) is counted as an error. At the end the latest entries are anchored (the
gateway's own background anchoring; the run waits for a checkpoint covering the log) and
``consent audit run --access-log <gateway>/v1/access-log/export --as auditor --json`` must exit 0
with every allowed read covered by consent at its block.

    .venv/bin/python bench/soak.py [--seconds 120] [--fetchers 8] [--json]
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench._common import emit, local_stack, parser, percentile
from bench._gateway import AUDITOR_ENV, DEV, RECORD_BYTES, new_account, world


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--fetchers", type=int, default=8)
    p.add_argument("--records", type=int, default=4)
    args = p.parse_args(argv)
    env = {**AUDITOR_ENV, "CONSENT_CHECKPOINT_INTERVAL_S": "2"}
    counts: dict[str, int] = {}
    latencies: list[float] = []
    lock = threading.Lock()

    def count(key: str, n: int = 1) -> None:
        with lock:
            counts[key] = counts.get(key, 0) + n

    with local_stack(args.url, gateway_env=env) as stack:
        w = world(stack)
        try:
            patient = new_account()
            patient_session = w.session(patient)
            records = [
                w.upload(patient.address, os.urandom(RECORD_BYTES)) for _ in range(args.records)
            ]
            grantees = [new_account() for _ in range(args.fetchers)]
            tokens = [w.session(g).token for g in grantees]
            granted: set[tuple[int, str]] = set()
            for i, _g in enumerate(grantees):
                rec = records[i % len(records)]
                w.grant(patient, patient_session, grantees[i].address, rec)
                granted.add((i, rec))
            deadline = time.monotonic() + args.seconds
            relay_lock = threading.Lock()  # one patient: its EIP-712 nonces are sequential

            def fetcher(i: int) -> None:
                rng = random.Random(i)
                headers = {"Authorization": f"Bearer {tokens[i]}"}
                with httpx.Client(base_url=stack.gateway_url, timeout=60) as http:
                    while time.monotonic() < deadline:
                        rec = rng.choice(records)
                        start = time.perf_counter()
                        r = http.get(f"/v1/records/{rec}?purpose=treatment", headers=headers)
                        with lock:
                            latencies.append((time.perf_counter() - start) * 1000)
                        count(
                            {200: "fetch_allowed", 403: "fetch_denied"}.get(r.status_code, "error")
                        )

            def consenter() -> None:
                rng = random.Random(99)
                while time.monotonic() < deadline:
                    i = rng.randrange(len(grantees))
                    rec = records[i % len(records)]
                    with relay_lock:
                        try:
                            if (i, rec) in granted:
                                w.revoke(patient, patient_session, grantees[i].address, rec)
                                granted.discard((i, rec))
                                count("revokes")
                            else:
                                w.grant(patient, patient_session, grantees[i].address, rec)
                                granted.add((i, rec))
                                count("grants")
                        except Exception:
                            count("error")
                    time.sleep(0.05)

            def uploader() -> None:
                while time.monotonic() < deadline:
                    try:
                        w.upload(new_account().address, os.urandom(RECORD_BYTES))
                        count("uploads")
                    except Exception:
                        count("error")
                    time.sleep(0.1)

            threads = [threading.Thread(target=fetcher, args=(i,)) for i in range(args.fetchers)]
            threads += [threading.Thread(target=consenter), threading.Thread(target=uploader)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            seconds = time.perf_counter() - t0

            # Wait for the background anchoring to cover the whole log, then audit it.
            auditor = w.gateway.login(DEV["auditor"])
            export_url = f"{stack.gateway_url}/v1/access-log/export"
            with httpx.Client(timeout=120) as http:
                auth = {"Authorization": f"Bearer {auditor.token}"}
                wait_until = time.monotonic() + 60
                while True:
                    doc = http.get(export_url, headers=auth).json()
                    anchored = max((c["tree_size"] for c in doc["checkpoints"]), default=0)
                    if anchored >= len(doc["entries"]) or time.monotonic() > wait_until:
                        break
                    time.sleep(0.5)
            cmd = [
                sys.executable, "-m", "ledger.cli", "audit", "run",
                "--rpc", stack.chain_url,
                "--access-log", export_url,
                "--as", "auditor",
                "--json",
            ]  # fmt: skip
            if stack.home is not None:
                cmd += ["--home", str(stack.home)]
            audit_env = {**os.environ, "CONSENT_GATEWAY_URL": stack.gateway_url}
            audit = subprocess.run(
                cmd, capture_output=True, text=True, timeout=600, env=audit_env, check=False
            )
        finally:
            w.close()
    try:
        report: dict[str, Any] = json.loads(audit.stdout)
    except ValueError:
        report = {"stdout": audit.stdout[-2000:], "stderr": audit.stderr[-2000:]}
    findings = report.get("findings", [])
    rows: list[tuple[str, Any, str]] = [
        ("seconds", round(seconds, 1), f"{args.seconds:g}"),
        ("fetch_allowed", counts.get("fetch_allowed", 0), ""),
        ("fetch_denied", counts.get("fetch_denied", 0), ""),
        ("grants", counts.get("grants", 0), ""),
        ("revokes", counts.get("revokes", 0), ""),
        ("uploads", counts.get("uploads", 0), ""),
        ("errors", counts.get("error", 0), "0"),
        ("fetch_p99_ms", round(percentile(latencies, 99), 1), ""),
        ("log_entries", len(doc["entries"]), ""),
        ("anchored_size", anchored, "= log_entries"),
        ("audit_exit_code", audit.returncode, "0"),
    ]
    extra = {
        "audit_findings": [
            {k: f.get(k) for k in ("kind", "severity", "message")} for f in findings
        ][:20]
        if isinstance(findings, list)
        else findings,
        **({"audit_output": report} if "stdout" in report else {}),
    }
    emit("soak", rows, as_json=args.json, extra=extra)
    return 0 if audit.returncode == 0 and counts.get("error", 0) == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
