"""Upload recovery in-process: pending rows an upload left behind are resolved from the chain.

The SIGKILL cases (a real gateway process killed mid-upload) are in ``test_reliability_faults``;
these drive ``RecordService.recover_pending`` and the retry path directly: a stale pending row is
resolved by the retry, a registration still in the mempool is never rolled back, and a
registration the contract refuses leaves nothing behind.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, update
from web3 import Web3

from gateway.ipfs import IpfsClient
from gateway.storage.tables import RECORD
from ledger.chain.registry import ConsentRegistry
from ledger.protocol import eip712
from ledger.protocol.envelope import encrypt_record
from tests.helpers.gateway import (
    Stack,
    attest,
    build_stack,
    close_stack,
    fresh_relayer,
    login,
    new_account,
    upload,
)


def _row(stack: Stack, record_id: str) -> dict[str, Any] | None:
    with stack.state.engine.connect() as conn:
        found = conn.execute(select(RECORD).where(RECORD.c.record_id == record_id)).mappings()
        row = found.first()
    return dict(row) if row is not None else None


def _pins(stack: Stack) -> set[str]:
    return {str(c) for c in stack.state.records.blobs.pin_ls()}


def _record_id(stack: Stack, patient: str, data: bytes, issued_at: int) -> str:
    attestation, _sig = attest(stack, stack.centre, patient=patient, data=data, issued_at=issued_at)
    return "0x" + bytes(eip712.record_id(stack.domain, attestation)).hex()


def _automine(w3: Web3, on: bool) -> None:
    w3.provider.make_request("evm_setAutomine", [on])  # type: ignore[arg-type]


def test_a_stale_pending_row_is_resolved_by_the_retry(sqlite_gateway: Stack) -> None:
    """A crashed attempt's pending row (blob pinned, nothing sent): a retry within the grace
    period is a 409; once the row is older, the retry rolls it back (unpins) and succeeds."""
    stack = sqlite_gateway
    records = stack.state.records
    patient = new_account()
    data = os.urandom(2048)
    issued = int(time.time())
    rid = _record_id(stack, patient.address, data, issued)
    blob, _key = encrypt_record(os.urandom(64), record_id=bytes(32), patient=patient.address)
    crashed_cid = str(records.blobs.add(blob, pin=True))
    with stack.state.engine.begin() as conn:
        conn.execute(
            insert(RECORD).values(
                record_id=rid,
                patient=patient.address.lower(),
                centre=stack.centre.address.lower(),
                category="0x" + "00" * 32,
                content_digest="0x" + "00" * 32,
                issued_at=issued,
                cid=crashed_cid,
                wrapped_key=b"x",
                status="pending",
                created_at=time.time(),
            )
        )
    headers = login(stack, stack.centre)
    young = upload(stack, headers, patient=patient.address, data=data, issued_at=issued)
    assert young.status_code == 409, young.text
    assert young.json()["error"]["code"] == "conflict"

    records.pending_grace_s = 0.5
    with stack.state.engine.begin() as conn:  # the crashed attempt is now older than the grace
        conn.execute(
            update(RECORD).where(RECORD.c.record_id == rid).values(created_at=time.time() - 1.0)
        )
    retry = upload(stack, headers, patient=patient.address, data=data, issued_at=issued)
    assert retry.status_code == 201, retry.text
    row = _row(stack, rid)
    assert row is not None
    assert row["status"] == "live"
    assert row["cid"] != crashed_cid
    assert crashed_cid not in _pins(stack)
    assert row["cid"] in _pins(stack)
    assert stack.registry.record_of(bytes.fromhex(rid[2:])).patient == patient.address


@pytest.fixture(name="slow_receipts")
def slow_receipts_fixture(
    anvil: Any,
    w3: Web3,
    ipfs_node: Any,
    service_dir: Path,
    gateway_registry: tuple[ConsentRegistry, Any],
) -> Iterator[Stack]:
    """A per-test SQLite gateway that waits only 1 s for a registration's receipt."""
    registry, deployment = gateway_registry
    stack = build_stack(
        home=service_dir / f"gateway-{uuid.uuid4().hex[:8]}",
        w3=w3,
        chain_url=anvil.url,
        ipfs_url=ipfs_node.url,
        registry=registry,
        deployment=deployment,
        relayer=fresh_relayer(w3, registry),
        anchor_enabled=False,
        tx_timeout_s=1.0,
    )
    try:
        yield stack
    finally:
        _automine(w3, True)
        close_stack(stack)


def test_a_registration_still_in_the_mempool_is_never_rolled_back(slow_receipts: Stack) -> None:
    """The receipt does not come in time: 503, the row stays pending with its transaction hash
    and its blob pinned; recovery leaves it while the transaction is pending, and makes it live
    once it is mined; the retry then answers 200."""
    stack = slow_receipts
    records = stack.state.records
    patient = new_account()
    data = os.urandom(4096)
    issued = int(time.time())
    rid = _record_id(stack, patient.address, data, issued)
    headers = login(stack, stack.centre)
    _automine(stack.w3, False)
    try:
        first = upload(stack, headers, patient=patient.address, data=data, issued_at=issued)
        assert first.status_code == 503, first.text
        assert first.json()["error"]["code"] == "service_unavailable"
        row = _row(stack, rid)
        assert row is not None
        assert row["status"] == "pending"
        assert row["tx_hash"] is not None
        assert row["cid"] in _pins(stack)
        assert records.recover_pending(0) == {"pending": 1}
        assert _row(stack, rid) == row
    finally:
        _automine(stack.w3, True)
    stack.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    assert records.recover_pending(0) == {"live": 1}
    row = _row(stack, rid)
    assert row is not None
    assert row["status"] == "live"
    assert row["block_number"] is not None
    again = upload(stack, headers, patient=patient.address, data=data, issued_at=issued)
    assert again.status_code == 200, again.text
    assert again.json()["tx_hash"] == row["tx_hash"]
    assert row["cid"] in _pins(stack)


def test_a_refused_registration_leaves_no_row_and_no_pin(sqlite_gateway: Stack) -> None:
    """The record is already registered on-chain (another gateway did it): the registration
    reverts with RecordExists (409), the row is deleted and the new blob unpinned."""
    stack = sqlite_gateway
    patient = new_account()
    data = os.urandom(1024)
    issued = int(time.time())
    attestation, signature = attest(
        stack, stack.centre, patient=patient.address, data=data, issued_at=issued
    )
    rid = "0x" + bytes(eip712.record_id(stack.domain, attestation)).hex()
    cid = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    stack.registry.register_record(stack.registrar, attestation, bytes.fromhex(signature[2:]), cid)
    pins_before = _pins(stack)
    r = upload(
        stack, login(stack, stack.centre), patient=patient.address, data=data, issued_at=issued
    )
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "contract_record_exists"
    assert _row(stack, rid) is None
    assert _pins(stack) <= pins_before
    assert stack.state.records.recover_pending(0) == {}


def test_recover_pending_without_rows_is_a_no_op(sqlite_gateway: Stack) -> None:
    assert sqlite_gateway.state.records.recover_pending(0) == {}
    assert isinstance(sqlite_gateway.state.records.blobs, IpfsClient)
