"""Reading, as a grantee and as the patient: ``consent fetch`` and ``who-read``.

``fetch`` opens the envelope with the grantee's key (single-gateway mode), or gathers t shares
from the federation the chain lists when the record is under threshold custody, and checks the
digest against the chain before writing anything; ``who-read`` verifies every access-log entry
about the patient against the checkpoint its gateway anchored on-chain.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from ledger.cli.app import AsOpt, RoleApp, context_of
from ledger.cli.consents import break_glass_openings, print_break_glass
from ledger.cli.context import CliError, Ctx
from ledger.cli.output import console, echo_json, fail, named, purpose_name, short
from ledger.cli.parsing import parse_purposes, parse_record_id

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

__all__ = ["app", "print_who_read"]

app = RoleApp()


@app.command()
def fetch(
    cli: typer.Context,
    record_id: Annotated[str, typer.Argument(help="The record id (0x + 64 hex).")],
    purpose: Annotated[str, typer.Option("--purpose", help="Why you read it (treatment ...).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the result.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    who: AsOpt = None,
) -> None:
    """Grantee: fetch a record, open its envelope with your key and check its digest against
    the chain; nothing is written unless every check passes."""
    rid = parse_record_id(record_id)
    pid = parse_purposes([purpose])
    if len(pid) != 1:
        raise CliError("a fetch names exactly one purpose")
    if output.exists() and not force:
        raise CliError(f"{output} exists; pass --force to overwrite it")
    from ledger.client import GatewayRefused

    ctx = context_of(cli)
    account = ctx.account(who)
    onchain = ctx.registry().record_of(bytes.fromhex(rid[2:]))
    try:
        opened = ctx.session(account).open_record(
            rid, purpose_name(pid[0]), expected_digest=onchain.content_digest
        )
    except GatewayRefused as exc:
        # 409: under threshold custody; 404 for a record the chain holds: this gateway did not
        # upload it, so it holds no key of it (single-gateway mode) and maybe a share of it.
        if exc.status not in (404, 409):
            raise
        _fetch_federated(ctx, account, rid, pid[0], output)
        return
    _write_atomically(output, opened.plaintext)
    env = opened.envelope
    if ctx.as_json:
        echo_json(
            {
                "record_id": env.record_id,
                "patient": env.patient,
                "cid": env.cid,
                "content_digest": env.content_digest,
                "block_number": env.block_number,
                "bytes": len(opened.plaintext),
                "output": str(output),
            }
        )
        return
    console.print(
        f"fetched {short(rid)} for {purpose_name(pid[0])}: consent checked at block "
        f"{env.block_number}; sha256 matches the on-chain digest {short(env.content_digest)}",
        highlight=False,
    )
    console.print(f"wrote {len(opened.plaintext):,} bytes to {output}", highlight=False)


def _fetch_federated(ctx: Ctx, account: LocalAccount, rid: str, purpose: int, output: Path) -> None:
    """Gather the shares from the federation the chain lists; nothing is written unless the
    key combines and the plaintext hashes to the chain's digest."""
    from ledger.federation import fetch_federated

    opened = fetch_federated(account, rid, registry=ctx.registry(), purpose=purpose_name(purpose))
    _write_atomically(output, opened.plaintext)
    released = [r for r in opened.releases if r.release is not None]
    if ctx.as_json:
        echo_json(
            {
                "record_id": rid,
                "bytes": len(opened.plaintext),
                "output": str(output),
                "released_by": [
                    {"gateway": r.gateway, "url": r.url, "block_number": r.release.block_number}
                    for r in released
                    if r.release is not None
                ],
                "refused": {r.gateway: r.refusal for r in opened.releases if r.release is None},
                "bad_shares": opened.bad_gateways,
            }
        )
        return
    console.print(
        f"fetched {short(rid)} for {purpose_name(purpose)} from {len(released)} gateways, each "
        f"deciding on its own: sha256 matches the on-chain digest",
        highlight=False,
    )
    for r in opened.releases:
        if r.release is not None and r.gateway not in opened.bad_gateways:
            line = f"share {r.release.index} released at block {r.release.block_number}"
        elif r.gateway in opened.bad_gateways:
            line = "released a share that does not match its commitment: report it"
        else:
            line = f"no share: {r.refusal}"
        who = named(ctx.names(), r.gateway)
        console.print(
            f"  {short(who) if who == r.gateway else who}  {r.url}  {line}", highlight=False
        )
    console.print(f"wrote {len(opened.plaintext):,} bytes to {output}", highlight=False)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@app.command("who-read")
