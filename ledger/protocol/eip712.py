"""EIP-712 typed data for the registry: build, hash and sign the three signed messages.

- ``RecordAttestation``: what a checkup centre signs for a result (its digest is the record id).
- ``GrantConsent`` / ``RevokeConsent``: a patient's (or guardian's) gasless consent change,
  relayed by anyone through ``grantBySig`` / ``revokeBySig``.

The type strings are those of ``contracts/IConsentRegistry.sol``; the domain is
``{name: "ConsentLedger", version: "1", chainId, verifyingContract}``. Encoding and hashing
are eth-account's (``encode_typed_data``); nothing is hand-rolled. An ERC-1271 wallet's owner
signs the same digest (``sign_*`` with the owner's key) when the wallet checks ECDSA itself.

Errors: building a message with a field that does not fit its Solidity type (an address that
is not one, a ``bytes32`` of another length, an integer out of its ``uintN`` range) raises
``ValueError``; so does :func:`recover_signer` for a signature that is not 65 bytes
``r || s || v`` or that recovers to no key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_keys.exceptions import BadSignature
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from eth_utils.exceptions import ValidationError

from ledger.protocol.consent_types import RecordId, ScopeKind

__all__ = [
    "DOMAIN_NAME",
    "DOMAIN_VERSION",
    "GRANT_CONSENT_TYPE",
    "RECORD_ATTESTATION_TYPE",
    "REVOKE_CONSENT_TYPE",
    "Domain",
    "GrantRequest",
    "RecordAttestation",
    "RevokeRequest",
    "TypedMessage",
    "digest",
    "record_id",
    "recover_signer",
    "sign",
    "signable",
    "typed_data",
]

DOMAIN_NAME = "ConsentLedger"
DOMAIN_VERSION = "1"

_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]

RECORD_ATTESTATION_TYPE = [
    {"name": "patient", "type": "address"},
    {"name": "category", "type": "bytes32"},
    {"name": "contentDigest", "type": "bytes32"},
    {"name": "issuedAt", "type": "uint64"},
    {"name": "custodySet", "type": "bytes32"},
    {"name": "shareCommitments", "type": "bytes32"},
]

GRANT_CONSENT_TYPE = [
    {"name": "patient", "type": "address"},
    {"name": "grantee", "type": "address"},
    {"name": "scopeKind", "type": "uint8"},
    {"name": "scopeId", "type": "bytes32"},
    {"name": "purposes", "type": "uint32"},
    {"name": "expiresAt", "type": "uint64"},
    {"name": "signer", "type": "address"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]

REVOKE_CONSENT_TYPE = [
    {"name": "patient", "type": "address"},
    {"name": "grantee", "type": "address"},
    {"name": "scopeKind", "type": "uint8"},
    {"name": "scopeId", "type": "bytes32"},
    {"name": "signer", "type": "address"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]


@dataclass(frozen=True)
class Domain:
    """The registry's EIP-712 domain on one chain."""

    chain_id: int
    verifying_contract: ChecksumAddress
    name: str = DOMAIN_NAME
    version: str = DOMAIN_VERSION

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "chainId": self.chain_id,
            "verifyingContract": self.verifying_contract,
        }


def _bytes32(value: bytes, what: str) -> bytes:
    raw = bytes(value)
    if len(raw) != 32:
        raise ValueError(f"{what} must be 32 bytes, not {len(raw)}")
    return raw


def _uint(value: int, bits: int, what: str) -> None:
    if not isinstance(value, int) or not 0 <= value < 2**bits:
        raise ValueError(f"{what} must be a uint{bits}, not {value!r}")


@dataclass(frozen=True)
class RecordAttestation:
    """A centre's statement that ``content_digest`` (sha256 of the plaintext) is ``patient``'s.

    ``custody_set`` names the federation the data key was split across (the registry's
    ``federation().custodySet``; zero in the single-gateway mode) and ``share_commitments``
    binds the custody manifest's per-share commitments (``ledger.protocol.custody``).
    """

    patient: ChecksumAddress
    category: bytes
    content_digest: bytes
    issued_at: int
    custody_set: bytes = bytes(32)
    share_commitments: bytes = bytes(32)

    primary_type = "RecordAttestation"

    def __post_init__(self) -> None:
        object.__setattr__(self, "patient", to_checksum_address(self.patient))
        object.__setattr__(self, "category", _bytes32(self.category, "category"))
        object.__setattr__(self, "content_digest", _bytes32(self.content_digest, "content_digest"))
        _uint(self.issued_at, 64, "issued_at")
        object.__setattr__(self, "custody_set", _bytes32(self.custody_set, "custody_set"))
        object.__setattr__(
            self, "share_commitments", _bytes32(self.share_commitments, "share_commitments")
        )

    def message(self) -> dict[str, Any]:
        return {
            "patient": self.patient,
            "category": self.category,
            "contentDigest": self.content_digest,
            "issuedAt": self.issued_at,
            "custodySet": self.custody_set,
            "shareCommitments": self.share_commitments,
        }

    def as_tuple(self) -> tuple[ChecksumAddress, bytes, bytes, int, bytes, bytes]:
        """The Solidity struct, for a contract call."""
        return (
            self.patient,
            self.category,
            self.content_digest,
            self.issued_at,
            self.custody_set,
            self.share_commitments,
        )


