"""Consent, as the patient (or a guardian) gives it: ``consent grant``, ``revoke``,
``consents``, ``guardian set|remove`` and ``nonce burn``.

A grant or revoke is signed (EIP-712) and relayed by the gateway, or sent directly with
``--direct``; either way the command exits 0 only once the client's own chain node shows the
result, and a relay's receipt is checked there (:func:`receipt_problem`).
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from ledger.cli.app import AsOpt, DirectOpt, RoleApp, context_of
from ledger.cli.context import CliError, Ctx
from ledger.cli.output import console, echo_json, named, purpose_name, scope_text, when
from ledger.cli.parsing import parse_expiry, parse_purposes, parse_scope

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from eth_typing import ChecksumAddress

    from ledger.chain.registry import Receipt
    from ledger.client import RelayResult

__all__ = ["app", "break_glass_openings", "guardian_app", "nonce_app", "print_break_glass"]

app = RoleApp()
guardian_app = RoleApp(help="Patient: name or remove a guardian who may act for you.")
nonce_app = RoleApp(help="Signer: cancel a signed grant or revoke nobody has submitted yet.")


def _signer_and_patient(
    ctx: Ctx, who: str | None, patient: str | None
) -> tuple[LocalAccount, ChecksumAddress]:
    signer = ctx.account(who)
    target = ctx.address(patient, what="patient") if patient else signer.address
    return signer, target


@app.command()
def grant(
    cli: typer.Context,
    to: Annotated[str, typer.Option("--to", help="Grantee: address, keystore or dev name.")],
    purpose: Annotated[
        list[str],
        typer.Option(
            "--purpose", help="treatment, research, insurance, public_health, emergency (repeat)."
        ),
    ],
    record: Annotated[str | None, typer.Option("--record", help="One record id.")] = None,
    category: Annotated[str | None, typer.Option("--category", help="One category.")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Every record of the patient.")] = False,
    expires: Annotated[
        str, typer.Option("--expires", help="30d, 12h, 2w, 1y, never or a date.")
    ] = "30d",
    who: AsOpt = None,
    patient: Annotated[
        str | None,
        typer.Option("--patient", help="As guardian: the patient you act for (default: you)."),
    ] = None,
    direct: DirectOpt = False,
) -> None:
    """Patient: grant consent (EIP-712 signed, relayed by the gateway: you pay no gas; with
    --direct you send it yourself). Exit 0 only once the chain shows the grant."""
    from ledger.protocol.consent_types import purposes_mask
    from ledger.protocol.eip712 import GrantRequest

    ctx = context_of(cli)
    kind, scope_id, scope_text = parse_scope(record, category, everything)
    ids = parse_purposes(purpose)
    expires_at = parse_expiry(expires)
    signer, target = _signer_and_patient(ctx, who, patient)
    grantee = ctx.address(to, what="grantee")
    contract = ctx.registry()
    mask = purposes_mask(ids)
    if direct:
        if target == signer.address:
            receipt = contract.grant(signer, grantee, kind, scope_id, mask, expires_at)
        else:
            receipt = contract.grant_for(signer, target, grantee, kind, scope_id, mask, expires_at)
        result = _direct_result("grant", receipt)
    else:
        deadline = int(time.time()) + 3600
        request = GrantRequest(
            patient=target,
            grantee=grantee,
            scope_kind=kind,
            scope_id=scope_id,
            purposes=mask,
            expires_at=expires_at,
            signer=signer.address,
            nonce=contract.nonce_of(signer.address),
            deadline=deadline,
        )
        result = ctx.session(signer).relay(request, domain=contract.domain, signer=signer)
        receipt_problem = _receipt_problem(ctx, result, "grant")
        terms = contract.consent_of(target, grantee, kind, scope_id)
        shown = terms.purposes == mask and terms.expires_at == expires_at
        if receipt_problem or not shown:
            state = (
                "the chain shows the grant in force"
                if shown
                else "the chain does not show the grant, so the grantee holds no new consent"
            )
            problem = receipt_problem or "its receipt is on the chain"
            raise CliError(
                f"the gateway's answer does not hold up: {problem}, and {state}; the gateway "
                f"may still hold your signed grant and send it until {when(deadline)}: void it "
                f"with `consent nonce burn`, check `consent consents`, or grant directly, "
                f"paying gas, with `consent grant --direct`",
                code=1,
            )
    purposes_text = ", ".join(purpose_name(i) for i in ids)
    if ctx.as_json:
        echo_json(
            {
                **result.model_dump(),
                "patient": target,
                "grantee": grantee,
                "scope": scope_text,
                "purposes": ids,
                "expires_at": expires_at,
                "confirmed_on_chain": True,
            }
        )
        return
    names = ctx.names()
    console.print(
        f"granted {named(names, grantee)} {purposes_text} access to {scope_text} "
        f"until {when(expires_at)}",
        highlight=False,
    )
    how = "sent by you (you paid the gas)" if direct else "relayed by the gateway (gasless)"
    console.print(
        f"  signed by {named(names, signer.address)}, {how}  "
        f"tx {result.tx_hash}  block {result.block_number}; confirmed on-chain",
        highlight=False,
    )


@app.command()
def revoke(
    cli: typer.Context,
    to: Annotated[str, typer.Option("--to", help="Grantee: address, keystore or dev name.")],
    record: Annotated[str | None, typer.Option("--record", help="One record id.")] = None,
    category: Annotated[str | None, typer.Option("--category", help="One category.")] = None,
    everything: Annotated[bool, typer.Option("--all", help="The all-records grant.")] = False,
    who: AsOpt = None,
    patient: Annotated[
        str | None,
        typer.Option("--patient", help="As guardian: the patient you act for (default: you)."),
    ] = None,
    direct: DirectOpt = False,
) -> None:
    """Patient: revoke a consent (signed, relayed; with --direct you send it yourself, paying
    gas). Exit 0 only once the chain shows no consent left; the grantee's next request is
    denied."""
    from ledger.protocol.eip712 import RevokeRequest

    ctx = context_of(cli)
    kind, scope_id, scope_text = parse_scope(record, category, everything)
    signer, target = _signer_and_patient(ctx, who, patient)
    grantee = ctx.address(to, what="grantee")
    contract = ctx.registry()
    if direct:
        if target == signer.address:
            receipt = contract.revoke(signer, grantee, kind, scope_id)
        else:
            receipt = contract.revoke_for(signer, target, grantee, kind, scope_id)
        result = _direct_result("revoke", receipt)
        if contract.consent_of(target, grantee, kind, scope_id).exists:
            raise CliError(
                f"the revoke was mined (tx {receipt.tx_hash}) but the chain still shows a "
                f"consent for {grantee}; check `consent consents`",
                code=1,
            )
    else:
        request = RevokeRequest(
            patient=target,
            grantee=grantee,
            scope_kind=kind,
            scope_id=scope_id,
            signer=signer.address,
            nonce=contract.nonce_of(signer.address),
            deadline=int(time.time()) + 3600,
        )
        result = ctx.session(signer).relay(request, domain=contract.domain, signer=signer)
        receipt_problem = _receipt_problem(ctx, result, "revoke")
        still = contract.consent_of(target, grantee, kind, scope_id).exists
        if still:
            problem = receipt_problem or "the consent is still stored"
            raise CliError(
                f"the chain does not show the revoke ({problem}): "
                f"{named(ctx.names(), grantee)} may still read {scope_text}; revoke "
                f"directly, paying gas: `consent revoke --direct --to {to} "
                f"{_scope_flag(record, category)}`",
                code=1,
            )
        if receipt_problem:
            raise CliError(
                f"the gateway's answer does not hold up: {receipt_problem}, though the chain "
                f"shows no consent left for {grantee}; do not rely on that gateway",
                code=1,
            )
    if ctx.as_json:
        echo_json(
            {
                **result.model_dump(),
                "patient": target,
                "grantee": grantee,
                "scope": scope_text,
                "confirmed_on_chain": True,
            }
        )
        return
    names = ctx.names()
    console.print(
        f"revoked {named(names, grantee)}'s access to {scope_text}  "
        f"tx {result.tx_hash}  block {result.block_number}; confirmed on-chain",
        highlight=False,
    )


def _scope_flag(record: str | None, category: str | None) -> str:
    if record is not None:
        return f"--record {record.strip()}"
    if category is not None:
        return f"--category {category.strip()}"
    return "--all"


def _direct_result(action: str, receipt: Receipt) -> RelayResult:
    from ledger.client import RelayResult

    return RelayResult.model_validate(
        {
            "action": action,
            "tx_hash": receipt.tx_hash,
            "block_number": receipt.block_number,
            "gas_used": receipt.gas_used,
        }
    )


_CONFIRM_WAIT_S = 30.0


def _receipt_problem(ctx: Ctx, result: RelayResult, action: str) -> str | None:
    """What is wrong with a relay's receipt as the client's own chain node sees it (None: ok).

    Waits (bounded) for the node to reach the receipt's block, then the transaction must be
    there, successful and sent to the pinned registry."""
    from web3.exceptions import TransactionNotFound

    if result.action != action:
        return f"the gateway answered for a {result.action}, not a {action}"
    w3 = ctx.w3()
    tx_hash = result.tx_hash
    if not re.fullmatch(r"0x[0-9a-fA-F]{64}", tx_hash):
        return f"the receipt's tx hash {tx_hash!r} is not a transaction hash"
    deadline = time.monotonic() + _CONFIRM_WAIT_S
    while True:
        try:
            receipt = w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        except TransactionNotFound:
            receipt = None
        if receipt is not None:
            break
        if w3.eth.block_number >= result.block_number or time.monotonic() >= deadline:
            return f"its receipt (tx {tx_hash}) is not on the chain at {ctx.chain_url}"
        time.sleep(0.2)
    to = receipt.get("to")
    if int(receipt.get("status", 0)) != 1:
        return f"its transaction {tx_hash} reverted"
    if to is None or str(to).lower() != ctx.anchors().registry.lower():
        return f"its transaction {tx_hash} was not sent to the registry"
    return None


@app.command()
def consents(
    cli: typer.Context,
    who: AsOpt = None,
) -> None:
    """Consents I granted (as patient) and consents granted to me, as they stand on-chain."""
    ctx = context_of(cli)
    account = ctx.account(who)
    answer = ctx.session(account).consents()
    openings = break_glass_openings(ctx, account.address)
    if ctx.as_json:
        echo_json({**answer.model_dump(), "break_glass": openings})
        return
    names = ctx.names()
    for title, rows, other in (
        ("granted by me", answer.granted, "grantee"),
        ("granted to me", answer.received, "patient"),
    ):
        table = Table(title=f"{title} (block {answer.block_number})", title_justify="left")
        for col in (other, "scope", "purposes", "expires", "active"):
            table.add_column(col, overflow="fold")
        for c in rows:
            scope = scope_text(c.scope_kind, c.scope_id)
            table.add_row(
                named(names, c.grantee if other == "grantee" else c.patient),
                scope,
                ", ".join(c.purpose_names),
                when(c.expires_at),
                "yes" if c.active else "no (expired)",
            )
        if rows:
            console.print(table)
        else:
            console.print(f"{title}: none", highlight=False)
    print_break_glass(ctx, openings)


@guardian_app.command("set")
def guardian_set(
    cli: typer.Context,
    guardian: Annotated[str, typer.Argument(help="Guardian: address, keystore or dev name.")],
    who: AsOpt = None,
) -> None:
    """Name a guardian who may grant, revoke and read for you (a chain tx you pay for)."""
    ctx = context_of(cli)
    patient = ctx.account(who)
    target = ctx.address(guardian, what="guardian")
    receipt = ctx.registry().set_guardian(patient, target)
    _print_receipt(ctx, receipt, f"{named(ctx.names(), target)} is now your guardian")


@guardian_app.command("remove")
def guardian_remove(
    cli: typer.Context,
    who: AsOpt = None,
) -> None:
    """Remove your guardian (a chain tx you pay for)."""
    ctx = context_of(cli)
    patient = ctx.account(who)
    receipt = ctx.registry().remove_guardian(patient)
    _print_receipt(ctx, receipt, "your guardian was removed")


def _print_receipt(ctx: Ctx, receipt: Receipt, text: str) -> None:
    if ctx.as_json:
        echo_json({"tx_hash": receipt.tx_hash, "block_number": receipt.block_number})
        return
    console.print(f"{text}  tx {receipt.tx_hash}  block {receipt.block_number}", highlight=False)


# ------------------------------------------------ signing nonces; break-glass seen by the patient


@nonce_app.command("burn")
def nonce_burn(
    cli: typer.Context,
    who: AsOpt = None,
) -> None:
    """Give up my next signing nonce (a chain tx you pay for): a grant or revoke I signed with
    it, held back by a relayer, can then never be submitted. Run once per such request."""
    ctx = context_of(cli)
    signer = ctx.account(who)
    contract = ctx.registry()
    nonce = contract.nonce_of(signer.address)
    receipt = contract.burn_nonce(signer, nonce)
    if ctx.as_json:
        echo_json(
            {
                "signer": signer.address,
                "burned_nonce": nonce,
                "next_nonce": nonce + 1,
                "tx_hash": receipt.tx_hash,
                "block_number": receipt.block_number,
            }
        )
        return
    console.print(
        f"burned nonce {nonce}: a request signed with it can no longer be submitted; the next "
        f"signature uses nonce {nonce + 1}  tx {receipt.tx_hash}  block {receipt.block_number}",
        highlight=False,
    )


def break_glass_openings(ctx: Ctx, patient: str) -> list[dict[str, Any]]:
    """Every break-glass opening for ``patient``, read from the registry's logs on the chain
    (institution, reason hash, window, and the close if it was closed early)."""
    from ledger.chain.deployment import load_deployment

    contract = ctx.registry()
    deployment = load_deployment(ctx.paths.deployment)
    from_block = (
        deployment.block
        if deployment is not None and deployment.address.lower() == contract.address.lower()
        else 0
    )
    return [
        {
            "institution": o.institution,
            "reason_hash": "0x" + o.reason_hash.hex(),
            "opened_at": o.opened_at,
            "until": o.until,
            "closed_at": o.closed_at,
            "closed_by": o.closed_by,
            "reopens_at": o.reopens_at,
            "block_number": o.block_number,
        }
        for o in contract.break_glass_openings(patient, from_block=from_block)
    ]


def print_break_glass(ctx: Ctx, openings: list[dict[str, Any]]) -> None:
    if not openings:
        console.print("break-glass openings of my records: none", highlight=False)
        return
    names = ctx.names()
    table = Table(title="break-glass openings of my records", title_justify="left")
    for col in ("institution", "reason hash", "opened (UTC)", "until", "closed", "block"):
        whole = col == "reason hash"  # a hash stays whole, so it can be searched for
        table.add_column(col, overflow="fold", no_wrap=whole, min_width=66 if whole else None)
    for o in openings:
        closed = "-"
        if o["closed_at"] is not None:
            closed = (
                f"{when(o['closed_at'])} by {named(names, o['closed_by'])}; "
                f"no reopening before {when(o['reopens_at'])}"
            )
        table.add_row(
            named(names, o["institution"]),
            o["reason_hash"],
            when(o["opened_at"]),
            when(o["until"]),
            closed,
            str(o["block_number"]),
        )
    console.print(table)
