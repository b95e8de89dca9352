"""The access-log leaf: what a gateway writes for every fetch decision and an auditor reads back.

Pure, no I/O: the gateway builds its leaves with :func:`canonical_leaf`
(``gateway.storage.access_log``) and the audit parses them with :func:`parse_leaf`
(``ledger.audit.export``), so both sides use one definition of the format.

Leaf format (version 1): the canonical JSON of the decision, UTF-8, keys sorted, no spaces,
ASCII only::

    {"block":123,"chain_time":1767225600,"decision":"allowed","events":4711,
     "patient":"0xabc...","purpose":0,"reason":"consent","record":"0x1f...",
     "requester":"0xdef...","time":"2026-01-01T00:00:00.123Z","v":1}

- ``requester`` / ``patient``: lowercase ``0x`` addresses; ``record``: lowercase ``0x`` bytes32.
- ``purpose``: the purpose id (0 treatment, 1 research, ...).
- ``decision``: ``allowed`` or ``denied``. ``reason`` for ``allowed``: ``owner`` (the patient
  reads their own record) or ``consent``; for ``denied``: ``no_consent`` (the chain said no at
  ``block``) or an operational refusal that is not a consent decision: ``blob_tampered``,
  ``blob_missing``, ``ipfs_unavailable``, ``chain_stale`` (the evaluated chain time was older
  than ``max_head_age_s``), ``chain_unavailable`` (then ``block`` is null). An
  auditor checks that every ``allowed`` leaf was covered by consent at ``block`` and every
  ``no_consent`` leaf was not.
- ``block``: the block number the gateway read (``eth_blockNumber``) and asked the registry's
  ``accessDecision`` at. ``time``: the gateway's UTC clock.
- ``events`` and ``chain_time`` (present together, whenever the chain answered): the ledger
  position the node actually evaluated, as ``accessDecision`` returned it in the same
  ``eth_call`` — the event digest's count in the evaluated state and ``block.timestamp`` during
  the call. A node may answer "at block N" from a state that already holds block N+1's
  transactions (anvil does while N+1 is being mined), so ``block`` alone does not identify the
  state; ``events`` does. An auditor evaluates the decision on the consent state after exactly
  ``events`` events at time ``chain_time``, and checks the position against ``block``. Leaves
  without these keys (``chain_unavailable``, and logs written before they existed) are judged
  at ``block``.

The leaf hash is ``SHA-256(0x00 || leaf)`` (RFC 9162, ``ledger.protocol.merkle.leaf_hash``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address

__all__ = [
    "LEAF_KEYS",
    "LEAF_VERSION",
    "OPERATIONAL_DENIALS",
    "POSITION_KEYS",
    "Decision",
    "LeafDecision",
    "canonical_json",
    "canonical_leaf",
    "hex_bytes",
    "parse_leaf",
]

LEAF_VERSION = 1
# The keys of every version-1 leaf, and the two a leaf carries together or not at all.
LEAF_KEYS = frozenset(
    {"block", "decision", "patient", "purpose", "reason", "record", "requester", "time", "v"}
)
POSITION_KEYS = frozenset({"events", "chain_time"})
# ``denied`` reasons that are not a consent decision (the gateway refused for another cause).
OPERATIONAL_DENIALS = frozenset(
    {
        "blob_tampered",
        "blob_missing",
        "ipfs_unavailable",
        "chain_unavailable",
        "chain_stale",
        "custody_key_missing",  # a custody member without its custody key: no share released
        "share_unavailable",  # its custody key does not open its share of this record
    }
)
_LEAF_KEYS_WITH_POSITION = LEAF_KEYS | POSITION_KEYS


# ------------------------------------------------------------------------------ writing


@dataclass(frozen=True, slots=True)
class Decision:
    """One access decision, as the gateway made it."""

    requester: str
    patient: str
    record_id: str
    purpose: int
    allowed: bool
    reason: str
    block_number: int | None
    time: float
    event_count: int | None = None  # accessDecision's eventCount (leaf key ``events``)
    chain_time: int | None = None  # accessDecision's block.timestamp (leaf key ``chain_time``)


def _rfc3339(ts: float) -> str:
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def canonical_json(value: Mapping[str, Any]) -> bytes:
    """The canonical leaf serialisation: JSON, keys sorted, no spaces, ASCII only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def canonical_leaf(decision: Decision) -> bytes:
    """The leaf bytes of ``decision`` (see the module docstring for the format)."""
    body: dict[str, object] = {
        "block": decision.block_number,
        "decision": "allowed" if decision.allowed else "denied",
        "patient": decision.patient.lower(),
        "purpose": int(decision.purpose),
        "reason": decision.reason,
        "record": decision.record_id.lower(),
        "requester": decision.requester.lower(),
        "time": _rfc3339(decision.time),
        "v": LEAF_VERSION,
    }
    if decision.event_count is not None or decision.chain_time is not None:
        if decision.event_count is None or decision.chain_time is None:
            raise ValueError("a decision names both its event count and its chain time, or none")
        body["events"] = int(decision.event_count)
        body["chain_time"] = int(decision.chain_time)
    return canonical_json(body)


