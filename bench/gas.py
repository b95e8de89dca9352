"""Gas used by each ConsentRegistry operation, next to its budget and its EVM floor.

Usage::

    python bench/gas.py            # starts a throw-away anvil on a free port
    python bench/gas.py --url http://127.0.0.1:8545
    python bench/gas.py --json     # one JSON object: operation -> gas used

Every figure is a real ``gasUsed`` from a mined transaction's receipt (refunds applied), except
the ``hasConsent`` rows: there the figure is the execution gas of the ``eth_call``, i.e.
``eth_estimateGas`` of the call minus its intrinsic cost (21,000 + calldata), which is what a
view costs inside another transaction and what the 15,000 budget means.

The floor is what any implementation must pay for the same observable effect:
21,000 (transaction) + calldata (16 gas per non-zero byte, 4 per zero byte) + 22,100 per new
storage slot (cold, zero -> non-zero) + 5,000 per changed storage slot (cold, non-zero ->
non-zero; one of them is the event digest, written once per event) + the log (375 + 375 per
topic + 8 per data byte) + unavoidable reads/precompiles (2,100 per cold role or record slot
read, 3,000 ecrecover) - refunds (4,800 per cleared slot). Interpreter overhead (ABI
decoding, hashing mapping keys, memory) comes on top.

Rows over budget are listed after the table with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress, HexStr
from web3 import Web3

from ledger.chain.node import connect, dev_accounts
from ledger.chain.registry import ConsentRegistry, FederationMember, Receipt
from ledger.devstack.services import AnvilNode, free_port
from ledger.protocol import eip712
from ledger.protocol.consent_types import (
    ALL_SCOPE_ID,
    CENTRE_ROLE,
    EMERGENCY_ROLE,
    GATEWAY_ROLE,
    Purpose,
    ScopeKind,
    category_id,
)
from ledger.protocol.custody import new_custody_key

NEW_SLOT = 22_100
CHANGED_SLOT = 5_000
DIGEST = CHANGED_SLOT
COLD_SLOAD = 2_100
ECRECOVER = 3_000
CLEAR_REFUND = 4_800
TX_BASE = 21_000

CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


WHY_OVER = {
    "grant (new scope: category)": (
        "a new Category grant must read the category list (cold SLOAD, 2,100) to refuse an "
        "unlisted category (CategoryNotListed); changing a stored grant's terms skips the read"
    ),
    "grantBySig (new scope)": (
        "the signed grant measured is a new Category grant: + the category list read (2,100); "
        "a signed All grant stays within 70,000"
    ),
    "grant (new scope: record)": (
        "a Record scope must read the record's owner (cold SLOAD, 2,100) to refuse RecordNotOwned; "
        "an all scope stays within 55,000"
    ),
    "grant (overwrite)": (
        "the floor alone (21,000 + calldata + changed slot 5,000 + digest 5,000 + log 2,780) is "
        "~34,900, so 35,000 leaves ~100 gas for ABI decoding, validation and mapping keys"
    ),
    "grantBySig (signer's 1st: new nonce slot)": (
        "a signer's first signature creates its nonce slot (22,100, OpenZeppelin Nonces); every "
        "later signature bumps it (5,000) and stays within 70,000"
    ),
    "anchorCheckpoint (gateway's 1st)": (
        "a gateway's first checkpoint creates two slots (tree size, 32-byte root: 44,200); every "
        "later anchor rewrites them (10,000) and stays within 60,000"
    ),
    "hasConsent (denied: worst case)": (
        "a denial must rule out every basis: record, record grant, category, category grant, all "
        "grant, guardian, break-glass = 7 cold slots (14,700); every allowed path is below 15,000"
    ),
}


@dataclass(frozen=True)
class Row:
    operation: str
    gas: int
    budget: int | None
    floor: int
    note: str

    @property
    def within(self) -> str:
        if self.budget is None:
            return "-"
        return "yes" if self.gas <= self.budget else "NO"


def calldata_cost(data: bytes) -> int:
    return sum(16 if b else 4 for b in data)


def log_cost(topics: int, data_bytes: int) -> int:
    return 375 + 375 * topics + 8 * data_bytes


def tx_input(w3: Web3, receipt: Receipt) -> bytes:
    return bytes(w3.eth.get_transaction(HexStr(receipt.tx_hash))["input"])


def measure(url: str) -> list[Row]:
    w3 = connect(url)
    admin, gateway, centre, emergency, patient, doctor, relayer, guardian, insurer, other = (
        dev_accounts()
    )
    registry, _ = ConsentRegistry.deploy(w3, admin=admin.address, sender=admin)
    rows: list[Row] = []

    def tx_row(
        operation: str,
        receipt: Receipt,
        budget: int | None,
        extra_floor: int,
        note: str,
    ) -> None:
        floor = TX_BASE + calldata_cost(tx_input(w3, receipt)) + extra_floor
        rows.append(Row(operation, receipt.gas_used, budget, floor, note))

    receipt = registry.grant_role(admin, GATEWAY_ROLE, gateway.address)
    tx_row(
        "grantRole",
        receipt,
        None,
        NEW_SLOT + DIGEST + log_cost(4, 0) + COLD_SLOAD,
        "new role slot + admin check + RoleGranted",
    )
    registry.grant_role(admin, CENTRE_ROLE, centre.address)
    registry.grant_role(admin, EMERGENCY_ROLE, emergency.address)

    # -- records
    now = int(w3.eth.get_block("latest")["timestamp"])
    attestation = eip712.RecordAttestation(
        patient.address, category_id("laboratory"), os.urandom(32), now
    )
    signature = eip712.sign(centre, registry.domain, attestation)
    registered = registry.register_record(gateway, attestation, signature, CID)
    cid_data = 4 * 32 + 32 + 32 * ((len(CID) + 31) // 32)
    tx_row(
        "registerRecord",
        registered,
        150_000,
        4 * NEW_SLOT + DIGEST + log_cost(4, cid_data) + 4 * COLD_SLOAD + ECRECOVER,
        "4 record slots + gateway & centre role, category list and custody set reads + "
        "ecrecover + log",
    )
    record_id = registered.record_id
    lab = category_id("laboratory")
    far = now + 365 * 24 * 3600
    grant_log = log_cost(3, 5 * 32)
    revoke_log = log_cost(3, 3 * 32)

    # -- consent
    r = registry.grant(patient, doctor.address, ScopeKind.CATEGORY, lab, Purpose.TREATMENT.bit, far)
    tx_row(
        "grant (new scope: category)",
        r,
        55_000,
        NEW_SLOT + DIGEST + grant_log + COLD_SLOAD,
        "new grant slot + digest + ConsentGranted + category list read",
    )
    r = registry.grant(patient, doctor.address, ScopeKind.ALL, ALL_SCOPE_ID, 0b11, far)
    tx_row("grant (new scope: all)", r, 55_000, NEW_SLOT + DIGEST + grant_log, "as above")
    r = registry.grant(patient, doctor.address, ScopeKind.RECORD, record_id, 0b1, far)
    tx_row(
        "grant (new scope: record)",
        r,
        55_000,
        NEW_SLOT + DIGEST + grant_log + COLD_SLOAD,
        "+ record owner read (RecordNotOwned check)",
    )
    r = registry.grant(patient, doctor.address, ScopeKind.CATEGORY, lab, 0b111, far + 1)
    tx_row(
        "grant (overwrite)",
        r,
        35_000,
        CHANGED_SLOT + DIGEST + grant_log,
        "changed grant slot + digest + ConsentGranted (a stored grant: no list read)",
    )
    r = registry.revoke(patient, doctor.address, ScopeKind.ALL, ALL_SCOPE_ID)
    tx_row(
        "revoke",
        r,
        32_000,
        CHANGED_SLOT + DIGEST + revoke_log - CLEAR_REFUND,
        "cleared grant slot (refund) + digest + ConsentRevoked",
    )

    # -- signed consent (relayed)
    def signed_grant(signer: LocalAccount, grantee: ChecksumAddress, scope_id: bytes) -> Receipt:
        request = eip712.GrantRequest(
            patient=patient.address,
            grantee=grantee,
            scope_kind=ScopeKind.CATEGORY,
            scope_id=scope_id,
            purposes=0b11,
            expires_at=far,
            signer=signer.address,
            nonce=registry.nonce_of(signer.address),
            deadline=now + 3600,
        )
        return registry.grant_by_sig(
            relayer, request, eip712.sign(signer, registry.domain, request)
        )

    sig_extra = ECRECOVER + COLD_SLOAD  # ecrecover + the category list read (a category scope)
    r = signed_grant(patient, insurer.address, lab)
    tx_row(
        "grantBySig (signer's 1st: new nonce slot)",
        r,
        70_000,
        2 * NEW_SLOT + DIGEST + grant_log + sig_extra,
        "new nonce slot + new grant slot",
    )
    r = signed_grant(patient, other.address, lab)
    tx_row(
        "grantBySig (new scope)",
        r,
        70_000,
        CHANGED_SLOT + NEW_SLOT + DIGEST + grant_log + sig_extra,
        "nonce bump + new grant slot",
    )
    revoke_request = eip712.RevokeRequest(
        patient=patient.address,
        grantee=other.address,
        scope_kind=ScopeKind.CATEGORY,
        scope_id=lab,
        signer=patient.address,
        nonce=registry.nonce_of(patient.address),
        deadline=now + 3600,
    )
    r = registry.revoke_by_sig(
        relayer, revoke_request, eip712.sign(patient, registry.domain, revoke_request)
    )
    tx_row(
        "revokeBySig",
        r,
        None,
        2 * CHANGED_SLOT + DIGEST + revoke_log + ECRECOVER - CLEAR_REFUND,
        "nonce bump + cleared grant",
    )

    # -- guardian
    r = registry.set_guardian(patient, guardian.address)
    tx_row("setGuardian", r, None, NEW_SLOT + DIGEST + log_cost(3, 0), "")
    r = registry.grant_for(
        guardian, patient.address, other.address, ScopeKind.ALL, ALL_SCOPE_ID, 0b1, far
    )
    tx_row(
        "grantFor (guardian, new scope)",
        r,
        None,
        NEW_SLOT + DIGEST + grant_log + COLD_SLOAD,
        "+ guardian read",
    )
    r = registry.revoke_for(guardian, patient.address, other.address, ScopeKind.ALL, ALL_SCOPE_ID)
    tx_row(
        "revokeFor (guardian)",
        r,
        None,
        CHANGED_SLOT + DIGEST + revoke_log + COLD_SLOAD - CLEAR_REFUND,
        "+ guardian read",
    )
    r = registry.set_guardian(patient, insurer.address)
    tx_row(
        "setGuardian (replace)",
        r,
        None,
        CHANGED_SLOT + DIGEST + 2 * log_cost(3, 0) + 100,
        "GuardianRemoved + GuardianSet (the digest's 2nd write is warm)",
    )
    r = registry.remove_guardian(patient)
    tx_row(
        "removeGuardian",
        r,
        None,
        CHANGED_SLOT + DIGEST + log_cost(3, 0),
        "the slot keeps the epoch (no refund)",
    )
    r = registry.burn_nonce(patient)
    floor = CHANGED_SLOT + DIGEST + log_cost(2, 32)
    tx_row("burnNonce", r, None, floor, "nonce bump + NonceBurned")

    # -- break-glass
    r = registry.open_break_glass(emergency, patient.address, 3600, os.urandom(32))
    tx_row(
        "openBreakGlass",
        r,
        None,
        NEW_SLOT + DIGEST + log_cost(3, 64) + COLD_SLOAD,
        "+ role read",
    )
    r = registry.close_break_glass(patient, patient.address, emergency.address)
    tx_row(
        "closeBreakGlass",
        r,
        None,
        CHANGED_SLOT + DIGEST + log_cost(3, 64),
        "the slot keeps the cool-down's end (no refund)",
    )

    # -- categories (admin)
    category_log = log_cost(2, 0)
    r = registry.add_category(admin, category_id("dental"))
    tx_row(
        "addCategory",
        r,
        None,
        NEW_SLOT + DIGEST + category_log + COLD_SLOAD,
        "new list slot + admin role read + CategoryAdded",
    )
    r = registry.remove_category(admin, category_id("dental"))
    tx_row(
        "removeCategory",
        r,
        None,
        CHANGED_SLOT + DIGEST + category_log + COLD_SLOAD - CLEAR_REFUND,
        "cleared list slot (refund) + admin role read + CategoryRemoved",
    )

    # -- access log
    r = registry.anchor_checkpoint(gateway, 1_000, os.urandom(32))
    tx_row(
        "anchorCheckpoint (gateway's 1st)",
        r,
        60_000,
        2 * NEW_SLOT + DIGEST + log_cost(2, 64) + COLD_SLOAD,
        "2 new slots (size, root)",
    )
    r = registry.anchor_checkpoint(gateway, 2_000, os.urandom(32))
    tx_row(
        "anchorCheckpoint",
        r,
        60_000,
        2 * CHANGED_SLOT + DIGEST + log_cost(2, 64) + COLD_SLOAD,
        "2 changed slots",
    )

    # -- hasConsent, execution gas of the eth_call
    def view_row(operation: str, grantee: str, purpose: int, floor: int, note: str) -> None:
        fn = registry.contract.functions.hasConsent(patient.address, grantee, record_id, purpose)
        data = bytes.fromhex(fn._encode_transaction_data()[2:])
        estimate = w3.eth.estimate_gas({"to": registry.address, "data": data.hex()})  # type: ignore[typeddict-item]
        execution = estimate - TX_BASE - calldata_cost(data)
        rows.append(Row(operation, execution, 15_000, floor, note))

    view_row(
        "hasConsent (allowed: record grant)",
        doctor.address,
        Purpose.TREATMENT,
        2 * COLD_SLOAD,
        "record slot + grant slot",
    )
    view_row(
        "hasConsent (allowed: category grant)",
        doctor.address,
        Purpose.INSURANCE,
        4 * COLD_SLOAD,
        "record, record grant, category, category grant",
    )
    view_row(
        "hasConsent (denied: worst case)",
        other.address,
        Purpose.TREATMENT,
        7 * COLD_SLOAD,
        "every basis checked: 7 cold slots",
    )
    view_row("hasConsent (owner)", patient.address, Purpose.RESEARCH, COLD_SLOAD, "record slot")
    measure_federation(registry, admin=admin, centre=centre, patient=patient, tx_row=tx_row)
    return rows


def measure_federation(
    registry: ConsentRegistry,
    *,
    admin: LocalAccount,
    centre: LocalAccount,
    patient: LocalAccount,
    tx_row: Callable[..., None],
) -> None:
    """setFederation of a 2-of-3 federation, then registerRecord under it (custody set and share
    commitments attested); the rows are appended through ``tx_row``."""
    w3 = registry.w3
    members = []
    accounts = dev_accounts()[6:9]
    for i, account in enumerate(accounts):
        registry.grant_role(admin, GATEWAY_ROLE, account.address)
        members.append(
            FederationMember(account.address, new_custody_key()[1], f"http://127.0.0.1:{8000 + i}")
        )
    receipt = registry.set_federation(admin, 2, members)
    n = len(members)
    url_words = n  # each URL (< 32 bytes) is one word in the event's data
    data_words = 2 + 3 + (1 + n) * 3 + n + n * 2 + url_words  # head, offsets, lengths, items
    tx_row(
        "setFederation (2 of 3)",
        receipt,
        None,
        # new slots: 3 member flags, members array (length + 3), keys (length + 3 x (length
        # slot + 2 data slots)), URLs (length + 3 short strings), threshold, custody set
        (3 + (1 + n) + (1 + 3 * n) + (1 + n) + 2) * NEW_SLOT
        + DIGEST
        + log_cost(1, 32 * data_words)
        + (n + 1) * COLD_SLOAD,
        "members, custody keys and URLs stored so federation() is one call; 3 role reads",
    )
    now = int(w3.eth.get_block("latest")["timestamp"])
    attestation = eip712.RecordAttestation(
        patient.address,
        category_id("laboratory"),
        os.urandom(32),
        now,
        custody_set=registry.federation().custody_set,
        share_commitments=os.urandom(32),
    )
    signature = eip712.sign(centre, registry.domain, attestation)
    registered = registry.register_record(accounts[0], attestation, signature, CID)
    cid_data = 4 * 32 + 32 + 32 * ((len(CID) + 31) // 32)
    tx_row(
        "registerRecord (2-of-3 custody)",
        registered,
        150_000,
        4 * NEW_SLOT + DIGEST + log_cost(4, cid_data) + 4 * COLD_SLOAD + ECRECOVER,
        "as registerRecord; the custody set is compared with the stored one (same read)",
    )


def print_table(rows: list[Row]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a dependency, plain text is the fallback
        for row in rows:
            budget = "-" if row.budget is None else f"{row.budget:,}"
            print(f"{row.operation:45} {row.gas:>9,} {budget:>9} {row.floor:>9,} {row.within:>4}")
        return
    table = Table(title="ConsentRegistry gas (gasUsed; hasConsent: execution gas of the call)")
    for name, justify in (
        ("operation", "left"),
        ("gas", "right"),
        ("budget", "right"),
        ("floor", "right"),
        ("over floor", "right"),
        ("within budget", "center"),
        ("floor covers", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(
            row.operation,
            f"{row.gas:,}",
            "-" if row.budget is None else f"{row.budget:,}",
            f"{row.floor:,}",
            f"{row.gas - row.floor:+,}",
            row.within,
            row.note,
        )
    Console(width=160).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="an existing node (default: start a throw-away anvil)")
    parser.add_argument("--json", action="store_true", help="print {operation: gas} as JSON")
    args = parser.parse_args(argv)

    node: AnvilNode | None = None
    url: str = args.url
    with tempfile.TemporaryDirectory(prefix="consent-gas-") as tmp:
        try:
            if url is None:
                node = AnvilNode(port=free_port(), log_path=Path(tmp) / "anvil.log").start()
                url = node.url
            started = time.perf_counter()
            rows = measure(url)
            elapsed = time.perf_counter() - started
        finally:
            if node is not None:
                node.stop()
    if args.json:
        print(json.dumps({row.operation: row.gas for row in rows}, indent=2))
    else:
        print_table(rows)
        over = [row for row in rows if row.within == "NO"]
        print(f"{len(rows)} operations measured in {elapsed:.2f} s; {len(over)} over budget")
        for row in over:
            why = WHY_OVER.get(row.operation, "see the floor column")
            print(f"- {row.operation}: {row.gas:,} > {row.budget:,} (floor {row.floor:,}): {why}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
