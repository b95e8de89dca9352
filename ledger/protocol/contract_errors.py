"""The registry's Solidity custom errors as Python exceptions, matched by 4-byte selector.

Tree::

    ContractError                      a call or transaction to the registry reverted
    ├── <one class per custom error>   e.g. ExpiryInPast(expires_at=..., now_timestamp=...)
    │     the registry's own (IConsentRegistry) and the OpenZeppelin ones it can raise:
    │     AccessControlUnauthorizedAccount, AccessControlBadConfirmation, InvalidAccountNonce,
    │     ECDSAInvalidSignature, ECDSAInvalidSignatureLength, ECDSAInvalidSignatureS,
    │     InvalidShortString, StringTooLong (EIP712's, constructor only)
    ├── RevertedWithReason             Error(string)
    ├── Panic                          Panic(uint256) (assert, overflow, bad enum value ...)
    ├── Reverted                       no revert data at all
    └── UnknownContractError           a selector this module has no class for, or revert
                                       data whose arguments do not decode for its selector

Each custom-error class is named as in Solidity and carries the decoded arguments as
attributes, named in snake_case (``nowTimestamp`` -> ``now_timestamp``): addresses as checksum
strings, ``bytes32`` as ``bytes``, integers as ``int``, ``ScopeKind`` as ``ScopeKind``.

``ErrorDecoder`` builds the selector map from a compiled ABI, so it cannot drift from the
contract: every error in the ABI must have a class here with the same argument names (else
``ValueError`` at construction), and each class's selector is computed from the ABI signature.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from eth_abi.abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from ledger.protocol.consent_types import ScopeKind

__all__ = [
    "ERROR_CLASSES",
    "AccessControlBadConfirmation",
    "AccessControlUnauthorizedAccount",
    "BreakGlassAlreadyOpen",
    "BreakGlassCoolingDown",
    "BreakGlassNotOpen",
    "BreakGlassReasonReused",
    "CategoryAlreadyListed",
    "CategoryNotListed",
    "CheckpointNotGrowing",
    "ConsentNotFound",
    "ConsentUnchanged",
    "ContractError",
    "CustodySetNotCurrent",
    "DuplicateCustodian",
    "ECDSAInvalidSignature",
    "ECDSAInvalidSignatureLength",
    "ECDSAInvalidSignatureS",
    "ErrorDecoder",
    "ExpiryInPast",
    "FederationMember",
    "GuardianUnchanged",
    "InvalidAccountNonce",
    "InvalidBreakGlassDuration",
    "InvalidCid",
    "InvalidCustodyKey",
    "InvalidFederation",
    "InvalidGrantee",
    "InvalidGuardian",
    "InvalidPurpose",
    "InvalidScope",
    "InvalidShortString",
    "InvalidSignature",
    "InvalidThreshold",
    "InvalidUrl",
    "MissingReason",
    "NoGuardian",
    "NoPurpose",
    "NotACentre",
    "NotAGateway",
    "NotPatientOrGuardian",
    "Panic",
    "RecordExists",
    "RecordNotOwned",
    "Reverted",
    "RevertedWithReason",
    "SignatureExpired",
    "StringTooLong",
    "UnknownContractError",
    "UnknownRecord",
    "ZeroCategory",
    "ZeroPatient",
]


@dataclass(eq=False)
class ContractError(Exception):
    """A registry call or transaction reverted. Subclasses carry the decoded arguments."""

    solidity_name: ClassVar[str] = ""

    def __str__(self) -> str:
        parts = ", ".join(
            f"{f.name}={_show(getattr(self, f.name))}" for f in dataclasses.fields(self)
        )
        return f"{type(self).__name__}({parts})"

    def values(self) -> tuple[Any, ...]:
        """The decoded arguments in Solidity order (handy in tests)."""
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self))


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, ScopeKind):
        return value.name
    return repr(value)


# ---------------------------------------------------------------- IConsentRegistry errors


@dataclass(eq=False)
class NotACentre(ContractError):
    """The attestation's signer does not hold CENTRE_ROLE."""

    signer: ChecksumAddress


@dataclass(eq=False)
class ZeroPatient(ContractError):
    """The attestation (or break-glass) names the zero address as patient."""


@dataclass(eq=False)
class RecordExists(ContractError):
    """The record id is already registered."""

    record_id: bytes


