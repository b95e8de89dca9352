"""The consent state now: what the registry's storage holds after every event folded so far.

:class:`ConsentState` is a :class:`ledger.index.fold.ConsentStore` over plain dictionaries,
folded by the shared table :data:`ledger.index.fold.FOLD` (the audit's timeline folds with the
same table) and read by the shared :func:`ledger.index.fold.access_basis`. It also answers the
lists: the consents a patient granted and those granted to an account (``consentOf``
semantics: a guardian grant whose guardianship ended is gone, a lapsed one is still listed),
roles, categories, guardians, break-glass slots, checkpoints and the federation.

Undo: while :attr:`ConsentState.journal` is a list, every change appends what it replaced, and
:meth:`ConsentState.undo` puts a journal back (newest first), so the index can roll a block back
on a chain reorganisation. ``to_json`` / ``from_json`` are the snapshot's body.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address

from ledger.index.fold import (
    BreakGlassWindow,
    ConsentStore,
    GrantInForce,
    GrantKey,
    RecordInfo,
    fold_event,
    holds,
)
from ledger.protocol.consent_types import ScopeKind
from ledger.protocol.events import CheckpointAnchored, FederationSet, RegistryEvent

__all__ = ["ConsentState", "UndoEntry"]

UndoEntry = tuple[int, Any, Any]
"""``(table, key, previous value)`` of one change."""

_RECORD, _GRANT, _GUARDIAN, _BREAK_GLASS, _ROLE, _CATEGORY, _CHECKPOINT, _FEDERATION = range(8)


class ConsentState:
    """The registry's consent state after the events folded so far (see the module notes)."""

    def __init__(self) -> None:
        self._records: dict[bytes, RecordInfo] = {}
        self._grants: dict[GrantKey, GrantInForce] = {}
        self._by_patient: dict[str, set[GrantKey]] = {}
        self._by_grantee: dict[str, set[GrantKey]] = {}
        self._guardians: dict[str, tuple[ChecksumAddress | None, int]] = {}  # (guardian, epoch)
        self._break_glass: dict[tuple[str, str], BreakGlassWindow] = {}
        self._roles: dict[bytes, set[ChecksumAddress]] = {}
        self._categories: set[bytes] = set()
        self._checkpoints: dict[str, CheckpointAnchored] = {}
        self._federation: FederationSet | None = None
        self.journal: list[UndoEntry] | None = None

    # -- folding --------------------------------------------------------------------------

    def apply(self, event: RegistryEvent) -> bool:
        """Fold one event; ``False`` for an event type the fold table does not know."""
        return fold_event(self, event)

    def undo(self, journal: Iterable[UndoEntry]) -> None:
        """Put back every change of ``journal`` (in the order it was written: undone newest
        first). Not journaled itself."""
        saved, self.journal = self.journal, None
        try:
            for table, key, previous in reversed(list(journal)):
                if table == _RECORD:
                    if previous is None:
                        del self._records[key]
                    else:
                        self._records[key] = previous
                elif table == _GRANT:
                    self.set_grant(key, previous)
                elif table == _GUARDIAN:
                    if previous is None:
                        del self._guardians[key]
                    else:
                        self._guardians[key] = previous
                elif table == _BREAK_GLASS:
                    if previous is None:
                        del self._break_glass[key]
                    else:
                        self._break_glass[key] = previous
                elif table == _ROLE:
                    self.set_role(key[0], key[1], previous)
                elif table == _CATEGORY:
                    self.set_category(key, previous)
                elif table == _CHECKPOINT:
                    if previous is None:
                        del self._checkpoints[key]
                    else:
                        self._checkpoints[key] = previous
                elif table == _FEDERATION:
                    self._federation = previous
        finally:
            self.journal = saved

    # -- ConsentStore: writes -------------------------------------------------------------

    def set_record(self, record: RecordInfo) -> None:
        if self.journal is not None:
            self.journal.append((_RECORD, record.record_id, self._records.get(record.record_id)))
        self._records[record.record_id] = record

    def set_grant(self, key: GrantKey, grant: GrantInForce | None) -> None:
        grants = self._grants
        previous = grants.get(key)
        if self.journal is not None:
            self.journal.append((_GRANT, key, previous))
        if grant is not None:
            grants[key] = grant
            if previous is None:
                _index(self._by_patient, key[0], key)
                _index(self._by_grantee, key[1], key)
        elif previous is not None:
            del grants[key]
            _unindex(self._by_patient, key[0], key)
            _unindex(self._by_grantee, key[1], key)

    def set_guardian(self, patient: str, guardian: ChecksumAddress | None, epoch: int) -> None:
        if self.journal is not None:
            self.journal.append((_GUARDIAN, patient, self._guardians.get(patient)))
        self._guardians[patient] = (guardian, epoch)

    def set_break_glass(self, window: BreakGlassWindow) -> None:
        key = (window.patient, window.institution)
        if self.journal is not None:
            self.journal.append((_BREAK_GLASS, key, self._break_glass.get(key)))
        self._break_glass[key] = window

    def set_role(self, role: bytes, account: ChecksumAddress, held: bool) -> None:
        members = self._roles.get(role)
        before = members is not None and account in members
        if before == held:
            return
        if self.journal is not None:
            self.journal.append((_ROLE, (role, account), before))
        if held:
            self._roles.setdefault(role, set()).add(account)
        elif members is not None:
            members.discard(account)
            if not members:
                del self._roles[role]

    def set_category(self, category: bytes, listed: bool) -> None:
        before = category in self._categories
        if before == listed:
            return
        if self.journal is not None:
            self.journal.append((_CATEGORY, category, before))
        if listed:
            self._categories.add(category)
        else:
            self._categories.discard(category)

    def set_checkpoint(self, event: CheckpointAnchored) -> None:
        if self.journal is not None:
            self.journal.append((_CHECKPOINT, event.gateway, self._checkpoints.get(event.gateway)))
        self._checkpoints[event.gateway] = event

    def set_federation(self, event: FederationSet) -> None:
        if self.journal is not None:
            self.journal.append((_FEDERATION, None, self._federation))
        self._federation = event

    # -- ConsentView: reads ---------------------------------------------------------------

    def record(self, record_id: bytes) -> RecordInfo | None:
        return self._records.get(record_id)

    def stored_grant(self, key: GrantKey) -> GrantInForce | None:
        return self._grants.get(key)

    def epoch(self, patient: str) -> int:
        held = self._guardians.get(patient)
        return held[1] if held is not None else 0

    def guardian(self, patient: str) -> ChecksumAddress | None:
        held = self._guardians.get(patient)
        return held[0] if held is not None else None

    def break_glass(self, patient: str, institution: str) -> BreakGlassWindow | None:
        return self._break_glass.get((patient, institution))

    # -- more reads -----------------------------------------------------------------------

    def consent_of(
        self, patient: str, grantee: str, scope_kind: ScopeKind, scope_id: bytes
    ) -> GrantInForce | None:
        """``consentOf``: the stored grant, ``None`` when none or when it was a guardian's
        and that guardianship ended (possibly lapsed: see ``GrantInForce.in_force``)."""
        grant = self._grants.get((patient, grantee, ScopeKind(scope_kind), bytes(scope_id)))
        return grant if grant is not None and holds(self, grant) else None

    def granted_by(self, patient: str) -> list[GrantInForce]:
        """Every consent ``patient`` has stored (``consentOf`` non-zero), in a stable order."""
        return self._listed(self._by_patient.get(patient, ()))

    def granted_to(self, grantee: str) -> list[GrantInForce]:
        """Every consent stored for ``grantee`` (``consentOf`` non-zero), in a stable order."""
        return self._listed(self._by_grantee.get(grantee, ()))

    def _listed(self, keys: Iterable[GrantKey]) -> list[GrantInForce]:
        grants = [g for g in (self._grants[k] for k in keys) if holds(self, g)]
        return sorted(grants, key=_grant_order)

    def has_role(self, role: bytes, account: str) -> bool:
        members = self._roles.get(bytes(role))
        return members is not None and account in members

    def role_members(self, role: bytes) -> frozenset[ChecksumAddress]:
        return frozenset(self._roles.get(bytes(role), ()))

    def is_category(self, category: bytes) -> bool:
        return bytes(category) in self._categories

    def checkpoint_of(self, gateway: str) -> CheckpointAnchored | None:
        return self._checkpoints.get(gateway)

    @property
    def federation(self) -> FederationSet | None:
        """The last ``FederationSet`` (the federation in force), if any."""
        return self._federation

    def break_glass_reopens_at(self, patient: str, institution: str) -> int:
        """``breakGlassReopensAt``: the later of the open window's end and the cool-down's."""
        window = self._break_glass.get((patient, institution))
        return max(window.until, window.reopens_at) if window is not None else 0

    @property
    def grant_count(self) -> int:
        return len(self._grants)

    @property
    def record_count(self) -> int:
        return len(self._records)

    # -- snapshot body --------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The whole state as JSON-ready values (bytes as ``0x`` hex)."""
        fed = self._federation
        return {
            "records": [
                [_h(r.record_id), r.patient, r.centre, _h(r.category), _h(r.content_digest),
                 r.issued_at, r.cid, r.block_number]
                for r in self._records.values()
            ],
            "grants": [
                [g.patient, g.grantee, int(g.scope_kind), _h(g.scope_id), g.purposes,
                 g.expires_at, g.actor, g.block_number, g.log_index, g.guardian_epoch]
                for g in self._grants.values()
            ],
            "guardians": [[p, g, e] for p, (g, e) in self._guardians.items()],
            "break_glass": [
                [w.patient, w.institution, w.until, w.block_number, w.reopens_at,
                 _h(w.reason_hash)]
                for w in self._break_glass.values()
            ],
            "roles": {_h(role): sorted(members) for role, members in self._roles.items()},
            "categories": sorted(_h(c) for c in self._categories),
            "checkpoints": [
                [c.block_number, c.log_index, c.tx_hash, c.gateway, c.tree_size, _h(c.root_hash)]
                for c in self._checkpoints.values()
            ],
            "federation": None if fed is None else [
                fed.block_number, fed.log_index, fed.tx_hash, fed.threshold, _h(fed.custody_set),
                list(fed.gateways), [_h(k) for k in fed.custody_keys], list(fed.urls),
            ],
        }  # fmt: skip

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ConsentState:
        """The state :meth:`to_json` wrote; ``ValueError`` / ``KeyError`` / ``TypeError`` on a
        malformed body."""
        state = cls()
        _a = _Addresses()
        for rid, patient, centre, category, digest, issued_at, cid, block in body["records"]:
            state.set_record(
                RecordInfo(_b(rid), _a(patient), _a(centre), _b(category), _b(digest),
                           int(issued_at), str(cid), int(block))
            )  # fmt: skip
        for row in body["grants"]:
            patient, grantee, kind, scope_id, purposes, expires, actor, block, index, epoch = row
            grant = GrantInForce(
                _a(patient), _a(grantee), ScopeKind(kind), _b(scope_id), int(purposes),
                int(expires), _a(actor), int(block), int(index), int(epoch),
            )  # fmt: skip
            state.set_grant(grant.key, grant)
        for patient, guardian, epoch in body["guardians"]:
            state.set_guardian(_a(patient), None if guardian is None else _a(guardian), int(epoch))
        for patient, institution, until, block, reopens_at, reason in body["break_glass"]:
            state.set_break_glass(
                BreakGlassWindow(_a(patient), _a(institution), int(until), int(block),
                                 int(reopens_at), _b(reason))
            )  # fmt: skip
        for role, members in body["roles"].items():
            for account in members:
                state.set_role(_b(role), _a(account), True)
        for category in body["categories"]:
            state.set_category(_b(category), True)
        for block, index, tx, gateway, size, root in body["checkpoints"]:
            state.set_checkpoint(
                CheckpointAnchored(
                    int(block), int(index), str(tx), _a(gateway), int(size), _b(root)
                )
            )
        fed = body["federation"]
        if fed is not None:
            block, index, tx, threshold, custody_set, gateways, keys, urls = fed
            state.set_federation(
                FederationSet(int(block), int(index), str(tx), int(threshold), _b(custody_set),
                              tuple(_a(g) for g in gateways), tuple(_b(k) for k in keys),
                              tuple(str(u) for u in urls))
            )  # fmt: skip
        return state


