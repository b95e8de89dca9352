"""Consent state at any block: a pure fold of decoded registry events.

:class:`ConsentTimeline` keeps, per key, the history of values the registry's storage took
(grants per ``(patient, grantee, scope)``, guardians, break-glass windows, records, roles,
categories, checkpoints), each stamped with the ``(block, logIndex)`` of the event that set it.
A query "at block N" sees the state after every event of block N, which is what ``eth_call`` at
block N sees. Queries bisect a key's history, so answering many reads at many blocks costs
O(log k) each, and nothing is refolded.

The state machine itself is not here: events are folded by :data:`ledger.index.fold.FOLD`, the
table the gateways' verified consent index (:mod:`ledger.index`) folds with too, and decisions
are :func:`ledger.index.fold.access_basis` (``ConsentRegistry._accessBasis`` in Python) read at
a past position. So the audit judges every decision with the very code that took it. The
timeline is one :class:`ledger.index.fold.ConsentStore` (the latest values, while folding) and
hands ``access_basis`` a view of itself bound to one position.

The timestamp is that of the block the question is asked at (``block.timestamp`` in an
``eth_call`` at that block): callers fetch it (``ledger.audit.replay.BlockClock``).

Questions can also be asked *after exactly C events* (:meth:`ConsentTimeline.access_after_events`):
the registry counts every event it emits (the event digest's count, which ``accessDecision``
returns with its answer), and events are totally ordered by ``(block, logIndex)``, so a count
names one ledger state exactly — even when a node evaluated a later state than the block it was
asked about. :meth:`ConsentTimeline.events_through_block` gives the count after a block (how
many events precede the next one), :meth:`ConsentTimeline.event_position` the position of the
C-th event.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from eth_typing import ChecksumAddress

from ledger.index.fold import (
    ZERO_ADDRESS,
    BreakGlassWindow,
    GrantInForce,
    GrantKey,
    RecordInfo,
    access_basis,
    fold_event,
)
from ledger.protocol.consent_types import ALL_SCOPE_ID, Basis, ScopeKind
from ledger.protocol.events import (
    CheckpointAnchored,
    ConsentGranted,
    ConsentRevoked,
    FederationSet,
    GuardianRemoved,
    RegistryEvent,
)

__all__ = [
    "ZERO_ADDRESS",
    "BreakGlassWindow",
    "ConsentTimeline",
    "GrantInForce",
    "OutOfOrderEvent",
    "PatientState",
    "RecordInfo",
]

_AFTER_BLOCK = 1 << 62  # a log index larger than any real one

Position = tuple[int, int]
V = TypeVar("V")


class OutOfOrderEvent(ValueError):
    """Events must be folded in ``(block, logIndex)`` order."""


class _History(Generic[V]):
    """Values a key took, with the position that set each; ``None`` means "deleted"."""

    __slots__ = ("positions", "values")

    def __init__(self) -> None:
        self.positions: list[Position] = []
        self.values: list[V | None] = []

    def set(self, position: Position, value: V | None) -> None:
        self.positions.append(position)
        self.values.append(value)

    def at(self, block: int) -> V | None:
        return self.at_position((block, _AFTER_BLOCK))

    def at_position(self, position: Position) -> V | None:
        """The value after the event at ``position`` (inclusive)."""
        i = bisect.bisect_right(self.positions, position)
        return self.values[i - 1] if i else None

    def last(self) -> V | None:
        return self.values[-1] if self.values else None


K = TypeVar("K")


def _history(histories: dict[K, _History[V]], key: K) -> _History[V]:
    history = histories.get(key)
    if history is None:
        history = histories[key] = _History()
    return history


@dataclass(frozen=True)
class PatientState:
    """A patient's consent state after block ``block_number`` (timestamp ``timestamp``)."""

    patient: ChecksumAddress
    block_number: int
    timestamp: int
    grants: tuple[GrantInForce, ...]  # stored and in force
    expired: tuple[GrantInForce, ...]  # stored but lapsed
    guardian: ChecksumAddress | None
    break_glass: tuple[BreakGlassWindow, ...]  # open at the timestamp
    records: tuple[RecordInfo, ...]
    # guardian grants still stored but ended with their guardianship (consentOf: zeroes)
    guardian_ended: tuple[GrantInForce, ...] = ()


