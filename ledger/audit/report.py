"""What an audit concludes: typed findings with severities, per-entry verdicts, per-log and
per-gateway results, and the whole :class:`AuditReport`.

Findings are typed (:class:`Finding`); each kind has a severity. :attr:`AuditReport.exit_code` is
0 when clean (notices allowed), 1 on any violation, 2 when something could not be verified (node
unreachable, replay incomplete) and nothing was found violated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from eth_typing import ChecksumAddress

from ledger.audit.replay import ReplayResult
from ledger.audit.state import ConsentTimeline
from ledger.protocol.access_leaf import LeafDecision
from ledger.protocol.consent_types import Basis
from ledger.protocol.events import CheckpointAnchored, FederationSet

__all__ = [
    "SEVERITY",
    "AuditReport",
    "EntryVerdict",
    "Finding",
    "FindingKind",
    "GatewayCoverage",
    "LogVerification",
    "Severity",
]


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


# ------------------------------------------------------------------------------ verdicts


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


@dataclass(frozen=True)
class GatewayCoverage:
    """A gateway the audit knows of from the chain, and whether its log was supplied.

    Every account that held ``GATEWAY_ROLE`` at some block of the audited range (from the
    replayed ``RoleGranted`` / ``RoleRevoked``), anchored a checkpoint in it, or is a member of a
    custody federation set in it (``FederationSet``)."""

    address: ChecksumAddress
    role_blocks: tuple[tuple[int, int | None], ...]  # (granted at, revoked at or None)
    checkpoints: int  # anchored up to the audited block
    last_checkpoint: CheckpointAnchored | None
    sources: tuple[str, ...]  # the supplied logs naming this gateway
    federation_blocks: tuple[int, ...] = ()  # blocks of the FederationSet events listing it

    @property
    def held_role(self) -> bool:
        return bool(self.role_blocks)

    @property
    def federation_member(self) -> bool:
        """Custodian of key shares under some federation of the audited range."""
        return bool(self.federation_blocks)

    @property
    def supplied(self) -> bool:
        return bool(self.sources)


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
    federations: list[FederationSet] = field(default_factory=list)  # in chain order, in range

    @property
    def federation(self) -> FederationSet | None:
        """The federation set in force at the audited block (None: never set in the range; a
        set with no members: the federation was dissolved)."""
        return self.federations[-1] if self.federations else None

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