@dataclass(frozen=True)
class GrantRequest:
    """A signed grant (``GrantConsent``); ``signer`` is the patient or the patient's guardian."""

    patient: ChecksumAddress
    grantee: ChecksumAddress
    scope_kind: ScopeKind
    scope_id: bytes
    purposes: int
    expires_at: int
    signer: ChecksumAddress
    nonce: int
    deadline: int

    primary_type = "GrantConsent"

    def __post_init__(self) -> None:
        for name in ("patient", "grantee", "signer"):
            object.__setattr__(self, name, to_checksum_address(getattr(self, name)))
        object.__setattr__(self, "scope_kind", ScopeKind(self.scope_kind))
        object.__setattr__(self, "scope_id", _bytes32(self.scope_id, "scope_id"))
        for name, bits in (("purposes", 32), ("expires_at", 64), ("nonce", 256), ("deadline", 256)):
            _uint(getattr(self, name), bits, name)

    def message(self) -> dict[str, Any]:
        return {
            "patient": self.patient,
            "grantee": self.grantee,
            "scopeKind": int(self.scope_kind),
            "scopeId": self.scope_id,
            "purposes": self.purposes,
            "expiresAt": self.expires_at,
            "signer": self.signer,
            "nonce": self.nonce,
            "deadline": self.deadline,
        }

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            self.patient,
            self.grantee,
            int(self.scope_kind),
            self.scope_id,
            self.purposes,
            self.expires_at,
            self.signer,
            self.nonce,
            self.deadline,
        )


@dataclass(frozen=True)
class RevokeRequest:
    """A signed revoke (``RevokeConsent``)."""

    patient: ChecksumAddress
    grantee: ChecksumAddress
    scope_kind: ScopeKind
    scope_id: bytes
    signer: ChecksumAddress
    nonce: int
    deadline: int

    primary_type = "RevokeConsent"

    def __post_init__(self) -> None:
        for name in ("patient", "grantee", "signer"):
            object.__setattr__(self, name, to_checksum_address(getattr(self, name)))
        object.__setattr__(self, "scope_kind", ScopeKind(self.scope_kind))
        object.__setattr__(self, "scope_id", _bytes32(self.scope_id, "scope_id"))
        _uint(self.nonce, 256, "nonce")
        _uint(self.deadline, 256, "deadline")

    def message(self) -> dict[str, Any]:
        return {
            "patient": self.patient,
            "grantee": self.grantee,
            "scopeKind": int(self.scope_kind),
            "scopeId": self.scope_id,
            "signer": self.signer,
            "nonce": self.nonce,
            "deadline": self.deadline,
        }

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            self.patient,
            self.grantee,
            int(self.scope_kind),
            self.scope_id,
            self.signer,
            self.nonce,
            self.deadline,
        )


TypedMessage = RecordAttestation | GrantRequest | RevokeRequest

_TYPES: dict[str, list[dict[str, str]]] = {
    "RecordAttestation": RECORD_ATTESTATION_TYPE,
    "GrantConsent": GRANT_CONSENT_TYPE,
    "RevokeConsent": REVOKE_CONSENT_TYPE,
}


def typed_data(domain: Domain, message: TypedMessage) -> dict[str, Any]:
    """The full EIP-712 typed data (as a wallet's ``eth_signTypedData_v4`` takes it)."""
    primary = message.primary_type
    return {
        "types": {"EIP712Domain": _DOMAIN_TYPE, primary: _TYPES[primary]},
        "primaryType": primary,
        "domain": domain.as_dict(),
        "message": message.message(),
    }


def signable(domain: Domain, message: TypedMessage) -> SignableMessage:
    return encode_typed_data(full_message=typed_data(domain, message))


def digest(domain: Domain, message: TypedMessage) -> bytes:
    """The 32-byte EIP-712 digest (for an attestation: the record id)."""
    encoded = signable(domain, message)
    # EIP-191 version 0x01: keccak256(0x19 || 0x01 || domainSeparator || hashStruct(message)).
    return keccak(b"\x19" + encoded.version + encoded.header + encoded.body)


def record_id(domain: Domain, attestation: RecordAttestation) -> RecordId:
    """The id the registry gives the record of ``attestation``."""
    return RecordId(digest(domain, attestation))


def sign(account: LocalAccount, domain: Domain, message: TypedMessage) -> bytes:
    """A 65-byte ``r || s || v`` signature of the message by ``account``."""
    signed = account.sign_message(signable(domain, message))
    return bytes(signed.signature)


def recover_signer(domain: Domain, message: TypedMessage, signature: bytes) -> ChecksumAddress:
    """The EOA that signed ``message`` (for off-chain checks, e.g. in the gateway).

    Raises ``ValueError`` when ``signature`` is not 65 bytes or recovers to no key.
    """
    if not isinstance(signature, bytes) or len(signature) != 65:
        raise ValueError("signature must be 65 bytes r || s || v")
    encoded = signable(domain, message)
    try:
        recovered = Account.recover_message(encoded, signature=signature)
    except (BadSignature, ValidationError, ValueError) as exc:
        raise ValueError(f"signature recovers to no key: {exc}") from None
    return to_checksum_address(recovered)
