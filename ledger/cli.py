"""The ``consent`` command line.

Exit codes: 0 success; 1 a check failed or a violation was found; 2 could not run or verify
(a service is down, bad input); 130 interrupted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console

from ledger.paths import state_paths
from ledger.services import ServiceError

__all__ = ["app", "main"]

app = typer.Typer(
    name="consent",
    help="Consent Ledger: patient-controlled access to checkup results.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)

HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", help="State directory (default: $CONSENT_HOME or ./.consent)."),
]
GatewayOpt = Annotated[
    str,
    typer.Option("--gateway", envvar="CONSENT_GATEWAY_URL", help="Gateway base URL."),
]


def _fail(message: str, *, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


@app.command()
def up(
    home: HomeOpt = None,
    chain_port: Annotated[int, typer.Option(help="Chain node port.")] = 8545,
    ipfs_port: Annotated[int, typer.Option(help="IPFS API port.")] = 5001,
    gateway_port: Annotated[int, typer.Option(help="Gateway port.")] = 8000,
) -> None:
    """Start the chain node, the IPFS node and the gateway; stay in the foreground."""
    from ledger.stack import StackConfig, run_stack

    config = StackConfig(
        paths=state_paths(home),
        chain_port=chain_port,
        ipfs_port=ipfs_port,
        gateway_port=gateway_port,
    )
    try:
        code = run_stack(config, say=console.print)
    except ServiceError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    raise typer.Exit(code)


@app.command()
def status(
    gateway: GatewayOpt = "http://127.0.0.1:8000",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the gateway's health: chain, registry, IPFS node and database."""
    try:
        r = httpx.get(f"{gateway.rstrip('/')}/healthz", timeout=5.0)
    except httpx.HTTPError as exc:
        raise _fail(
            f"gateway at {gateway} is not answering ({exc}); start it with `make up`"
        ) from None
    body = r.json()
    if as_json:
        console.print_json(json.dumps(body))
    else:
        for key, value in body.items():
            console.print(f"{key:>18}  {value}")
    if r.status_code != 200:
        raise typer.Exit(1)


@app.command()
def down(
    home: HomeOpt = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="Also delete all local state (chain, IPFS, database).")
    ] = False,
) -> None:
    """Stop a running `consent up` (by the PID it recorded); with --reset, delete local state."""
    paths = state_paths(home)
    pid_file = paths.home / "stack.pid"
    if pid_file.is_file():
        pid = int(pid_file.read_text().strip())
        try:
            os.kill(pid, signal.SIGTERM)
            console.print(f"sent SIGTERM to consent up (pid {pid}); waiting for it to stop ...")
            for _ in range(300):
                time.sleep(0.1)
                os.kill(pid, 0)
        except ProcessLookupError:
            console.print("stopped.")
        pid_file.unlink(missing_ok=True)
    else:
        console.print("no running stack recorded.")
    if reset:
        if paths.home.is_dir():
            shutil.rmtree(paths.home)
        console.print(f"deleted {paths.home}")


def _mount_optional() -> None:
    """Sub-apps that live in their own modules."""
    try:
        from ledger.audit_cli import app as audit_app  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return
    app.add_typer(audit_app, name="audit")


_mount_optional()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