def who_read(
    cli: typer.Context,
    who: AsOpt = None,
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            help="Seconds to wait for a checkpoint to cover every entry (0: do not wait).",
        ),
    ] = 0.0,
) -> None:
    """Patient: who read (or was refused) my records, each entry's inclusion proof verified
    locally against the checkpoint the gateway anchored on-chain. Exit 0 only when every entry
    is verified; 1 when a proof fails; 2 "could not verify" when no checkpoint anchored on-chain
    (as the chain's checkpointOf says) covers them."""
    from ledger.client import ClientError, Gateway

    ctx = context_of(cli)
    account = ctx.account(who)
    contract = ctx.registry()
    members = contract.federation().members
    # Under threshold custody every member decides and logs on its own: read every log.
    sources: list[tuple[str, str]] = (
        [(m.gateway, m.url) for m in members] if members else [("", ctx.gateway_url)]
    )
    deadline = time.monotonic() + wait
    results: list[tuple[str, str, Any, str | None]] = []
    for gateway, url in sources:
        try:
            if members:
                with Gateway(url) as gw:
                    session = gw.login(account, chain_id=ctx.chain_id())
                    result = _who_read_waiting(session, contract, deadline)
            else:
                result = _who_read_waiting(ctx.session(account), contract, deadline)
        except ClientError as exc:
            results.append((gateway, url, None, exc.line()))
            continue
        results.append((gateway, url, result, None))
    openings = break_glass_openings(ctx, account.address)
    verdicts = []
    for g, u, r, err in results:
        problem = err or _who_read_verdict(r)
        if problem and members:  # name the member: "!" (a failure) stays in front
            bang = "!" if problem.startswith("!") else ""
            problem = f"{bang}gateway {g} ({u}): {problem.lstrip('!')}"
        verdicts.append((g, u, r, problem))
    if ctx.as_json:
        logs = [
            {"gateway": g, "url": u, "problem": problem, **(_who_read_json(r) if r else {})}
            for g, u, r, problem in verdicts
        ]
        echo_json({"break_glass": openings, **(logs[0] if not members else {"gateways": logs})})
    else:
        for g, u, r, problem in verdicts:
            if members:
                console.print(f"\n[bold]{named(ctx.names(), g)}[/]  {u}", highlight=False)
            if r is not None:
                print_who_read(ctx, r)
            if problem and members:
                console.print(f"  [yellow]{problem}[/]", highlight=False)
        print_break_glass(ctx, openings)
    failed = [p for _g, _u, r, p in verdicts if p and r is not None and p.startswith("!")]
    if failed:
        raise fail(failed[0][1:], code=1)
    unverified = [p for _g, _u, _r, p in verdicts if p]
    if unverified:
        raise fail(unverified[0].lstrip("!"), code=2)


def _who_read_waiting(session: Any, contract: Any, deadline: float) -> Any:
    result = session.who_read(contract)
    while any(e.included is None for e in result.entries) and time.monotonic() < deadline:
        time.sleep(0.5)
        result = session.who_read(contract)
    return result


def _who_read_verdict(result: Any) -> str | None:
    """None when every entry is verified; else the sentence, ``!``-prefixed for a failure."""
    pending = [e for e in result.entries if e.included is None]
    bad = [e for e in result.entries if e.included is not None and not e.verified]
    if result.checkpoint is None:
        return (
            "could not verify: the gateway gave no checkpoint anchored on-chain; try again "
            "with --wait 60"
        )
    if not result.anchored:
        return f"could not verify: {result.anchor_reason}"
    if bad:
        return (
            f"!{len(bad)} entries failed verification (leaf or inclusion proof): the gateway's "
            f"log does not match what it anchored; report it to its operator"
        )
    if pending:
        return (
            f"could not verify {len(pending)} of {len(result.entries)} entries: no checkpoint "
            f"anchored on-chain covers them yet; try again with --wait 60"
        )
    return None


def _who_read_json(result: Any) -> dict[str, Any]:
    return {
        "checkpoint": result.checkpoint.model_dump() if result.checkpoint else None,
        "anchored": result.anchored,
        "anchor": result.anchor_reason,
        "log_size": result.log_size,
        "entries": [
            {
                "index": e.index,
                **dict(e.entry),
                "leaf_ok": e.leaf_ok,
                "inclusion": {True: "verified", False: "FAILED", None: "pending"}[e.included],
            }
            for e in result.entries
        ],
    }


def print_who_read(ctx: Ctx, result: Any) -> None:
    names = ctx.names()
    table = Table(title="reads of my records", title_justify="left")
    for col in ("#", "time (UTC)", "requester", "record", "purpose", "decision", "block", "proof"):
        table.add_column(col, overflow="fold", no_wrap=col in ("#", "block"))
    for e in result.entries:
        d = e.entry
        decision = str(d.get("decision"))
        reason = str(d.get("reason"))
        style = "green" if decision == "allowed" else "red"
        proof = {True: "[green]✓ verified[/]", False: "[red]✗ FAILED[/]", None: "… pending"}[
            e.included if e.leaf_ok else False
        ]
        table.add_row(
            str(e.index),
            str(d.get("time", ""))[:19].replace("T", " "),
            names.get(str(d.get("requester", "")).lower(), short(str(d.get("requester")), 6)),
            short(str(d.get("record", ""))),
            purpose_name(int(d.get("purpose", 0))),
            f"[{style}]{decision}[/] ({reason})",
            str(d.get("block")),
            proof,
        )
    console.print(table)
    cp = result.checkpoint
    if cp is None:
        console.print("no checkpoint anchored yet: entries are pending (try --wait 60)")
        return
    mark = "[green]✓[/]" if result.anchored else "[red]✗[/]"
    console.print(
        f"checkpoint: tree size {cp.tree_size}, root {short(cp.root_hash)}, anchored in tx "
        f"{short(cp.tx_hash)} (block {cp.block_number}) by {named(names, cp.gateway)}",
        highlight=False,
    )
    console.print(f"{mark} {result.anchor_reason}", highlight=False)