@dataclass(eq=False)
class UnknownRecord(ContractError):
    """The record id is not registered."""

    record_id: bytes


@dataclass(eq=False)
class InvalidCid(ContractError):
    """The CID is empty or longer than 128 bytes."""

    length: int


@dataclass(eq=False)
class InvalidGrantee(ContractError):
    """The grantee is the zero address or the patient themself."""

    grantee: ChecksumAddress


@dataclass(eq=False)
class RecordNotOwned(ContractError):
    """A Record scope names a record of another patient."""

    record_id: bytes
    patient: ChecksumAddress
    owner: ChecksumAddress


@dataclass(eq=False)
class InvalidScope(ContractError):
    """An All scope with a non-zero id, or a Category scope with a zero id."""

    scope_kind: ScopeKind
    scope_id: bytes


@dataclass(eq=False)
class NoPurpose(ContractError):
    """The purposes bit set is empty."""


@dataclass(eq=False)
class ExpiryInPast(ContractError):
    """The expiry is not in the future."""

    expires_at: int
    now_timestamp: int


@dataclass(eq=False)
class ConsentUnchanged(ContractError):
    """The grant would change nothing."""

    patient: ChecksumAddress
    grantee: ChecksumAddress
    scope_kind: ScopeKind
    scope_id: bytes


@dataclass(eq=False)
class ConsentNotFound(ContractError):
    """There is no consent stored to revoke."""

    patient: ChecksumAddress
    grantee: ChecksumAddress
    scope_kind: ScopeKind
    scope_id: bytes


@dataclass(eq=False)
class NotPatientOrGuardian(ContractError):
    """The caller (or signer) is neither the patient nor the patient's guardian."""

    account: ChecksumAddress
    patient: ChecksumAddress


@dataclass(eq=False)
class SignatureExpired(ContractError):
    """The signature's deadline has passed."""

    deadline: int
    now_timestamp: int


@dataclass(eq=False)
class InvalidSignature(ContractError):
    """The signature does not verify for the claimed signer under the contract's domain."""

    signer: ChecksumAddress


@dataclass(eq=False)
class InvalidGuardian(ContractError):
    """The guardian is the zero address or the patient."""

    guardian: ChecksumAddress


@dataclass(eq=False)
class GuardianUnchanged(ContractError):
    """The guardian is already appointed."""

    patient: ChecksumAddress
    guardian: ChecksumAddress


@dataclass(eq=False)
class NoGuardian(ContractError):
    """The patient has no guardian to remove."""

    patient: ChecksumAddress


@dataclass(eq=False)
class InvalidBreakGlassDuration(ContractError):
    """A break-glass duration is zero or above MAX_BREAK_GLASS."""

    duration: int
    max_duration: int


@dataclass(eq=False)
class BreakGlassAlreadyOpen(ContractError):
    """Break-glass by this institution for this patient is already open."""

    patient: ChecksumAddress
    institution: ChecksumAddress
    until: int


@dataclass(eq=False)
class BreakGlassNotOpen(ContractError):
    """No open break-glass to close."""

    patient: ChecksumAddress
    institution: ChecksumAddress


@dataclass(eq=False)
class BreakGlassCoolingDown(ContractError):
    """The patient (or guardian) closed this institution's break-glass less than
    ``BREAK_GLASS_COOLDOWN`` ago; it may reopen at ``reopens_at``."""

    patient: ChecksumAddress
    institution: ChecksumAddress
    reopens_at: int


@dataclass(eq=False)
class BreakGlassReasonReused(ContractError):
    """The reason hash is that of the institution's previous opening for this patient."""

    patient: ChecksumAddress
    institution: ChecksumAddress
    reason_hash: bytes


@dataclass(eq=False)
class MissingReason(ContractError):
    """The break-glass reason hash is zero."""


@dataclass(eq=False)
class InvalidPurpose(ContractError):
    """The purpose id is out of range (0..31)."""

    purpose: int


@dataclass(eq=False)
class CheckpointNotGrowing(ContractError):
    """A checkpoint's tree size does not strictly grow for this gateway."""

    gateway: ChecksumAddress
    tree_size: int
    last_tree_size: int


@dataclass(eq=False)
class CategoryNotListed(ContractError):
    """The category is not on the admin's list (a record's, a new Category grant's, or
    one to remove)."""

    category: bytes


