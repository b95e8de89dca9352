"""Benchmark: from a revoke's receipt to the first denied fetch, and stale allows (goal 0).

Setup: a centre uploads a 64 KiB record; a patient and a grantee sign in. Each of ``--revokes``
rounds: the patient grants the grantee consent (signed, relayed, mined), one fetch confirms a
200, then background fetchers keep fetching while the patient's signed revoke is relayed. The
moment the relay answers with the mined receipt is ``t0``; the grantee fetches at once and the
time until that fetch's answer is the revoke-to-denial latency (p50/p99). Every fetch *sent*
after ``t0`` by anyone that came back 200 is a stale allow (the goal is 0: the very next request
after a revoke's receipt is denied; DESIGN.md, threat model).

    .venv/bin/python bench/revoke.py [--revokes 200] [--fetchers 4] [--json]
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
from bench._gateway import AUDITOR_ENV, RECORD_BYTES, new_account, world


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--revokes", type=int, default=200)
    p.add_argument("--fetchers", type=int, default=4, help="background fetch loops per round")
    args = p.parse_args(argv)
    latencies: list[float] = []
    stale = 0
    first_not_denied = 0
    background = 0
    with local_stack(args.url, gateway_env=dict(AUDITOR_ENV)) as stack:
        w = world(stack)
        try:
            patient, grantee = new_account(), new_account()
            record_id = w.upload(patient.address, os.urandom(RECORD_BYTES))
            patient_session, grantee_session = w.session(patient), w.session(grantee)
            url = f"{stack.gateway_url}/v1/records/{record_id}?purpose=treatment"
            headers = {"Authorization": f"Bearer {grantee_session.token}"}
            lock = threading.Lock()
            main_http = httpx.Client(timeout=30)
            for _ in range(args.revokes):
                w.grant(patient, patient_session, grantee.address, record_id)
                assert main_http.get(url, headers=headers).status_code == 200
                receipt_at = [float("inf")]
                stop = threading.Event()
                observed: list[tuple[float, int]] = []

                def fetch_loop(
                    stop: threading.Event = stop, observed: list[tuple[float, int]] = observed
                ) -> None:
                    with httpx.Client(timeout=30) as http:
                        while not stop.is_set():
                            sent = time.perf_counter()
                            status = http.get(url, headers=headers).status_code
                            with lock:
                                observed.append((sent, status))

                threads = [threading.Thread(target=fetch_loop) for _ in range(args.fetchers)]
                for t in threads:
                    t.start()
                time.sleep(0.01)
                w.revoke(patient, patient_session, grantee.address, record_id)
                receipt_at[0] = time.perf_counter()
                status = main_http.get(url, headers=headers).status_code
                latencies.append((time.perf_counter() - receipt_at[0]) * 1000)
                if status != 403:
                    first_not_denied += 1
                time.sleep(0.02)  # let the background loops cross the receipt
                stop.set()
                for t in threads:
                    t.join()
                background += len(observed)
                stale += sum(1 for sent, st in observed if sent >= receipt_at[0] and st == 200)
            main_http.close()
        finally:
            w.close()
    rows: list[tuple[str, Any, str]] = [
        ("revokes", args.revokes, "200"),
        ("revoke_to_denied_p50_ms", round(percentile(latencies, 50), 2), ""),
        ("revoke_to_denied_p99_ms", round(percentile(latencies, 99), 2), ""),
        ("first_fetch_not_denied", first_not_denied, "0"),
        ("stale_allows", stale, "0"),
        ("background_fetches", background, ""),
    ]
    emit("revoke", rows, as_json=args.json, extra={"fetchers": args.fetchers})
    return 0 if stale == 0 and first_not_denied == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
