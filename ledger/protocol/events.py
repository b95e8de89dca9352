"""Typed registry events and a fast, strict decoder for raw logs.

Every log the registry emits (``IConsentRegistry`` events plus OpenZeppelin's ``RoleGranted``,
``RoleRevoked`` and ``RoleAdminChanged``) has a frozen dataclass here. :class:`EventDecoder`
builds, once, a table ``topic0 -> decoder`` from an ABI; each decoder checks the number of
topics, that every word is the canonical encoding of its type (address words have zero upper
bytes, ``uintN`` fits in N bits, enums are in range) and that the data has exactly the expected
length. Static data is sliced word by word; events with dynamic data (``RecordRegistered``'s CID)
go through ``eth_abi`` and must re-encode to the same bytes. Anything else — an unknown
``topic0``, a wrong topic count, a bad word — raises :class:`MalformedLog`: an auditor does not
skip what it cannot read.

Decoding costs a few microseconds a log (web3's contract event helpers cost ~230 µs).

:class:`RawLog` is a log exactly as the node returned it (topics and data as bytes), which is
what the event digest is computed from (see ``ledger.audit.replay``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any, ClassVar

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_abi.exceptions import DecodingError
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from ledger.protocol.consent_types import ScopeKind

__all__ = [
    "EVENT_TYPES",
    "OPENZEPPELIN_ACCESS_CONTROL_EVENTS",
    "BreakGlassClosed",
    "BreakGlassOpened",
    "CategoryAdded",
    "CategoryRemoved",
    "CheckpointAnchored",
    "ConsentGranted",
    "ConsentRevoked",
    "EventDecoder",
    "FederationSet",
    "GuardianRemoved",
    "GuardianSet",
    "MalformedLog",
    "NonceBurned",
    "RawLog",
    "RecordRegistered",
    "RegistryEvent",
    "RoleAdminChanged",
    "RoleGranted",
    "RoleRevoked",
    "UnknownEvent",
    "event_signature",
    "registry_event_abi",
]


class MalformedLog(ValueError):
    """A log that is not a well-formed registry event."""

    def __init__(self, message: str, *, block_number: int, log_index: int) -> None:
        super().__init__(f"log {block_number}:{log_index}: {message}")
        self.block_number = block_number
        self.log_index = log_index


class UnknownEvent(MalformedLog):
    """A log whose ``topic0`` is no registry event."""

    def __init__(self, topic0: bytes, *, block_number: int, log_index: int) -> None:
        super().__init__(
            f"unknown event topic0 0x{topic0.hex()}", block_number=block_number, log_index=log_index
        )
        self.topic0 = topic0


@dataclass(frozen=True, slots=True)
class RawLog:
    """One log as the node returned it; ``topics`` and ``data`` are the digest's input."""

    block_number: int
    log_index: int
    tx_hash: str
    block_hash: str
    address: str
    topics: tuple[bytes, ...]
    data: bytes
    removed: bool = False

    @classmethod
    def from_rpc(cls, log: Mapping[str, Any]) -> RawLog:
        """From an ``eth_getLogs`` entry (hex strings); raises ``ValueError`` on bad hex."""
        topics: list[str] = log["topics"]
        data: str = log["data"]
        if not data.startswith("0x") or not all(
            t.startswith("0x") and len(t) == 66 for t in topics
        ):
            raise ValueError("topics must be 32-byte and data 0x-prefixed hex")
        # One hex decode for topics and data together (this runs once per replayed log).
        raw = bytes.fromhex("".join([t[2:] for t in topics]) + data[2:])
        n = 32 * len(topics)
        return cls(
            int(log["blockNumber"], 16),
            int(log["logIndex"], 16),
            log["transactionHash"],
            log["blockHash"],
            log["address"],
            tuple([raw[i : i + 32] for i in range(0, n, 32)]),
            raw[n:],
            bool(log.get("removed", False)),
        )

    @property
    def position(self) -> tuple[int, int]:
        return (self.block_number, self.log_index)


