"""Threshold custody of a record's data key: split t-of-n, sealed share by share to the gateways.

No gateway holds a key that opens every record. The centre's client draws the 256-bit data key,
splits it t-of-n (:func:`split_and_seal`), seals share ``i`` to gateway ``i``'s registered custody
public key and commits to every share; the sealed shares and commitments travel in a
:class:`CustodyManifest` pinned on IPFS. A gateway that finds consent unseals its own share
(:func:`unseal_share`) and re-seals it to the requester (:func:`reseal_share`); the requester
opens the released shares (:func:`open_released_share`) and combines any ``t`` of them
(:func:`recover_key` / :func:`combine_shares`), naming every gateway whose share does not match
its commitment.

Secret sharing: SLIP-0039 (Shamir over GF(256) with a digest share that detects a wrong
combination), from ``shamir-mnemonic``, the reference implementation by the specification's
authors (Trezor). The browser combines the same shares with npm ``slip39``, a second
implementation of the same published specification; both pass the specification's official test
vectors, and ``tests/vectors/custody.json`` is checked by both. Chosen over npm
``shamir-secret-sharing`` (audited, but it has no Python implementation: ours would be
hand-written) and pycryptodome's Shamir (16-byte secrets only, no JavaScript twin); the figures
are in ``bench/custody.py`` (a split or a combine takes 2 to 3 ms, in Python and in node, next
to 12 ms for each eciesjs unseal of a fetch). SLIP-39 parameters, fixed:

* every gateway's share is a 1-of-1 group and the group threshold is ``t`` (SLIP-39 forbids a
  member threshold of 1 with several members, so one group of ``(t, n)`` cannot say 1-of-n;
  group sharing is the same Shamir split and says every ``(t, n)`` the same way);
* at most 16 gateways (the specification's 4-bit group count);
* empty passphrase, iteration exponent 0 (the secret is a random key: stretching adds nothing),
  extendable flag off (the format every SLIP-39 reader knows; a record's key is never re-split).

Formats:

* a share is its SLIP-39 mnemonic as ASCII bytes (33 words for a 256-bit key, at most 296 bytes);
  its commitment is ``sha256(share)``: the portal recomputes it with WebCrypto, and a share
  carries 256 bits of the key's or the polynomial's randomness, so its hash cannot be inverted;
* a sealed share is eciespy's default ECIES (as ``envelope.seal_key_to``): ephemeral public key
  (65) | nonce (16) | tag (16) | AES-256-GCM(share);
* ``custody_set_hash = keccak256(abi.encode(uint8 threshold, address[] gateways,
  bytes[] custodyKeys))``, as the registry computes it over its federation;
* ``shares_commitment = keccak256(abi.encode(bytes32[] commitments))``, in the attestation;
* the manifest is canonical JSON (sorted keys, no spaces, ASCII); :meth:`CustodyManifest.parse`
  refuses any other spelling, so a manifest's bytes (and CID) name exactly one content.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, ClassVar

import coincurve
import ecies
import shamir_mnemonic
from eth_abi.abi import encode as abi_encode
from eth_utils.address import (
    is_checksum_address,
    is_checksum_formatted_address,
    to_checksum_address,
)
from eth_utils.crypto import keccak
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ledger.protocol.errors import DomainError

__all__ = [
    "CUSTODY_FORMAT",
    "DATA_KEY_SIZE",
    "MAX_MANIFEST_SIZE",
    "MAX_MEMBERS",
    "MAX_SEALED_SHARE_SIZE",
    "MAX_SHARE_SIZE",
    "BadShare",
    "CustodyError",
    "CustodyManifest",
    "CustodyMember",
    "MalformedManifest",
    "ManifestMember",
    "NotEnoughShares",
    "RecoveredKey",
    "SealedShares",
    "UnsealFailed",
    "build_manifest",
    "check_shares",
    "combine_shares",
    "custody_public_key",
    "custody_set_hash",
    "new_custody_key",
    "open_released_share",
    "recover_key",
    "reseal_share",
    "seal_share",
    "share_commitment",
    "shares_commitment",
    "split_and_seal",
    "split_key",
    "unseal_share",
    "verify_share",
]

CUSTODY_FORMAT = 1
DATA_KEY_SIZE = 32
#: SLIP-39 encodes the group count in 4 bits.
MAX_MEMBERS = 16
#: A 256-bit SLIP-39 mnemonic is 33 words of 4 to 8 letters, one space between words.
MIN_SHARE_SIZE = 33 * 4 + 32
MAX_SHARE_SIZE = 33 * 8 + 32
#: eciespy's default: ephemeral public key (65) | nonce (16) | tag (16) | ciphertext.
ECIES_OVERHEAD = 65 + 16 + 16
MAX_SEALED_SHARE_SIZE = ECIES_OVERHEAD + MAX_SHARE_SIZE
#: Sixteen members of about 800 bytes each fit many times over.
MAX_MANIFEST_SIZE = 64 * 1024
#: The JSON numbers a browser reads exactly.
MAX_BLOB_SIZE = 2**53 - 1

_PASSPHRASE = b""
_ITERATION_EXPONENT = 0
_EXTENDABLE = False
_ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")


# -- errors ---------------------------------------------------------------------------------


class CustodyError(DomainError):
    """Root of threshold-custody errors (also: commitment-valid shares that do not combine)."""

    code: ClassVar[str] = "custody_error"


class MalformedManifest(CustodyError):
    """Input is not of the documented shape (manifest, member, key, share, size, hex, base64)."""

    code: ClassVar[str] = "malformed_manifest"

    def __init__(self, *, what: str, reason: str) -> None:
        super().__init__(f"malformed {what}: {reason}", what=what, reason=reason)
        self.what = what
        self.reason = reason


class UnsealFailed(CustodyError):
    """A sealed share did not open: wrong private key, or damaged bytes."""

    code: ClassVar[str] = "unseal_failed"

    def __init__(self, *, what: str, index: int | None = None) -> None:
        super().__init__(f"could not unseal {what}", what=what, index=index)
        self.what = what
        self.index = index


class BadShare(CustodyError):
    """The share given for member ``index`` does not match that member's commitment."""

    code: ClassVar[str] = "bad_share"

    def __init__(self, *, index: int, gateway: str) -> None:
        super().__init__(
            f"share {index} (gateway {gateway}) does not match its commitment",
            index=index,
            gateway=gateway,
        )
        self.index = index
        self.gateway = gateway


