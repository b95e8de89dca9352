"""The audit: replay the ledger, prove it complete, verify a gateway's access log against it.

:func:`run_audit` does, in order:

1. **Replay and completeness** (``ledger.audit.replay``): every registry log from the deploy
   block to ``head - confirmations``, checked against the on-chain event digest; divergences are
   named (``event_missing`` / ``event_extra`` / ``event_altered`` / ``event_reordered``).
2. **Consent state** (``ledger.audit.state``): the events folded into a timeline that answers
   ``accessBasis`` at any block.
3. **Which logs**: every account that held ``GATEWAY_ROLE`` at some block of the audited range
   (replayed ``RoleGranted`` / ``RoleRevoked``) or anchored a checkpoint in it is listed
   (:class:`GatewayCoverage`). An export whose ``gateway`` is none of the role holders is
   ``log_not_a_gateway``; a gateway that anchored and has no export given is
   ``log_not_supplied`` (both unverifiable: an export's own ``gateway`` field is a claim, the
   chain says which logs exist). A role holder that anchored nothing and has no export is only
   listed.
4. **Access log**, for each exported log given:
   - every entry parses, its leaf is canonical, indices are dense (``log_malformed``,
     ``log_entries_deleted`` for gaps);
   - the exported checkpoints are the ones anchored on-chain by that gateway
     (``checkpoint_forged`` otherwise);
   - for each on-chain ``CheckpointAnchored`` of the gateway, the RFC 9162 root of the first
     ``treeSize`` exported leaves equals the anchored root, and each entry's inclusion proof
     (built from the leaves) verifies under the first checkpoint covering it
     (``log_entries_altered``; ``log_entries_reordered`` when swapping two entries of the window
     restores the anchored root; ``log_entries_deleted`` when fewer leaves than anchored remain);
   - consecutive anchored checkpoints are consistent (RFC 9162 consistency proof from the
     exported leaves, verified against both anchored roots): a later checkpoint that matches the
     log while an earlier one does not means the gateway rewrote history between them
     (``history_rewritten``);
   - every ``allowed`` entry had consent and every ``denied`` / ``no_consent`` entry did not
     (``read_without_consent``, ``wrong_denial``), computed from the replayed events: on the
     state after exactly ``events`` events at time ``chain_time`` when the leaf names that
     position (the node's own answer to "which state did you evaluate"), else on the state after
     its block at the block's timestamp;
   - a leaf's position is consistent with its block (``decision_position_inconsistent``
     otherwise): with ``events`` = C and ``block`` = N, the C events must include every event of
     the blocks up to N and none after block N+1 (a node may evaluate "at N" a state that
     already holds block N+1's transactions), and ``ts(N) <= chain_time <= ts(N+1)``;
   - entries after the last anchored checkpoint are reported (``unanchored_entries``), and are
     ``unanchored_stale`` (unverifiable) when the earliest of their blocks is more than
     ``anchor_interval_s`` older than the audited block: the gateway anchors within its
     checkpoint interval, so such a tail could be withheld or rewritten unseen;
   - leaf blocks do not go back along the index (``entry_block_backwards``; a step back is
     accepted only when block ``N + 1`` of the later-logged leaf at ``N`` is at most
     ``max_time_skew_s`` older than the block it steps back from: requests in flight across a
     block), and a leaf's ``time`` lies in ``[ts(N) - skew, ts(N + 1) + skew]``
     (``entry_time_inconsistent``).

Findings are typed (:class:`Finding`); each kind has a severity. :attr:`AuditReport.exit_code` is
0 when clean (notices allowed), 1 on any violation, 2 when something could not be verified (node
unreachable, replay incomplete) and nothing was found violated.

Exported access-log format (``consent-ledger/access-log``, version 1)
--------------------------------------------------------------------

One JSON document (the gateway serves it, e.g. ``GET /audit/access-log``, or writes it to a
file)::

    {
      "format": "consent-ledger/access-log",
      "version": 1,
      "gateway": "0x…",             # the account that anchors this log's checkpoints
      "chain_id": 31337,            # optional, checked when present
      "registry": "0x…",            # optional, checked when present
      "entries": [
        {"index": 0,
         "leaf": "{\\"block\\":12,\\"decision\\":\\"allowed\\",…,\\"v\\":1}",
         "leaf_hash": "0x…"},       # optional; SHA-256(0x00 || leaf) when present
        …
      ],
      "checkpoints": [              # optional: the gateway's claims, checked against the chain
        {"tree_size": 16, "root_hash": "0x…", "block_number": 40, "tx_hash": "0x…"}
      ]
    }

- ``entries`` are in index order, indices dense from 0. ``leaf`` is the exact leaf text that was
  hashed (``gateway.accesslog.canonical_leaf``: JSON, keys sorted, no spaces, ASCII); the leaf
  hash is ``SHA-256(0x00 || utf8(leaf))`` (RFC 9162). A leaf given as a JSON object instead of a
  string is serialised canonically first.
- Leaf fields (version 1): ``requester``, ``patient`` (lowercase 0x addresses), ``record``
  (lowercase 0x bytes32), ``purpose`` (int 0..31), ``decision`` (``allowed`` | ``denied``),
  ``reason`` (``owner`` | ``consent`` for allowed; ``no_consent`` or an operational refusal —
  ``blob_tampered``, ``blob_missing``, ``ipfs_unavailable``, ``chain_unavailable``,
  ``chain_stale`` — for denied),
  ``block`` (the block the gateway asked ``accessDecision`` at; null only for
  ``chain_unavailable``), ``time`` (RFC 3339 UTC), ``v`` (1); and, together or not at all,
  ``events`` (the registry's event count in the state the node evaluated, returned by
  ``accessDecision`` in the same ``eth_call``) and ``chain_time`` (``block.timestamp`` in that
  call). The gateway writes both whenever the chain answered; leaves without them (older logs,
  ``chain_unavailable``) are judged at ``block``.

:func:`build_access_log_export` builds this document from leaves and checkpoints.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from ledger.audit.replay import (
    BlockClock,
    DigestMismatchKind,
    DigestProblem,
    ReplayResult,
    gc_paused,
    replay,
)
from ledger.audit.state import ConsentTimeline
from ledger.chain.logs import ProgressFn
from ledger.chain.node import ChainError
from ledger.chain.rpc import RpcClient
from ledger.protocol.consent_types import Basis
from ledger.protocol.events import (
    CheckpointAnchored,
    EventDecoder,
    MalformedLog,
    RoleGranted,
    RoleRevoked,
)
from ledger.protocol.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)

__all__ = [
    "ACCESS_LOG_FORMAT",
    "ACCESS_LOG_VERSION",
    "DEFAULT_ANCHOR_INTERVAL_S",
    "DEFAULT_MAX_TIME_SKEW_S",
    "AccessLogError",
    "AccessLogExport",
    "AuditReport",
    "EntryVerdict",
    "ExportedCheckpoint",
    "Finding",
    "FindingKind",
    "GatewayCoverage",
    "LeafDecision",
    "LogEntry",
    "LogVerification",
    "Severity",
    "build_access_log_export",
    "canonical_json",
    "gateway_coverage",
    "load_access_log",
    "run_audit",
    "verify_access_log",
]

ACCESS_LOG_FORMAT = "consent-ledger/access-log"
ACCESS_LOG_VERSION = 1
_OPERATIONAL_DENIALS = frozenset(
    {"blob_tampered", "blob_missing", "ipfs_unavailable", "chain_unavailable", "chain_stale"}
)
_MAX_SWAP_TRIALS = 256
_GATEWAY_ROLE = keccak(text="GATEWAY_ROLE")
# The gateway anchors within ``checkpoint_interval_s`` (default 30 s) of a new entry; an entry
# left unanchored longer than this, in chain time, could have been withheld or rewritten.
DEFAULT_ANCHOR_INTERVAL_S = 30.0
# How far a leaf's ``time`` (the gateway's clock) may lie outside its block's window
# ``[ts(block), ts(block + 1)]``: clock differences plus a request's longest run after its head
# observation (chain call, IPFS fetch).
DEFAULT_MAX_TIME_SKEW_S = 60.0


# ------------------------------------------------------------------------------ findings


class Severity(StrEnum):
    VIOLATION = "violation"  # something the system must never do happened
    UNVERIFIABLE = "unverifiable"  # the audit cannot vouch for part of the history
    NOTICE = "notice"  # worth knowing, not wrong


class FindingKind(StrEnum):
    # replay and completeness
    REPLAY_FAILED = "replay_failed"
    EVENT_MISSING = "event_missing"
    EVENT_EXTRA = "event_extra"
    EVENT_ALTERED = "event_altered"
    EVENT_REORDERED = "event_reordered"
    DIGEST_MISMATCH = "digest_mismatch"
    MALFORMED_EVENT = "malformed_event"
    # the access log's integrity
    LOG_UNAVAILABLE = "log_unavailable"
    LOG_MALFORMED = "log_malformed"
    LOG_ENTRIES_ALTERED = "log_entries_altered"
    LOG_ENTRIES_DELETED = "log_entries_deleted"
    LOG_ENTRIES_REORDERED = "log_entries_reordered"
    HISTORY_REWRITTEN = "history_rewritten"
    CHECKPOINT_FORGED = "checkpoint_forged"
    UNANCHORED_ENTRIES = "unanchored_entries"
    UNANCHORED_STALE = "unanchored_stale"
    # which logs the audit holds
    LOG_NOT_A_GATEWAY = "log_not_a_gateway"
    LOG_NOT_SUPPLIED = "log_not_supplied"
    # the decisions in the log
    READ_WITHOUT_CONSENT = "read_without_consent"
    WRONG_DENIAL = "wrong_denial"
    ENTRY_BLOCK_AFTER_ANCHOR = "entry_block_after_anchor"
    DECISION_POSITION_INCONSISTENT = "decision_position_inconsistent"
    ENTRY_BLOCK_BACKWARDS = "entry_block_backwards"
    ENTRY_TIME_INCONSISTENT = "entry_time_inconsistent"
    ENTRY_AFTER_TARGET = "entry_after_target"
    REASON_MISMATCH = "reason_mismatch"


SEVERITY: Mapping[FindingKind, Severity] = {
    FindingKind.REPLAY_FAILED: Severity.UNVERIFIABLE,
    FindingKind.EVENT_MISSING: Severity.UNVERIFIABLE,
    FindingKind.EVENT_EXTRA: Severity.UNVERIFIABLE,
    FindingKind.EVENT_ALTERED: Severity.UNVERIFIABLE,
    FindingKind.EVENT_REORDERED: Severity.UNVERIFIABLE,
    FindingKind.DIGEST_MISMATCH: Severity.UNVERIFIABLE,
    FindingKind.MALFORMED_EVENT: Severity.UNVERIFIABLE,
    FindingKind.LOG_UNAVAILABLE: Severity.UNVERIFIABLE,
    FindingKind.LOG_MALFORMED: Severity.VIOLATION,
    FindingKind.LOG_ENTRIES_ALTERED: Severity.VIOLATION,
    FindingKind.LOG_ENTRIES_DELETED: Severity.VIOLATION,
    FindingKind.LOG_ENTRIES_REORDERED: Severity.VIOLATION,
    FindingKind.HISTORY_REWRITTEN: Severity.VIOLATION,
    FindingKind.CHECKPOINT_FORGED: Severity.VIOLATION,
    FindingKind.UNANCHORED_ENTRIES: Severity.NOTICE,
    FindingKind.UNANCHORED_STALE: Severity.UNVERIFIABLE,
    FindingKind.LOG_NOT_A_GATEWAY: Severity.UNVERIFIABLE,
    FindingKind.LOG_NOT_SUPPLIED: Severity.UNVERIFIABLE,
    FindingKind.READ_WITHOUT_CONSENT: Severity.VIOLATION,
    FindingKind.WRONG_DENIAL: Severity.VIOLATION,
    FindingKind.ENTRY_BLOCK_AFTER_ANCHOR: Severity.VIOLATION,
    FindingKind.DECISION_POSITION_INCONSISTENT: Severity.VIOLATION,
    FindingKind.ENTRY_BLOCK_BACKWARDS: Severity.VIOLATION,
    FindingKind.ENTRY_TIME_INCONSISTENT: Severity.VIOLATION,
    FindingKind.ENTRY_AFTER_TARGET: Severity.UNVERIFIABLE,
    FindingKind.REASON_MISMATCH: Severity.NOTICE,
}


@dataclass(frozen=True)
class Finding:
    """One thing the audit found: a stable ``kind``, a sentence, and the values behind it."""

    kind: FindingKind
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> Severity:
        return SEVERITY[self.kind]

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "severity": self.severity.value,
            "message": self.message,
            "details": _jsonable(self.details),
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, Basis):
        return value.name
    return value


# ------------------------------------------------------------------------------ the exported log


class AccessLogError(ValueError):
    """An exported access log that cannot be read at all."""


def canonical_json(value: Mapping[str, Any]) -> bytes:
    """The canonical leaf serialisation (``gateway.accesslog.canonical_leaf``)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


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


