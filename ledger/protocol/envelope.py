"""Record encryption, data-key wrapping and sealing, and the client-side envelope opener.

Primitives come from libraries only: AES-256-GCM from ``cryptography``; ECIES over secp256k1
from ``eciespy`` (coincurve ECDH, HKDF-SHA256, AES-256-GCM). Nothing here is hand-rolled.

Formats (all integers big-endian, all fields fixed-length, so the layouts are unambiguous):

Record blob (what goes to IPFS), version 2::

    b"CLRE" | 0x02 | nonce (12 random bytes) | AES-256-GCM(salt (32) || document) || tag (16)
    AAD = b"CLRE" | 0x02 | record_id (32 bytes, the on-chain bytes32) | patient (20-byte address)

  The data key is a fresh random 256-bit key per record, so a random 96-bit nonce is safe.
  The AAD binds the blob to its record and patient: a blob moved to another record id or patient
  fails to decrypt; it also authenticates the header (magic and version).

  Salted content digest. The centre draws a fresh 32-byte salt per record and attests
  ``contentDigest = sha256(salt || document)``; the salt travels only inside the encrypted
  payload, so the digest on the chain cannot be tested against candidate documents (a templated
  result with few possible values) by anyone who cannot decrypt. A reader decrypts the payload,
  and ``sha256(payload)`` is exactly the digest to compare (the payload is ``salt || document``);
  the document is the payload without its first 32 bytes. Version 1 (no salt, digest =
  sha256(document)) is no longer written or read.

Wrapped data key (kept in the gateway DB, under the gateway's 256-bit key-encryption key)::

    b"CLKW" | 0x01 | nonce (12) | AES-256-GCM(data key) (32) || tag (16)        = 65 bytes
    AAD = b"CLKW" | 0x01 | record_id (32)

  AES-GCM rather than AES-KW so the wrap is bound to the record id (a row's wrapped key cannot be
  swapped onto another record) and carries a version.

Sealed data key (per reader, in the fetch response): eciespy 0.4 default format, which eciesjs
(the JavaScript twin) reads with its defaults::

    ephemeral public key (65, uncompressed) | nonce (16) | tag (16) | AES-256-GCM(data key) (32)

Envelope (``GET /v1/records/{id}``): :class:`Envelope`; byte strings of the chain as ``0x`` hex
(record id, content digest), blobs as standard base64 (ciphertext, sealed key).

The client opens it with :func:`open_envelope`: unseal the key with its private key, decrypt
with the AAD rebuilt from the envelope's record id and patient, and compare
``sha256(salt || document)`` with the content digest. A careful client passes the digest it read
from the chain (``expected_digest=``) rather than trusting the envelope's copy.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Mapping
from typing import Annotated, ClassVar

import ecies
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eth_utils.address import to_checksum_address
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ledger.protocol import content_digest
from ledger.protocol.content_digest import SALT_SIZE, new_salt
from ledger.protocol.errors import DomainError

__all__ = [
    "DATA_KEY_SIZE",
    "SALT_SIZE",
    "DecryptionFailed",
    "DigestMismatch",
    "Envelope",
    "EnvelopeError",
    "MalformedEnvelope",
    "decrypt_record",
    "encrypt_record",
    "new_data_key",
    "new_salt",
    "open_envelope",
    "open_record",
    "record_aad",
    "salted_digest",
    "seal_envelope",
    "seal_key_to",
    "unseal_key",
    "unwrap_key",
    "wrap_key",
]

DATA_KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
RECORD_ID_SIZE = 32
RECORD_MAGIC = b"CLRE"
KEY_MAGIC = b"CLKW"
VERSION = 1  # the wrapped-key format
RECORD_VERSION = 2  # the record blob format: the payload is salt || document
_HEADER = 4 + 1
_WRAPPED_KEY_SIZE = _HEADER + NONCE_SIZE + DATA_KEY_SIZE + TAG_SIZE
_ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")


# -- errors ---------------------------------------------------------------------------------


class EnvelopeError(DomainError):
    """Root of record encryption / envelope errors."""

    code: ClassVar[str] = "envelope_error"


class MalformedEnvelope(EnvelopeError):
    """Input is not of the documented shape (blob header, lengths, hex/base64, key sizes)."""

    code: ClassVar[str] = "malformed_envelope"

    def __init__(self, *, what: str, reason: str) -> None:
        super().__init__(f"malformed {what}: {reason}", what=what, reason=reason)
        self.what = what
        self.reason = reason


class DecryptionFailed(EnvelopeError):
    """Authentication failed: tampered bytes, wrong key, or wrong record id / patient."""

    code: ClassVar[str] = "decryption_failed"

    def __init__(self, *, what: str) -> None:
        super().__init__(f"could not decrypt {what}", what=what)
        self.what = what


class DigestMismatch(EnvelopeError):
    """The plaintext's sha256 is not the expected content digest."""

    code: ClassVar[str] = "digest_mismatch"

    def __init__(self, *, expected: bytes, actual: bytes) -> None:
        super().__init__(
            f"content digest mismatch: expected 0x{expected.hex()}, got 0x{actual.hex()}",
            expected=expected,
            actual=actual,
        )
        self.expected = expected
        self.actual = actual


