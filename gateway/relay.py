"""Gasless consent relay: a patient's signed ``GrantConsent`` / ``RevokeConsent`` (EIP-712, as
the registry defines it) sent as ``grantBySig`` / ``revokeBySig`` from the gateway's account.

The gateway does not judge the signature itself beyond its shape: the contract verifies it
(EOA or ERC-1271 signer, nonce, deadline, domain), and a revert comes back as the registry's
custom error (``contract_invalid_signature``, ``contract_signature_expired``,
``contract_invalid_account_nonce`` for a replay ...). The relayer's nonces are managed locally
and its in-flight transactions bounded (``ledger.chain.TxSender``); the answer is the mined
receipt, so a fetch made after it sees the new consent state.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from gateway.errors import InvalidRequest, UpstreamFailed
from gateway.metrics import Metrics
from gateway.models import ConsentPublic, ConsentsPublic, RelayResult
from gateway.service import ChainAccess
from ledger.consent_types import Purpose, ScopeKind, purposes_of
from ledger.eip712 import GrantRequest, RevokeRequest
from ledger.events import ConsentGranted as ConsentGrantedEvent
from ledger.events import ConsentRevoked as ConsentRevokedEvent
from ledger.events import EventDecoder, RawLog, registry_event_abi

__all__ = ["ConsentDirectory", "ConsentRelay", "parse_grant", "parse_revoke"]

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
_SCOPE_NAMES: dict[ScopeKind, Literal["record", "category", "all"]] = {
    ScopeKind.RECORD: "record",
    ScopeKind.CATEGORY: "category",
    ScopeKind.ALL: "all",
}
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


class ConsentRelay:
    """Relays signed consent changes and reports the mined receipt."""

    def __init__(self, chain: ChainAccess, *, metrics: Metrics) -> None:
        self.chain = chain
        self.metrics = metrics

    def relay(
        self,
        action: Literal["grant", "revoke"],
        request: Mapping[str, int | str],
        signature: str,
    ) -> RelayResult:
        sig = _signature(signature)
        relayer = self.chain.relayer
        try:
            if action == "grant":
                grant = parse_grant(request)
                receipt = self.chain.send(lambda r: r.grant_by_sig(relayer, grant, sig))
            else:
                revoke = parse_revoke(request)
                receipt = self.chain.send(lambda r: r.revoke_by_sig(relayer, revoke, sig))
        except Exception as exc:
            self.metrics.relayed.labels(action, "refused").inc()
            log.info("relay %s refused: %s", action, getattr(exc, "code", type(exc).__name__))
            raise
        self.metrics.relayed.labels(action, "mined").inc()
        log.info("relayed %s tx=%s block=%d", action, receipt.tx_hash, receipt.block_number)
        return RelayResult(
            action=action,
            tx_hash=receipt.tx_hash,
            block_number=receipt.block_number,
            gas_used=receipt.gas_used,
        )


class ConsentDirectory:
    """Consents as they stand on-chain, for one account: those it granted as patient and
    those granted to it. Candidates come from the registry's ``ConsentGranted`` /
    ``ConsentRevoked`` logs (indexed by patient and grantee); the terms are then read with
    ``consentOf`` at one block, which the answer names."""

    def __init__(
        self, chain: ChainAccess, *, abi: Sequence[Mapping[str, Any]], from_block: int
    ) -> None:
        self.chain = chain
        self.from_block = from_block
        self._decoder = EventDecoder(registry_event_abi(abi))
        self._granted = self._decoder.topic0_of("ConsentGranted")
        self._revoked = self._decoder.topic0_of("ConsentRevoked")

    def _keys(self, topics: list[Any], block: int) -> list[tuple[str, str, ScopeKind, bytes]]:
        params = {
            "address": self.chain.address,
            "fromBlock": hex(self.from_block),
            "toBlock": hex(block),
            "topics": topics,
        }
        with self.chain.guard():
            answer = self.chain.w3.provider.make_request("eth_getLogs", [params])  # type: ignore[arg-type]
        if "error" in answer:
            raise UpstreamFailed("eth_getLogs failed", detail=str(answer["error"]))
        keys: dict[tuple[str, str, ScopeKind, bytes], None] = {}
        for raw in answer["result"]:
            event = self._decoder.decode(RawLog.from_rpc(raw))
            if isinstance(event, (ConsentGrantedEvent, ConsentRevokedEvent)):
                keys[(event.patient, event.grantee, event.scope_kind, event.scope_id)] = None
        return list(keys)

    def list_for(self, address: str) -> ConsentsPublic:
        who = "0x" + "00" * 12 + address.lower()[2:]
        block = self.chain.block_number()
        both = [self._granted, self._revoked]
        granted = self._terms(self._keys([both, who], block), block)
        received = self._terms(self._keys([both, None, who], block), block)
        return ConsentsPublic(block_number=block, granted=granted, received=received)

    def _terms(
        self, keys: list[tuple[str, str, ScopeKind, bytes]], block: int
    ) -> list[ConsentPublic]:
        out: list[ConsentPublic] = []
        if not keys:
            return out
        with self.chain.guard():
            timestamp = int(self.chain.w3.eth.get_block(block)["timestamp"])
        for patient, grantee, kind, scope_id in keys:
            with self.chain.guard():
                terms = self.chain.registry.consent_of(
                    patient, grantee, kind, scope_id, block_identifier=block
                )
            if not terms.exists:
                continue
            ids = sorted(int(p) for p in purposes_of(terms.purposes))
            out.append(
                ConsentPublic(
                    patient=patient,
                    grantee=grantee,
                    scope_kind=_SCOPE_NAMES[kind],
                    scope_id="0x" + scope_id.hex(),
                    purposes=ids,
                    purpose_names=[
                        Purpose(i).name.lower() if i in Purpose._value2member_map_ else str(i)
                        for i in ids
                    ],
                    expires_at=terms.expires_at,
                    active=terms.in_force_at(timestamp),
                )
            )
        return out
