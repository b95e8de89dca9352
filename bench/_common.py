"""Shared plumbing for the benchmarks: start a local stack (or use one), print a table or JSON.

Every benchmark prints a table of figures for people and, with ``--json``, one JSON object for
scripts. Without ``--url`` it starts its own chain node, IPFS node and gateway on free loopback
ports in a throw-away state directory and stops them afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger.devstack.services import stack_ports
from ledger.devstack.stack import StackConfig, StackInfo, start_stack
from ledger.paths import state_paths

#: The load generators sign in hundreds of accounts from one loopback address: the per-address
#: limit on nonces and logins is lifted for them (``nonce_flood.py`` measures it in force).
BENCH_GATEWAY_ENV = {
    "CONSENT_AUTH_RATE_PER_MINUTE": "1000000",
    "CONSENT_AUTH_RATE_BURST": "1000000",
}


@dataclass
class Stack:
    gateway_url: str
    chain_url: str
    ipfs_url: str
    registry: str
    home: Path | None
    info: StackInfo | None


@contextlib.contextmanager
def local_stack(
    url: str | None,
    *,
    quiet: bool = True,
    gateway_env: dict[str, str] | None = None,
    gateways: int = 1,
    threshold: int = 0,
) -> Iterator[Stack]:
    """The stack at ``url`` (chain and IPFS URLs read from its /healthz), or a fresh one
    (``gateway_env``: extra ``CONSENT_*`` / ``UVICORN_*`` variables for its gateways;
    ``gateways`` / ``threshold``: a federation, as ``consent up --gateways --threshold``)."""
    if url is not None:
        import httpx

        health = httpx.get(f"{url.rstrip('/')}/healthz", timeout=5).json()
        yield Stack(
            gateway_url=url.rstrip("/"),
            chain_url=health.get("chain_url", "http://127.0.0.1:8545"),
            ipfs_url=health.get("ipfs_url", "http://127.0.0.1:5001"),
            registry=health["contract"],
            home=None,
            info=None,
        )
        return
    with tempfile.TemporaryDirectory(prefix="consent-bench-") as d:
        chain_port, ipfs_port, first = stack_ports(gateways)
        config = StackConfig(
            paths=state_paths(Path(d)),
            chain_port=chain_port,
            ipfs_port=ipfs_port,
            gateway_port=first,
            gateways=gateways,
            threshold=threshold,
            gateway_env={**BENCH_GATEWAY_ENV, **(gateway_env or {})},
        )
        info = start_stack(config, say=(lambda _m: None) if quiet else print)
        try:
            yield Stack(
                gateway_url=info.gateway_url,
                chain_url=info.anvil.url,
                ipfs_url=info.ipfs.url,
                registry=info.deployment.address,
                home=Path(d),
                info=info,
            )
        finally:
            info.stop()


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument(
        "--url", default=None, help="use the running gateway at URL instead of starting one"
    )
    return p


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def machine() -> dict[str, Any]:
    import os

    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(terse=True),
    }


def emit(
    title: str, rows: list[tuple[str, Any, str]], *, as_json: bool, extra: dict[str, Any]
) -> None:
    """``rows`` are (figure, value, goal) triples."""
    if as_json:
        print(
            json.dumps(
                {"benchmark": title, **{k: v for k, v, _ in rows}, **extra, "machine": machine()}
            )
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("goal")
    for name, value, goal in rows:
        if isinstance(value, float):
            shown = f"{value:,.1f}"
        elif isinstance(value, int):
            shown = f"{value:,}"
        else:
            shown = str(value)
        table.add_row(name, shown, goal)
    Console().print(table)
