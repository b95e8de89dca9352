"""Gasless consent relay: a patient's signed ``GrantConsent`` / ``RevokeConsent`` (EIP-712, as
the registry defines it) sent as ``grantBySig`` / ``revokeBySig`` from the relayer account,
under a published relayer policy (:class:`RelayPolicy`, ``GET /v1/consents/policy``).

The gateway does not judge the signature itself beyond its shape: the contract verifies it
(EOA or ERC-1271 signer, nonce, deadline, domain), and a revert comes back as the registry's
custom error (``contract_invalid_signature``, ``contract_signature_expired``,
``contract_invalid_account_nonce`` for a replay ...).

The policy, in the order it is applied:

- **Quota and rate** (429, ``Retry-After``): relayed transactions per patient (the request's
  ``patient``) in any rolling hour, and of all patients in any rolling minute. They are counted
  in the database (``relayed_tx``, one row per transaction sent, written before it is sent), so
  every replica and every request path sees the same count; a request refused before sending
  counts nothing, so nobody can use up a patient's quota without the patient's signatures.
- **Gas cap** (403 ``relay_gas_cap_exceeded``): the call is estimated with the cap as its gas
  allowance (the node never runs it with more), and sent with the cap as its gas limit, so a
  transaction costs the relayer at most ``gas_cap`` x its gas price even when the state changes
  between the estimate and mining (an ERC-1271 signer that flips its answer: the transaction
  reverts, within the cap). When the capped estimate fails on the signature of a contract
  signer, its ``isValidSignature`` is probed alone within the cap: one that runs out of gas, or
  accepts alone but not within the whole call, is refused as too costly.
- **Bounded wait**: the route waits for the receipt for ``receipt_wait_s`` without holding a
  worker thread (it polls from the event loop), then answers 202 with the transaction hash;
  ``GET /v1/consents/relays/{tx_hash}`` gives the outcome later.

The relayer account relays and does nothing else: records are registered and checkpoints
anchored from other accounts (``gateway.settings``), so draining it stops neither.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak
from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from web3 import Web3

from gateway.errors import (
    ChainUnavailable,
    ContractRejected,
    GatewayError,
    InvalidRequest,
    NotFound,
    RelayGasCapExceeded,
    RelayQuotaExceeded,
    RelayRateLimited,
    UpstreamFailed,
)
from gateway.metrics import Metrics
from gateway.services.chain import ChainAccess
from gateway.storage.engine import is_postgres
from gateway.storage.tables import RELAYED_TX
from ledger.chain.node import eip1559_fees
from ledger.protocol.consent_types import ScopeKind
from ledger.protocol.eip712 import GrantRequest, RevokeRequest
from ledger.protocol.eip712 import digest as typed_digest
from ledger.protocol.errors import DomainError
from ledger.protocol.wire import (
    RelayPending,
    RelayPolicyPublic,
    RelayResult,
)

__all__ = [
    "ConsentRelay",
    "RelayLedger",
    "RelayPolicy",
    "Submitted",
    "parse_grant",
    "parse_revoke",
]

log = logging.getLogger("gateway")

_GRANT_FIELDS = (
    "patient",
    "grantee",
    "scopeKind",
    "scopeId",
    "purposes",
    "expiresAt",
    "signer",
    "nonce",
    "deadline",
)
_REVOKE_FIELDS = ("patient", "grantee", "scopeKind", "scopeId", "signer", "nonce", "deadline")
_SNAKE = {
    "scope_kind": "scopeKind",
    "scope_id": "scopeId",
    "expires_at": "expiresAt",
}


def _normalise(raw: Mapping[str, int | str], fields: tuple[str, ...]) -> dict[str, int | str]:
    values = {_SNAKE.get(k, k): v for k, v in raw.items()}
    missing = [f for f in fields if f not in values]
    extra = sorted(set(values) - set(fields))
    if missing or extra:
        raise InvalidRequest(
            "request fields do not match the typed data",
            missing=",".join(missing),
            unexpected=",".join(extra),
        )
    return values


_UINT_TEXT = re.compile(r"[0-9]{1,78}|0[xX][0-9a-fA-F]{1,64}")  # ASCII only, no whitespace
_HEX32 = re.compile(r"0x[0-9a-fA-F]{64}")
_HEX20 = re.compile(r"0x[0-9a-fA-F]{40}")


def _int(values: Mapping[str, int | str], name: str, bits: int) -> int:
    value = values[name]
    # int() alone would take " 5", "1_0" and Unicode digits ("٣"); str.isdigit() takes "²",
    # which int() then refuses. Decimal or 0x hex in ASCII, nothing else.
    if isinstance(value, str) and not _UINT_TEXT.fullmatch(value):
        raise InvalidRequest(f"{name} is not an integer (decimal or 0x hex)", field=name)
    try:
        number = int(value, 0) if isinstance(value, str) else int(value)
    except ValueError:
        raise InvalidRequest(f"{name} is not an integer", field=name) from None
    if not 0 <= number < 2**bits:
        raise InvalidRequest(f"{name} is out of range for uint{bits}", field=name)
    return number


def _bytes32(values: Mapping[str, int | str], name: str) -> bytes:
    value = values[name]
    text = str(value)
    if not _HEX32.fullmatch(text):  # bytes.fromhex would skip whitespace inside
        raise InvalidRequest(f"{name} must be 0x + 64 hex digits", field=name)
    try:
        return bytes.fromhex(text[2:])
    except ValueError:
        raise InvalidRequest(f"{name} is not hex", field=name) from None


def _address(values: Mapping[str, int | str], name: str) -> str:
    text = str(values[name])
    if not _HEX20.fullmatch(text):
        raise InvalidRequest(f"{name} is not a 0x address", field=name)
    try:
        bytes.fromhex(text[2:])
    except ValueError:
        raise InvalidRequest(f"{name} is not hex", field=name) from None
    return text


def _scope_kind(values: Mapping[str, int | str]) -> ScopeKind:
    value = values["scopeKind"]
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        try:
            return ScopeKind[value.upper()]
        except KeyError:
            raise InvalidRequest(
                "scopeKind must be record, category or all", field="scopeKind"
            ) from None
    try:
        return ScopeKind(int(value))
    except ValueError:
        raise InvalidRequest("scopeKind must be 0, 1 or 2", field="scopeKind") from None


def parse_grant(raw: Mapping[str, int | str]) -> GrantRequest:
    v = _normalise(raw, _GRANT_FIELDS)
    return GrantRequest(
        patient=_address(v, "patient"),  # type: ignore[arg-type]
        grantee=_address(v, "grantee"),  # type: ignore[arg-type]
        scope_kind=_scope_kind(v),
        scope_id=_bytes32(v, "scopeId"),
        purposes=_int(v, "purposes", 32),
        expires_at=_int(v, "expiresAt", 64),
        signer=_address(v, "signer"),  # type: ignore[arg-type]
        nonce=_int(v, "nonce", 256),
        deadline=_int(v, "deadline", 256),
    )


def parse_revoke(raw: Mapping[str, int | str]) -> RevokeRequest:
    v = _normalise(raw, _REVOKE_FIELDS)
    return RevokeRequest(
        patient=_address(v, "patient"),  # type: ignore[arg-type]
        grantee=_address(v, "grantee"),  # type: ignore[arg-type]
        scope_kind=_scope_kind(v),
        scope_id=_bytes32(v, "scopeId"),
        signer=_address(v, "signer"),  # type: ignore[arg-type]
        nonce=_int(v, "nonce", 256),
        deadline=_int(v, "deadline", 256),
    )


def _signature(text: str) -> bytes:
    body = text[2:] if text[:2] in ("0x", "0X") else text
    try:
        raw = bytes.fromhex(body)
    except ValueError:
        raise InvalidRequest("signature is not hex", field="signature") from None
    if not raw:
        raise InvalidRequest("signature is empty", field="signature")
    return raw


@dataclass(frozen=True, slots=True)
class RelayPolicy:
    """What the relayer pays for (``Settings.relay_*``)."""

    gas_cap: int
    patient_quota_per_hour: int
    rate_per_minute: int
    receipt_wait_s: float

    QUOTA_WINDOW_S = 3600
    RATE_WINDOW_S = 60


_HISTORY_S = 86_400  # relayed_tx rows are kept a day (the quota needs an hour), then purged
_PURGE_EVERY_S = 60.0
_ADVISORY_LOCK = int.from_bytes(keccak(text="consent-ledger/relayed_tx")[:7], "big")


class RelayLedger:
    """The ``relayed_tx`` table: reserves a row per transaction under the quota and the rate
    (one at a time: a lock in the process, and a transaction-scoped advisory lock on
    PostgreSQL, so replicas never both take the last slot), and records outcomes."""

    def __init__(
        self, engine: Engine, policy: RelayPolicy, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._engine = engine
        self.policy = policy
        self._clock = clock
        self._lock = threading.Lock()
        self._purged_at = 0.0

    def check(self, patient: str) -> None:
        """Refuse (429) when the patient's quota or the gateway's rate is used up."""
        with self._engine.connect() as conn:
            self._check(conn, patient.lower(), self._clock())

    def _check(self, conn: Connection, patient: str, now: float) -> None:
        t = RELAYED_TX
        quota, window = self.policy.patient_quota_per_hour, RelayPolicy.QUOTA_WINDOW_S
        count, oldest = conn.execute(
            select(func.count(), func.min(t.c.created_at)).where(
                t.c.patient == patient, t.c.created_at > now - window
            )
        ).one()
        if count >= quota:
            raise RelayQuotaExceeded(
                patient=patient,
                quota=quota,
                window_s=window,
                retry_after_s=_after(oldest, window, now),
            )
        rate, window = self.policy.rate_per_minute, RelayPolicy.RATE_WINDOW_S
        count, oldest = conn.execute(
            select(func.count(), func.min(t.c.created_at)).where(t.c.created_at > now - window)
        ).one()
        if count >= rate:
            raise RelayRateLimited(
                rate=rate, window_s=window, retry_after_s=_after(oldest, window, now)
            )

    def reserve(self, *, patient: str, signer: str, action: str) -> int:
        """A ``sending`` row counted from now on, or 429; the row id."""
        now = self._clock()
        with self._lock, self._engine.begin() as conn:
            if is_postgres(self._engine):
                conn.execute(select(func.pg_advisory_xact_lock(_ADVISORY_LOCK)))
            self._check(conn, patient.lower(), now)
            row = conn.execute(
                insert(RELAYED_TX)
                .values(
                    action=action,
                    patient=patient.lower(),
                    signer=signer.lower(),
                    status="sending",
                    created_at=now,
                )
                .returning(RELAYED_TX.c.id)
            ).scalar_one()
            if now - self._purged_at > _PURGE_EVERY_S:
                self._purged_at = now
                conn.execute(delete(RELAYED_TX).where(RELAYED_TX.c.created_at < now - _HISTORY_S))
        return int(row)

    def signed(self, row: int, tx_hash: str) -> None:
        self._update(row, tx_hash=tx_hash, status="pending")

    def forget(self, row: int) -> None:
        """The transaction certainly never reached the node: it does not count."""
        with self._engine.begin() as conn:
            conn.execute(delete(RELAYED_TX).where(RELAYED_TX.c.id == row))

    def settled(self, tx_hash: str, *, status: str, block_number: int, gas_used: int) -> bool:
        """Record a receipt; whether this call was the first to record it."""
        t = RELAYED_TX
        with self._engine.begin() as conn:
            changed = conn.execute(
                update(t)
                .where(t.c.tx_hash == tx_hash, t.c.status.in_(("sending", "pending")))
                .values(status=status, block_number=block_number, gas_used=gas_used)
            ).rowcount
        return bool(changed)

    def find(self, tx_hash: str) -> dict[str, Any] | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(RELAYED_TX).where(RELAYED_TX.c.tx_hash == tx_hash)).first()
        return dict(row._mapping) if row is not None else None

    def _update(self, row: int, **values: Any) -> None:
        with self._engine.begin() as conn:
            conn.execute(update(RELAYED_TX).where(RELAYED_TX.c.id == row).values(**values))


def _after(oldest: float | None, window: int, now: float) -> int:
    """Seconds until the oldest counted transaction leaves the window (at least 1)."""
    if oldest is None:
        return 1
    return max(1, math.ceil(float(oldest) + window - now))


@dataclass(frozen=True, slots=True)
class Submitted:
    """A relayed transaction handed to the node."""

    action: Literal["grant", "revoke"]
    tx_hash: str


_MAGIC_VALUE = keccak(text="isValidSignature(bytes32,bytes)")[:4]
_OUT_OF_GAS = ("out of gas", "outofgas", "exceeds allowance", "gas required exceeds")


def _is_out_of_gas(exc: GatewayError) -> bool:
    text = f"{exc.message} {dict(exc.fields)}".lower()
    return any(marker in text for marker in _OUT_OF_GAS)


class ConsentRelay:
    """Relays signed consent changes from the relayer account under :class:`RelayPolicy`."""

    def __init__(
        self,
        chain: ChainAccess,
        *,
        metrics: Metrics,
        ledger: RelayLedger,
        abi: Sequence[Mapping[str, Any]],
    ) -> None:
        self.chain = chain
        self.metrics = metrics
        self.ledger = ledger
        self.policy = ledger.policy
        self._contract = Web3().eth.contract(abi=list(abi))  # calldata encoding only

    def public_policy(self) -> RelayPolicyPublic:
        p = self.policy
        return RelayPolicyPublic(
            relayer=self.chain.relayer.address,
            gas_cap=p.gas_cap,
            patient_quota_per_hour=p.patient_quota_per_hour,
            rate_per_minute=p.rate_per_minute,
            receipt_wait_s=p.receipt_wait_s,
        )

    # -- sending ------------------------------------------------------------------------------

    def submit(
        self,
        action: Literal["grant", "revoke"],
        request: Mapping[str, int | str],
        signature: str,
    ) -> Submitted:
        """Check the policy, then sign and send; returns once the node has the transaction."""
        try:
            return self._submit(action, request, signature)
        except Exception as exc:
            self.metrics.relayed.labels(action, "refused").inc()
            log.info("relay %s refused: %s", action, getattr(exc, "code", type(exc).__name__))
            raise

    def _submit(
        self,
        action: Literal["grant", "revoke"],
        request: Mapping[str, int | str],
        signature: str,
    ) -> Submitted:
        sig = _signature(signature)
        typed: GrantRequest | RevokeRequest
        if action == "grant":
            typed = parse_grant(request)
            data = self._contract.encode_abi("grantBySig", args=[typed.as_tuple(), sig])
        else:
            typed = parse_revoke(request)
            data = self._contract.encode_abi("revokeBySig", args=[typed.as_tuple(), sig])
        self.ledger.check(typed.patient)  # cheap refusal before any chain work
        self._estimate_within_cap(data, typed, sig)
        row = self.ledger.reserve(patient=typed.patient, signer=typed.signer, action=action)
        tx_hash = self._send(data, row)
        log.info("relayed %s tx=%s (pending)", action, tx_hash)
        return Submitted(action=action, tx_hash=tx_hash)

    def _estimate_within_cap(
        self, data: str, typed: GrantRequest | RevokeRequest, signature: bytes
    ) -> None:
        cap = self.policy.gas_cap
        call = {
            "from": self.chain.relayer.address,
            "to": self.chain.address,
            "data": data,
            "gas": hex(cap),
        }
        try:
            estimate = int(str(self.chain.rpc("eth_estimateGas", [call])), 16)
        except ContractRejected as exc:
            if exc.error == "InvalidSignature" and self._signer_check_exceeds_cap(typed, signature):
                raise RelayGasCapExceeded(
                    gas_cap=cap,
                    reason="the signer's ERC-1271 isValidSignature needs more gas than the cap",
                    signer=typed.signer,
                ) from exc
            raise
        except UpstreamFailed as exc:
            if _is_out_of_gas(exc):
                raise RelayGasCapExceeded(
                    gas_cap=cap, reason="the call's estimate exceeds the cap", signer=typed.signer
                ) from exc
            raise
        if estimate > cap:  # a node that ignores the allowance
            raise RelayGasCapExceeded(
                gas_cap=cap, reason=f"the call's estimate is {estimate} gas", signer=typed.signer
            )

    def _signer_check_exceeds_cap(
        self, typed: GrantRequest | RevokeRequest, signature: bytes
    ) -> bool:
        """Whether a contract signer's ``isValidSignature`` alone runs out of gas within the
        cap, or accepts alone yet the capped call still failed (its cost is what is left)."""
        if str(self.chain.rpc("eth_getCode", [typed.signer, "latest"])) in ("0x", ""):
            return False  # an EOA: a bad signature is a bad signature
        digest = typed_digest(self.chain.domain, typed)
        args = abi_encode(["bytes32", "bytes"], [digest, signature])
        probe = {
            "from": self.chain.address,
            "to": typed.signer,
            "data": "0x" + (_MAGIC_VALUE + args).hex(),
            "gas": hex(self.policy.gas_cap),
        }
        try:
            result = str(self.chain.rpc("eth_call", [probe, "latest"]))
        except (UpstreamFailed, ContractRejected) as exc:
            return _is_out_of_gas(exc) if isinstance(exc, UpstreamFailed) else False
        return result[:10].lower() == "0x" + _MAGIC_VALUE.hex()

    def _send(self, data: str, row: int) -> str:
        chain, relayer = self.chain, self.chain.relayer
        try:
            sender = chain.sender(relayer)
            block = chain.rpc("eth_getBlockByNumber", ["latest", False])
        except BaseException:
            self.ledger.forget(row)  # nothing signed yet
            raise
        fee = block.get("baseFeePerGas") if isinstance(block, Mapping) else None
        tx: dict[str, Any] = {
            "type": 2,
            "chainId": chain.chain_id,
            "to": chain.address,
            "data": data,
            "value": 0,
            "gas": self.policy.gas_cap,
            **eip1559_fees(chain.chain_id, int(str(fee), 16) if fee is not None else None),
            "nonce": sender.next_nonce(),
        }
        try:
            signed = relayer.sign_transaction(tx)
            tx_hash = "0x" + bytes(signed.hash).hex()
            self.ledger.signed(row, tx_hash)
        except BaseException:
            sender.resync()  # the nonce was taken but nothing was sent
            self.ledger.forget(row)
            raise
        try:
            chain.rpc("eth_sendRawTransaction", ["0x" + bytes(signed.raw_transaction).hex()])
        except ChainUnavailable:
            sender.resync()  # it may or may not have reached the node: it stays counted
            raise
        except DomainError:
            sender.resync()  # the node refused it: nothing was sent
            self.ledger.forget(row)
            raise
        return tx_hash

    # -- outcome ------------------------------------------------------------------------------

    def outcome(self, submitted: Submitted) -> RelayResult | None:
        """The mined receipt (None while pending); a reverted transaction raises the
        registry's error (replayed on its block)."""
        receipt = self.chain.rpc("eth_getTransactionReceipt", [submitted.tx_hash])
        if not isinstance(receipt, Mapping) or receipt.get("blockNumber") is None:
            return None
        block = int(str(receipt["blockNumber"]), 16)
        gas_used = int(str(receipt["gasUsed"]), 16)
        status = "mined" if int(str(receipt.get("status", "0x0")), 16) == 1 else "reverted"
        first = self.ledger.settled(
            submitted.tx_hash, status=status, block_number=block, gas_used=gas_used
        )
        if first:
            self.metrics.relayed.labels(submitted.action, status).inc()
        if status == "reverted":
            log.info(
                "relayed %s tx=%s reverted, gas %d", submitted.action, submitted.tx_hash, gas_used
            )
            self._raise_revert(submitted.tx_hash, block)
        log.info("relayed %s tx=%s block=%d", submitted.action, submitted.tx_hash, block)
        return RelayResult(
            action=submitted.action,
            tx_hash=submitted.tx_hash,
            block_number=block,
            gas_used=gas_used,
        )

    def _raise_revert(self, tx_hash: str, block: int) -> None:
        tx = self.chain.rpc("eth_getTransactionByHash", [tx_hash])
        if isinstance(tx, Mapping):
            call = {"from": tx.get("from"), "to": tx.get("to"), "data": tx.get("input")}
            # A reverted transaction changed nothing: the state after its block is the one it
            # ran on (up to other transactions of the block); raises ContractRejected.
            self.chain.rpc("eth_call", [call, hex(block)])
        raise UpstreamFailed(
            "the relayed transaction reverted", tx_hash=tx_hash, block_number=block
        )

    def lookup(self, tx_hash: str) -> Submitted:
        """A transaction this gateway relayed (404 otherwise)."""
        text = tx_hash.strip().lower()
        if len(text) != 66 or not text.startswith("0x"):
            raise InvalidRequest("tx_hash must be 0x + 64 hex digits", field="tx_hash")
        try:
            bytes.fromhex(text[2:])
        except ValueError:
            raise InvalidRequest("tx_hash is not hex", field="tx_hash") from None
        row = self.ledger.find(text)
        if row is None:
            raise NotFound("this gateway relayed no such transaction", tx_hash=text)
        action: Literal["grant", "revoke"] = "grant" if row["action"] == "grant" else "revoke"
        return Submitted(action=action, tx_hash=text)

    def pending(self, submitted: Submitted) -> RelayPending:
        return RelayPending(
            action=submitted.action,
            tx_hash=submitted.tx_hash,
            status_url=f"/v1/consents/relays/{submitted.tx_hash}",
        )