# -- helpers --------------------------------------------------------------------------------


def _address_bytes(patient: str) -> bytes:
    if not isinstance(patient, str) or not _ADDRESS_RE.match(patient):
        raise MalformedEnvelope(what="patient", reason="not a 0x-prefixed 20-byte hex address")
    return bytes.fromhex(patient[2:])


def _check_record_id(record_id: bytes) -> bytes:
    if not isinstance(record_id, bytes) or len(record_id) != RECORD_ID_SIZE:
        raise MalformedEnvelope(what="record_id", reason=f"must be {RECORD_ID_SIZE} bytes")
    return record_id


def _check_key(key: bytes, *, what: str) -> bytes:
    if not isinstance(key, bytes) or len(key) != DATA_KEY_SIZE:
        raise MalformedEnvelope(what=what, reason=f"must be {DATA_KEY_SIZE} bytes")
    return key


def _header(magic: bytes, version: int = VERSION) -> bytes:
    return magic + bytes([version])


def record_aad(*, record_id: bytes, patient: str) -> bytes:
    """The associated data of a record blob: header | record_id (32) | patient (20)."""
    return (
        _header(RECORD_MAGIC, RECORD_VERSION)
        + _check_record_id(record_id)
        + _address_bytes(patient)
    )


def _key_aad(*, record_id: bytes) -> bytes:
    return _header(KEY_MAGIC) + _check_record_id(record_id)


def new_data_key() -> bytes:
    """A fresh random 256-bit data key."""
    return AESGCM.generate_key(bit_length=256)


def _check_salt(salt: bytes) -> bytes:
    if not isinstance(salt, bytes) or len(salt) != SALT_SIZE:
        raise MalformedEnvelope(what="salt", reason=f"must be {SALT_SIZE} bytes")
    return salt


def salted_digest(salt: bytes, document: bytes) -> bytes:
    """``content_digest.salted_digest``, with a malformed salt as ``MalformedEnvelope``."""
    return content_digest.salted_digest(_check_salt(salt), document)


# -- record blobs ---------------------------------------------------------------------------


def encrypt_record(
    plaintext: bytes,
    *,
    record_id: bytes,
    patient: str,
    salt: bytes | None = None,
    data_key: bytes | None = None,
) -> tuple[bytes, bytes]:
    """Encrypt ``salt || plaintext`` for ``record_id`` / ``patient``; ``(blob, data_key)``.

    ``salt`` is the one the centre's attested digest was computed with (a fresh one is drawn
    when none is given: tests); a fresh data key is drawn unless one is given.
    """
    key = new_data_key() if data_key is None else _check_key(data_key, what="data key")
    payload = (new_salt() if salt is None else _check_salt(salt)) + plaintext
    aad = record_aad(record_id=record_id, patient=patient)
    nonce = os.urandom(NONCE_SIZE)
    ciphertext = AESGCM(key).encrypt(nonce, payload, aad)
    return _header(RECORD_MAGIC, RECORD_VERSION) + nonce + ciphertext, key


def open_record(
    blob: bytes, *, data_key: bytes, record_id: bytes, patient: str
) -> tuple[bytes, bytes]:
    """Decrypt a record blob into ``(salt, document)``; ``sha256(salt || document)`` is the
    content digest to compare. Raises :class:`MalformedEnvelope` for a blob that is not of the
    format and :class:`DecryptionFailed` when authentication fails."""
    key = _check_key(data_key, what="data key")
    aad = record_aad(record_id=record_id, patient=patient)
    if not isinstance(blob, bytes) or len(blob) < _HEADER + NONCE_SIZE + TAG_SIZE:
        raise MalformedEnvelope(what="record blob", reason="too short")
    if blob[:4] != RECORD_MAGIC:
        raise MalformedEnvelope(what="record blob", reason="bad magic")
    if blob[4] != RECORD_VERSION:
        raise MalformedEnvelope(what="record blob", reason=f"unsupported version {blob[4]}")
    nonce = blob[_HEADER : _HEADER + NONCE_SIZE]
    try:
        payload = AESGCM(key).decrypt(nonce, blob[_HEADER + NONCE_SIZE :], aad)
    except InvalidTag:
        raise DecryptionFailed(what="record blob") from None
    if len(payload) < SALT_SIZE:
        raise MalformedEnvelope(what="record blob", reason="payload shorter than its salt")
    return payload[:SALT_SIZE], payload[SALT_SIZE:]


