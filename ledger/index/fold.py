"""The consent state machine: how each registry event changes the state, and how a decision is
read from it. One copy, shared by the verified index (:mod:`ledger.index.state`, the state now,
with undo) and the audit's timeline (:mod:`ledger.audit.state`, the state at every past
position).

Both keep the same values (:class:`RecordInfo`, :class:`GrantInForce`,
:class:`BreakGlassWindow`, guardians with their guardianship epoch, roles, categories,
checkpoints, the federation) behind the small :class:`ConsentStore` interface, and both fold
events through :data:`FOLD`, a table ``event type -> function(store, event)``. Adding an event
the registry emits is one function here::

    @folds(CustodyThresholdSet)
    def _threshold_set(store: ConsentStore, event: CustodyThresholdSet) -> None:
        store.set_custody_threshold(event.threshold)   # plus the store method it needs

:func:`access_basis` is ``ConsentRegistry._accessBasis`` written in Python, same order and same
comparisons (a grant is in force while ``timestamp < expiresAt``)::

    purpose > 31                              -> InvalidPurpose (ValueError here)
    grantee == 0                              -> None
    record unknown or of another patient      -> None
    grantee == patient                        -> Owner
    Record grant, then Category, then All     -> Record / Category / All (until = expiresAt),
      a guardian's grant only while the patient's guardianship epoch is still the one it
      was made in
    grantee is the patient's guardian         -> Guardian
    purpose in {TREATMENT, EMERGENCY} and
      timestamp < break-glass until           -> Emergency (until)
    otherwise                                 -> None

Guardianship epochs follow the contract: every ``GuardianSet`` and ``GuardianRemoved`` of a
patient moves its epoch on by one (a replacement emits both), and a ``ConsentGranted`` whose
``actor`` is not the patient is a guardian grant stamped with the epoch then current.
Break-glass follows the contract's slot: an opening sets ``until`` and keeps the cool-down end,
a close sets ``until`` to 0 and the cool-down end to ``reopensAt``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from eth_typing import ChecksumAddress

from ledger.protocol.consent_types import ALL_SCOPE_ID, BREAK_GLASS_PURPOSES, Basis, ScopeKind
from ledger.protocol.events import (
    BreakGlassClosed,
    BreakGlassOpened,
    CategoryAdded,
    CategoryRemoved,
    CheckpointAnchored,
    ConsentGranted,
    ConsentRevoked,
    FederationSet,
    GuardianRemoved,
    GuardianSet,
    NonceBurned,
    RecordRegistered,
    RegistryEvent,
    RoleAdminChanged,
    RoleGranted,
    RoleRevoked,
)

__all__ = [
    "FOLD",
    "MAX_PURPOSE",
    "ZERO_ADDRESS",
    "BreakGlassWindow",
    "ConsentStore",
    "ConsentView",
    "GrantInForce",
    "GrantKey",
    "RecordInfo",
    "access_basis",
    "fold_event",
    "folds",
    "holds",
]

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
MAX_PURPOSE = 31
_BREAK_GLASS_BITS = sum(1 << int(p) for p in BREAK_GLASS_PURPOSES)

GrantKey = tuple[str, str, ScopeKind, bytes]
"""``(patient, grantee, scope kind, scope id)``: one consent slot of the registry."""


# ------------------------------------------------------------------------------ values


@dataclass(frozen=True, slots=True)
class RecordInfo:
    record_id: bytes
    patient: ChecksumAddress
    centre: ChecksumAddress
    category: bytes
    content_digest: bytes
    issued_at: int
    cid: str
    block_number: int


@dataclass(frozen=True, slots=True)
class GrantInForce:
    """A stored grant (the event that set it); ``in_force`` once a timestamp is known.
    ``guardian_epoch`` is 0 for the patient's own grant, else the guardianship epoch of the
    guardian who made it (the grant ends when that epoch does)."""

    patient: ChecksumAddress
    grantee: ChecksumAddress
    scope_kind: ScopeKind
    scope_id: bytes
    purposes: int
    expires_at: int
    actor: ChecksumAddress
    block_number: int
    log_index: int
    guardian_epoch: int = 0

    def in_force(self, timestamp: int) -> bool:
        return timestamp < self.expires_at

    @property
    def key(self) -> GrantKey:
        return (self.patient, self.grantee, self.scope_kind, self.scope_id)


@dataclass(frozen=True, slots=True)
class BreakGlassWindow:
    """One institution's break-glass slot for one patient, as the contract keeps it: open
    while ``timestamp < until`` (0 once closed); no reopening before ``reopens_at`` (set by a
    close); ``reason_hash`` of the last opening. ``block_number``: the event that set it."""

    patient: ChecksumAddress
    institution: ChecksumAddress
    until: int
    block_number: int
    reopens_at: int = 0
    reason_hash: bytes = b""

    def open_at(self, timestamp: int) -> bool:
        return timestamp < self.until


# ------------------------------------------------------------------------------ the store


class ConsentView(Protocol):
    """Reads of one consent state (the latest, or one past position)."""

    def record(self, record_id: bytes) -> RecordInfo | None: ...

    def stored_grant(self, key: GrantKey) -> GrantInForce | None:
        """The stored grant, whether or not its guardianship still holds."""
        ...

    def epoch(self, patient: str) -> int:
        """The patient's guardianship epoch (0 before any guardian event)."""
        ...

    def guardian(self, patient: str) -> ChecksumAddress | None: ...

    def break_glass(self, patient: str, institution: str) -> BreakGlassWindow | None: ...