def _index(index: dict[str, set[GrantKey]], account: str, key: GrantKey) -> None:
    keys = index.get(account)
    if keys is None:
        index[account] = {key}
    else:
        keys.add(key)


def _unindex(index: dict[str, set[GrantKey]], account: str, key: GrantKey) -> None:
    keys = index.get(account)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del index[account]


def _grant_order(g: GrantInForce) -> tuple[str, str, int, bytes]:
    return (g.patient.lower(), g.grantee.lower(), int(g.scope_kind), g.scope_id)


def _h(value: bytes) -> str:
    return "0x" + value.hex()


def _b(value: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError(f"not 0x hex: {value!r}")
    return bytes.fromhex(value[2:])


class _Addresses:
    """Checksummed addresses, each checked once and shared (a snapshot names the same
    accounts many times; checksumming costs ~10 µs)."""

    def __init__(self) -> None:
        self._seen: dict[str, ChecksumAddress] = {}

    def __call__(self, value: str) -> ChecksumAddress:
        known = self._seen.get(value)
        if known is None:
            known = self._seen[value] = to_checksum_address(value)
            if known != value:
                raise ValueError(f"address not checksummed: {value!r}")
        return known


def _check_protocol(state: ConsentState) -> ConsentStore:
    return state  # mypy: ConsentState implements the fold's store
