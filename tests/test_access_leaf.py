"""The access-log leaf format: what the gateway writes, the audit reads back unchanged."""

from __future__ import annotations

import json

import pytest
from eth_utils.address import to_checksum_address
from hypothesis import given
from hypothesis import strategies as st

from ledger.protocol.access_leaf import (
    LEAF_KEYS,
    LEAF_VERSION,
    OPERATIONAL_DENIALS,
    POSITION_KEYS,
    Decision,
    canonical_json,
    canonical_leaf,
    parse_leaf,
)

_addresses = st.binary(min_size=20, max_size=20).map(lambda b: to_checksum_address(b))
_reasons = st.sampled_from(["owner", "consent", "no_consent", *sorted(OPERATIONAL_DENIALS)])


@st.composite
def _decisions(draw: st.DrawFn) -> Decision:
    positioned = draw(st.booleans())
    block = draw(st.none() | st.integers(min_value=0, max_value=2**40))
    return Decision(
        requester=draw(_addresses),
        patient=draw(_addresses),
        record_id="0x" + draw(st.binary(min_size=32, max_size=32)).hex().upper(),
        purpose=draw(st.integers(min_value=0, max_value=31)),
        allowed=draw(st.booleans()),
        reason=draw(_reasons),
        block_number=block,
        # whole milliseconds: the leaf's time has millisecond resolution
        time=draw(st.integers(min_value=0, max_value=4_000_000_000_000)) / 1000,
        event_count=draw(st.integers(min_value=0, max_value=2**32))
        if positioned and block is not None
        else None,
        chain_time=draw(st.integers(min_value=0, max_value=2**40))
        if positioned and block is not None
        else None,
    )


@given(_decisions())
def test_a_written_leaf_reads_back_as_the_same_decision(decision: Decision) -> None:
    leaf = canonical_leaf(decision)
    parsed, problem = parse_leaf(leaf)
    assert problem is None
    assert parsed is not None
    assert parsed.requester == to_checksum_address(decision.requester)
    assert parsed.patient == to_checksum_address(decision.patient)
    assert parsed.record == bytes.fromhex(decision.record_id[2:])
    assert parsed.purpose == decision.purpose
    assert parsed.allowed == decision.allowed
    assert parsed.reason == decision.reason
    assert parsed.block == decision.block_number
    assert parsed.events == decision.event_count
    assert parsed.chain_time == decision.chain_time
    assert parsed.timestamp == pytest.approx(decision.time, abs=2e-3)
    body = json.loads(leaf)
    assert body["v"] == LEAF_VERSION
    assert set(body) in (LEAF_KEYS, LEAF_KEYS | POSITION_KEYS)
    assert canonical_json(body) == leaf


def _decision(**kw: object) -> Decision:
    fields: dict[str, object] = {
        "requester": "0x" + "11" * 20,
        "patient": "0x" + "22" * 20,
        "record_id": "0x" + "33" * 32,
        "purpose": 0,
        "allowed": False,
        "reason": "no_consent",
        "block_number": 5,
        "time": 0.0,
    }
    return Decision(**{**fields, **kw})  # type: ignore[arg-type]


def test_a_leaf_with_one_position_key_is_refused() -> None:
    with pytest.raises(ValueError, match="both its event count and its chain time"):
        canonical_leaf(_decision(event_count=3))


def test_a_reformatted_leaf_parses_but_is_not_canonical() -> None:
    leaf = canonical_leaf(_decision())
    spaced = json.dumps(json.loads(leaf), sort_keys=True).encode()
    parsed, problem = parse_leaf(spaced)
    assert parsed is not None
    assert problem == "leaf is not in canonical form"