# ------------------------------------------------------------------------------ event types


@dataclass(frozen=True, slots=True)
class RegistryEvent:
    """Fields every decoded event carries: where it is on the chain."""

    block_number: int
    log_index: int
    tx_hash: str

    name: ClassVar[str] = ""

    @property
    def position(self) -> tuple[int, int]:
        return (self.block_number, self.log_index)


@dataclass(frozen=True, slots=True)
class RecordRegistered(RegistryEvent):
    record_id: bytes
    patient: ChecksumAddress
    centre: ChecksumAddress
    category: bytes
    content_digest: bytes
    issued_at: int
    cid: str

    name: ClassVar[str] = "RecordRegistered"


@dataclass(frozen=True, slots=True)
class ConsentGranted(RegistryEvent):
    patient: ChecksumAddress
    grantee: ChecksumAddress
    scope_kind: ScopeKind
    scope_id: bytes
    purposes: int
    expires_at: int
    actor: ChecksumAddress

    name: ClassVar[str] = "ConsentGranted"


@dataclass(frozen=True, slots=True)
class ConsentRevoked(RegistryEvent):
    patient: ChecksumAddress
    grantee: ChecksumAddress
    scope_kind: ScopeKind
    scope_id: bytes
    actor: ChecksumAddress

    name: ClassVar[str] = "ConsentRevoked"


@dataclass(frozen=True, slots=True)
class GuardianSet(RegistryEvent):
    patient: ChecksumAddress
    guardian: ChecksumAddress

    name: ClassVar[str] = "GuardianSet"


@dataclass(frozen=True, slots=True)
class GuardianRemoved(RegistryEvent):
    patient: ChecksumAddress
    guardian: ChecksumAddress

    name: ClassVar[str] = "GuardianRemoved"


@dataclass(frozen=True, slots=True)
class BreakGlassOpened(RegistryEvent):
    patient: ChecksumAddress
    institution: ChecksumAddress
    until: int
    reason_hash: bytes

    name: ClassVar[str] = "BreakGlassOpened"


@dataclass(frozen=True, slots=True)
class BreakGlassClosed(RegistryEvent):
    patient: ChecksumAddress
    institution: ChecksumAddress
    closed_by: ChecksumAddress
    reopens_at: int

    name: ClassVar[str] = "BreakGlassClosed"


@dataclass(frozen=True, slots=True)
class NonceBurned(RegistryEvent):
    signer: ChecksumAddress
    nonce: int

    name: ClassVar[str] = "NonceBurned"


@dataclass(frozen=True, slots=True)
class CheckpointAnchored(RegistryEvent):
    gateway: ChecksumAddress
    tree_size: int
    root_hash: bytes

    name: ClassVar[str] = "CheckpointAnchored"


@dataclass(frozen=True, slots=True)
class CategoryAdded(RegistryEvent):
    category: bytes

    name: ClassVar[str] = "CategoryAdded"


@dataclass(frozen=True, slots=True)
class CategoryRemoved(RegistryEvent):
    category: bytes

    name: ClassVar[str] = "CategoryRemoved"


@dataclass(frozen=True, slots=True)
class FederationSet(RegistryEvent):
    """The custody federation from this event on: share i of a record goes to ``gateways[i]``."""

    threshold: int
    custody_set: bytes
    gateways: tuple[ChecksumAddress, ...]
    custody_keys: tuple[bytes, ...]
    urls: tuple[str, ...]

    name: ClassVar[str] = "FederationSet"


@dataclass(frozen=True, slots=True)
class RoleGranted(RegistryEvent):
    role: bytes
    account: ChecksumAddress
    sender: ChecksumAddress

    name: ClassVar[str] = "RoleGranted"