@dataclass(eq=False)
class CategoryAlreadyListed(ContractError):
    """The category is already on the list."""

    category: bytes


@dataclass(eq=False)
class ZeroCategory(ContractError):
    """The zero category cannot be listed."""


@dataclass(eq=False)
class CustodySetNotCurrent(ContractError):
    """The attestation names a custody set other than the federation's current one."""

    attested: bytes
    current: bytes


@dataclass(eq=False)
class InvalidThreshold(ContractError):
    """A federation needs 1 <= threshold <= members (or no members and threshold 0)."""

    threshold: int
    members: int


@dataclass(eq=False)
class InvalidFederation(ContractError):
    """Federation arrays of different lengths, or more than 16 members (SLIP-39 splits among
    at most 16)."""

    gateways: int
    custody_keys: int
    urls: int


@dataclass(eq=False)
class NotAGateway(ContractError):
    """A federation member must hold GATEWAY_ROLE."""

    account: ChecksumAddress


@dataclass(eq=False)
class InvalidCustodyKey(ContractError):
    """A custody key must be a 33-byte compressed secp256k1 public key."""

    gateway: ChecksumAddress


@dataclass(eq=False)
class DuplicateCustodian(ContractError):
    """A gateway (or a custody key) appears twice in the federation."""

    gateway: ChecksumAddress


@dataclass(eq=False)
class FederationMember(ContractError):
    """GATEWAY_ROLE cannot be taken from a federation member; set a federation without it first."""

    gateway: ChecksumAddress


@dataclass(eq=False)
class InvalidUrl(ContractError):
    """A federation member's URL must be 1..200 bytes."""

    gateway: ChecksumAddress
    length: int


# ---------------------------------------------------------------- OpenZeppelin errors


@dataclass(eq=False)
class AccessControlUnauthorizedAccount(ContractError):
    """The caller lacks the role the function needs."""

    account: ChecksumAddress
    needed_role: bytes


@dataclass(eq=False)
class AccessControlBadConfirmation(ContractError):
    """renounceRole was called for another account."""


@dataclass(eq=False)
class InvalidAccountNonce(ContractError):
    """The signed nonce is not the signer's next nonce (replay or out of order)."""

    account: ChecksumAddress
    current_nonce: int


@dataclass(eq=False)
class ECDSAInvalidSignature(ContractError):
    """The signature recovers to no address."""


@dataclass(eq=False)
class ECDSAInvalidSignatureLength(ContractError):
    """The signature is not 65 bytes long."""

    length: int


@dataclass(eq=False)
class ECDSAInvalidSignatureS(ContractError):
    """The signature's s is in the upper half order (malleable)."""

    s: bytes


@dataclass(eq=False)
class InvalidShortString(ContractError):
    """EIP712 name/version encoding failed (constructor only)."""


@dataclass(eq=False)
class StringTooLong(ContractError):
    """EIP712 name/version too long (constructor only)."""

    str: str  # the Solidity argument's name


# ---------------------------------------------------------------- generic reverts


@dataclass(eq=False)
class RevertedWithReason(ContractError):
    """Error(string): a require/revert with a message (the registry raises none)."""

    reason: str


@dataclass(eq=False)
class Panic(ContractError):
    """Panic(uint256): an assert, arithmetic or enum-conversion failure."""

    code: int


@dataclass(eq=False)
class Reverted(ContractError):
    """A revert without data (e.g. calldata that does not decode)."""


@dataclass(eq=False)
class UnknownContractError(ContractError):
    """A custom error this module has no class for, or arguments that do not decode."""

    selector: bytes
    data: bytes


ERROR_CLASSES: Mapping[str, type[ContractError]] = {
    cls.__name__: cls
    for cls in (
        NotACentre,
        ZeroPatient,
        RecordExists,
        UnknownRecord,
        InvalidCid,
        InvalidGrantee,
        RecordNotOwned,
        InvalidScope,
        NoPurpose,
        ExpiryInPast,
        ConsentUnchanged,
        ConsentNotFound,
        NotPatientOrGuardian,
        SignatureExpired,
        InvalidSignature,
        InvalidGuardian,
        GuardianUnchanged,
        NoGuardian,
        InvalidBreakGlassDuration,
        BreakGlassAlreadyOpen,
        BreakGlassNotOpen,
        BreakGlassCoolingDown,
        BreakGlassReasonReused,
        MissingReason,
        InvalidPurpose,
        CheckpointNotGrowing,
        CategoryNotListed,
        CategoryAlreadyListed,
        ZeroCategory,
        CustodySetNotCurrent,
        InvalidThreshold,
        InvalidFederation,
        NotAGateway,
        InvalidCustodyKey,
        DuplicateCustodian,
        FederationMember,
        InvalidUrl,
        AccessControlUnauthorizedAccount,
        AccessControlBadConfirmation,
        InvalidAccountNonce,
        ECDSAInvalidSignature,
        ECDSAInvalidSignatureLength,
        ECDSAInvalidSignatureS,
        InvalidShortString,
        StringTooLong,
    )
}
"""Solidity error name -> Python class, for every custom error the registry can raise."""