def decrypt_record(blob: bytes, *, data_key: bytes, record_id: bytes, patient: str) -> bytes:
    """The document of a record blob (:func:`open_record` without the salt)."""
    return open_record(blob, data_key=data_key, record_id=record_id, patient=patient)[1]


# -- wrapping under the gateway KEK ---------------------------------------------------------


def wrap_key(data_key: bytes, kek: bytes, *, record_id: bytes) -> bytes:
    """Encrypt ``data_key`` under the gateway key-encryption key, bound to ``record_id``."""
    _check_key(data_key, what="data key")
    _check_key(kek, what="key-encryption key")
    nonce = os.urandom(NONCE_SIZE)
    sealed = AESGCM(kek).encrypt(nonce, data_key, _key_aad(record_id=record_id))
    return _header(KEY_MAGIC) + nonce + sealed


def unwrap_key(wrapped: bytes, kek: bytes, *, record_id: bytes) -> bytes:
    """Inverse of :func:`wrap_key`."""
    _check_key(kek, what="key-encryption key")
    aad = _key_aad(record_id=record_id)
    if not isinstance(wrapped, bytes) or len(wrapped) != _WRAPPED_KEY_SIZE:
        raise MalformedEnvelope(what="wrapped key", reason=f"must be {_WRAPPED_KEY_SIZE} bytes")
    if wrapped[:_HEADER] != _header(KEY_MAGIC):
        raise MalformedEnvelope(what="wrapped key", reason="bad magic or version")
    nonce = wrapped[_HEADER : _HEADER + NONCE_SIZE]
    try:
        return AESGCM(kek).decrypt(nonce, wrapped[_HEADER + NONCE_SIZE :], aad)
    except InvalidTag:
        raise DecryptionFailed(what="wrapped key") from None


# -- sealing to a reader's secp256k1 key ----------------------------------------------------


def _public_key_bytes(pubkey: bytes) -> bytes:
    if not isinstance(pubkey, bytes):
        raise MalformedEnvelope(what="public key", reason="must be bytes")
    if len(pubkey) == 64:  # Ethereum style, without the 0x04 prefix
        pubkey = b"\x04" + pubkey
    if not ((len(pubkey) == 65 and pubkey[0] == 4) or (len(pubkey) == 33 and pubkey[0] in (2, 3))):
        raise MalformedEnvelope(
            what="public key", reason="must be 65 (0x04...), 64 or 33 bytes of secp256k1"
        )
    return pubkey


def seal_key_to(pubkey: bytes, data_key: bytes) -> bytes:
    """ECIES-encrypt ``data_key`` to a secp256k1 public key (65/64/33-byte encodings)."""
    _check_key(data_key, what="data key")
    try:
        return ecies.encrypt(_public_key_bytes(pubkey), data_key)
    except ValueError as exc:  # not a point on the curve
        raise MalformedEnvelope(what="public key", reason=str(exc)) from None


def _private_key_bytes(private_key: bytes | str) -> bytes:
    if isinstance(private_key, str):
        text = private_key[2:] if private_key[:2] in ("0x", "0X") else private_key
        try:
            private_key = bytes.fromhex(text)
        except ValueError:
            raise MalformedEnvelope(what="private key", reason="not hex") from None
    if not isinstance(private_key, bytes) or len(private_key) != 32:
        raise MalformedEnvelope(what="private key", reason="must be 32 bytes")
    return private_key


def unseal_key(sealed: bytes, *, private_key: bytes | str) -> bytes:
    """Inverse of :func:`seal_key_to` with the reader's private key."""
    secret = _private_key_bytes(private_key)
    try:
        data_key = ecies.decrypt(secret, sealed)
    except Exception:  # eciespy/coincurve/pycryptodome raise ValueError & co. on any failure
        raise DecryptionFailed(what="sealed key") from None
    return _check_key(data_key, what="unsealed data key")


# -- the envelope ---------------------------------------------------------------------------