class ConsentStore(ConsentView, Protocol):
    """A consent state events are folded into (reads see every event folded so far)."""

    def set_record(self, record: RecordInfo) -> None: ...

    def set_grant(self, key: GrantKey, grant: GrantInForce | None) -> None: ...

    def set_guardian(self, patient: str, guardian: ChecksumAddress | None, epoch: int) -> None: ...

    def set_break_glass(self, window: BreakGlassWindow) -> None: ...

    def set_role(self, role: bytes, account: ChecksumAddress, held: bool) -> None: ...

    def set_category(self, category: bytes, listed: bool) -> None: ...

    def set_checkpoint(self, event: CheckpointAnchored) -> None: ...

    def set_federation(self, event: FederationSet) -> None: ...


# ------------------------------------------------------------------------------ folding

E = TypeVar("E", bound=RegistryEvent)
Folder = Callable[[ConsentStore, Any], None]

FOLD: dict[type[RegistryEvent], Folder] = {}
"""``event type -> function(store, event)``: how each registry event changes the state."""


def folds(*types: type[E]) -> Callable[[Callable[[ConsentStore, E], None]], Callable[..., None]]:
    """Register the decorated function as the fold of ``types``."""

    def register(fn: Callable[[ConsentStore, E], None]) -> Callable[..., None]:
        for cls in types:
            if cls in FOLD:
                raise ValueError(f"{cls.__name__} is folded twice")
            FOLD[cls] = fn
        return fn

    return register


def fold_event(store: ConsentStore, event: RegistryEvent) -> bool:
    """Fold ``event`` into ``store``; ``False`` (nothing changed) for a type with no fold."""
    fn = FOLD.get(type(event))
    if fn is None:
        return False
    fn(store, event)
    return True


@folds(RecordRegistered)
def _record_registered(store: ConsentStore, e: RecordRegistered) -> None:
    record = RecordInfo(
        e.record_id, e.patient, e.centre, e.category, e.content_digest, e.issued_at, e.cid,
        e.block_number,
    )  # fmt: skip
    store.set_record(record)


@folds(ConsentGranted)
def _consent_granted(store: ConsentStore, e: ConsentGranted) -> None:
    # The patient's own grant carries stamp 0; anyone else acting is the guardian then appointed.
    epoch = 0 if e.actor == e.patient else store.epoch(e.patient)
    grant = GrantInForce(
        e.patient, e.grantee, e.scope_kind, e.scope_id, e.purposes, e.expires_at, e.actor,
        e.block_number, e.log_index, epoch,
    )  # fmt: skip
    store.set_grant((e.patient, e.grantee, e.scope_kind, e.scope_id), grant)


@folds(ConsentRevoked)
def _consent_revoked(store: ConsentStore, e: ConsentRevoked) -> None:
    store.set_grant((e.patient, e.grantee, e.scope_kind, e.scope_id), None)


@folds(GuardianSet)
def _guardian_set(store: ConsentStore, e: GuardianSet) -> None:
    store.set_guardian(e.patient, e.guardian, store.epoch(e.patient) + 1)