# ------------------------------------------------------------------------------ reading


@dataclass(frozen=True, slots=True)
class LeafDecision:
    """The decision a leaf records (version 1)."""

    requester: ChecksumAddress
    patient: ChecksumAddress
    record: bytes
    purpose: int
    allowed: bool
    reason: str
    block: int | None
    time: str
    events: int | None = None  # the registry's event count in the state evaluated
    chain_time: int | None = None  # block.timestamp during the consent check

    @property
    def timestamp(self) -> float | None:
        try:
            return datetime.fromisoformat(self.time.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None


def parse_leaf(leaf: bytes) -> tuple[LeafDecision | None, str | None]:
    """The decision ``leaf`` records and what is wrong with it: ``(None, problem)`` when it does
    not parse, ``(decision, problem)`` when it parses but is not in canonical form."""
    try:
        body = json.loads(leaf)
    except ValueError:
        return None, "leaf is not JSON"
    if not isinstance(body, dict):
        return None, "leaf is not a JSON object"
    keys = set(body)
    if keys != LEAF_KEYS and keys != _LEAF_KEYS_WITH_POSITION:
        return None, f"leaf keys {sorted(body)} are not the v1 keys"
    if body["v"] != LEAF_VERSION:
        return None, f"unknown leaf version {body['v']!r}"
    try:
        decision = body["decision"]
        if decision not in ("allowed", "denied"):
            raise ValueError(f"decision {decision!r}")
        block = body["block"]
        if block is not None and (not isinstance(block, int) or block < 0):
            raise ValueError(f"block {block!r}")
        purpose = body["purpose"]
        if not isinstance(purpose, int) or isinstance(purpose, bool):
            raise ValueError(f"purpose {purpose!r}")
        record = hex_bytes(body["record"], 32)
        positioned = "events" in body
        if positioned and block is None:
            raise ValueError("events and chain_time without a block")
        parsed = LeafDecision(
            requester=_address(body["requester"]),
            patient=_address(body["patient"]),
            record=record,
            purpose=purpose,
            allowed=decision == "allowed",
            reason=str(body["reason"]),
            block=block,
            time=str(body["time"]),
            events=_uint(body, "events") if positioned else None,
            chain_time=_uint(body, "chain_time") if positioned else None,
        )
    except (TypeError, ValueError) as exc:
        return None, f"bad leaf field: {exc}"
    if canonical_json(body) != leaf:
        return parsed, "leaf is not in canonical form"
    return parsed, None


def hex_bytes(value: Any, size: int | None = None) -> bytes:
    """The bytes of a ``0x`` hex string (of exactly ``size`` bytes when given)."""
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError(f"not 0x hex: {value!r}")
    raw = bytes.fromhex(value[2:])
    if size is not None and len(raw) != size:
        raise ValueError(f"expected {size} bytes, got {len(raw)}")
    return raw


@lru_cache(maxsize=65536)
def _address(value: str) -> ChecksumAddress:
    if not isinstance(value, str) or len(value) != 42 or not value.startswith("0x"):
        raise ValueError(f"not an address: {value!r}")
    return to_checksum_address(value)


def _uint(body: Mapping[str, Any], key: str) -> int:
    value = body[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{key} {value!r}")
    return value
