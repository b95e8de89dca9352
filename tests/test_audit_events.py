"""The strict event decoder: matches the ABI, round-trips, refuses anything malformed."""

from __future__ import annotations

import dataclasses
import os

import pytest
from eth_abi.abi import encode
from eth_utils.crypto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.chain.build import compile_contracts
from ledger.protocol import events as ev
from ledger.protocol.consent_types import ScopeKind
from ledger.protocol.events import (
    EventDecoder,
    MalformedLog,
    RawLog,
    UnknownEvent,
    event_signature,
    registry_event_abi,
)


@pytest.fixture(scope="module")
def artifacts():
    return compile_contracts()


@pytest.fixture(scope="module")
def decoder(artifacts) -> EventDecoder:
    return EventDecoder(registry_event_abi(artifacts["IConsentRegistry"].abi))


def addr_word(a: bytes) -> bytes:
    return bytes(12) + a


def raw(topics, data=b"", block=1, index=0) -> RawLog:
    return RawLog(
        block, index, "0x" + "ab" * 32, "0x" + "cd" * 32, "0x" + "11" * 20, tuple(topics), data
    )


def topic(decoder: EventDecoder, name: str) -> bytes:
    return decoder.topic0_of(name)


def test_every_abi_event_of_the_implementation_has_a_dataclass(artifacts, decoder) -> None:
    implementation = EventDecoder(artifacts["ConsentRegistry"].abi)
    assert set(implementation.topics.values()) == {cls.name for cls in ev.EVENT_TYPES}
    assert implementation.topics == decoder.topics


def test_topic0_is_the_keccak_of_the_signature(artifacts, decoder) -> None:
    for entry in registry_event_abi(artifacts["IConsentRegistry"].abi):
        assert decoder.topics[keccak(text=event_signature(entry))] == entry["name"]


def test_all_is_exported() -> None:
    public = {
        n
        for n, v in vars(ev).items()
        if not n.startswith("_") and getattr(v, "__module__", None) == ev.__name__
    }
    assert public <= set(ev.__all__)


def test_an_abi_event_without_a_dataclass_is_refused(artifacts) -> None:
    abi = [
        *registry_event_abi(artifacts["IConsentRegistry"].abi),
        {"type": "event", "name": "Surprise", "inputs": [], "anonymous": False},
    ]
    with pytest.raises(ValueError, match="Surprise"):
        EventDecoder(abi)


addresses = st.binary(min_size=20, max_size=20)
words = st.binary(min_size=32, max_size=32)


@settings(max_examples=200, deadline=None)
@given(patient=addresses, grantee=addresses, actor=addresses, kind=st.integers(0, 2), scope=words,
       purposes=st.integers(0, 2**32 - 1), expires=st.integers(0, 2**64 - 1))  # fmt: skip
def test_consent_granted_round_trips(
    decoder, patient, grantee, actor, kind, scope, purposes, expires
) -> None:
    data = encode(
        ["uint8", "bytes32", "uint32", "uint64", "address"], [kind, scope, purposes, expires, actor]
    )
    event = decoder.decode(
        raw([topic(decoder, "ConsentGranted"), addr_word(patient), addr_word(grantee)], data, 7, 3)
    )
    assert isinstance(event, ev.ConsentGranted)
    assert (event.block_number, event.log_index) == (7, 3)
    assert bytes.fromhex(event.patient[2:]) == patient
    assert bytes.fromhex(event.actor[2:]) == actor
    assert event.scope_kind is ScopeKind(kind)
    assert (event.scope_id, event.purposes, event.expires_at) == (scope, purposes, expires)
    assert dataclasses.is_dataclass(event)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.purposes = 0  # type: ignore[misc]


@settings(max_examples=100, deadline=None)
@given(
    cid=st.text(min_size=1, max_size=128),
    issued=st.integers(0, 2**64 - 1),
    rid=words,
    cat=words,
    digest=words,
)
def test_record_registered_round_trips(decoder, cid, issued, rid, cat, digest) -> None:
    data = encode(["bytes32", "bytes32", "uint64", "string"], [cat, digest, issued, cid])
    p, c = os.urandom(20), os.urandom(20)
    event = decoder.decode(
        raw([topic(decoder, "RecordRegistered"), rid, addr_word(p), addr_word(c)], data)
    )
    assert isinstance(event, ev.RecordRegistered)
    assert (event.record_id, event.category, event.content_digest, event.issued_at, event.cid) == (
        rid,
        cat,
        digest,
        issued,
        cid,
    )


def test_unknown_topic0_raises(decoder) -> None:
    with pytest.raises(UnknownEvent):
        decoder.decode(raw([keccak(text="Transfer(address,address,uint256)")]))


def test_anonymous_log_raises(decoder) -> None:
    with pytest.raises(MalformedLog):
        decoder.decode(raw([]))


@pytest.mark.parametrize(
    "mutation",
    [
        "dirty address",
        "extra topic",
        "missing topic",
        "short data",
        "long data",
        "enum out of range",
        "uint64 overflow",
    ],
)
def test_malformed_logs_raise(decoder, mutation: str) -> None:
    patient, grantee = addr_word(os.urandom(20)), addr_word(os.urandom(20))
    values = [1, os.urandom(32), 3, 10**9, "0x" + "22" * 20]
    data = encode(["uint8", "bytes32", "uint32", "uint64", "address"], values)
    topics = [topic(decoder, "ConsentGranted"), patient, grantee]
    if mutation == "dirty address":
        topics[1] = b"\x01" + patient[1:]
    elif mutation == "extra topic":
        topics.append(bytes(32))
    elif mutation == "missing topic":
        topics.pop()
    elif mutation == "short data":
        data = data[:-1]
    elif mutation == "long data":
        data += bytes(32)
    elif mutation == "enum out of range":
        data = (3).to_bytes(32, "big") + data[32:]
    elif mutation == "uint64 overflow":
        data = data[:96] + (2**64).to_bytes(32, "big") + data[128:]
    with pytest.raises(MalformedLog):
        decoder.decode(raw(topics, data))


def test_non_canonical_dynamic_data_raises(decoder) -> None:
    data = encode(
        ["bytes32", "bytes32", "uint64", "string"], [bytes(32), bytes(32), 1, "bafy"]
    ) + bytes(32)
    with pytest.raises(MalformedLog, match=r"canonical|bytes"):
        decoder.decode(
            raw([topic(decoder, "RecordRegistered"), bytes(32), bytes(32), bytes(32)], data)
        )


def test_raw_log_from_rpc() -> None:
    log = RawLog.from_rpc(
        {"blockNumber": "0x10", "logIndex": "0x2", "transactionHash": "0xaa", "blockHash": "0xbb",
         "address": "0x" + "11" * 20, "topics": ["0x" + "00" * 32], "data": "0x0102",
         "removed": False}
    )  # fmt: skip
    assert (log.block_number, log.log_index, log.topics, log.data, log.removed) == (
        16,
        2,
        (bytes(32),),
        b"\x01\x02",
        False,
    )
