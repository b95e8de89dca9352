"""``consent key``: an encrypted keystore (``$CONSENT_HOME/keys``) plus the local chain's dev
accounts."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ledger.cli.app import RoleApp, context_of
from ledger.cli.context import CliError, password
from ledger.cli.output import console, echo_json

__all__ = ["app"]

app = RoleApp(
    shared=("home", "json"),
    help="Keys: an encrypted keystore plus the local chain's dev accounts.",
)


@app.command("new")
def key_new(
    cli: typer.Context,
    name: Annotated[str, typer.Argument(help="Name of the new key (lower-case).")],
) -> None:
    """Create a new key, encrypted with a password (prompt or $CONSENT_PASSWORD)."""
    ctx = context_of(cli)
    secret = password(f"Password for the new key {name!r}", confirm=True)
    identity = ctx.keystore().create(name, secret)
    if ctx.as_json:
        echo_json({"name": identity.name, "address": identity.address})
        return
    console.print(f"created key [bold]{identity.name}[/]  {identity.address}", highlight=False)
    stored = ctx.paths.keys / (name + ".json")
    with contextlib.suppress(ValueError):  # shown relative to the working directory when inside
        stored = stored.relative_to(Path.cwd())
    console.print(f"stored encrypted in {stored}", highlight=False)


@app.command("import")
def key_import(
    cli: typer.Context,
    name: Annotated[str, typer.Argument(help="Name to store the key under.")],
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--key-file",
            help="A file holding the hex private key, or an Ethereum keyfile (JSON; "
            "its password is asked for). Default: prompt for the hex key.",
        ),
    ] = None,
) -> None:
    """Import an existing private key into the keystore, encrypted with a new password."""
    from eth_account import Account

    ctx = context_of(cli)
    if key_file is None:
        text = typer.prompt("Private key (hex)", hide_input=True)
        secret = _hex_key(text)
    else:
        try:
            raw = key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CliError(f"cannot read {key_file}: {exc.strerror}") from None
        if raw.startswith("{"):
            try:
                keyfile = json.loads(raw)
                secret = bytes(
                    Account.decrypt(keyfile, typer.prompt("Keyfile password", hide_input=True))
                )
            except ValueError:
                raise CliError(
                    f"cannot decrypt {key_file}: wrong password or not a keyfile"
                ) from None
        else:
            secret = _hex_key(raw)
    identity = ctx.keystore().create(
        name, password(f"Password for key {name!r}", confirm=True), private_key=secret
    )
    if ctx.as_json:
        echo_json({"name": identity.name, "address": identity.address})
        return
    console.print(f"imported key [bold]{identity.name}[/]  {identity.address}", highlight=False)


def _hex_key(text: str) -> bytes:
    body = text.strip()
    body = body[2:] if body[:2] in ("0x", "0X") else body
    try:
        raw = bytes.fromhex(body)
    except ValueError:
        raise CliError("the private key is not hex") from None
    if len(raw) != 32:
        raise CliError(f"a private key is 32 bytes (64 hex digits), not {len(raw)}")
    return raw


@app.command("list")
def key_list(
    cli: typer.Context,
    dev: Annotated[
        bool, typer.Option("--dev/--no-dev", help="Also list the local chain's dev accounts.")
    ] = True,
) -> None:
    """List the keystore's keys (and the dev accounts usable on the local chain only)."""
    from ledger.chain.keys import DEV_NAMES
    from ledger.chain.node import dev_accounts

    ctx = context_of(cli)
    rows = [
        {"name": i.name, "address": i.address, "source": "keystore"} for i in ctx.keystore().list()
    ]
    if dev:
        rows += [
            {"name": n, "address": a.address, "source": "dev (local chain only)"}
            for n, a in zip(DEV_NAMES, dev_accounts(), strict=True)
        ]
    if ctx.as_json:
        echo_json(rows)
        return
    table = Table(title=f"identities ({ctx.paths.keys})", title_justify="left")
    for col in ("name", "address", "source"):
        table.add_column(col, no_wrap=col == "address")
    for row in rows:
        table.add_row(row["name"], row["address"], row["source"])
    console.print(table)
