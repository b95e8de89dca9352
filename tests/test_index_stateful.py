"""Hypothesis state machine: random grants and revokes (by the patient and by the guardian),
guardians set, replaced and removed, break-glass opened and closed (with the cool-down), roles
granted and revoked, records registered, categories listed and unlisted, and the chain's clock
moved, against the real registry on anvil. After every step the verified index, caught up, must
answer exactly as the contract does at the index's block: ``accessDecision`` (allowed, basis,
until, event count, block, chain time) for every (patient, grantee, record, purpose) of a
sample, ``consentOf`` for every consent slot, ``hasRole``, the consents lists, and
``guardianOf``, ``breakGlassUntil``, ``breakGlassReopensAt`` (the cool-down) and ``isCategory``.

Actions are simply tried: a revert changes nothing and emits nothing, so no model of the
contract's rules is needed; the contract is the oracle. One index serves every example, and each
example ends with ``evm_revert``: for the index that is a reorganisation (the next example's
blocks replace the reverted ones), rolled back at its next catch-up. At the end of each example
a fresh index built from the deploy block must reach the very same position.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)
from web3 import Web3

from ledger.chain.registry import ConsentRegistry
from ledger.chain.rpc import RpcClient
from ledger.index import ConsentIndex, ConsentState
from ledger.protocol.consent_types import (
    ALL_SCOPE_ID,
    BREAK_GLASS_COOLDOWN_S,
    CENTRE_ROLE,
    EMERGENCY_ROLE,
    GATEWAY_ROLE,
    Purpose,
    ScopeKind,
    category_id,
)
from ledger.protocol.contract_errors import ContractError
from ledger.protocol.events import EventDecoder, registry_event_abi
from tests.helpers.index import chain_consents, chain_decisions, chain_roles, chain_views
from tests.helpers.registry import (
    RegistryEnv,
    deploy_env,
    increase_time,
    latest_timestamp,
    register,
)

TICK = 1_000
CATEGORIES = ("laboratory", "imaging", "checkup")
PURPOSES = (Purpose.TREATMENT, Purpose.RESEARCH, Purpose.EMERGENCY)
REASONS = (keccak(text="emergency"), keccak(text="emergency, next day"))
ROLES = (EMERGENCY_ROLE, GATEWAY_ROLE, CENTRE_ROLE)


class IndexMachine(RuleBasedStateMachine):
    w3: ClassVar[Web3]
    env: ClassVar[RegistryEnv]
    base_records: ClassVar[tuple[tuple[bytes, str], ...]]  # (record id, patient)
    rpc: ClassVar[RpcClient]
    index: ClassVar[ConsentIndex]
    decoder: ClassVar[EventDecoder]

    def __init__(self) -> None:
        super().__init__()
        self.snapshot = self._rpc("evm_snapshot", [])
        self.reg: ConsentRegistry = self.env.client(self.w3)
        self.records = list(self.base_records)

    def teardown(self) -> None:
        try:
            fresh = ConsentIndex(
                self.rpc,
                address=self.env.address,
                start_block=self.env.deploy_block,
                decoder=self.decoder,
            )
            assert fresh.sync() == self.index.sync(), "a fresh index reaches the same position"
        finally:
            assert self._rpc("evm_revert", [self.snapshot]) is True

    # ------------------------------------------------------------ helpers

    def _rpc(self, method: str, params: list[Any]) -> Any:
        return self.w3.provider.make_request(method, params)["result"]  # type: ignore[arg-type]

    @property
    def patients(self) -> tuple[LocalAccount, LocalAccount]:
        a = self.env.actors
        return (a.patient, a.patient2)

    @property
    def grantees(self) -> tuple[LocalAccount, ...]:
        a = self.env.actors
        return (a.doctor, a.stranger, a.guardian, a.emergency)

    def _scope(
        self, patient: LocalAccount, choice: tuple[ScopeKind, int]
    ) -> tuple[ScopeKind, bytes]:
        kind, i = choice
        if kind is ScopeKind.RECORD:
            return kind, self.records[i % len(self.records)][0]  # maybe another patient's
        if kind is ScopeKind.CATEGORY:
            return kind, category_id(CATEGORIES[i % len(CATEGORIES)])
        return kind, ALL_SCOPE_ID

    def _try(self, action: Any) -> None:
        with contextlib.suppress(ContractError):  # reverted: nothing changed, nothing emitted
            action()

    def _acting(self, patient: LocalAccount, how: str) -> LocalAccount:
        guardian = self.reg.guardian_of(patient.address)
        if how == "guardian" and guardian is not None:
            return next(a for a in (*self.grantees, *self.patients) if a.address == guardian)
        return patient

    # ------------------------------------------------------------ rules

    @rule(
        patient=st.integers(0, 1),
        grantee=st.integers(0, 3),
        scope=st.tuples(st.sampled_from(list(ScopeKind)), st.integers(0, 5)),
        purposes=st.integers(1, 31),
        ticks=st.integers(1, 3),
        how=st.sampled_from(["patient", "guardian"]),
    )
    def grant(
        self,
        patient: int,
        grantee: int,
        scope: tuple[ScopeKind, int],
        purposes: int,
        ticks: int,
        how: str,
    ) -> None:
        p, g = self.patients[patient], self.grantees[grantee]
        kind, scope_id = self._scope(p, scope)
        expires_at = latest_timestamp(self.w3) + ticks * TICK
        actor = self._acting(p, how)
        if actor is p:
            self._try(lambda: self.reg.grant(p, g.address, kind, scope_id, purposes, expires_at))
        else:
            self._try(
                lambda: self.reg.grant_for(
                    actor, p.address, g.address, kind, scope_id, purposes, expires_at
                )
            )

    @rule(
        patient=st.integers(0, 1),
        grantee=st.integers(0, 3),
        scope=st.tuples(st.sampled_from(list(ScopeKind)), st.integers(0, 5)),
        how=st.sampled_from(["patient", "guardian"]),
    )
    def revoke(self, patient: int, grantee: int, scope: tuple[ScopeKind, int], how: str) -> None:
        p, g = self.patients[patient], self.grantees[grantee]
        kind, scope_id = self._scope(p, scope)
        actor = self._acting(p, how)
        if actor is p:
            self._try(lambda: self.reg.revoke(p, g.address, kind, scope_id))
        else:
            self._try(lambda: self.reg.revoke_for(actor, p.address, g.address, kind, scope_id))

    @rule(patient=st.integers(0, 1), candidate=st.integers(0, 3))
    def set_guardian(self, patient: int, candidate: int) -> None:
        p = self.patients[patient]
        self._try(lambda: self.reg.set_guardian(p, self.grantees[candidate].address))

    @rule(
        patient=st.integers(0, 1),
        guardian=st.integers(0, 3),
        grantee=st.integers(0, 3),
        scope=st.tuples(st.sampled_from(list(ScopeKind)), st.integers(0, 5)),
        then=st.sampled_from(["stays", "removed", "replaced"]),
    )
    def guardian_grants(
        self, patient: int, guardian: int, grantee: int, scope: tuple[ScopeKind, int], then: str
    ) -> None:
        """A guardian appointed, granting for the patient, then kept, removed or replaced (a
        deep state the single steps rarely reach: the grant must end with the guardianship)."""
        p, keeper = self.patients[patient], self.grantees[guardian]
        self._try(lambda: self.reg.set_guardian(p, keeper.address))
        actor = self._acting(p, "guardian")
        kind, scope_id = self._scope(p, scope)
        g = self.grantees[grantee]
        expires_at = latest_timestamp(self.w3) + 3 * TICK
        self._try(
            lambda: self.reg.grant_for(
                actor, p.address, g.address, kind, scope_id, 0b10011, expires_at
            )
        )
        if then == "removed":
            self._try(lambda: self.reg.remove_guardian(p))
        elif then == "replaced":
            other = self.grantees[(guardian + 1) % len(self.grantees)]
            self._try(lambda: self.reg.set_guardian(p, other.address))

    @rule(patient=st.integers(0, 1))
    def remove_guardian(self, patient: int) -> None:
        self._try(lambda: self.reg.remove_guardian(self.patients[patient]))

    @rule(patient=st.integers(0, 1), ticks=st.integers(1, 3), reason=st.sampled_from(REASONS))
    def open_break_glass(self, patient: int, ticks: int, reason: bytes) -> None:
        p, institution = self.patients[patient], self.env.actors.emergency
        self._try(lambda: self.reg.open_break_glass(institution, p.address, ticks * TICK, reason))

    @rule(patient=st.integers(0, 1), reason=st.sampled_from(REASONS))
    def open_then_close_break_glass(self, patient: int, reason: bytes) -> None:
        """An opening closed by the patient at once: the cool-down starts."""
        p, institution = self.patients[patient], self.env.actors.emergency
        self._try(lambda: self.reg.open_break_glass(institution, p.address, TICK, reason))
        self._try(lambda: self.reg.close_break_glass(p, p.address, institution.address))

    @rule(patient=st.integers(0, 1), how=st.sampled_from(["patient", "guardian"]))
    def close_break_glass(self, patient: int, how: str) -> None:
        p = self.patients[patient]
        closer = self._acting(p, how)
        self._try(
            lambda: self.reg.close_break_glass(closer, p.address, self.env.actors.emergency.address)
        )

    @rule(grant=st.booleans(), role=st.sampled_from(ROLES), account=st.integers(0, 3))
    def change_role(self, grant: bool, role: bytes, account: int) -> None:
        admin, who = self.env.actors.admin, self.grantees[account].address
        change = self.reg.grant_role if grant else self.reg.revoke_role
        self._try(lambda: change(admin, role, who))

    @rule(patient=st.integers(0, 1), category=st.integers(0, 2))
    def register_record(self, patient: int, category: int) -> None:
        p = self.patients[patient]
        try:
            rid = register(self.reg, self.env, p.address, CATEGORIES[category])
        except ContractError:
            return  # an unlisted category, or the centre lost its role
        self.records.append((rid, p.address))

    @rule(listed=st.booleans(), category=st.integers(0, 2))
    def change_category(self, listed: bool, category: int) -> None:
        change = self.reg.add_category if listed else self.reg.remove_category
        self._try(lambda: change(self.env.actors.admin, category_id(CATEGORIES[category])))

    @rule(ticks=st.integers(1, 2))
    def time_travel(self, ticks: int) -> None:
        increase_time(self.w3, ticks * TICK)

    @rule()
    def wait_out_a_cool_down(self) -> None:
        increase_time(self.w3, BREAK_GLASS_COOLDOWN_S)

    # ------------------------------------------------------------ the property

    @invariant()
    def index_decides_as_the_contract(self) -> None:
        position = self.index.sync()
        block = position.block_number
        accounts = [*self.grantees, *self.patients]
        queries = [
            (p.address, g.address, rid, int(purpose))
            for p in self.patients
            for g in (*self.grantees, p)
            for rid, _ in self.records
            for purpose in PURPOSES
        ]
        chain = chain_decisions(self.rpc, self.env.address, queries, block)
        for query, expected in zip(queries, chain, strict=True):
            assert self.index.access_decision(*query) == expected, query
        keys = [
            (p.address, g.address, kind, scope_id)
            for p in self.patients
            for g in self.grantees
            for kind, scope_id in {self._scope(p, (k, i)) for k in ScopeKind for i in range(6)}
        ]
        terms = chain_consents(self.rpc, self.env.address, keys, block)
        stored, _ = self.index.query(lambda s: [s.consent_of(*key) for key in keys])
        ours = [(g.purposes, g.expires_at) if g is not None else (0, 0) for g in stored]
        assert ours == terms
        live = {key for key, t in zip(keys, terms, strict=True) if t != (0, 0)}
        listed = set()
        for account in accounts:
            consents = self.index.consents(account.address)
            listed |= {g.key for g in consents.granted} | {g.key for g in consents.received}
        assert listed == live
        pairs = [(role, a.address) for role in ROLES for a in accounts]
        roles, _ = self.index.query(lambda s: [s.has_role(r, a) for r, a in pairs])
        assert roles == chain_roles(self.rpc, self.env.address, pairs, block)
        institution = self.env.actors.emergency.address
        views: list[tuple[str, list[str], list[Any], list[str]]] = []
        for p in self.patients:
            pair = [p.address, institution]
            views += [
                ("guardianOf", ["address"], [p.address], ["address"]),
                ("breakGlassUntil", ["address", "address"], pair, ["uint64"]),
                ("breakGlassReopensAt", ["address", "address"], pair, ["uint64"]),
            ]
        views += [("isCategory", ["bytes32"], [category_id(c)], ["bool"]) for c in CATEGORIES]

        def read_views(s: ConsentState) -> list[Any]:
            out: list[Any] = []
            for p in self.patients:
                window = s.break_glass(p.address, institution)
                out += [
                    s.guardian(p.address) or "0x" + "00" * 20,
                    window.until if window is not None else 0,
                    s.break_glass_reopens_at(p.address, institution),
                ]
            return out + [s.is_category(category_id(c)) for c in CATEGORIES]

        theirs = chain_views(self.rpc, self.env.address, views, block)
        mine, _ = self.index.query(read_views)
        assert [str(v).lower() for v in mine] == [str(v).lower() for v in theirs]


@pytest.fixture(scope="module")
def env(w3: Web3, anvil: Any) -> RegistryEnv:
    return deploy_env(w3, anvil.accounts)


def test_the_index_decides_as_the_contract(chain: Web3, env: RegistryEnv, anvil: Any) -> None:
    registry = env.client(chain)
    records = tuple(
        (register(registry, env, p.address, category), p.address)
        for p in (env.actors.patient, env.actors.patient2)
        for category in CATEGORIES[:2]
    )
    rpc = RpcClient(anvil.url)
    try:
        IndexMachine.w3 = chain
        IndexMachine.env = env
        IndexMachine.base_records = records
        IndexMachine.rpc = rpc
        IndexMachine.decoder = EventDecoder(registry_event_abi(env.abi))
        IndexMachine.index = ConsentIndex(
            rpc, address=env.address, start_block=env.deploy_block, decoder=IndexMachine.decoder
        )
        run_state_machine_as_test(
            IndexMachine,
            # No shrinking: every step is a transaction, and shrinking a failure takes minutes;
            # the failing steps are printed as they ran.
            settings=settings(
                max_examples=12,
                stateful_step_count=15,
                deadline=None,
                phases=[Phase.explicit, Phase.reuse, Phase.generate],
            ),
        )
        assert IndexMachine.index.stats.rollbacks > 0, "the examples' reverts were rolled back"
    finally:
        rpc.close()