class ConsentTimeline:
    """Every value the registry's consent storage took, queryable at any block."""

    def __init__(self, events: Iterable[RegistryEvent] = ()) -> None:
        self._last: Position = (-1, -1)
        self.event_count = 0
        self._event_blocks: list[int] = []  # block of the i-th event (0-based), in order
        self._event_log_indices: list[int] = []
        self._record_positions: dict[bytes, Position] = {}
        self._records: dict[bytes, RecordInfo] = {}
        self._grants: dict[GrantKey, _History[GrantInForce]] = {}
        self._grant_keys_by_patient: dict[str, set[GrantKey]] = defaultdict(set)
        self._guardians: dict[str, _History[ChecksumAddress]] = {}
        # patient -> guardianship epoch history, with the position of each guardian event
        self._epochs: dict[str, _History[int]] = {}
        self._break_glass: dict[tuple[str, str], _History[BreakGlassWindow]] = {}
        self._bg_keys_by_patient: dict[str, set[tuple[str, str]]] = defaultdict(set)
        self._roles: dict[tuple[bytes, str], _History[bool]] = {}
        self._categories: dict[bytes, _History[bool]] = {}
        self._checkpoints: dict[str, list[CheckpointAnchored]] = defaultdict(list)
        self._federations: list[FederationSet] = []
        self._by_patient: dict[str, list[RegistryEvent]] = defaultdict(list)
        self._position: Position = (-1, -1)  # of the event being folded
        self.extend(events)

    # -- folding --------------------------------------------------------------------------

    def extend(self, events: Iterable[RegistryEvent]) -> None:
        for event in events:
            self.apply(event)

    def apply(self, event: RegistryEvent) -> None:
        """Fold one event (:data:`ledger.index.fold.FOLD`); events must come in
        ``(block, logIndex)`` order."""
        position = (event.block_number, event.log_index)
        if position <= self._last:
            raise OutOfOrderEvent(f"event at {position} after {self._last}")
        self._position = position
        if not fold_event(self, event):  # pragma: no cover - EventDecoder makes known types only
            raise TypeError(f"unexpected event type {type(event).__name__}")
        self._last = position
        self.event_count += 1
        self._event_blocks.append(position[0])
        self._event_log_indices.append(position[1])
        patient = getattr(event, "patient", None)
        if patient is not None:  # records, consents, guardians and break-glass name one
            self._by_patient[patient].append(event)

    # -- the store the fold writes to (reads: the latest values) --------------------------

    def record(self, record_id: bytes) -> RecordInfo | None:
        return self._records.get(record_id)

    def stored_grant(self, key: GrantKey) -> GrantInForce | None:
        history = self._grants.get(key)
        return history.last() if history is not None else None

    def epoch(self, patient: str) -> int:
        return self._epoch_now(patient)

    def guardian(self, patient: str) -> ChecksumAddress | None:
        history = self._guardians.get(patient)
        return history.last() if history is not None else None

    def break_glass(self, patient: str, institution: str) -> BreakGlassWindow | None:
        history = self._break_glass.get((patient, institution))
        return history.last() if history is not None else None

    def set_record(self, record: RecordInfo) -> None:
        self._records[record.record_id] = record
        self._record_positions[record.record_id] = self._position

    def set_grant(self, key: GrantKey, grant: GrantInForce | None) -> None:
        self._grant_history(key).set(self._position, grant)

    def set_guardian(self, patient: str, guardian: ChecksumAddress | None, epoch: int) -> None:
        _history(self._guardians, patient).set(self._position, guardian)
        _history(self._epochs, patient).set(self._position, epoch)

    def set_break_glass(self, window: BreakGlassWindow) -> None:
        key = (window.patient, window.institution)
        if key not in self._break_glass:
            self._bg_keys_by_patient[window.patient].add(key)
        _history(self._break_glass, key).set(self._position, window)

    def set_role(self, role: bytes, account: ChecksumAddress, held: bool) -> None:
        _history(self._roles, (role, account)).set(self._position, True if held else None)

    def set_category(self, category: bytes, listed: bool) -> None:
        _history(self._categories, category).set(self._position, True if listed else None)

    def set_checkpoint(self, event: CheckpointAnchored) -> None:
        self._checkpoints[event.gateway].append(event)

    def set_federation(self, event: FederationSet) -> None:
        self._federations.append(event)

    def _epoch_now(self, patient: str) -> int:
        history = self._epochs.get(patient)
        return (history.last() or 0) if history is not None else 0

    def _epoch_at(self, patient: str, position: Position) -> int:
        history = self._epochs.get(patient)
        return (history.at_position(position) or 0) if history is not None else 0

    def _holds(self, grant: GrantInForce, position: Position) -> bool:
        """``_guardianshipHolds``: a patient grant always, a guardian grant while its epoch is
        the patient's epoch at ``position``."""
        return grant.guardian_epoch == 0 or grant.guardian_epoch == self._epoch_at(
            grant.patient, position
        )

    def _grant_history(self, key: GrantKey) -> _History[GrantInForce]:
        history = self._grants.get(key)
        if history is None:
            history = self._grants[key] = _History()
            self._grant_keys_by_patient[key[0]].add(key)
        return history

    # -- point queries --------------------------------------------------------------------

    def events_through_block(self, block: int) -> int:
        """How many events were emitted in blocks ``<= block`` (the event count after it)."""
        return bisect.bisect_right(self._event_blocks, block)

    def event_position(self, count: int) -> Position:
        """The ``(block, logIndex)`` of the ``count``-th event (1-based); ``(-1, -1)`` for 0.
        Raises ``ValueError`` when fewer events were folded."""
        if not 0 <= count <= self.event_count:
            raise ValueError(f"event {count} is not among the {self.event_count} folded")
        if count == 0:
            return (-1, -1)
        return (self._event_blocks[count - 1], self._event_log_indices[count - 1])

    def record_at(self, record_id: bytes, block: int) -> RecordInfo | None:
        info = self._records.get(bytes(record_id))
        return info if info is not None and info.block_number <= block else None

    def grant_at(
        self, patient: str, grantee: str, scope_kind: ScopeKind, scope_id: bytes, block: int
    ) -> GrantInForce | None:
        """The stored grant after ``block`` (possibly lapsed; ``consentOf`` semantics: a guardian
        grant whose guardianship ended is ``None``)."""
        history = self._grants.get((patient, grantee, ScopeKind(scope_kind), bytes(scope_id)))
        grant = history.at(block) if history is not None else None
        if grant is None or not self._holds(grant, (block, _AFTER_BLOCK)):
            return None
        return grant

    def guardian_at(self, patient: str, block: int) -> ChecksumAddress | None:
        history = self._guardians.get(patient)
        return history.at(block) if history is not None else None

    def has_role_at(self, role: bytes, account: str, block: int) -> bool:
        history = self._roles.get((bytes(role), account))
        return bool(history.at(block)) if history is not None else False

    def federations(self) -> list[FederationSet]:
        """Every federation set so far, in chain order (the last is the one in force)."""
        return list(self._federations)

    def checkpoints(self, gateway: str | None = None) -> list[CheckpointAnchored]:
        """Anchored checkpoints in chain order (of one gateway, or of all)."""
        if gateway is not None:
            return list(self._checkpoints.get(gateway, []))
        merged = [c for cs in self._checkpoints.values() for c in cs]
        return sorted(merged, key=lambda c: (c.block_number, c.log_index))

    def gateways(self) -> list[ChecksumAddress]:
        return sorted(self._checkpoints, key=str.lower)  # type: ignore[arg-type]

    def patients(self) -> list[str]:
        return sorted(self._by_patient, key=str.lower)

    def patient_events(self, patient: str) -> list[RegistryEvent]:
        """Every event about ``patient`` (records, consents, guardians, break-glass), in order."""
        return list(self._by_patient.get(patient, []))

    # -- access ---------------------------------------------------------------------------

    def access_basis_at(
        self,
        patient: str,
        grantee: str,
        record_id: bytes,
        purpose: int,
        *,
        block_number: int,
        block_timestamp: int,
    ) -> tuple[Basis, int]:
        """``accessBasis(patient, grantee, recordId, purpose)`` as an ``eth_call`` at
        ``block_number`` (whose timestamp is ``block_timestamp``) answers it: ``(basis, until)``.
        Raises ``ValueError`` for a purpose above 31 (the contract reverts InvalidPurpose)."""
        return self._access_basis(
            patient, grantee, record_id, purpose, (block_number, _AFTER_BLOCK), block_timestamp
        )

    def access_basis_after_events(
        self,
        patient: str,
        grantee: str,
        record_id: bytes,
        purpose: int,
        *,
        events: int,
        timestamp: int,
    ) -> tuple[Basis, int]:
        """``accessBasis`` on the state after exactly ``events`` events (the event digest's
        count, as ``accessDecision`` returns it), at ``timestamp``. Raises ``ValueError`` for a
        purpose above 31 or a count beyond the events folded."""
        return self._access_basis(
            patient, grantee, record_id, purpose, self.event_position(events), timestamp
        )

    def access_after_events(
        self,
        patient: str,
        grantee: str,
        record_id: bytes,
        purpose: int,
        events: int,
        timestamp: int,
    ) -> tuple[bool, Basis]:
        """``(hasConsent, basis)`` after exactly ``events`` events, at ``timestamp``."""
        basis, _ = self.access_basis_after_events(
            patient, grantee, record_id, purpose, events=events, timestamp=timestamp
        )
        return basis is not Basis.NONE, basis

    def _access_basis(
        self,
        patient: str,
        grantee: str,
        record_id: bytes,
        purpose: int,
        position: Position,
        timestamp: int,
    ) -> tuple[Basis, int]:
        """``_accessBasis`` on the state after the event at ``position`` (inclusive): the
        shared :func:`ledger.index.fold.access_basis` on a view of that position."""
        return access_basis(
            _At(self, position), patient, grantee, bytes(record_id), purpose, timestamp
        )

    def access_at(
        self,
        patient: str,
        grantee: str,
        record_id: bytes,
        purpose: int,
        block_number: int,
        block_timestamp: int,
    ) -> tuple[bool, Basis]:
        """``(hasConsent, basis)`` at ``block_number`` (see :meth:`access_basis_at`)."""
        basis, _ = self.access_basis_at(
            patient,
            grantee,
            record_id,
            purpose,
            block_number=block_number,
            block_timestamp=block_timestamp,
        )
        return basis is not Basis.NONE, basis

    def grant_for_access(
        self, patient: str, grantee: str, record_id: bytes, basis: Basis, block: int
    ) -> GrantInForce | None:
        """The stored grant that gave ``basis`` (Record / Category / All) at ``block``."""
        record = self.record_at(record_id, block)
        if record is None:
            return None
        scope = {
            Basis.RECORD: (ScopeKind.RECORD, record.record_id),
            Basis.CATEGORY: (ScopeKind.CATEGORY, record.category),
            Basis.ALL: (ScopeKind.ALL, ALL_SCOPE_ID),
        }.get(basis)
        if scope is None:
            return None
        return self.grant_at(patient, grantee, scope[0], scope[1], block)

    # -- whole-state queries --------------------------------------------------------------

    def state_at(self, patient: str, *, block_number: int, timestamp: int) -> PatientState:
        """The patient's consents, guardian, open break-glass windows and records then."""
        in_force: list[GrantInForce] = []
        lapsed: list[GrantInForce] = []
        ended: list[GrantInForce] = []
        for key in self._grant_keys_by_patient.get(patient, ()):
            grant = self._grants[key].at(block_number)
            if grant is None:
                continue
            if not self._holds(grant, (block_number, _AFTER_BLOCK)):
                ended.append(grant)
                continue
            (in_force if grant.in_force(timestamp) else lapsed).append(grant)
        windows = []
        for bg_key in self._bg_keys_by_patient.get(patient, ()):
            window = self._break_glass[bg_key].at(block_number)
            if window is not None and timestamp < window.until:
                windows.append(window)
        records = [
            r
            for r in self._records.values()
            if r.patient == patient and r.block_number <= block_number
        ]
        order = _grant_order
        return PatientState(
            patient=patient,  # type: ignore[arg-type]
            block_number=block_number,
            timestamp=timestamp,
            grants=tuple(sorted(in_force, key=order)),
            expired=tuple(sorted(lapsed, key=order)),
            guardian=self.guardian_at(patient, block_number),
            break_glass=tuple(sorted(windows, key=lambda w: w.institution.lower())),
            records=tuple(sorted(records, key=lambda r: (r.block_number, r.record_id))),
            guardian_ended=tuple(sorted(ended, key=order)),
        )

    def all_grants(
        self, patient: str | None = None
    ) -> Iterator[tuple[GrantInForce, Position | None]]:
        """Every grant ever stored (of one patient, or of all), with the position that ended it
        (a later grant or revoke on the same key, or for a guardian grant the guardian event
        that ended its epoch, whichever came first), or ``None`` while it is still in force."""
        histories = (
            self._grants.values()
            if patient is None
            else [self._grants[k] for k in self._grant_keys_by_patient.get(patient, ())]
        )
        for history in histories:
            for i, value in enumerate(history.values):
                if value is None:
                    continue
                ended = history.positions[i + 1] if i + 1 < len(history.positions) else None
                epoch_end = self._epoch_end(value)
                if epoch_end is not None and (ended is None or epoch_end < ended):
                    ended = epoch_end
                yield value, ended

    def _epoch_end(self, grant: GrantInForce) -> Position | None:
        """The position of the guardian event that ended a guardian grant's epoch, if any."""
        if grant.guardian_epoch == 0:
            return None
        epochs = self._epochs.get(grant.patient)
        if epochs is None:
            return None
        for position, epoch in zip(epochs.positions, epochs.values, strict=True):
            if epoch is not None and epoch > grant.guardian_epoch:
                return position
        return None

    def ending_event(self, grant: GrantInForce) -> RegistryEvent | None:
        """The event (a revoke, a replacing grant, or for a guardian grant the removal or
        replacement of its guardian) that ended ``grant``, if any."""
        for event in self._by_patient.get(grant.patient, ()):
            if (event.block_number, event.log_index) <= (grant.block_number, grant.log_index):
                continue
            if grant.guardian_epoch and isinstance(event, GuardianRemoved):
                return event
            if (
                isinstance(event, ConsentGranted | ConsentRevoked)
                and event.grantee == grant.grantee
                and event.scope_kind == grant.scope_kind
                and event.scope_id == grant.scope_id
            ):
                return event
        return None


class _At:
    """The timeline as a :class:`ledger.index.fold.ConsentView` after the event at one
    position (inclusive)."""

    __slots__ = ("_position", "_timeline")

    def __init__(self, timeline: ConsentTimeline, position: Position) -> None:
        self._timeline = timeline
        self._position = position

    def record(self, record_id: bytes) -> RecordInfo | None:
        t = self._timeline
        record = t._records.get(record_id)
        if record is None or t._record_positions[record_id] > self._position:
            return None
        return record

    def stored_grant(self, key: GrantKey) -> GrantInForce | None:
        history = self._timeline._grants.get(key)
        return history.at_position(self._position) if history is not None else None

    def epoch(self, patient: str) -> int:
        return self._timeline._epoch_at(patient, self._position)

    def guardian(self, patient: str) -> ChecksumAddress | None:
        history = self._timeline._guardians.get(patient)
        return history.at_position(self._position) if history is not None else None

    def break_glass(self, patient: str, institution: str) -> BreakGlassWindow | None:
        history = self._timeline._break_glass.get((patient, institution))
        return history.at_position(self._position) if history is not None else None


def _grant_order(g: GrantInForce) -> tuple[str, int, bytes]:
    return (g.grantee.lower(), int(g.scope_kind), g.scope_id)