_ERROR_STRING_SELECTOR = keccak(text="Error(string)")[:4]
_PANIC_SELECTOR = keccak(text="Panic(uint256)")[:4]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _abi_type(param: Mapping[str, Any]) -> str:
    kind = str(param["type"])
    if kind == "tuple":
        raise ValueError("tuple arguments in custom errors are not supported")
    return kind


def _converter(param: Mapping[str, Any]) -> Callable[[Any], Any]:
    kind = str(param["type"])
    internal = str(param.get("internalType", ""))
    if kind == "address":
        return to_checksum_address
    if internal.endswith(".ScopeKind"):
        return ScopeKind
    if kind.startswith("bytes"):
        return bytes
    return lambda value: value


@dataclass(frozen=True)
class _ErrorSpec:
    cls: type[ContractError]
    types: tuple[str, ...]
    converters: tuple[Callable[[Any], Any], ...]


class ErrorDecoder:
    """Maps revert data to a ``ContractError`` using the selectors of a compiled ABI."""

    def __init__(self, abi: Sequence[Mapping[str, Any]]) -> None:
        self._specs: dict[bytes, _ErrorSpec] = {}
        for item in abi:
            if item.get("type") != "error":
                continue
            name = str(item["name"])
            cls = ERROR_CLASSES.get(name)
            if cls is None:
                raise ValueError(f"the ABI's error {name} has no Python class in {__name__}")
            inputs = list(item.get("inputs", []))
            expected = [_snake(str(p["name"])) for p in inputs]
            actual = [f.name for f in dataclasses.fields(cls)]
            if expected != actual:
                raise ValueError(f"{name}: the ABI's arguments {expected} != the class's {actual}")
            types = tuple(_abi_type(p) for p in inputs)
            selector = keccak(text=f"{name}({','.join(types)})")[:4]
            self._specs[selector] = _ErrorSpec(cls, types, tuple(_converter(p) for p in inputs))

    @property
    def selectors(self) -> Mapping[bytes, type[ContractError]]:
        """4-byte selector -> class, for every error of the ABI."""
        return {selector: spec.cls for selector, spec in self._specs.items()}

    def decode(self, data: bytes | str | None) -> ContractError:
        """The exception for revert ``data`` (bytes or 0x-hex; None or empty: ``Reverted``).

        Never raises: data that does not decode for its selector (truncated, dirty padding, an
        enum or UTF-8 string out of range) gives ``UnknownContractError`` with the raw data.
        """
        raw = _as_bytes(data)
        if len(raw) < 4:
            return Reverted()
        selector, payload = raw[:4], raw[4:]
        try:
            return self._decode_payload(selector, payload, raw)
        except (DecodingError, ValueError, OverflowError):  # ValueError: ScopeKind, UTF-8
            return UnknownContractError(selector, raw)

    def _decode_payload(self, selector: bytes, payload: bytes, raw: bytes) -> ContractError:
        spec = self._specs.get(selector)
        if spec is not None:
            values = abi_decode(list(spec.types), payload) if spec.types else ()
            return spec.cls(
                *(convert(v) for convert, v in zip(spec.converters, values, strict=True))
            )
        if selector == _ERROR_STRING_SELECTOR:
            (reason,) = abi_decode(["string"], payload)
            return RevertedWithReason(str(reason))
        if selector == _PANIC_SELECTOR:
            (code,) = abi_decode(["uint256"], payload)
            return Panic(int(code))
        return UnknownContractError(selector, raw)


def _as_bytes(data: bytes | str | None) -> bytes:
    if data is None:
        return b""
    if isinstance(data, bytes):
        return data
    text = data.removeprefix("0x")
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""
