"""``consent up``, ``status`` and ``down``: the local stack (chain node, IPFS node, gateway).

``up`` runs ``ledger.devstack`` in the foreground (the gateway is a subprocess); ``down`` stops it
by the PID it recorded and, with ``--reset``, deletes the local state but the keystore.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from ledger.cli.app import RoleApp, context_of
from ledger.cli.output import console, echo_json, fail
from ledger.devstack.services import ServiceError
from ledger.paths import StatePaths

__all__ = ["app"]

app = RoleApp(handled=False)


@app.command(shared=("home",))
def up(
    cli: typer.Context,
    chain_port: Annotated[int, typer.Option(help="Chain node port.")] = 8545,
    ipfs_port: Annotated[int, typer.Option(help="IPFS API port.")] = 5001,
    gateway_port: Annotated[int, typer.Option(help="The first gateway's port.")] = 8000,
    gateways: Annotated[
        int, typer.Option("--gateways", help="Gateway processes (consecutive ports), 1 to 16.")
    ] = 3,
    threshold: Annotated[
        int,
        typer.Option(
            "--threshold",
            help="How many gateways must release a record's key (t of n). 1 of 1 is the "
            "single-gateway mode: that gateway can decrypt every record. 0: no federation.",
        ),
    ] = 2,
) -> None:
    """Start the chain node, the IPFS node and a federation of gateways (2 of 3 by default);
    stay in the foreground."""
    from ledger.devstack.stack import StackConfig, run_stack

    config = StackConfig(
        paths=context_of(cli).paths,
        chain_port=chain_port,
        ipfs_port=ipfs_port,
        gateway_port=gateway_port,
        gateways=gateways,
        threshold=min(threshold, gateways) if gateways == 1 else threshold,
    )
    portal = f"http://127.0.0.1:{gateway_port}/portal/"

    def say(text: str) -> None:
        console.print(text)
        if text.startswith("  gateway "):  # the summary's gateway line: the portal under it
            console.print(f"  portal       {portal}  (patients: sign in with a wallet)")

    try:
        code = run_stack(config, say=say)
    except ServiceError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    raise typer.Exit(code)


@app.command(shared=("gateway", "chain", "home", "json"))
def status(cli: typer.Context) -> None:
    """Show the gateway's health: chain, registry, IPFS node and database."""
    ctx = context_of(cli)
    gateway = ctx.gateway_url
    try:
        r = httpx.get(f"{gateway.rstrip('/')}/healthz", timeout=5.0)
        body = r.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise fail(
            f"gateway at {gateway} is not answering ({type(exc).__name__}); start it with "
            f"`make up` / `consent up`, or pass --gateway"
        ) from None
    members = _federation_status(ctx)
    if ctx.as_json:
        echo_json({**body, "federation": members})
    else:
        for key, value in body.items():
            console.print(f"{key:>18}  {value}", highlight=False)
        if members is not None:
            console.print(
                f"{'federation':>18}  {members['threshold']} of {len(members['members'])}",
                highlight=False,
            )
            for m in members["members"]:
                console.print(
                    f"{'':>18}  {m['url']}  {m['gateway']}  {m['health']}", highlight=False
                )
    if r.status_code != 200:
        raise typer.Exit(1)


def _federation_status(ctx: Any) -> dict[str, Any] | None:
    """The federation the registry lists (from the chain), each member's health; None when the
    chain cannot be read here (no deployment file)."""
    try:
        fed = ctx.registry().federation()
    except Exception:
        return None
    members = []
    for m in fed.members:
        try:
            health = httpx.get(f"{m.url.rstrip('/')}/healthz", timeout=5.0)
            state = "ok" if health.status_code == 200 else f"unhealthy ({health.status_code})"
        except httpx.HTTPError as exc:
            state = f"down ({type(exc).__name__})"
        members.append(
            {
                "gateway": m.gateway,
                "url": m.url,
                "custody_key": "0x" + m.custody_key.hex(),
                "health": state,
            }
        )
    return {
        "threshold": fed.threshold,
        "custody_set": "0x" + fed.custody_set.hex(),
        "members": members,
    }


@app.command(shared=("home",))
def down(
    cli: typer.Context,
    reset: Annotated[
        bool,
        typer.Option(
            "--reset",
            help="Also delete the local ledger (chain, IPFS, database, deployment); the "
            "keystore (keys/) is kept.",
        ),
    ] = False,
    delete_keys: Annotated[
        bool,
        typer.Option(
            "--delete-keys",
            help="With --reset: delete the keystore too (asks on a terminal; --yes otherwise). "
            "A patient whose key is gone can never revoke again.",
        ),
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", help="Do not ask before deleting the keystore.")
    ] = False,
) -> None:
    """Stop a running `consent up` (by the PID it recorded); with --reset, delete local state
    but keep the keystore (keys/) unless --delete-keys is given."""
    paths = context_of(cli).paths
    if delete_keys and not reset:
        raise fail("--delete-keys only goes with --reset; nothing was stopped or deleted")
    if delete_keys and not yes and paths.keys.is_dir() and any(paths.keys.iterdir()):
        if not sys.stdin.isatty():
            raise fail(
                f"refusing to delete the keystore {paths.keys} without a terminal to confirm "
                f"on; pass --yes to delete it, or drop --delete-keys to keep it"
            )
        count = sum(1 for _ in paths.keys.iterdir())
        if not typer.confirm(
            f"Delete the keystore {paths.keys} ({count} files)? Whoever loses a key can never "
            f"revoke with it again",
            default=False,
        ):
            raise fail("kept everything; nothing was stopped or deleted", code=1)
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
        kept = _reset_home(paths, keep_keys=not delete_keys)
        if kept:
            console.print(f"deleted {paths.home} except the keystore {kept}", highlight=False)
        else:
            console.print(f"deleted {paths.home}", highlight=False)


def _reset_home(paths: StatePaths, *, keep_keys: bool) -> Path | None:
    """Delete ``paths.home``; with ``keep_keys`` everything but ``keys/``. The kept dir or None."""
    if not paths.home.is_dir():
        return None
    if not keep_keys or not paths.keys.is_dir():
        shutil.rmtree(paths.home)
        return None
    for entry in paths.home.iterdir():
        if entry == paths.keys:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return paths.keys