@folds(GuardianRemoved)
def _guardian_removed(store: ConsentStore, e: GuardianRemoved) -> None:
    store.set_guardian(e.patient, None, store.epoch(e.patient) + 1)


@folds(BreakGlassOpened)
def _break_glass_opened(store: ConsentStore, e: BreakGlassOpened) -> None:
    previous = store.break_glass(e.patient, e.institution)
    reopens_at = previous.reopens_at if previous is not None else 0
    store.set_break_glass(
        BreakGlassWindow(
            e.patient, e.institution, e.until, e.block_number, reopens_at, e.reason_hash
        )
    )


@folds(BreakGlassClosed)
def _break_glass_closed(store: ConsentStore, e: BreakGlassClosed) -> None:
    previous = store.break_glass(e.patient, e.institution)
    reason = previous.reason_hash if previous is not None else b""
    store.set_break_glass(
        BreakGlassWindow(e.patient, e.institution, 0, e.block_number, e.reopens_at, reason)
    )


@folds(RoleGranted)
def _role_granted(store: ConsentStore, e: RoleGranted) -> None:
    store.set_role(e.role, e.account, True)


@folds(RoleRevoked)
def _role_revoked(store: ConsentStore, e: RoleRevoked) -> None:
    store.set_role(e.role, e.account, False)


@folds(CategoryAdded)
def _category_added(store: ConsentStore, e: CategoryAdded) -> None:
    store.set_category(e.category, True)


@folds(CategoryRemoved)
def _category_removed(store: ConsentStore, e: CategoryRemoved) -> None:
    store.set_category(e.category, False)


@folds(CheckpointAnchored)
def _checkpoint_anchored(store: ConsentStore, e: CheckpointAnchored) -> None:
    store.set_checkpoint(e)


@folds(FederationSet)
def _federation_set(store: ConsentStore, e: FederationSet) -> None:
    store.set_federation(e)


@folds(NonceBurned, RoleAdminChanged)
def _not_consent_state(store: ConsentStore, e: RegistryEvent) -> None:
    """Nonce burns and role administration: folded into the digest, no consent state."""


# ------------------------------------------------------------------------------ decisions


def access_basis(
    view: ConsentView,
    patient: str,
    grantee: str,
    record_id: bytes,
    purpose: int,
    timestamp: int,
) -> tuple[Basis, int]:
    """``_accessBasis(patient, grantee, recordId, purpose)`` on ``view`` at chain time
    ``timestamp``: ``(basis, until)``. Addresses are checksummed. Raises ``ValueError`` for a
    purpose above 31 (the contract reverts InvalidPurpose)."""
    if not 0 <= purpose <= MAX_PURPOSE:
        raise ValueError(f"InvalidPurpose({purpose})")
    if grantee == ZERO_ADDRESS:
        return Basis.NONE, 0
    record = view.record(record_id)
    if record is None or record.patient != patient or patient == ZERO_ADDRESS:
        return Basis.NONE, 0
    if grantee == patient:
        return Basis.OWNER, 0
    bit = 1 << purpose
    for kind, scope_id, basis in (
        (ScopeKind.RECORD, record.record_id, Basis.RECORD),
        (ScopeKind.CATEGORY, record.category, Basis.CATEGORY),
        (ScopeKind.ALL, ALL_SCOPE_ID, Basis.ALL),
    ):
        grant = view.stored_grant((patient, grantee, kind, scope_id))
        if (
            grant is not None
            and grant.purposes & bit
            and timestamp < grant.expires_at
            and (grant.guardian_epoch == 0 or grant.guardian_epoch == view.epoch(patient))
        ):
            return basis, grant.expires_at
    if view.guardian(patient) == grantee:
        return Basis.GUARDIAN, 0
    if bit & _BREAK_GLASS_BITS:
        window = view.break_glass(patient, grantee)
        if window is not None and timestamp < window.until:
            return Basis.EMERGENCY, window.until
    return Basis.NONE, 0


def holds(view: ConsentView, grant: GrantInForce) -> bool:
    """``_guardianshipHolds``: a patient grant always, a guardian grant while its epoch is the
    patient's epoch (``consentOf`` reads zeroes otherwise)."""
    return grant.guardian_epoch == 0 or grant.guardian_epoch == view.epoch(grant.patient)