class NotEnoughShares(CustodyError):
    """Fewer than ``need`` commitment-valid shares; ``bad`` names the gateways that lied."""

    code: ClassVar[str] = "not_enough_shares"

    def __init__(self, *, have: int, need: int, bad: Sequence[str]) -> None:
        super().__init__(
            f"{have} good share(s), {need} needed"
            + (f"; bad shares from {', '.join(bad)}" if bad else ""),
            have=have,
            need=need,
            bad=",".join(bad),
        )
        self.have = have
        self.need = need
        self.bad = list(bad)


# -- members, keys and the custody set ------------------------------------------------------


def _gateway_address(value: object) -> str:
    if not isinstance(value, str) or not _ADDRESS_RE.match(value):
        raise ValueError("not a 0x-prefixed 20-byte hex address")
    if is_checksum_formatted_address(value) and not is_checksum_address(value):
        raise ValueError("mixed-case address with a wrong EIP-55 checksum")
    return to_checksum_address(value)


def _compressed_key(value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != 33 or value[0] not in (2, 3):
        raise ValueError("must be a 33-byte compressed secp256k1 public key")
    try:
        coincurve.PublicKey(value)
    except ValueError:
        raise ValueError("not a point on secp256k1") from None
    return value


@dataclass(frozen=True)
class CustodyMember:
    """One gateway of the custody set: its on-chain (transaction) address and custody key."""

    gateway: str
    custody_key: bytes

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "gateway", _gateway_address(self.gateway))
        except ValueError as exc:
            raise MalformedManifest(what="custody member gateway", reason=str(exc)) from None
        try:
            _compressed_key(self.custody_key)
        except ValueError as exc:
            raise MalformedManifest(what="custody key", reason=str(exc)) from None


