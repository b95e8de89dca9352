"""The API contract run: the schemathesis command line against a running gateway.

Shared by ``tests/test_api_schemathesis.py`` (three seeds, a small budget) and
``bench/api_contract.py`` (``make api-contract``: more seeds, a larger budget). The run reads
``schemathesis.toml`` (every check and phase, the hooks of ``tests.helpers.schemathesis_hooks``)
and the schema the gateway serves.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
PHASES = "examples,coverage,fuzzing,stateful"


@dataclass(frozen=True)
class ContractRun:
    """One seed's run: its exit status, output, summary figures and the statuses per operation
    that the hooks saw."""

    seed: int
    returncode: int
    output: str
    figures: dict[str, int]
    statuses: dict[str, dict[str, int]]
    real_bodies: dict[str, int]


def command(base_url: str, *, seed: int, max_examples: int) -> list[str]:
    """The schemathesis command line of one seed."""
    return [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(ROOT / "schemathesis.toml"),
        "run",
        f"{base_url.rstrip('/')}/openapi.json",
        "--checks",
        "all",
        "--phases",
        PHASES,
        "--seed",
        str(seed),
        "--max-examples",
        str(max_examples),
        "--workers",
        "1",
        "--no-color",
    ]


def run(
    base_url: str,
    *,
    chain_url: str,
    key: str,
    seed: int,
    max_examples: int,
    workdir: Path,
    timeout_s: float = 600,
) -> ContractRun:
    """Run schemathesis once, signed in as the account of ``key`` (a centre and auditor)."""
    status_file = workdir / f"statuses-{seed}.json"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CONSENT_API_URL": base_url,
        "CONSENT_API_CHAIN_URL": chain_url,
        "CONSENT_API_KEY": key,
        "CONSENT_API_STATUS_FILE": str(status_file),
    }
    done = subprocess.run(
        command(base_url, seed=seed, max_examples=max_examples),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    output = done.stdout + done.stderr
    seen: dict[str, Any] = json.loads(status_file.read_text()) if status_file.exists() else {}
    return ContractRun(
        seed=seed,
        returncode=done.returncode,
        output=output,
        figures=summary_figures(output),
        statuses=seen.get("statuses", {}),
        real_bodies=seen.get("real_bodies", {}),
    )


def summary_figures(output: str) -> dict[str, int]:
    """The figures of schemathesis' summary: operations selected and tested, test cases
    generated and passed, failures."""
    figures = {"failures": 0}
    patterns = {
        "operations_selected": r"Selected: (\d+)/\d+",
        "operations_tested": r"Tested: (\d+)",
        "test_cases": r"(\d+) generated",
        "passed": r"generated, (\d+) passed",
        "failures": r"(\d+) unique failures?",
    }
    for name, pattern in patterns.items():
        m = re.search(pattern, output)
        if m:
            figures[name] = int(m.group(1))
    return figures


def only_auth_refusals(run: ContractRun, operations: set[str]) -> list[str]:
    """The documented operations that answered nothing but 401/403 (or were never called)."""
    return sorted(op for op in operations if set(run.statuses.get(op, {})) <= {"401", "403"})