@dataclass(frozen=True, slots=True)
class LogEntry:
    index: int
    leaf: bytes
    leaf_hash: bytes
    decision: LeafDecision | None  # None when the leaf does not parse
    problem: str | None = None  # why the leaf is malformed


@dataclass(frozen=True, slots=True)
class ExportedCheckpoint:
    tree_size: int
    root_hash: bytes
    block_number: int | None = None
    tx_hash: str | None = None


@dataclass(frozen=True)
class AccessLogExport:
    """A gateway's exported access log (see the module docstring for the format)."""

    gateway: ChecksumAddress
    entries: tuple[LogEntry, ...]
    checkpoints: tuple[ExportedCheckpoint, ...] = ()
    chain_id: int | None = None
    registry: ChecksumAddress | None = None
    source: str = ""
    index_gaps: tuple[tuple[int, int], ...] = ()  # (expected index, found index)

    @classmethod
    def from_document(cls, doc: Mapping[str, Any], *, source: str = "") -> AccessLogExport:
        if not isinstance(doc, Mapping):
            raise AccessLogError("the access log is not a JSON object")
        if doc.get("format") != ACCESS_LOG_FORMAT or doc.get("version") != ACCESS_LOG_VERSION:
            raise AccessLogError(
                f"not a {ACCESS_LOG_FORMAT} v{ACCESS_LOG_VERSION} document "
                f"(format={doc.get('format')!r}, version={doc.get('version')!r})"
            )
        try:
            gateway = to_checksum_address(doc["gateway"])
            raw_entries = list(doc["entries"])
            registry = doc.get("registry")
            chain_id = doc.get("chain_id")
            checkpoints = tuple(
                ExportedCheckpoint(
                    int(c["tree_size"]),
                    _hex_bytes(c["root_hash"], 32),
                    None if c.get("block_number") is None else int(c["block_number"]),
                    c.get("tx_hash"),
                )
                for c in doc.get("checkpoints", [])
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise AccessLogError(f"malformed access-log document: {exc!r}") from exc
        entries: list[LogEntry] = []
        gaps: list[tuple[int, int]] = []
        expected = 0
        for position, raw in enumerate(raw_entries):
            entry = _parse_entry(raw, position)
            if entry.index != expected:
                gaps.append((expected, entry.index))
            expected = entry.index + 1
            entries.append(entry)
        return cls(
            gateway=gateway,
            entries=tuple(entries),
            checkpoints=checkpoints,
            chain_id=None if chain_id is None else int(chain_id),
            registry=None if registry is None else to_checksum_address(registry),
            source=source,
            index_gaps=tuple(gaps),
        )

    def to_document(self) -> dict[str, Any]:
        return build_access_log_export(
            gateway=self.gateway,
            leaves=[e.leaf for e in self.entries],
            indices=[e.index for e in self.entries],
            checkpoints=self.checkpoints,
            chain_id=self.chain_id,
            registry=self.registry,
        )


def build_access_log_export(
    *,
    gateway: str,
    leaves: Sequence[bytes],
    checkpoints: Iterable[ExportedCheckpoint] = (),
    chain_id: int | None = None,
    registry: str | None = None,
    indices: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The export document of a log whose leaves (canonical bytes) are ``leaves``."""
    doc: dict[str, Any] = {
        "format": ACCESS_LOG_FORMAT,
        "version": ACCESS_LOG_VERSION,
        "gateway": to_checksum_address(gateway),
    }
    if chain_id is not None:
        doc["chain_id"] = chain_id
    if registry is not None:
        doc["registry"] = to_checksum_address(registry)
    doc["entries"] = [
        {
            "index": indices[i] if indices is not None else i,
            "leaf": leaf.decode("utf-8"),
            "leaf_hash": "0x" + leaf_hash(leaf).hex(),
        }
        for i, leaf in enumerate(leaves)
    ]
    doc["checkpoints"] = [
        {
            "tree_size": c.tree_size,
            "root_hash": "0x" + c.root_hash.hex(),
            "block_number": c.block_number,
            "tx_hash": c.tx_hash,
        }
        for c in checkpoints
    ]
    return doc


def _hex_bytes(value: Any, size: int | None = None) -> bytes:
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


_LEAF_KEYS = frozenset(
    {"block", "decision", "patient", "purpose", "reason", "record", "requester", "time", "v"}
)
_POSITION_KEYS = frozenset({"events", "chain_time"})
_LEAF_KEYS_WITH_POSITION = _LEAF_KEYS | _POSITION_KEYS


def _uint(body: Mapping[str, Any], key: str) -> int:
    value = body[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{key} {value!r}")
    return value


def _parse_entry(raw: Any, position: int) -> LogEntry:
    if not isinstance(raw, Mapping) or "leaf" not in raw:
        raise AccessLogError(f"entry #{position} is not an object with a leaf")
    try:
        index = int(raw.get("index", position))
    except (TypeError, ValueError) as exc:
        raise AccessLogError(f"entry #{position}: bad index {raw.get('index')!r}") from exc
    leaf_value = raw["leaf"]
    if isinstance(leaf_value, str):
        leaf = leaf_value.encode("utf-8")
    elif isinstance(leaf_value, Mapping):
        leaf = canonical_json(leaf_value)
    else:
        raise AccessLogError(f"entry {index}: leaf is neither a string nor an object")
    digest = leaf_hash(leaf)
    problems: list[str] = []
    claimed = raw.get("leaf_hash")
    if claimed is not None:
        try:
            if _hex_bytes(claimed, 32) != digest:
                problems.append("leaf_hash is not SHA-256(0x00 || leaf)")
        except ValueError:
            problems.append(f"leaf_hash {claimed!r} is not 32 bytes of 0x hex")
    decision, problem = _parse_leaf(leaf)
    if problem:
        problems.append(problem)
    return LogEntry(index, leaf, digest, decision, "; ".join(problems) or None)


def _parse_leaf(leaf: bytes) -> tuple[LeafDecision | None, str | None]:
    try:
        body = json.loads(leaf)
    except ValueError:
        return None, "leaf is not JSON"
    if not isinstance(body, dict):
        return None, "leaf is not a JSON object"
    keys = set(body)
    if keys != _LEAF_KEYS and keys != _LEAF_KEYS_WITH_POSITION:
        return None, f"leaf keys {sorted(body)} are not the v1 keys"
    if body["v"] != 1:
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
        record = _hex_bytes(body["record"], 32)
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


def load_access_log(source: str | Path, *, client: httpx.Client | None = None) -> AccessLogExport:
    """An exported access log from a file path or an ``http(s)://`` URL."""
    text = str(source)
    try:
        if text.startswith(("http://", "https://")):
            own = client is None
            http = client if client is not None else httpx.Client(timeout=60.0)
            try:
                response = http.get(text)
                response.raise_for_status()
                doc = response.json()
            finally:
                if own:
                    http.close()
        else:
            doc = json.loads(Path(text).read_text(encoding="utf-8"))
    except (OSError, ValueError, httpx.HTTPError) as exc:
        raise AccessLogError(f"cannot read the access log from {text}: {exc}") from exc
    return AccessLogExport.from_document(doc, source=text)


# ------------------------------------------------------------------------------ log verification


@dataclass(frozen=True, slots=True)
class EntryVerdict:
    """What the audit concluded about one entry."""

    index: int
    decision: LeafDecision | None
    anchored_by: int | None  # tree size of the on-chain checkpoint that proves its inclusion
    basis: Basis | None  # what the chain allowed at the entry's block (None: not checked)
    block_timestamp: int | None
    consistent: bool  # the decision agrees with the chain


@dataclass
class LogVerification:
    gateway: ChecksumAddress
    source: str
    size: int
    checkpoints: list[CheckpointAnchored]
    anchored_size: int  # leaves proven by a matching on-chain checkpoint (a prefix)
    verdicts: list[EntryVerdict]
    findings: list[Finding]


def _root(leaves: Sequence[bytes], size: int, tree: MerkleTree) -> bytes:
    return EMPTY_ROOT if size == 0 else tree.root(size)


def verify_access_log(
    export: AccessLogExport,
    timeline: ConsentTimeline,
    *,
    clock: Callable[[Iterable[int]], Mapping[int, int]],
    target_block: int,
    chain_id: int | None = None,
    registry: str | None = None,
    anchor_interval_s: float = DEFAULT_ANCHOR_INTERVAL_S,
    max_time_skew_s: float = DEFAULT_MAX_TIME_SKEW_S,
) -> LogVerification:
    """Check one exported log against the replayed chain (see the module docstring).

    ``clock(blocks)`` returns block timestamps (``BlockClock.timestamps``). Entries after the
    last anchored checkpoint are ``unanchored_stale`` when the first of them was decided more
    than ``anchor_interval_s`` (chain time) before ``target_block``. A leaf's ``time`` must lie
    within ``max_time_skew_s`` of its block's window ``[ts(block), ts(block + 1)]``.
    """
    findings: list[Finding] = []
    gateway = export.gateway
    entries = export.entries
    leaves = [e.leaf_hash for e in entries]
    tree = MerkleTree(leaves)
    n = len(entries)

    if chain_id is not None and export.chain_id is not None and export.chain_id != chain_id:
        findings.append(
            Finding(
                FindingKind.LOG_MALFORMED,
                f"the log names chain {export.chain_id}, the node is chain {chain_id}",
                {"log_chain_id": export.chain_id, "chain_id": chain_id},
            )
        )
    if registry is not None and export.registry is not None and export.registry != registry:
        findings.append(
            Finding(
                FindingKind.LOG_MALFORMED,
                f"the log names registry {export.registry}, the audit replays {registry}",
                {"log_registry": export.registry, "registry": registry},
            )
        )
    for entry in entries:
        if entry.problem:
            findings.append(
                Finding(
                    FindingKind.LOG_MALFORMED,
                    f"entry {entry.index}: {entry.problem}",
                    {"index": entry.index, "problem": entry.problem},
                )
            )
    for expected, found in export.index_gaps:
        if found > expected:
            findings.append(
                Finding(
                    FindingKind.LOG_ENTRIES_DELETED,
                    f"entries {expected}..{found - 1} are missing from the log "
                    f"(index jumps from {expected - 1} to {found})",
                    {"first_missing": expected, "next_present": found},
                )
            )
        else:
            findings.append(
                Finding(
                    FindingKind.LOG_MALFORMED,
                    f"entry index {found} where {expected} was expected "
                    "(a duplicate or out of order)",
                    {"expected": expected, "found": found},
                )
            )

    anchored = [c for c in timeline.checkpoints(gateway) if c.block_number <= target_block]
    onchain = {(c.tree_size, c.root_hash) for c in anchored}
    onchain_sizes = {c.tree_size: c for c in anchored}
    for claim in export.checkpoints:
        if (claim.tree_size, claim.root_hash) in onchain:
            continue
        real = onchain_sizes.get(claim.tree_size)
        findings.append(
            Finding(
                FindingKind.CHECKPOINT_FORGED,
                f"the log claims checkpoint (size {claim.tree_size}, "
                f"root 0x{claim.root_hash.hex()[:16]}…) "
                + (
                    f"but {gateway} anchored root 0x{real.root_hash.hex()[:16]}… at that size"
                    if real is not None
                    else f"that {gateway} never anchored on-chain"
                ),
                {
                    "tree_size": claim.tree_size,
                    "claimed_root": claim.root_hash,
                    "anchored_root": real.root_hash if real is not None else None,
                    "claimed_block": claim.block_number,
                    "claimed_tx": claim.tx_hash,
                },
            )
        )
    for cp in anchored:
        if not timeline.has_role_at(_GATEWAY_ROLE, cp.gateway, cp.block_number):
            findings.append(
                Finding(
                    FindingKind.CHECKPOINT_FORGED,
                    f"checkpoint {cp.tree_size} was anchored at block {cp.block_number} by "
                    f"{cp.gateway}, which did not hold GATEWAY_ROLE then",
                    {"tree_size": cp.tree_size, "block": cp.block_number},
                )
            )

    # Roots of the exported leaves at each anchored size.
    matches: list[bool] = []
    for cp in anchored:
        matches.append(cp.tree_size <= n and _root(leaves, cp.tree_size, tree) == cp.root_hash)
    anchored_size = 0
    for cp, ok in zip(anchored, matches, strict=True):
        if not ok:
            break
        anchored_size = cp.tree_size
    if anchored and anchored[-1].tree_size > n:
        last = anchored[-1]
        findings.append(
            Finding(
                FindingKind.LOG_ENTRIES_DELETED,
                f"{gateway} anchored {last.tree_size} entries (block {last.block_number}) "
                f"but the log has only {n}",
                {"anchored_size": last.tree_size, "log_size": n, "block": last.block_number},
            )
        )
    first_bad = next((i for i, ok in enumerate(matches) if not ok), None)
    if first_bad is not None:
        cp = anchored[first_bad]
        lo = anchored[first_bad - 1].tree_size if first_bad else 0
        later_ok = [anchored[j] for j in range(first_bad + 1, len(anchored)) if matches[j]]
        if later_ok:
            newer = later_ok[0]
            proof = tree.consistency_proof(cp.tree_size, newer.tree_size)
            consistent = verify_consistency(
                old_size=cp.tree_size,
                new_size=newer.tree_size,
                old_root=cp.root_hash,
                new_root=newer.root_hash,
                proof=proof,
            )
            findings.append(
                Finding(
                    FindingKind.HISTORY_REWRITTEN,
                    f"{gateway} rewrote its log between checkpoints: the tree it anchored at "
                    f"size {newer.tree_size} (block {newer.block_number}) does not extend the one "
                    f"anchored at size {cp.tree_size} (block {cp.block_number}); entries in "
                    f"[{lo}, {cp.tree_size}) were changed after being anchored",
                    {
                        "old_size": cp.tree_size,
                        "old_block": cp.block_number,
                        "new_size": newer.tree_size,
                        "new_block": newer.block_number,
                        "window": [lo, cp.tree_size],
                        "consistency_proof_verifies": consistent,
                    },
                )
            )
        elif cp.tree_size <= n:
            swap = _find_swap(leaves, entries, lo, cp.tree_size, cp.root_hash)
            if swap is not None:
                a, b = swap
                findings.append(
                    Finding(
                        FindingKind.LOG_ENTRIES_REORDERED,
                        f"entries {a} and {b} were swapped after checkpoint {cp.tree_size} "
                        f"(block {cp.block_number}) anchored them: swapping them back restores "
                        "the anchored root",
                        {"indices": [a, b], "checkpoint": cp.tree_size, "block": cp.block_number},
                    )
                )
            elif not (anchored[-1].tree_size > n):
                findings.append(
                    Finding(
                        FindingKind.LOG_ENTRIES_ALTERED,
                        f"the log's first {cp.tree_size} entries do not hash to the root "
                        f"0x{cp.root_hash.hex()[:16]}… that {gateway} anchored at block "
                        f"{cp.block_number}: an entry in [{lo}, {cp.tree_size}) was changed, "
                        "inserted or removed after anchoring",
                        {
                            "window": [lo, cp.tree_size],
                            "checkpoint": cp.tree_size,
                            "block": cp.block_number,
                            "anchored_root": cp.root_hash,
                            "log_root": _root(leaves, cp.tree_size, tree),
                        },
                    )
                )

    # Inclusion of every entry under the first checkpoint covering it (only under roots that match).
    anchored_by: list[int | None] = [None] * n
    good = [cp for cp, ok in zip(anchored, matches, strict=True) if ok]
    start = 0
    for cp in good:
        for i in range(start, min(cp.tree_size, n)):
            proof = tree.inclusion_proof(i, cp.tree_size)
            if verify_inclusion(
                leaf_hash=leaves[i], index=i, tree_size=cp.tree_size, proof=proof, root=cp.root_hash
            ):
                anchored_by[i] = cp.tree_size
        start = max(start, cp.tree_size)
    last_size = anchored[-1].tree_size if anchored else 0

    # Block timestamps: each leaf's block and the next one (its time window), and the target.
    anchor_block = {c.tree_size: c.block_number for c in anchored}
    blocks = {e.decision.block for e in entries if e.decision and e.decision.block is not None}
    blocks |= {b + 1 for b in blocks}
    if n > last_size:
        blocks.add(target_block)
    in_range = [b for b in blocks if b <= target_block]
    times = dict(clock(in_range)) if in_range else {}

    if n > last_size:
        findings.append(
            _unanchored(entries[last_size:], last_size, n, times, target_block, anchor_interval_s)
        )
    findings.extend(_order_and_time(entries, times, target_block, max_time_skew_s))

    # Decisions against the chain.
    verdicts: list[EntryVerdict] = []
    for entry, proven_by in zip(entries, anchored_by, strict=True):
        verdicts.append(
            _judge(entry, proven_by, timeline, times, target_block, anchor_block, findings)
        )
    return LogVerification(
        gateway=gateway,
        source=export.source,
        size=n,
        checkpoints=anchored,
        anchored_size=anchored_size,
        verdicts=verdicts,
        findings=findings,
    )


def _unanchored(
    tail: Sequence[LogEntry],
    first: int,
    size: int,
    times: Mapping[int, int],
    target_block: int,
    interval_s: float,
) -> Finding:
    """``unanchored_entries`` (a notice) for a tail younger than the anchoring interval, else
    ``unanchored_stale``: the gateway should have anchored it by the audited block.

    The tail's age is the audited block's timestamp minus the earliest block timestamp among
    its entries (their leaf times when none names a block in range)."""
    count = size - first
    what = f"{count} entr{'y' if count == 1 else 'ies'} after the last anchored checkpoint"
    known = [
        times[e.decision.block]
        for e in tail
        if e.decision is not None and e.decision.block is not None and e.decision.block in times
    ]
    if not known:
        known = [int(t) for e in tail if e.decision and (t := e.decision.timestamp) is not None]
    now = times.get(target_block)
    age = None if not known or now is None else now - min(known)
    details: dict[str, Any] = {"from": first, "to": size}
    if age is None or age <= interval_s:
        return Finding(
            FindingKind.UNANCHORED_ENTRIES,
            f"{what} (size {first}) are not yet provable",
            details,
        )
    return Finding(
        FindingKind.UNANCHORED_STALE,
        f"{what} (size {first}) were decided {age} s before block {target_block}, longer than "
        f"the anchoring interval ({interval_s:g} s): nothing proves they are the gateway's whole "
        "log, or unchanged",
        {**details, "age_s": age, "anchor_interval_s": interval_s, "target_block": target_block},
    )


def _order_and_time(
    entries: Sequence[LogEntry], times: Mapping[int, int], target_block: int, skew_s: float
) -> list[Finding]:
    """Blocks do not go backwards along the index (``entry_block_backwards``); a leaf's ``time``
    lies in ``[ts(block) - skew, ts(block + 1) + skew]`` (``entry_time_inconsistent``; no upper
    bound while ``block + 1`` is past the audited block). Leaves without a block are skipped.

    Requests in flight overlap: one that observed head N can append after one that observed
    N + 1. So a leaf naming block N after a leaf naming M > N is a finding only when block N + 1
    is more than ``skew`` older than block M: no request runs that long after its head was
    superseded (the same bound as a leaf's time). A step back from a block past the audited one
    is not judged (``entry_after_target`` already says that part cannot be verified)."""
    findings: list[Finding] = []
    latest: tuple[int, int] | None = None  # (block, index) of the highest block so far
    for entry in entries:
        d = entry.decision
        if d is None or d.block is None:
            continue
        base = {"index": entry.index, "requester": d.requester, "patient": d.patient}
        if latest is not None and d.block < latest[0] <= target_block:
            ts_next, ts_latest = times.get(d.block + 1), times.get(latest[0])
            lag = None if ts_next is None or ts_latest is None else ts_latest - ts_next
            if lag is None or lag > skew_s:
                findings.append(
                    Finding(
                        FindingKind.ENTRY_BLOCK_BACKWARDS,
                        f"entry {entry.index} names block {d.block}, before block {latest[0]} of "
                        f"entry {latest[1]}"
                        + ("" if lag is None else f", whose state was {lag} s newer")
                        + ": the log's blocks go backwards (a decision backdated to an earlier "
                        "ledger state)",
                        {
                            **base,
                            "block": d.block,
                            "previous_block": latest[0],
                            "previous_index": latest[1],
                            "lag_s": lag,
                            "max_skew_s": skew_s,
                        },
                    )
                )
        elif latest is None or d.block >= latest[0]:
            latest = (d.block, entry.index)
        if d.block > target_block:
            continue  # entry_after_target says so
        stamp = d.timestamp
        if stamp is None:
            findings.append(
                Finding(
                    FindingKind.LOG_MALFORMED,
                    f"entry {entry.index}: time {d.time!r} is not an RFC 3339 time",
                    {**base, "time": d.time},
                )
            )
            continue
        lo = times.get(d.block)
        hi = times.get(d.block + 1)
        if lo is None:
            continue
        problem = None
        if stamp < lo - skew_s:
            problem = f"{lo - stamp:.0f} s before block {d.block}'s timestamp {lo}"
        elif hi is not None and stamp > hi + skew_s:
            problem = f"{stamp - hi:.0f} s after block {d.block + 1}'s timestamp {hi}"
        if problem is not None:
            findings.append(
                Finding(
                    FindingKind.ENTRY_TIME_INCONSISTENT,
                    f"entry {entry.index} is dated {d.time}, {problem} (allowed skew "
                    f"{skew_s:g} s): its time does not fit the block it names",
                    {
                        **base,
                        "block": d.block,
                        "time": d.time,
                        "block_timestamp": lo,
                        "next_block_timestamp": hi,
                        "max_skew_s": skew_s,
                    },
                )
            )
    return findings


def _find_swap(
    leaves: Sequence[bytes], entries: Sequence[LogEntry], lo: int, size: int, root: bytes
) -> tuple[int, int] | None:
    """Two entries in ``[lo, size)`` whose swap makes the first ``size`` leaves hash to ``root``.

    Tries the pairs whose times are out of order first, then adjacent pairs (bounded)."""
    times = [e.decision.timestamp if e.decision else None for e in entries]
    candidates: list[tuple[int, int]] = []
    for a in range(lo, size):
        for b in range(a + 1, size):
            ta, tb = times[a], times[b]
            if ta is not None and tb is not None and ta > tb:
                candidates.append((a, b))
                if len(candidates) >= _MAX_SWAP_TRIALS:
                    break
        if len(candidates) >= _MAX_SWAP_TRIALS:
            break
    candidates += [(a, a + 1) for a in range(lo, size - 1)][:_MAX_SWAP_TRIALS]
    seen: set[tuple[int, int]] = set()
    for a, b in candidates:
        if (a, b) in seen:
            continue
        seen.add((a, b))
        trial = list(leaves[:size])
        trial[a], trial[b] = trial[b], trial[a]
        if MerkleTree(trial).root() == root:
            return a, b
    return None


def _judge(
    entry: LogEntry,
    proven_by: int | None,
    timeline: ConsentTimeline,
    times: Mapping[int, int],
    target_block: int,
    anchor_block: Mapping[int, int],
    findings: list[Finding],
) -> EntryVerdict:
    d = entry.decision
    if d is None:
        return EntryVerdict(entry.index, None, proven_by, None, None, False)
    base = {
        "index": entry.index,
        "requester": d.requester,
        "patient": d.patient,
        "record": d.record,
    }
    if d.block is None:
        if d.allowed:
            findings.append(
                Finding(
                    FindingKind.READ_WITHOUT_CONSENT,
                    f"entry {entry.index}: a read was allowed without naming the block consent was "
                    "checked at",
                    {**base, "reason": d.reason},
                )
            )
            return EntryVerdict(entry.index, d, proven_by, None, None, False)
        return EntryVerdict(entry.index, d, proven_by, None, None, True)
    if proven_by is not None and d.block > anchor_block.get(proven_by, d.block):
        findings.append(
            Finding(
                FindingKind.ENTRY_BLOCK_AFTER_ANCHOR,
                f"entry {entry.index} claims a decision at block {d.block}, after the checkpoint "
                f"anchoring it (block {anchor_block[proven_by]})",
                {**base, "block": d.block, "anchor_block": anchor_block[proven_by]},
            )
        )
    if d.block > target_block:
        findings.append(
            Finding(
                FindingKind.ENTRY_AFTER_TARGET,
                f"entry {entry.index} is at block {d.block}, "
                f"after the audited block {target_block}",
                {**base, "block": d.block, "target_block": target_block},
            )
        )
        return EntryVerdict(entry.index, d, proven_by, None, None, True)
    if d.events is not None and d.events > timeline.event_count:
        findings.append(
            Finding(
                FindingKind.ENTRY_AFTER_TARGET,
                f"entry {entry.index} was decided on the state after {d.events} events; the "
                f"replay up to block {target_block} holds {timeline.event_count}",
                {
                    **base,
                    "block": d.block,
                    "events": d.events,
                    "replayed_events": timeline.event_count,
                    "target_block": target_block,
                },
            )
        )
        return EntryVerdict(entry.index, d, proven_by, None, times.get(d.block), True)
    position_ok = d.events is None or _position_consistent(entry, d, timeline, times, findings)
    if not d.allowed and d.reason in _OPERATIONAL_DENIALS:
        return EntryVerdict(entry.index, d, proven_by, None, times.get(d.block), position_ok)
    timestamp = times[d.block]
    try:
        if d.events is not None and d.chain_time is not None:
            # The exact state the node evaluated, at the time it evaluated it.
            allowed, basis = timeline.access_after_events(
                d.patient, d.requester, d.record, d.purpose, d.events, d.chain_time
            )
        else:
            allowed, basis = timeline.access_at(
                d.patient, d.requester, d.record, d.purpose, d.block, timestamp
            )
    except ValueError:
        allowed, basis = False, Basis.NONE
    details = {
        **base,
        "purpose": d.purpose,
        "block": d.block,
        "block_timestamp": timestamp,
        "basis": basis,
    }
    where = f"at block {d.block}"
    if d.events is not None:
        details["events"] = d.events
        details["chain_time"] = d.chain_time
        where += f" (state after {d.events} events, chain time {d.chain_time})"
    ok = position_ok
    if d.allowed and not allowed:
        ok = False
        findings.append(
            Finding(
                FindingKind.READ_WITHOUT_CONSENT,
                f"entry {entry.index}: {d.requester} read record 0x{d.record.hex()[:12]}… of "
                f"{d.patient} for purpose {d.purpose} {where} without consent",
                details,
            )
        )
    elif not d.allowed and allowed:
        ok = False
        findings.append(
            Finding(
                FindingKind.WRONG_DENIAL,
                f"entry {entry.index}: {d.requester} was denied record 0x{d.record.hex()[:12]}… of "
                f"{d.patient} {where} although the chain allowed it ({basis.name})",
                details,
            )
        )
    elif d.allowed and (d.reason == "owner") != (basis is Basis.OWNER):
        findings.append(
            Finding(
                FindingKind.REASON_MISMATCH,
                f"entry {entry.index}: reason {d.reason!r} but the basis was {basis.name}",
                details,
            )
        )
    elif not d.allowed and d.reason != "no_consent":
        findings.append(
            Finding(
                FindingKind.REASON_MISMATCH,
                f"entry {entry.index}: unknown denial reason {d.reason!r}",
                details,
            )
        )
    return EntryVerdict(entry.index, d, proven_by, basis, timestamp, ok)


def _position_consistent(
    entry: LogEntry,
    d: LeafDecision,
    timeline: ConsentTimeline,
    times: Mapping[int, int],
    findings: list[Finding],
) -> bool:
    """Whether a positioned leaf's (``events``, ``chain_time``) can be what a node evaluated when
    asked at ``block``; a ``decision_position_inconsistent`` finding otherwise.

    With ``block`` = N and ``events`` = C: the state holds every event of the blocks up to N and
    none past block N+1 (a node may answer "at N" from a state that already holds N+1's
    transactions, mid-mining; C may even fall inside N+1), and the call's time lies between the
    two blocks' timestamps. Both cases have been seen on anvil: block N+1's state with N's
    number and timestamp, and with N+1's."""
    if d.block is None or d.events is None or d.chain_time is None:
        return True  # not a positioned leaf
    n, count, chain_time = d.block, d.events, d.chain_time
    at_least = timeline.events_through_block(n)
    at_most = timeline.events_through_block(n + 1)
    problems: list[str] = []
    if count < at_least:
        problems.append(
            f"the state after {count} events misses {at_least - count} event(s) of blocks up to {n}"
        )
    if count > at_most:
        problems.append(
            f"the state after {count} events holds events of block "
            f"{timeline.event_position(count)[0]}, past block {n + 1}"
        )
    ts_n, ts_next = times.get(n), times.get(n + 1)
    if ts_n is not None and chain_time < ts_n:
        problems.append(f"chain time {chain_time} is before block {n}'s timestamp {ts_n}")
    if ts_next is not None and chain_time > ts_next:
        problems.append(f"chain time {chain_time} is after block {n + 1}'s timestamp {ts_next}")
    if not problems:
        return True
    findings.append(
        Finding(
            FindingKind.DECISION_POSITION_INCONSISTENT,
            f"entry {entry.index} names block {n} but a ledger position no node asked at that "
            f"block evaluates: {'; '.join(problems)}",
            {
                "index": entry.index,
                "requester": d.requester,
                "patient": d.patient,
                "record": d.record,
                "block": n,
                "events": count,
                "chain_time": chain_time,
                "events_through_block": at_least,
                "events_through_next_block": at_most,
                "block_timestamp": ts_n,
                "next_block_timestamp": ts_next,
            },
        )
    )
    return False


# ------------------------------------------------------------------------------ the whole audit


@dataclass(frozen=True)
class GatewayCoverage:
    """A gateway the audit knows of from the chain, and whether its log was supplied.

    Every account that held ``GATEWAY_ROLE`` at some block of the audited range (from the
    replayed ``RoleGranted`` / ``RoleRevoked``) or anchored a checkpoint in it."""

    address: ChecksumAddress
    role_blocks: tuple[tuple[int, int | None], ...]  # (granted at, revoked at or None)
    checkpoints: int  # anchored up to the audited block
    last_checkpoint: CheckpointAnchored | None
    sources: tuple[str, ...]  # the supplied logs naming this gateway

    @property
    def held_role(self) -> bool:
        return bool(self.role_blocks)

    @property
    def supplied(self) -> bool:
        return bool(self.sources)


def gateway_coverage(
    events: Iterable[Any],
    timeline: ConsentTimeline,
    target_block: int,
    exports: Sequence[AccessLogExport],
) -> list[GatewayCoverage]:
    """Every gateway of the audited range (see :class:`GatewayCoverage`), in address order."""
    periods: dict[ChecksumAddress, list[tuple[int, int | None]]] = {}
    for event in events:
        if not isinstance(event, RoleGranted | RoleRevoked) or event.role != _GATEWAY_ROLE:
            continue
        if event.block_number > target_block:
            break
        spans = periods.setdefault(event.account, [])
        if isinstance(event, RoleGranted):
            if not spans or spans[-1][1] is not None:
                spans.append((event.block_number, None))
        elif spans and spans[-1][1] is None:
            spans[-1] = (spans[-1][0], event.block_number)
    anchored = {
        gw: [c for c in timeline.checkpoints(gw) if c.block_number <= target_block]
        for gw in timeline.gateways()
    }
    sources: dict[str, list[str]] = {}
    for export in exports:
        sources.setdefault(export.gateway, []).append(export.source or "(unnamed)")
    addresses = {a for a, spans in periods.items() if spans} | {a for a, c in anchored.items() if c}
    return [
        GatewayCoverage(
            address=a,
            role_blocks=tuple(periods.get(a, [])),
            checkpoints=len(anchored.get(a, [])),
            last_checkpoint=anchored[a][-1] if anchored.get(a) else None,
            sources=tuple(sources.get(a, [])),
        )
        for a in sorted(addresses, key=str.lower)
    ]


def _coverage_findings(
    coverage: Sequence[GatewayCoverage], exports: Sequence[AccessLogExport], target_block: int
) -> list[Finding]:
    """An export must name a gateway of the audited range; every gateway that anchored must
    have its log supplied. (A role holder that anchored nothing and whose log is absent is only
    listed: nothing on-chain says it logged a decision.)"""
    findings: list[Finding] = []
    holders = {g.address for g in coverage if g.held_role}
    for export in exports:
        if export.gateway not in holders:
            findings.append(
                Finding(
                    FindingKind.LOG_NOT_A_GATEWAY,
                    f"{export.source or 'a log'} names {export.gateway} as its gateway, but that "
                    f"address never held GATEWAY_ROLE up to block {target_block}: nothing on-chain "
                    "vouches for this log",
                    {"gateway": export.gateway, "source": export.source},
                )
            )
    for g in coverage:
        if g.supplied:
            continue
        if g.last_checkpoint is not None:
            cp = g.last_checkpoint
            findings.append(
                Finding(
                    FindingKind.LOG_NOT_SUPPLIED,
                    f"gateway {g.address} anchored {g.checkpoints} checkpoint(s) (the last of "
                    f"{cp.tree_size} entries at block {cp.block_number}) but its log was not "
                    "supplied: its decisions cannot be verified",
                    {
                        "gateway": g.address,
                        "checkpoints": g.checkpoints,
                        "anchored_size": cp.tree_size,
                        "block": cp.block_number,
                    },
                )
            )
    return findings


@dataclass
class AuditReport:
    """Everything an audit established; rendered by ``ledger.audit.html_report``."""

    chain_id: int | None
    registry: ChecksumAddress
    deploy_block: int
    target_block: int | None
    replay: ReplayResult | None
    timeline: ConsentTimeline
    logs: list[LogVerification]
    findings: list[Finding]
    block_times: dict[int, int]
    started_at: float
    seconds: float
    gateways: list[GatewayCoverage] = field(default_factory=list)

    @property
    def violations(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.VIOLATION]

    @property
    def unverifiable(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.UNVERIFIABLE]

    @property
    def exit_code(self) -> int:
        if self.violations:
            return 1
        if self.unverifiable:
            return 2
        return 0

    @property
    def verdict(self) -> str:
        return {0: "clean", 1: "violations", 2: "unverified"}[self.exit_code]


_PROBLEM_KIND = {
    DigestMismatchKind.MISSING: FindingKind.EVENT_MISSING,
    DigestMismatchKind.EXTRA: FindingKind.EVENT_EXTRA,
    DigestMismatchKind.ALTERED: FindingKind.EVENT_ALTERED,
    DigestMismatchKind.REORDERED: FindingKind.EVENT_REORDERED,
    DigestMismatchKind.UNLOCATED: FindingKind.DIGEST_MISMATCH,
}


def _problem_finding(problem: DigestProblem) -> Finding:
    details: dict[str, Any] = dict(problem.details)
    for key in ("block_number", "log_index", "tx_hash", "event"):
        value = getattr(problem, key)
        if value is not None:
            details[key] = value
    return Finding(_PROBLEM_KIND[problem.kind], problem.message, details)


def run_audit(
    rpc: RpcClient,
    *,
    registry: str,
    deploy_block: int,
    decoder: EventDecoder,
    access_logs: Sequence[AccessLogExport] = (),
    confirmations: int = 0,
    target_block: int | None = None,
    chunk_blocks: int = 10_000,
    progress: ProgressFn | None = None,
    clock: BlockClock | None = None,
    timed_blocks: int = 5_000,
    anchor_interval_s: float = DEFAULT_ANCHOR_INTERVAL_S,
    max_time_skew_s: float = DEFAULT_MAX_TIME_SKEW_S,
) -> AuditReport:
    """Replay, prove complete, fold, list the gateways, and verify every access log given.

    Every gateway that held ``GATEWAY_ROLE`` or anchored in the audited range is listed
    (:attr:`AuditReport.gateways`); an export naming any other address is ``log_not_a_gateway``,
    a gateway that anchored without its log supplied is ``log_not_supplied`` (both: could not
    verify). ``anchor_interval_s`` and ``max_time_skew_s``: see :func:`verify_access_log`.

    Block timestamps are fetched for the entries' blocks and for up to ``timed_blocks`` blocks
    holding patient events (evenly sampled beyond that), for the report's timelines."""
    started = time.time()
    t0 = time.perf_counter()
    address = to_checksum_address(registry)
    findings: list[Finding] = []
    clock = clock if clock is not None else BlockClock(rpc)
    try:
        result = replay(
            rpc,
            address=address,
            from_block=deploy_block,
            decoder=decoder,
            target_block=target_block,
            confirmations=confirmations,
            chunk_blocks=chunk_blocks,
            progress=progress,
        )
    except MalformedLog as exc:
        findings.append(
            Finding(
                FindingKind.MALFORMED_EVENT,
                f"a log of the registry is not a registry event: {exc}",
                {"block_number": exc.block_number, "log_index": exc.log_index},
            )
        )
        return _bare_report(address, deploy_block, findings, started, t0)
    except ChainError as exc:
        findings.append(
            Finding(FindingKind.REPLAY_FAILED, f"could not replay the ledger: {exc}", {})
        )
        return _bare_report(address, deploy_block, findings, started, t0)
    findings.extend(_problem_finding(p) for p in result.problems)
    if result.computed != result.onchain:
        findings.append(
            Finding(
                FindingKind.DIGEST_MISMATCH,
                f"the replayed events fold to {result.computed.count} events / "
                f"0x{result.computed.head.hex()} but the registry reports {result.onchain.count} / "
                f"0x{result.onchain.head.hex()} at block {result.target_block}",
                {"computed": result.computed.as_dict(), "onchain": result.onchain.as_dict()},
            )
        )
    with gc_paused():
        timeline = ConsentTimeline(result.events)
    coverage = gateway_coverage(result.events, timeline, result.target_block, access_logs)
    findings.extend(_coverage_findings(coverage, access_logs, result.target_block))
    verifications: list[LogVerification] = []
    for export in access_logs:
        try:
            verification = verify_access_log(
                export,
                timeline,
                clock=clock.timestamps,
                target_block=result.target_block,
                chain_id=result.chain_id,
                registry=address,
                anchor_interval_s=anchor_interval_s,
                max_time_skew_s=max_time_skew_s,
            )
        except ChainError as exc:
            findings.append(
                Finding(FindingKind.LOG_UNAVAILABLE, f"could not verify {export.source}: {exc}", {})
            )
            continue
        verifications.append(verification)
        findings.extend(verification.findings)
    block_times = {
        v.decision.block: v.block_timestamp
        for lv in verifications
        for v in lv.verdicts
        if v.decision is not None and v.decision.block is not None and v.block_timestamp is not None
    }
    block_times.update(_event_block_times(result, timeline, clock, limit=timed_blocks))
    return AuditReport(
        chain_id=result.chain_id,
        registry=address,
        deploy_block=deploy_block,
        target_block=result.target_block,
        replay=result,
        timeline=timeline,
        logs=verifications,
        findings=findings,
        block_times=block_times,
        started_at=started,
        seconds=time.perf_counter() - t0,
        gateways=coverage,
    )


def _event_block_times(
    result: ReplayResult, timeline: ConsentTimeline, clock: BlockClock, *, limit: int
) -> Mapping[int, int]:
    blocks = sorted(
        {e.block_number for p in timeline.patients() for e in timeline.patient_events(p)}
        | {result.from_block, result.target_block}
    )
    if len(blocks) > limit > 0:
        step = len(blocks) / limit
        blocks = sorted({blocks[int(i * step)] for i in range(limit)} | {blocks[-1]})
    try:
        return clock.timestamps(blocks)
    except ChainError:
        return {}


def _bare_report(
    address: ChecksumAddress, deploy_block: int, findings: list[Finding], started: float, t0: float
) -> AuditReport:
    return AuditReport(
        chain_id=None,
        registry=address,
        deploy_block=deploy_block,
        target_block=None,
        replay=None,
        timeline=ConsentTimeline(),
        logs=[],
        findings=findings,
        block_times={},
        started_at=started,
        seconds=time.perf_counter() - t0,
    )
