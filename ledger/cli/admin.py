"""``consent admin``: the registry admin admits centres, gateways and emergency services, and
lists record categories (chain transactions the admin pays for)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from ledger.cli.app import AsOpt, RoleApp, context_of
from ledger.cli.context import CliError
from ledger.cli.output import console, echo_json
from ledger.cli.parsing import parse_category
from ledger.protocol.consent_types import (
    CENTRE_ROLE,
    DEFAULT_ADMIN_ROLE,
    EMERGENCY_ROLE,
    GATEWAY_ROLE,
)

__all__ = ["app"]

app = RoleApp(help="Registry admin: admit centres, gateways and emergency services.")


_ROLES = {
    "CENTRE_ROLE": CENTRE_ROLE,
    "GATEWAY_ROLE": GATEWAY_ROLE,
    "EMERGENCY_ROLE": EMERGENCY_ROLE,
    "DEFAULT_ADMIN_ROLE": DEFAULT_ADMIN_ROLE,
}


def _admin_role(role_name: str, *, grant: bool) -> Callable[..., None]:
    def command(
        cli: typer.Context,
        address: Annotated[str, typer.Argument(help="0x address, keystore name or dev name.")],
        who: AsOpt = "admin",
    ) -> None:
        ctx = context_of(cli)
        role = _ROLES[role_name]
        target = ctx.address(address)
        admin = ctx.account(who)
        contract = ctx.registry()
        label = role_name.removesuffix("_ROLE").removeprefix("DEFAULT_").lower()
        holds = contract.has_role(role, target)
        if holds == grant:
            result = {"address": target, "role": role_name, "changed": False}
            if ctx.as_json:
                echo_json(result)
            else:
                state = "already holds" if grant else "does not hold"
                console.print(f"{target} {state} {role_name}; nothing to do", highlight=False)
            return
        receipt = (contract.grant_role if grant else contract.revoke_role)(admin, role, target)
        if ctx.as_json:
            echo_json(
                {
                    "address": target,
                    "role": role_name,
                    "changed": True,
                    "tx_hash": receipt.tx_hash,
                    "block_number": receipt.block_number,
                }
            )
            return
        verb = "admitted" if grant else "removed"
        console.print(
            f"{verb} {target} as {label}  tx {receipt.tx_hash}  block {receipt.block_number}",
            highlight=False,
        )

    return command


app.command(
    "add-centre", help="Admit a checkup centre (grants CENTRE_ROLE; a chain tx by the admin)."
)(_admin_role("CENTRE_ROLE", grant=True))
app.command("remove-centre", help="Remove a checkup centre (revokes CENTRE_ROLE).")(
    _admin_role("CENTRE_ROLE", grant=False)
)
app.command(
    "add-gateway",
    help="Admit a gateway account (GATEWAY_ROLE: registers records, anchors checkpoints).",
)(_admin_role("GATEWAY_ROLE", grant=True))
app.command(
    "remove-gateway",
    help="Remove a gateway account (revokes GATEWAY_ROLE: a retired or compromised gateway key).",
)(_admin_role("GATEWAY_ROLE", grant=False))
app.command("add-emergency", help="Admit an emergency institution (EMERGENCY_ROLE: break-glass).")(
    _admin_role("EMERGENCY_ROLE", grant=True)
)
app.command("remove-emergency", help="Remove an emergency institution (revokes EMERGENCY_ROLE).")(
    _admin_role("EMERGENCY_ROLE", grant=False)
)
app.command(
    "add-admin",
    help="Admin transfer, step 1: give DEFAULT_ADMIN_ROLE to a new admin key (then check it "
    "with the new key, then `consent admin renounce-admin --successor`).",
)(_admin_role("DEFAULT_ADMIN_ROLE", grant=True))


@app.command("renounce-admin")
def admin_renounce(
    cli: typer.Context,
    successor: Annotated[
        str,
        typer.Option(
            "--successor", help="The admin that stays: it must already hold DEFAULT_ADMIN_ROLE."
        ),
    ],
    who: AsOpt = None,
) -> None:
    """Admin transfer, step 2: the `--as` admin gives up DEFAULT_ADMIN_ROLE, only once the
    successor holds it (so the registry is never left without an admin)."""
    from ledger.protocol.consent_types import DEFAULT_ADMIN_ROLE

    ctx = context_of(cli)
    heir = ctx.address(successor, what="--successor")
    admin = ctx.account(who)
    contract = ctx.registry()
    if heir == admin.address:
        raise CliError("the successor is the renouncing admin itself; name the new admin")
    if not contract.has_role(DEFAULT_ADMIN_ROLE, heir):
        raise CliError(
            f"{heir} does not hold DEFAULT_ADMIN_ROLE yet; run `consent admin add-admin {heir}` "
            f"first, and check the new key works, before renouncing",
            code=1,
        )
    receipt = contract.renounce_role(admin, DEFAULT_ADMIN_ROLE, admin.address)
    if ctx.as_json:
        echo_json({"renounced": admin.address, "successor": heir, "tx_hash": receipt.tx_hash})
        return
    console.print(
        f"{admin.address} renounced DEFAULT_ADMIN_ROLE; {heir} is the admin  tx "
        f"{receipt.tx_hash}  block {receipt.block_number}",
        highlight=False,
    )


@app.command(
    "add-category",
    help="List a record category (coarse: a kind of document, never a condition or a test).",
)
def admin_add_category(
    cli: typer.Context,
    name: Annotated[str, typer.Argument(help="Category name, 1..32 ASCII characters.")],
    who: AsOpt = "admin",
) -> None:
    ctx = context_of(cli)
    category = parse_category(name)
    admin = ctx.account(who)
    contract = ctx.registry()
    result: dict[str, Any] = {"category": name.strip(), "changed": False}
    if not contract.is_category(category):
        receipt = contract.add_category(admin, category)
        result.update(changed=True, tx_hash=receipt.tx_hash, block_number=receipt.block_number)
    if ctx.as_json:
        echo_json(result)
    elif result["changed"]:
        console.print(
            f"listed category {result['category']}  tx {result['tx_hash']}  "
            f"block {result['block_number']}",
            highlight=False,
        )
    else:
        console.print(f"category {result['category']} is already listed; nothing to do")


@app.command("set-federation")
def admin_set_federation(
    cli: typer.Context,
    urls: Annotated[
        list[str], typer.Argument(help="Each member gateway's base URL, in share order.")
    ],
    threshold: Annotated[
        int, typer.Option("--threshold", help="How many members must release a record's key.")
    ],
    who: AsOpt = "admin",
) -> None:
    """Set the custody federation: each gateway's account and custody public key are read from
    its `/v1/custody` and shown, must hold GATEWAY_ROLE, and are sent with the threshold in one
    transaction. Records uploaded before keep the federation they were split under."""
    import httpx

    from ledger.chain.registry import FederationMember

    ctx = context_of(cli)
    admin = ctx.account(who)
    contract = ctx.registry()
    members: list[FederationMember] = []
    for url in urls:
        base = url.rstrip("/")
        try:
            body = httpx.get(f"{base}/v1/custody", timeout=10.0).json()
            key = bytes.fromhex(str(body["custody_key"])[2:])
            gateway = str(body["gateway"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise CliError(
                f"{base}/v1/custody gave no custody key ({type(exc).__name__}); start that "
                f"gateway with CONSENT_CUSTODY_KEY_FILE set"
            ) from None
        if not contract.has_role(GATEWAY_ROLE, gateway):
            raise CliError(
                f"{gateway} ({base}) does not hold GATEWAY_ROLE; `consent admin add-gateway "
                f"{gateway}` first",
                code=1,
            )
        members.append(FederationMember(ctx.address(gateway), key, base))
    if not 1 <= threshold <= len(members):
        raise CliError(f"--threshold must be 1 to {len(members)} (the members named)")
    current = contract.federation()
    if current.threshold == threshold and list(current.members) == members:
        if ctx.as_json:
            echo_json({"changed": False, "custody_set": "0x" + current.custody_set.hex()})
        else:
            console.print("the registry lists this federation already; nothing to do")
        return
    receipt = contract.set_federation(admin, threshold, members)
    fed = contract.federation()
    if ctx.as_json:
        echo_json(
            {
                "changed": True,
                "threshold": fed.threshold,
                "custody_set": "0x" + fed.custody_set.hex(),
                "members": [
                    {"gateway": m.gateway, "custody_key": "0x" + m.custody_key.hex(), "url": m.url}
                    for m in fed.members
                ],
                "tx_hash": receipt.tx_hash,
            }
        )
        return
    console.print(
        f"federation set: {fed.threshold} of {len(fed.members)}  tx {receipt.tx_hash}  "
        f"block {receipt.block_number}",
        highlight=False,
    )
    for m in fed.members:
        console.print(
            f"  {m.gateway}  {m.url}  custody key 0x{m.custody_key.hex()}", highlight=False
        )