def _check_set(threshold: int, members: Sequence[CustodyMember]) -> tuple[CustodyMember, ...]:
    members = tuple(members)
    if not all(isinstance(m, CustodyMember) for m in members):
        raise MalformedManifest(what="custody set", reason="members must be CustodyMember")
    if not 1 <= len(members) <= MAX_MEMBERS:
        raise MalformedManifest(what="custody set", reason=f"1 to {MAX_MEMBERS} members")
    if isinstance(threshold, bool) or not isinstance(threshold, int):
        raise MalformedManifest(what="custody set", reason="threshold must be an int")
    if not 1 <= threshold <= len(members):
        raise MalformedManifest(what="custody set", reason="threshold must be 1..n")
    if len({m.gateway for m in members}) != len(members):
        raise MalformedManifest(what="custody set", reason="duplicate gateway")
    if len({m.custody_key for m in members}) != len(members):
        raise MalformedManifest(what="custody set", reason="duplicate custody key")
    return members


def custody_set_hash(threshold: int, members: Sequence[CustodyMember]) -> bytes:
    """``keccak256(abi.encode(uint8 threshold, address[] gateways, bytes[] custodyKeys))``."""
    checked = _check_set(threshold, members)
    encoded = abi_encode(
        ["uint8", "address[]", "bytes[]"],
        [threshold, [m.gateway for m in checked], [m.custody_key for m in checked]],
    )
    return keccak(encoded)


def new_custody_key() -> tuple[bytes, bytes]:
    """A fresh custody key pair: (private 32 bytes, compressed public 33 bytes)."""
    private = coincurve.PrivateKey()
    return private.secret, private.public_key.format(compressed=True)


def _private_key(private_key: object) -> bytes:
    if not isinstance(private_key, bytes) or len(private_key) != 32:
        raise MalformedManifest(what="private key", reason="must be 32 bytes")
    return private_key


def custody_public_key(private_key: bytes) -> bytes:
    """The compressed (33-byte) public key of a custody private key."""
    try:
        return coincurve.PrivateKey(_private_key(private_key)).public_key.format(compressed=True)
    except ValueError:  # zero or not below the group order
        raise MalformedManifest(what="private key", reason="not a secp256k1 scalar") from None


def _public_key(pubkey: object) -> bytes:
    """65 (0x04...), 64 (Ethereum style, no prefix) or 33-byte (compressed) secp256k1 key."""
    if not isinstance(pubkey, bytes):
        raise MalformedManifest(what="public key", reason="must be bytes")
    if len(pubkey) == 64:
        pubkey = b"\x04" + pubkey
    if not ((len(pubkey) == 65 and pubkey[0] == 4) or (len(pubkey) == 33 and pubkey[0] in (2, 3))):
        raise MalformedManifest(
            what="public key", reason="must be 65 (0x04...), 64 or 33 bytes of secp256k1"
        )
    try:
        coincurve.PublicKey(pubkey)
    except ValueError:
        raise MalformedManifest(what="public key", reason="not a point on secp256k1") from None
    return pubkey


# -- sharing --------------------------------------------------------------------------------


def _check_share(share: object, *, what: str = "share") -> bytes:
    if not isinstance(share, bytes) or not MIN_SHARE_SIZE <= len(share) <= MAX_SHARE_SIZE:
        raise MalformedManifest(
            what=what, reason=f"must be {MIN_SHARE_SIZE} to {MAX_SHARE_SIZE} bytes"
        )
    return share


