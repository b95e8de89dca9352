"""Benchmark: the portal's page weight and first-load time in real Chromium.

Page weight: every file a first visit downloads (``index.html``, the script bundle, the style
sheet, the icon; the lazily loaded chunks listed apart), raw and gzip -9, from
``gateway/portal/dist`` (``make install`` builds it). First load: ``--loads`` cold loads (a new
browser context each, so no cache) of ``/portal/`` from the gateway until the sign-in button is
on screen (the portal has read ``/portal/config.json`` and rendered), p50 and p90, on loopback
and under a throttled phone network (``--rtt-ms`` round trip, ``--kbps`` down); the ceiling is
the same measure for the smallest file the same server serves (``/portal/favicon.svg``).

    .venv/bin/python bench/portal.py [--loads 10] [--rtt-ms 150] [--kbps 1600] [--json]
"""

from __future__ import annotations

import gzip
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import emit, local_stack, parser, percentile

DIST = Path(__file__).resolve().parent.parent / "gateway" / "portal" / "dist"
CHROMIUM = os.environ.get("CONSENT_CHROMIUM", "/usr/bin/chromium")


def page_weight() -> dict[str, Any]:
    html = (DIST / "index.html").read_text(encoding="utf-8")
    first = [
        "index.html",
        *(
            p.lstrip("/").removeprefix("portal/")
            for p in re.findall(r'(?:src|href)="(/portal/[^"]+)"', html)
        ),
    ]
    raw = gz = 0
    for name in first:
        data = (DIST / name).read_bytes()
        raw += len(data)
        gz += len(gzip.compress(data, 9))
    lazy = [p for p in (DIST / "assets").iterdir() if p.name not in {Path(n).name for n in first}]
    return {
        "first_visit_files": len(first),
        "first_visit_bytes": raw,
        "first_visit_gzip_bytes": gz,
        "lazy_chunks_bytes": sum(p.stat().st_size for p in lazy),
    }


def cold_loads(
    browser: Any, url: str, *, loads: int, ready: str | None, network: dict[str, Any] | None
) -> list[float]:
    times: list[float] = []
    for _ in range(loads):
        context = browser.new_context()
        page = context.new_page()
        if network is not None:
            cdp = context.new_cdp_session(page)
            cdp.send("Network.enable")
            cdp.send("Network.emulateNetworkConditions", network)
        start = time.perf_counter()
        page.goto(url, wait_until="commit")
        if ready is not None:
            page.wait_for_selector(ready, state="visible", timeout=60_000)
        else:
            page.wait_for_load_state("load")
        times.append((time.perf_counter() - start) * 1000)
        context.close()
    return times


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--loads", type=int, default=10)
    p.add_argument("--rtt-ms", type=float, default=150.0)
    p.add_argument("--kbps", type=float, default=1600.0, help="download kbit/s when throttled")
    args = p.parse_args(argv)
    if not (DIST / "index.html").is_file():
        print("the portal is not built: run `make install`", file=sys.stderr)
        return 2
    weight = page_weight()
    from playwright.sync_api import sync_playwright

    phone = {
        "offline": False,
        "latency": args.rtt_ms,
        "downloadThroughput": args.kbps * 1000 / 8,
        "uploadThroughput": 750 * 1000 / 8,
    }
    results: dict[str, list[float]] = {}
    with local_stack(args.url) as stack, sync_playwright() as pw:
        launch = ["--no-sandbox"] if os.geteuid() == 0 else []
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=launch)
        try:
            portal = f"{stack.gateway_url}/portal/"
            icon = f"{stack.gateway_url}/portal/favicon.svg"
            ready = "#sign-in"
            cold_loads(browser, portal, loads=1, ready=ready, network=None)  # warm the server
            results["loopback"] = cold_loads(
                browser, portal, loads=args.loads, ready=ready, network=None
            )
            results["loopback_floor"] = cold_loads(
                browser, icon, loads=args.loads, ready=None, network=None
            )
            results["phone"] = cold_loads(
                browser, portal, loads=args.loads, ready=ready, network=phone
            )
            results["phone_floor"] = cold_loads(
                browser, icon, loads=args.loads, ready=None, network=phone
            )
        finally:
            browser.close()
    rows: list[tuple[str, Any, str]] = [
        ("first visit: files", weight["first_visit_files"], ""),
        ("first visit: bytes", weight["first_visit_bytes"], ""),
        ("first visit: gzip bytes", weight["first_visit_gzip_bytes"], "< 150,000"),
        ("lazy chunks: bytes", weight["lazy_chunks_bytes"], ""),
    ]
    for name, label in (
        ("loopback", "loopback"),
        ("phone", f"phone ({args.rtt_ms:.0f} ms RTT, {args.kbps:.0f} kbit/s)"),
    ):
        load, floor = results[name], results[f"{name}_floor"]
        goal = "< 2,000" if name == "phone" else "< 1,000"
        rows.append((f"first load to sign-in, {label}: p50 ms", percentile(load, 50), goal))
        rows.append((f"first load to sign-in, {label}: p90 ms", percentile(load, 90), ""))
        rows.append((f"ceiling (favicon), {label}: p50 ms", percentile(floor, 50), ""))
    emit(
        "portal page weight and first load",
        rows,
        as_json=args.json,
        extra={
            "loads": args.loads,
            "note": "uncompressed over the wire: the gateway serves no gzip",
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