@dataclass(frozen=True, slots=True)
class RoleRevoked(RegistryEvent):
    role: bytes
    account: ChecksumAddress
    sender: ChecksumAddress

    name: ClassVar[str] = "RoleRevoked"


@dataclass(frozen=True, slots=True)
class RoleAdminChanged(RegistryEvent):
    role: bytes
    previous_admin_role: bytes
    new_admin_role: bytes

    name: ClassVar[str] = "RoleAdminChanged"


EVENT_TYPES: tuple[type[RegistryEvent], ...] = (
    RecordRegistered,
    ConsentGranted,
    ConsentRevoked,
    GuardianSet,
    GuardianRemoved,
    BreakGlassOpened,
    BreakGlassClosed,
    NonceBurned,
    CheckpointAnchored,
    CategoryAdded,
    CategoryRemoved,
    FederationSet,
    RoleGranted,
    RoleRevoked,
    RoleAdminChanged,
)
"""Every event the registry emits, each folded into its event digest."""

_BASE_FIELDS = 3  # block_number, log_index, tx_hash


def _role_event(name: str, third: str) -> dict[str, Any]:
    return {
        "type": "event",
        "name": name,
        "anonymous": False,
        "inputs": [
            {"name": "role", "type": "bytes32", "indexed": True, "internalType": "bytes32"},
            {"name": "account", "type": "address", "indexed": True, "internalType": "address"},
            {"name": third, "type": "address", "indexed": True, "internalType": "address"},
        ],
    }


OPENZEPPELIN_ACCESS_CONTROL_EVENTS: tuple[dict[str, Any], ...] = (
    _role_event("RoleGranted", "sender"),
    _role_event("RoleRevoked", "sender"),
    {
        "type": "event",
        "name": "RoleAdminChanged",
        "anonymous": False,
        "inputs": [
            {"name": n, "type": "bytes32", "indexed": True, "internalType": "bytes32"}
            for n in ("role", "previousAdminRole", "newAdminRole")
        ],
    },
)
"""OpenZeppelin ``IAccessControl`` events (ABI fragments), which the interface ABI lacks."""


