"""Benchmark: from a revoke's receipt to the first denied fetch, and stale allows (goal 0).

Setup: a centre uploads a 64 KiB record; a patient and a grantee sign in. Each of ``--revokes``
rounds: the patient grants the grantee consent (signed, relayed, mined), one fetch confirms a
200, then background fetchers keep fetching while the patient's signed revoke is relayed. The
moment the relay answers with the mined receipt is ``t0``; the grantee fetches at once and the
time until that fetch's answer is the revoke-to-denial latency (p50/p99). Every fetch *sent*
after ``t0`` by anyone that came back 200 is a stale allow (the goal is 0: the very next request
after a revoke's receipt is denied; DESIGN.md, threat model).

With ``--federation`` the stack is a 2-of-3 federation: the record is split on the centre's
side, the background loops ask all three gateways for the grantee's share in turn, the check
after the receipt asks every gateway, and a stale allow is a share released by any gateway
for a request sent after the receipt.

    .venv/bin/python bench/revoke.py [--revokes 200] [--fetchers 4] [--federation] [--json]
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
from ledger.client import Gateway
from ledger.federation import upload_sealed
from ledger.protocol.consent_types import category_id


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--revokes", type=int, default=200)
    p.add_argument("--fetchers", type=int, default=4, help="background fetch loops per round")
    p.add_argument("--federation", action="store_true", help="a 2-of-3 federation (share requests)")
    args = p.parse_args(argv)
    latencies: list[float] = []
    stale = 0
    first_not_denied = 0
    background = 0
    fed = (3, 2) if args.federation else (1, 0)
    with local_stack(
        args.url, gateway_env=dict(AUDITOR_ENV), gateways=fed[0], threshold=fed[1]
    ) as stack:
        w = world(stack)
        try:
            patient, grantee = new_account(), new_account()
            patient_session = w.session(patient)
            if args.federation:
                record_id = upload_sealed(
                    w.centre,
                    os.urandom(RECORD_BYTES),
                    registry=w.registry,
                    patient=patient.address,
                    category=category_id("laboratory"),
                ).record.record_id
                # (url, headers) of the grantee's share request at each member
                targets = []
                for member in w.registry.federation().members:
                    with Gateway(member.url) as gw:
                        token = gw.login(grantee).token
                    targets.append(
                        (
                            f"{member.url}/v1/custody/records/{record_id}/share?purpose=treatment",
                            {"Authorization": f"Bearer {token}"},
                        )
                    )
            else:
                record_id = w.upload(patient.address, os.urandom(RECORD_BYTES))
                token = w.session(grantee).token
                targets = [
                    (
                        f"{stack.gateway_url}/v1/records/{record_id}?purpose=treatment",
                        {"Authorization": f"Bearer {token}"},
                    )
                ]
            lock = threading.Lock()
            main_http = httpx.Client(timeout=30)
            for _ in range(args.revokes):
                w.grant(patient, patient_session, grantee.address, record_id)
                assert all(main_http.get(u, headers=h).status_code == 200 for u, h in targets)
                receipt_at = [float("inf")]
                stop = threading.Event()
                observed: list[tuple[float, int]] = []

                def fetch_loop(
                    stop: threading.Event = stop, observed: list[tuple[float, int]] = observed
                ) -> None:
                    with httpx.Client(timeout=30) as http:
                        turn = 0
                        while not stop.is_set():
                            target_url, target_headers = targets[turn % len(targets)]
                            turn += 1
                            sent = time.perf_counter()
                            status = http.get(target_url, headers=target_headers).status_code
                            with lock:
                                observed.append((sent, status))

                threads = [threading.Thread(target=fetch_loop) for _ in range(args.fetchers)]
                for t in threads:
                    t.start()
                time.sleep(0.01)
                w.revoke(patient, patient_session, grantee.address, record_id)
                receipt_at[0] = time.perf_counter()
                statuses = [main_http.get(u, headers=h).status_code for u, h in targets]
                latencies.append((time.perf_counter() - receipt_at[0]) * 1000)
                if any(status != 403 for status in statuses):  # every gateway must deny
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
    emit(
        "revoke",
        rows,
        as_json=args.json,
        extra={"fetchers": args.fetchers, "gateways": len(targets), "federation": args.federation},
    )
    return 0 if stale == 0 and first_not_denied == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