def split_key(data_key: bytes, *, threshold: int, n: int) -> list[bytes]:
    """Split a 32-byte data key t-of-n: ``n`` SLIP-39 mnemonics (ASCII bytes), index order."""
    if not isinstance(data_key, bytes) or len(data_key) != DATA_KEY_SIZE:
        raise MalformedManifest(what="data key", reason=f"must be {DATA_KEY_SIZE} bytes")
    for name, value in (("threshold", threshold), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise MalformedManifest(what="custody set", reason=f"{name} must be an int")
    if not 1 <= n <= MAX_MEMBERS or not 1 <= threshold <= n:
        raise MalformedManifest(
            what="custody set", reason=f"need 1 <= threshold <= n <= {MAX_MEMBERS}"
        )
    groups = shamir_mnemonic.generate_mnemonics(
        threshold,
        [(1, 1)] * n,
        data_key,
        _PASSPHRASE,
        extendable=_EXTENDABLE,
        iteration_exponent=_ITERATION_EXPONENT,
    )
    return [group[0].encode("ascii") for group in groups]


def share_commitment(share: bytes) -> bytes:
    """``sha256(share)``: 32 bytes."""
    return hashlib.sha256(_check_share(share)).digest()


def shares_commitment(commitments: Sequence[bytes]) -> bytes:
    """``keccak256(abi.encode(bytes32[] commitments))``, as the attestation carries it."""
    commitments = list(commitments)
    if not all(isinstance(c, bytes) and len(c) == 32 for c in commitments):
        raise MalformedManifest(what="commitments", reason="each must be 32 bytes")
    return keccak(abi_encode(["bytes32[]"], [commitments]))


def seal_share(share: bytes, public_key: bytes) -> bytes:
    """ECIES-encrypt a share to a secp256k1 public key (65/64/33-byte encodings)."""
    share = _check_share(share)
    return ecies.encrypt(_public_key(public_key), share)


def _open(sealed: object, private_key: bytes, *, what: str, index: int | None = None) -> bytes:
    secret = _private_key(private_key)
    if not isinstance(sealed, bytes) or not (
        ECIES_OVERHEAD + MIN_SHARE_SIZE <= len(sealed) <= MAX_SEALED_SHARE_SIZE
    ):
        raise MalformedManifest(what=what, reason="not the size of a sealed share")
    try:
        share = ecies.decrypt(secret, sealed)
    except Exception:  # eciespy/coincurve/pycryptodome raise ValueError & co. on any failure
        raise UnsealFailed(what=what, index=index) from None
    return _check_share(share, what=f"unsealed {what}")


@dataclass(frozen=True)
class SealedShares:
    """The result of :func:`split_and_seal`: what the manifest holds, before the blob exists."""

    threshold: int
    members: tuple[CustodyMember, ...]
    sealed_shares: tuple[bytes, ...]
    commitments: tuple[bytes, ...]

    def custody_set(self) -> bytes:
        return custody_set_hash(self.threshold, self.members)

    def shares_commitment(self) -> bytes:
        return shares_commitment(self.commitments)

    def manifest(self, *, blob_cid: str, blob_size: int, blob_sha256: bytes) -> CustodyManifest:
        """The manifest, once the blob (encrypted under the record id) has its CID."""
        if not isinstance(blob_sha256, bytes) or len(blob_sha256) != 32:
            raise MalformedManifest(what="blob_sha256", reason="must be 32 bytes")
        try:
            return CustodyManifest(
                version=CUSTODY_FORMAT,
                threshold=self.threshold,
                members=tuple(
                    ManifestMember(
                        gateway=member.gateway,
                        custody_key="0x" + member.custody_key.hex(),
                        sealed_share=base64.b64encode(sealed).decode("ascii"),
                        commitment="0x" + commitment.hex(),
                    )
                    for member, sealed, commitment in zip(
                        self.members, self.sealed_shares, self.commitments, strict=True
                    )
                ),
                blob_cid=blob_cid,
                blob_size=blob_size,
                blob_sha256="0x" + blob_sha256.hex(),
            )
        except ValidationError as exc:
            raise MalformedManifest(what="custody manifest", reason=_first_error(exc)) from None


def split_and_seal(
    data_key: bytes, *, threshold: int, members: Sequence[CustodyMember]
) -> SealedShares:
    """Split ``data_key`` t-of-n, seal share ``i`` to ``members[i].custody_key``, commit."""
    checked = _check_set(threshold, members)
    shares = split_key(data_key, threshold=threshold, n=len(checked))
    return SealedShares(
        threshold=threshold,
        members=checked,
        sealed_shares=tuple(
            seal_share(s, m.custody_key) for s, m in zip(shares, checked, strict=True)
        ),
        commitments=tuple(share_commitment(s) for s in shares),
    )


def build_manifest(
    data_key: bytes,
    *,
    threshold: int,
    members: Sequence[CustodyMember],
    blob_cid: str,
    blob_size: int,
    blob_sha256: bytes,
) -> CustodyManifest:
    """:func:`split_and_seal` and :meth:`SealedShares.manifest` in one step."""
    sealed = split_and_seal(data_key, threshold=threshold, members=members)
    return sealed.manifest(blob_cid=blob_cid, blob_size=blob_size, blob_sha256=blob_sha256)


# -- the manifest ---------------------------------------------------------------------------

Hex32 = Annotated[str, Field(pattern=r"^0x[0-9a-f]{64}$")]
_MAX_SEALED_B64 = 4 * ((MAX_SEALED_SHARE_SIZE + 2) // 3)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    return f"{loc}: {err['msg']}" if loc else str(err["msg"])


class ManifestMember(BaseModel):
    """One member of a manifest: its gateway, custody key, sealed share and commitment."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    gateway: str = Field(description="EIP-55 checksummed address of the gateway's tx account")
    custody_key: str = Field(
        pattern=r"^0x0[23][0-9a-f]{64}$", description="compressed secp256k1 key, lowercase hex"
    )
    sealed_share: str = Field(max_length=_MAX_SEALED_B64, description="ECIES, standard base64")
    commitment: Hex32 = Field(description="sha256 of the share")

    @field_validator("gateway")
    @classmethod
    def _checksummed(cls, value: str) -> str:
        if _gateway_address(value) != value:
            raise ValueError("not in EIP-55 checksummed form")
        return value

    @field_validator("custody_key")
    @classmethod
    def _on_curve(cls, value: str) -> str:
        _compressed_key(bytes.fromhex(value[2:]))
        return value

    @field_validator("sealed_share")
    @classmethod
    def _sealed_base64(cls, value: str) -> str:
        try:
            raw = base64.b64decode(value.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise ValueError("not standard base64") from None
        if base64.b64encode(raw).decode("ascii") != value:
            raise ValueError("not canonical base64")
        if not ECIES_OVERHEAD + MIN_SHARE_SIZE <= len(raw) <= MAX_SEALED_SHARE_SIZE:
            raise ValueError("not the size of a sealed share")
        return value

    @property
    def custody_key_bytes(self) -> bytes:
        return bytes.fromhex(self.custody_key[2:])

    @property
    def sealed_share_bytes(self) -> bytes:
        return base64.b64decode(self.sealed_share)

    @property
    def commitment_bytes(self) -> bytes:
        return bytes.fromhex(self.commitment[2:])

    def member(self) -> CustodyMember:
        return CustodyMember(gateway=self.gateway, custody_key=self.custody_key_bytes)


class CustodyManifest(BaseModel):
    """What is pinned on IPFS beside the record blob: the custody set, sealed shares, the blob."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    version: int
    threshold: int = Field(ge=1, le=MAX_MEMBERS)
    members: tuple[ManifestMember, ...] = Field(min_length=1, max_length=MAX_MEMBERS)
    blob_cid: str = Field(pattern=r"^[A-Za-z0-9]{1,128}$")
    blob_size: int = Field(ge=0, le=MAX_BLOB_SIZE)
    blob_sha256: Hex32

    @model_validator(mode="after")
    def _consistent(self) -> CustodyManifest:
        if self.version != CUSTODY_FORMAT:
            raise ValueError(f"unsupported custody format version {self.version}")
        if self.threshold > len(self.members):
            raise ValueError("threshold exceeds the number of members")
        for field in ("gateway", "custody_key", "commitment"):
            values = [getattr(m, field) for m in self.members]
            if len({v.lower() for v in values}) != len(values):
                raise ValueError(f"duplicate {field}")
        return self

    @property
    def n(self) -> int:
        return len(self.members)

    def custody_members(self) -> tuple[CustodyMember, ...]:
        return tuple(m.member() for m in self.members)

    def custody_set(self) -> bytes:
        """:func:`custody_set_hash` of the manifest's threshold and members."""
        return custody_set_hash(self.threshold, self.custody_members())

    def commitments(self) -> tuple[bytes, ...]:
        return tuple(m.commitment_bytes for m in self.members)

    def shares_commitment(self) -> bytes:
        """:func:`shares_commitment` of the members' commitments, in member order."""
        return shares_commitment(self.commitments())

    def check_anchors(self, *, custody_set: bytes, shares_commitment: bytes) -> None:
        """:class:`CustodyError` unless the custody set and shares commitment are the ones the
        chain holds for the record: a reader and a gateway check both before trusting it."""
        for what, expected, actual in (
            ("custody set", custody_set, self.custody_set()),
            ("shares commitment", shares_commitment, self.shares_commitment()),
        ):
            if expected != actual:
                raise CustodyError(
                    f"the manifest's {what} is not the record's", what=what, expected=expected
                )

    def index_of(self, gateway: str) -> int:
        """The member index of ``gateway``; :class:`CustodyError` if it is not a member."""
        try:
            address = _gateway_address(gateway)
        except ValueError as exc:
            raise MalformedManifest(what="gateway", reason=str(exc)) from None
        for index, member in enumerate(self.members):
            if member.gateway == address:
                return index
        raise CustodyError(f"{address} is not a custody member", gateway=address)

    def member_at(self, index: int) -> ManifestMember:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < self.n:
            raise MalformedManifest(what="share index", reason=f"must be 0..{self.n - 1}")
        return self.members[index]

    def to_bytes(self) -> bytes:
        """Canonical JSON (sorted keys, no spaces, ASCII): the bytes pinned on IPFS."""
        return json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        ).encode("ascii")

    @classmethod
    def parse(cls, raw: bytes) -> CustodyManifest:
        """Parse pinned bytes; :class:`MalformedManifest` on anything but a canonical manifest."""
        if not isinstance(raw, bytes):
            raise MalformedManifest(what="custody manifest", reason="must be bytes")
        if len(raw) > MAX_MANIFEST_SIZE:
            raise MalformedManifest(
                what="custody manifest", reason=f"larger than {MAX_MANIFEST_SIZE} bytes"
            )
        try:
            manifest = cls.model_validate_json(raw)
        except ValidationError as exc:
            raise MalformedManifest(what="custody manifest", reason=_first_error(exc)) from None
        if manifest.to_bytes() != raw:
            raise MalformedManifest(what="custody manifest", reason="not in canonical form")
        return manifest


# -- gateway side ---------------------------------------------------------------------------


def verify_share(manifest: CustodyManifest, index: int, share: bytes) -> None:
    """:class:`BadShare` unless ``share`` matches member ``index``'s commitment."""
    member = manifest.member_at(index)
    if not isinstance(share, bytes) or hashlib.sha256(share).digest() != member.commitment_bytes:
        raise BadShare(index=index, gateway=member.gateway)


def unseal_share(manifest: CustodyManifest, index: int, custody_private_key: bytes) -> bytes:
    """Gateway side: open member ``index``'s sealed share with its custody key and check it
    against the commitment (:class:`UnsealFailed`, :class:`BadShare`)."""
    member = manifest.member_at(index)
    share = _open(member.sealed_share_bytes, custody_private_key, what="custody share", index=index)
    verify_share(manifest, index, share)
    return share


def reseal_share(share: bytes, requester_public_key: bytes) -> bytes:
    """Gateway side: seal an unsealed share to the requester (65/64/33-byte public key)."""
    return seal_share(share, requester_public_key)


# -- requester side -------------------------------------------------------------------------


def open_released_share(sealed: bytes, requester_private_key: bytes) -> bytes:
    """Requester side: open a share a gateway re-sealed to us (:class:`UnsealFailed`)."""
    return _open(sealed, requester_private_key, what="released share")


def check_shares(
    shares: Mapping[int, bytes], *, manifest: CustodyManifest
) -> tuple[dict[int, bytes], tuple[BadShare, ...]]:
    """Sort shares into those that match their commitment and the :class:`BadShare` of the rest."""
    good: dict[int, bytes] = {}
    bad: list[BadShare] = []
    for index in shares:
        manifest.member_at(index)  # MalformedManifest for an index that names no member
    for index in sorted(shares):
        share = shares[index]
        try:
            verify_share(manifest, index, share)
        except BadShare as exc:
            bad.append(exc)
        else:
            good[index] = share
    return good, tuple(bad)


@dataclass(frozen=True)
class RecoveredKey:
    """The combined data key and the shares (gateways) found bad on the way."""

    data_key: bytes
    bad: tuple[BadShare, ...]

    @property
    def bad_gateways(self) -> list[str]:
        return [b.gateway for b in self.bad]


def _combine(manifest: CustodyManifest, good: Mapping[int, bytes]) -> bytes:
    chosen = sorted(good)[: manifest.threshold]
    try:
        decoded = [shamir_mnemonic.Share.from_mnemonic(good[i].decode("ascii")) for i in chosen]
    except (shamir_mnemonic.MnemonicError, UnicodeDecodeError, ValueError):
        raise CustodyError("a committed share is not a SLIP-39 share", indices=chosen) from None
    for index, share in zip(chosen, decoded, strict=True):
        # Also the parameters we write: a manifest's author cannot make readers run 2^15 times
        # the PBKDF2 work with a high iteration exponent.
        layout = (share.group_index, share.group_count, share.group_threshold, share.index)
        params = (share.member_threshold, share.iteration_exponent, share.extendable)
        if layout != (index, manifest.n, manifest.threshold, 0) or params != (
            1,
            _ITERATION_EXPONENT,
            _EXTENDABLE,
        ):
            raise CustodyError("a committed share does not fit the manifest", index=index)
    try:
        data_key: bytes = shamir_mnemonic.combine_mnemonics(
            [good[i].decode("ascii") for i in chosen], _PASSPHRASE
        )
    except (shamir_mnemonic.MnemonicError, ValueError):
        raise CustodyError("committed shares do not combine", indices=chosen) from None
    if len(data_key) != DATA_KEY_SIZE:
        raise CustodyError("combined secret is not a data key", size=len(data_key))
    return data_key


def recover_key(shares: Mapping[int, bytes], *, manifest: CustodyManifest) -> RecoveredKey:
    """Combine any ``threshold`` commitment-valid shares (member index -> share); name the bad.

    :class:`NotEnoughShares` (with the bad gateways) when fewer than ``threshold`` are good;
    :class:`CustodyError` when commitment-valid shares still do not combine (a bad manifest).
    """
    good, bad = check_shares(shares, manifest=manifest)
    if len(good) < manifest.threshold:
        raise NotEnoughShares(have=len(good), need=manifest.threshold, bad=[b.gateway for b in bad])
    return RecoveredKey(data_key=_combine(manifest, good), bad=bad)


def combine_shares(shares: Mapping[int, bytes], *, manifest: CustodyManifest) -> bytes:
    """:func:`recover_key` without the report: just the data key."""
    return recover_key(shares, manifest=manifest).data_key