Hex32 = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{64}$")]


def _b64(value: str, *, what: str) -> bytes:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ValueError(f"{what} is not standard base64") from None


class Envelope(BaseModel):
    """What ``GET /v1/records/{id}`` returns: a ciphertext and its data key sealed to the reader."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    record_id: Hex32
    patient: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    cid: str = Field(min_length=1, max_length=256)
    ciphertext: str = Field(description="record blob, standard base64")
    sealed_key: str = Field(description="ECIES-sealed data key, standard base64")
    content_digest: Hex32 = Field(
        description="sha256(salt || document), as registered on-chain (the salt is inside the"
        " encrypted record)"
    )
    block_number: int = Field(ge=0, description="block at which consent was checked")
    event_count: int | None = Field(
        default=None,
        ge=0,
        description="the registry's event count in the state the node evaluated (accessDecision);"
        " it names that state exactly, even if the node evaluated a later one than block_number",
    )
    chain_time: int | None = Field(
        default=None, ge=0, description="block.timestamp during the consent check (UNIX seconds)"
    )

    @field_validator("patient")
    @classmethod
    def _checksum_patient(cls, value: str) -> str:
        return to_checksum_address(value)

    @field_validator("ciphertext", "sealed_key")
    @classmethod
    def _is_base64(cls, value: str) -> str:
        _b64(value, what="field")
        return value

    @property
    def record_id_bytes(self) -> bytes:
        return bytes.fromhex(self.record_id[2:])

    @property
    def content_digest_bytes(self) -> bytes:
        return bytes.fromhex(self.content_digest[2:])

    @property
    def ciphertext_bytes(self) -> bytes:
        return _b64(self.ciphertext, what="ciphertext")

    @property
    def sealed_key_bytes(self) -> bytes:
        return _b64(self.sealed_key, what="sealed_key")


def seal_envelope(
    *,
    record_id: bytes,
    patient: str,
    cid: str,
    blob: bytes,
    data_key: bytes,
    reader_public_key: bytes,
    content_digest: bytes,
    block_number: int,
    event_count: int | None = None,
    chain_time: int | None = None,
) -> Envelope:
    """Build the :class:`Envelope` for one reader (seals ``data_key`` to its public key)."""
    _check_record_id(record_id)
    if not isinstance(content_digest, bytes) or len(content_digest) != 32:
        raise MalformedEnvelope(what="content digest", reason="must be 32 bytes")
    try:
        return Envelope(
            record_id="0x" + record_id.hex(),
            patient=patient,
            cid=cid,
            ciphertext=base64.b64encode(blob).decode("ascii"),
            sealed_key=base64.b64encode(seal_key_to(reader_public_key, data_key)).decode("ascii"),
            content_digest="0x" + content_digest.hex(),
            block_number=block_number,
            event_count=event_count,
            chain_time=chain_time,
        )
    except ValidationError as exc:
        raise MalformedEnvelope(what="envelope", reason=_first_error(exc)) from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    return f"{loc}: {err['msg']}" if loc else str(err["msg"])


def open_envelope(
    envelope: Envelope | Mapping[str, object] | str | bytes,
    *,
    private_key: bytes | str,
    expected_digest: bytes | None = None,
) -> bytes:
    """Client side: unseal, decrypt and digest-check an envelope; return the document.

    ``envelope`` may be the model, its dict, or its JSON text. ``expected_digest`` (the on-chain
    ``contentDigest``), when given, must equal the envelope's and is what the plaintext is
    checked against (``sha256(salt || document)``, the salt from inside the blob). Raises only
    :class:`MalformedEnvelope`, :class:`DecryptionFailed` and :class:`DigestMismatch`.
    """
    try:
        if isinstance(envelope, Envelope):
            env = envelope
        elif isinstance(envelope, (str, bytes)):
            env = Envelope.model_validate_json(envelope)
        else:
            env = Envelope.model_validate(envelope)
    except ValidationError as exc:
        raise MalformedEnvelope(what="envelope", reason=_first_error(exc)) from None
    digest = env.content_digest_bytes
    if expected_digest is not None and expected_digest != digest:
        raise DigestMismatch(expected=expected_digest, actual=digest)
    data_key = unseal_key(env.sealed_key_bytes, private_key=private_key)
    salt, document = open_record(
        env.ciphertext_bytes, data_key=data_key, record_id=env.record_id_bytes, patient=env.patient
    )
    actual = hashlib.sha256(salt + document).digest()
    if actual != digest:
        raise DigestMismatch(expected=digest, actual=actual)
    return document
