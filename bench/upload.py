"""Benchmark: uploads/s of 64 KiB records end to end, including the on-chain registration.

The centre signs ``--uploads`` EIP-712 attestations up front (client-side work, not timed),
then ``--clients`` threads POST them: each answer is a 201 only after the gateway encrypted
the file, pinned the ciphertext on IPFS and got the ``registerRecord`` receipt. Prints
uploads/s and p50/p99 latency. Goal: >= 100 uploads/s.

    .venv/bin/python bench/upload.py [--uploads 500] [--clients 16] [--json]
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench._common import emit, local_stack, parser, percentile
from bench._gateway import (
    AUDITOR_ENV,
    DEV,
    RECORD_BYTES,
    cpu_share,
    gateway_pid,
    new_account,
    process_tree_cpu,
    world,
)
from ledger.protocol.consent_types import category_id
from ledger.protocol.eip712 import RecordAttestation, sign
from ledger.protocol.envelope import new_salt, salted_digest


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--uploads", type=int, default=500)
    p.add_argument("--clients", type=int, default=16)
    args = p.parse_args(argv)
    with local_stack(args.url, gateway_env=dict(AUDITOR_ENV)) as stack:
        w = world(stack)
        try:
            centre = DEV["centre"]
            patients = [new_account().address for _ in range(8)]
            category = category_id("laboratory")
            jobs: list[tuple[dict[str, str], bytes]] = []
            now = int(time.time())
            for i in range(args.uploads):
                data = os.urandom(RECORD_BYTES)
                salt = new_salt()
                att = RecordAttestation(
                    patient=patients[i % len(patients)],  # type: ignore[arg-type]
                    category=category,
                    content_digest=salted_digest(salt, data),
                    issued_at=now,
                )
                form = {
                    "patient": att.patient,
                    "category": "0x" + category.hex(),
                    "issued_at": str(now),
                    "signature": "0x" + sign(centre, w.domain, att).hex(),
                    "salt": "0x" + salt.hex(),
                }
                jobs.append((form, data))
            headers = {"Authorization": f"Bearer {w.centre.token}"}
            latencies: list[float] = []
            statuses: dict[int, int] = {}
            lock = threading.Lock()
            cursor = iter(range(len(jobs)))

            def worker() -> None:
                with httpx.Client(base_url=stack.gateway_url, timeout=120) as http:
                    while True:
                        with lock:
                            i = next(cursor, None)
                        if i is None:
                            return
                        form, data = jobs[i]
                        start = time.perf_counter()
                        r = http.post(
                            "/v1/records",
                            headers=headers,
                            data=form,
                            files={"file": ("r.bin", data, "application/octet-stream")},
                        )
                        elapsed = (time.perf_counter() - start) * 1000
                        with lock:
                            latencies.append(elapsed)
                            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

            pid = gateway_pid(stack)
            cpu0, own0 = process_tree_cpu(pid), time.process_time()
            t0 = time.perf_counter()
            threads = [threading.Thread(target=worker) for _ in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            seconds = time.perf_counter() - t0
            cpu1, own1 = process_tree_cpu(pid), time.process_time()
        finally:
            w.close()
    created = statuses.get(201, 0)
    rows: list[tuple[str, Any, str]] = [
        ("uploads_per_s", round(created / seconds, 1), ">= 100"),
        ("upload_p50_ms", round(percentile(latencies, 50), 1), ""),
        ("upload_p99_ms", round(percentile(latencies, 99), 1), ""),
        ("uploads", created, str(args.uploads)),
        ("clients", args.clients, ""),
    ]
    server = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    extra = {
        "statuses": {str(k): v for k, v in statuses.items()},
        "seconds": round(seconds, 2),
        "cpu": cpu_share(own1 - own0, server, seconds),
    }
    emit("upload", rows, as_json=args.json, extra=extra)
    return 0 if created == args.uploads else 1


if __name__ == "__main__":
    raise SystemExit(main())
