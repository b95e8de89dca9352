"""Run every benchmark in ``bench/`` in sequence; with ``--json`` one object collecting all.

Each benchmark runs as its own process with ``--json`` (so each starts and stops its own stack,
or uses ``--url``: the gateway benchmarks get the gateway URL; ``gas.py`` and ``replay.py``
always start their own throw-away chain node). Exit code: 0 when every benchmark exited 0.

    .venv/bin/python bench/all.py [--url URL] [--quick] [--json]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench._common import emit, parser  # noqa: E402

#: (script, takes a gateway --url, extra arguments in --quick mode)
BENCHES: list[tuple[str, bool, list[str]]] = [
    ("gas.py", False, []),
    ("replay.py", False, ["--events", "20000", "--runs", "1"]),
    ("fetch.py", True, ["--seconds", "5"]),
    ("nonce_flood.py", True, ["--seconds", "5"]),
    ("revoke.py", True, ["--revokes", "50"]),
    ("upload.py", True, ["--uploads", "200"]),
    ("soak.py", True, ["--seconds", "20"]),
    ("federation.py", False, ["--uploads", "40", "--seconds", "5"]),
    ("custody.py", False, []),
    ("index.py", False, []),
]

#: The figures shown per benchmark in the table, with their goals.
HEADLINES: dict[str, list[tuple[str, str]]] = {
    "replay": [("events_per_second", ">= 20,000")],
    "fetch": [
        ("allowed_fetches_per_s", ">= 500"),
        ("denied_decisions_per_s", ">= 2,000"),
        ("allowed_p99_ms", "< 50"),
    ],
    "nonce_flood": [("p99_ratio", "< 5 (README)"), ("flood_nonces_issued", "<= 60 + 2/s")],
    "revoke": [("stale_allows", "0"), ("revoke_to_denied_p99_ms", "")],
    "upload": [("uploads_per_s", ">= 100")],
    "soak": [("errors", "0"), ("audit_exit_code", "0")],
    "index": [
        ("catch_up_events_per_s", ">= 50,000"),
        ("index_to_raw_ratio", ">= 0.5"),
        ("state_bytes_per_grant", "stated"),
    ],
    "federation": [
        ("federation_2of3_fetches_per_s", "ratio to single in the same run"),
        ("federation_2of3_uploads_per_s", "ratio to single in the same run"),
    ],
}


_GAS_BUDGETS = {
    "grant (new scope": 55_000,
    "grant (overwrite)": 35_000,
    "revoke": 32_000,
    "grantBySig": 70_000,
    "registerRecord": 150_000,
    "anchorCheckpoint": 60_000,
    "hasConsent": 15_000,
}


def _over_budget(operation: str, gas: int) -> bool:
    for name, budget in _GAS_BUDGETS.items():
        # "revoke" must not match "revokeBySig" / "revokeFor": a name, then nothing or " (...)"
        if (
            operation == name
            or operation.startswith((name + " (", name + ":"))
            or (name.endswith("scope") and operation.startswith(name))
        ):
            return gas > budget
    return False


def _parse(stdout: str) -> dict[str, Any] | None:
    text = stdout.strip()
    try:
        doc = json.loads(text)
    except ValueError:
        lines = [line for line in text.splitlines() if line.startswith("{")]
        if not lines:
            return None
        try:
            doc = json.loads(lines[-1])
        except ValueError:
            return None
    return doc if isinstance(doc, dict) else {"result": doc}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="shorter runs of every benchmark")
    p.add_argument("--timeout", type=float, default=1800.0, help="per benchmark, seconds")
    args = p.parse_args(argv)
    results: dict[str, Any] = {}
    rows: list[tuple[str, Any, str]] = []
    failed = 0
    for script, takes_url, quick in BENCHES:
        if not (HERE / script).is_file():
            continue
        cmd = [sys.executable, str(HERE / script), "--json"]
        if takes_url and args.url:
            cmd += ["--url", args.url]
        if args.quick:
            cmd += quick
        if not args.json:
            print(f"running {' '.join(cmd[1:])} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=args.timeout, check=False
            )
            code, out, err = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired:
            code, out, err = -1, "", f"timed out after {args.timeout:.0f} s"
        seconds = round(time.perf_counter() - start, 1)
        doc = _parse(out)
        name = script.removesuffix(".py")
        results[name] = {
            "exit_code": code,
            "seconds": seconds,
            "result": doc,
            **({"stderr_tail": err.strip().splitlines()[-5:]} if code != 0 else {}),
        }
        failed += code != 0
        rows.append((f"{name}: exit code ({seconds} s)", code, "0"))
        for key, goal in HEADLINES.get(name, []):
            if doc is not None and key in doc:
                rows.append((f"{name}: {key}", doc[key], goal))
        if name == "gas" and doc is not None:
            over = [op for op, gas in doc.items() if isinstance(gas, int) and _over_budget(op, gas)]
            rows.append(("gas: operations over budget", len(over), "see bench/gas.py"))
    if args.json:
        print(json.dumps({"benchmark": "all", "failed": failed, "results": results}))
    else:
        emit("all benchmarks", rows, as_json=False, extra={})
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