def registry_event_abi(interface_abi: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The events of ``IConsentRegistry``'s ABI plus OpenZeppelin's AccessControl events."""
    events = [dict(e) for e in interface_abi if e.get("type") == "event"]
    names = {e["name"] for e in events}
    events += [dict(e) for e in OPENZEPPELIN_ACCESS_CONTROL_EVENTS if e["name"] not in names]
    return events


def event_signature(event_abi: Mapping[str, Any]) -> str:
    """``Name(type1,type2,...)`` of an ABI event (tuples are not used by the registry)."""
    return f"{event_abi['name']}({','.join(i['type'] for i in event_abi['inputs'])})"


# ------------------------------------------------------------------------------ decoding

_ZERO12 = bytes(12)
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


@lru_cache(maxsize=65536)
def _checksum(raw20: bytes) -> ChecksumAddress:
    return to_checksum_address(raw20)


def _snake(name: str) -> str:
    return _CAMEL.sub("_", name).lower()


_WordDecoder = Callable[[bytes], Any]


class _BadWord(ValueError):
    pass


def _address_word(word: bytes) -> ChecksumAddress:
    if word[:12] != _ZERO12:
        raise _BadWord(f"address word with non-zero upper bytes: 0x{word.hex()}")
    return _checksum(word[12:])


def _bytes32_word(word: bytes) -> bytes:
    return word


def _uint_word(bits: int) -> _WordDecoder:
    def decode(word: bytes) -> int:
        value = int.from_bytes(word, "big")
        if value >> bits:
            raise _BadWord(f"uint{bits} out of range: {value}")
        return value

    return decode


def _bool_word(word: bytes) -> bool:
    value = int.from_bytes(word, "big")
    if value > 1:
        raise _BadWord(f"bool out of range: {value}")
    return value == 1


def _bytesn_word(n: int) -> _WordDecoder:
    def decode(word: bytes) -> bytes:
        if any(word[n:]):
            raise _BadWord(f"bytes{n} with non-zero padding: 0x{word.hex()}")
        return word[:n]

    return decode


_SCOPE_KINDS = tuple(ScopeKind)


def _scope_kind_word(word: bytes) -> ScopeKind:
    value = int.from_bytes(word, "big")
    if value >= len(_SCOPE_KINDS):
        raise _BadWord(f"ScopeKind out of range: {value}")
    return _SCOPE_KINDS[value]


_ENUMS: dict[str, _WordDecoder] = {"enum IConsentRegistry.ScopeKind": _scope_kind_word}


def _word_decoder(param: Mapping[str, Any]) -> _WordDecoder | None:
    """A one-word decoder for a static type, or ``None`` for a dynamic one."""
    abi_type: str = param["type"]
    internal = param.get("internalType", "")
    if internal in _ENUMS:
        return _ENUMS[internal]
    if abi_type == "address":
        return _address_word
    if abi_type == "bytes32":
        return _bytes32_word
    if abi_type == "bool":
        return _bool_word
    if abi_type.startswith("uint"):
        return _uint_word(int(abi_type[4:] or 256))
    if abi_type.startswith("bytes") and abi_type[5:].isdigit():
        return _bytesn_word(int(abi_type[5:]))
    if abi_type in ("string", "bytes") or abi_type.endswith("[]"):
        return None
    raise ValueError(f"unsupported event parameter type {abi_type!r}")


@dataclass(frozen=True)
class _Spec:
    cls: type[RegistryEvent]
    name: str
    topic_decoders: tuple[_WordDecoder, ...]
    data_types: tuple[str, ...]
    data_decoders: tuple[_WordDecoder, ...] | None  # None: dynamic data, decoded by eth_abi
    order: tuple[int, ...]  # field position of each (indexed..., data...) value
    post: tuple[Callable[[Any], Any], ...]  # per data value, for eth_abi-decoded data


def _identity(value: Any) -> Any:
    return value


def _eth_abi_post(param: Mapping[str, Any]) -> Callable[[Any], Any]:
    internal = param.get("internalType", "")
    if internal == "enum IConsentRegistry.ScopeKind":
        return ScopeKind
    if param["type"] == "address":
        return lambda a: _checksum(bytes.fromhex(a[2:]))
    if param["type"] == "address[]":
        return lambda items: tuple(_checksum(bytes.fromhex(a[2:])) for a in items)
    if param["type"].endswith("[]"):
        return tuple
    return _identity


class EventDecoder:
    """``topic0 -> decoder`` for the registry's events, built once from an ABI.

    ``abi`` defaults to nothing; pass ``registry_event_abi(artifacts['IConsentRegistry'].abi)``
    (or the implementation's ABI). Every ABI event must have a dataclass in
    :data:`EVENT_TYPES` with the same fields in the same order (snake_case), except those in
    ``ignore`` (declared but never emitted, e.g. ``EIP712DomainChanged``).
    """

    def __init__(
        self,
        abi: Iterable[Mapping[str, Any]],
        *,
        ignore: Iterable[str] = ("EIP712DomainChanged",),
    ) -> None:
        by_name = {cls.name: cls for cls in EVENT_TYPES}
        skip = set(ignore)
        self._specs: dict[bytes, _Spec] = {}
        for entry in abi:
            if entry.get("type") != "event" or entry["name"] in skip:
                continue
            if entry.get("anonymous"):
                raise ValueError(f"anonymous event {entry['name']} cannot be decoded by topic0")
            cls = by_name.get(entry["name"])
            if cls is None:
                raise ValueError(
                    f"ABI event {entry['name']} has no dataclass in ledger.protocol.events"
                )
            topic0 = keccak(text=event_signature(entry))
            self._specs[topic0] = self._spec(cls, entry)

    @staticmethod
    def _spec(cls: type[RegistryEvent], entry: Mapping[str, Any]) -> _Spec:
        inputs: Sequence[Mapping[str, Any]] = entry["inputs"]
        field_names = [f.name for f in fields(cls)][_BASE_FIELDS:]
        abi_names = [_snake(i["name"]) for i in inputs]
        if field_names != abi_names:
            raise ValueError(f"{cls.name}: ABI fields {abi_names} != dataclass {field_names}")
        indexed = [i for i, p in enumerate(inputs) if p.get("indexed")]
        data = [i for i, p in enumerate(inputs) if not p.get("indexed")]
        topic_decoders = []
        for i in indexed:
            decoder = _word_decoder(inputs[i])
            if decoder is None:  # an indexed dynamic value comes back as its hash
                decoder = _bytes32_word
            topic_decoders.append(decoder)
        data_decoders = [_word_decoder(inputs[i]) for i in data]
        static = all(d is not None for d in data_decoders)
        return _Spec(
            cls=cls,
            name=cls.name,
            topic_decoders=tuple(topic_decoders),
            data_types=tuple(inputs[i]["type"] for i in data),
            data_decoders=tuple(d for d in data_decoders if d is not None) if static else None,
            order=tuple(indexed + data),
            post=tuple(_eth_abi_post(inputs[i]) for i in data),
        )

    @property
    def topics(self) -> Mapping[bytes, str]:
        """``topic0 -> event name`` of every event this decoder reads."""
        return {t: s.name for t, s in self._specs.items()}

    def topic0_of(self, name: str) -> bytes:
        for topic0, spec in self._specs.items():
            if spec.name == name:
                return topic0
        raise KeyError(name)

    def decode(self, log: RawLog) -> RegistryEvent:
        """The typed event of ``log``; raises :class:`MalformedLog` (or :class:`UnknownEvent`)."""
        topics = log.topics
        if not topics:
            raise MalformedLog(
                "anonymous log (no topics)", block_number=log.block_number, log_index=log.log_index
            )
        spec = self._specs.get(topics[0])
        if spec is None:
            raise UnknownEvent(topics[0], block_number=log.block_number, log_index=log.log_index)
        try:
            values = self._values(spec, topics, log.data)
        except (_BadWord, ValueError, DecodingError) as exc:
            raise MalformedLog(
                f"{spec.name}: {exc}", block_number=log.block_number, log_index=log.log_index
            ) from exc
        if spec.order != tuple(range(len(spec.order))):
            ordered: list[Any] = [None] * len(values)
            for position, value in zip(spec.order, values, strict=True):
                ordered[position] = value
            values = ordered
        return spec.cls(log.block_number, log.log_index, log.tx_hash, *values)

    @staticmethod
    def _values(spec: _Spec, topics: tuple[bytes, ...], data: bytes) -> list[Any]:
        decoders = spec.topic_decoders
        if len(topics) != len(decoders) + 1:
            raise _BadWord(f"expected {len(decoders) + 1} topics, got {len(topics)}")
        values: list[Any] = []
        for decoder, topic in zip(decoders, topics[1:], strict=True):
            if len(topic) != 32:
                raise _BadWord(f"topic of {len(topic)} bytes")
            values.append(decoder(topic))
        if spec.data_decoders is not None:
            if len(data) != 32 * len(spec.data_decoders):
                expected = 32 * len(spec.data_decoders)
                raise _BadWord(f"data of {len(data)} bytes, expected {expected}")
            for i, decoder in enumerate(spec.data_decoders):
                values.append(decoder(data[32 * i : 32 * i + 32]))
            return values
        decoded = abi_decode(spec.data_types, data, strict=True)
        if abi_encode(spec.data_types, decoded) != data:
            raise _BadWord("data is not the canonical ABI encoding")
        for post, value in zip(spec.post, decoded, strict=True):
            values.append(post(value))
        return values
