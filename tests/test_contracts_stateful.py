"""Hypothesis state machine: random grant / revoke (direct, by guardian, by the patient's or the
guardian's signature) / guardian set, replace and remove / break-glass open and close (with the
cool-down and the fresh-reason rule) / nonce burn / time travel sequences against the real
registry; after every step the contract's ``hasConsent`` and ``accessBasis`` equal a pure Python
model for every (patient, grantee, record, purpose) of a fixed sample, and so does the audit's
replay (``ledger.audit.replay.replay`` proven complete against the event digest, folded into a
``ConsentTimeline``), whose ``grant_at`` also equals the contract's ``consentOf`` for every grant
the model knows (guardian grants whose guardian was removed or replaced read as absent).

Time is modelled in ticks of ``TICK`` seconds: expiries and break-glass durations are whole
ticks and time travel moves whole ticks, so the few seconds of wall-clock time anvil adds during
an example never move a comparison across a boundary (a grant made at tick t for k ticks is in
force exactly at ticks t .. t+k-1, whatever the seconds within a tick).

The break-glass cool-down (``BREAK_GLASS_COOLDOWN``, 604.8 ticks) ends between tick 604 and 605
after the close, so "cooling" is ``tick < close tick + 605`` and the long wait moves 604 or 605
ticks.

Each example runs between its own ``evm_snapshot`` and ``evm_revert``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx
import pytest
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from web3 import Web3

from ledger.audit.replay import replay
from ledger.audit.state import ConsentTimeline
from ledger.chain.registry import ConsentRegistry, Receipt
from ledger.chain.rpc import RpcClient
from ledger.protocol import eip712
from ledger.protocol.consent_types import (
    ALL_SCOPE_ID,
    BREAK_GLASS_COOLDOWN_S,
    BREAK_GLASS_PURPOSES,
    Basis,
    Purpose,
    ScopeKind,
    category_id,
)
from ledger.protocol.contract_errors import (
    BreakGlassAlreadyOpen,
    BreakGlassCoolingDown,
    BreakGlassNotOpen,
    BreakGlassReasonReused,
    ConsentNotFound,
    ConsentUnchanged,
    ContractError,
    GuardianUnchanged,
    InvalidGuardian,
    NoGuardian,
    RecordNotOwned,
)
from ledger.protocol.events import EventDecoder, registry_event_abi
from tests.helpers.registry import (
    RegistryEnv,
    deploy_env,
    increase_time,
    latest_timestamp,
    register,
)

TICK = 1_000
CATEGORIES = ("laboratory", "imaging")
PURPOSES = (Purpose.TREATMENT, Purpose.RESEARCH, Purpose.EMERGENCY)
REASONS = (keccak(text="emergency"), keccak(text="emergency, next day"))
COOLDOWN_TICKS = -(-BREAK_GLASS_COOLDOWN_S // TICK)  # 605

_ACCESS_BASIS = keccak(text="accessBasis(address,address,bytes32,uint8)")[:4]
_HAS_CONSENT = keccak(text="hasConsent(address,address,bytes32,uint8)")[:4]
_ARGS = ["address", "address", "bytes32", "uint8"]


@dataclass(frozen=True)
class RecordRef:
    record_id: bytes
    patient: str
    category: bytes


@dataclass(frozen=True)
class World:
    env: RegistryEnv
    records: tuple[RecordRef, ...]

    @property
    def patients(self) -> tuple[LocalAccount, LocalAccount]:
        return (self.env.actors.patient, self.env.actors.patient2)

    @property
    def grantees(self) -> tuple[LocalAccount, ...]:
        a = self.env.actors
        return (a.doctor, a.stranger, a.guardian, a.emergency)

    @property
    def guardian_candidates(self) -> tuple[LocalAccount, ...]:
        a = self.env.actors
        return (a.guardian, a.doctor)


@pytest.fixture(scope="module")
def world(w3: Web3, anvil: Any) -> World:
    env = deploy_env(w3, anvil.accounts)
    registry = env.client(w3)
    records = []
    for patient in (env.actors.patient, env.actors.patient2):
        for category in CATEGORIES:
            record_id = register(registry, env, patient.address, category)
            records.append(RecordRef(record_id, patient.address, category_id(category)))
    return World(env, tuple(records))


@dataclass
class Model:
    """The consent state, as the contract should hold it."""

    tick: int = 0
    # (patient, kind, scope id, grantee) -> (purposes, expires_at, expires_tick, guardian epoch)
    grants: dict[tuple[str, ScopeKind, bytes, str], tuple[int, int, int, int]] = field(
        default_factory=dict
    )
    guardians: dict[str, str] = field(default_factory=dict)
    # patient -> guardianship epoch: +1 per GuardianSet and per GuardianRemoved
    epochs: dict[str, int] = field(default_factory=dict)
    # (patient, institution) -> (until, until_tick)
    break_glass: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    # (patient, institution) -> the tick from which it may reopen after a close
    reopen_tick: dict[tuple[str, str], int] = field(default_factory=dict)
    # (patient, institution) -> the reason of the last opening
    last_reason: dict[tuple[str, str], bytes] = field(default_factory=dict)

    def holds(self, patient: str, epoch: int) -> bool:
        """A patient grant (0) always; a guardian grant while its guardianship lasts."""
        return epoch == 0 or epoch == self.epochs.get(patient, 0)

    def live(self, key: tuple[str, ScopeKind, bytes, str]) -> bool:
        """Stored and not ended with its guardian (``consentOf`` non-zero)."""
        stored = self.grants.get(key)
        return stored is not None and self.holds(key[0], stored[3])

    def basis(
        self, patient: str, grantee: str, record: RecordRef, purpose: int
    ) -> tuple[Basis, int]:
        if record.patient != patient:
            return Basis.NONE, 0
        if grantee == patient:
            return Basis.OWNER, 0
        for kind, scope_id, basis in (
            (ScopeKind.RECORD, record.record_id, Basis.RECORD),
            (ScopeKind.CATEGORY, record.category, Basis.CATEGORY),
            (ScopeKind.ALL, ALL_SCOPE_ID, Basis.ALL),
        ):
            stored = self.grants.get((patient, kind, scope_id, grantee))
            if (
                stored
                and stored[0] >> purpose & 1
                and self.tick < stored[2]
                and self.holds(patient, stored[3])
            ):
                return basis, stored[1]
        if self.guardians.get(patient) == grantee:
            return Basis.GUARDIAN, 0
        window = self.break_glass.get((patient, grantee))
        if purpose in BREAK_GLASS_PURPOSES and window and self.tick < window[1]:
            return Basis.EMERGENCY, window[0]
        return Basis.NONE, 0

    def break_glass_open(self, patient: str, institution: str) -> bool:
        window = self.break_glass.get((patient, institution))
        return window is not None and self.tick < window[1]


# (kind, index): a record index 0/1 is one of the patient's own records, 2 one of the other
# patient's (RecordNotOwned); a category index picks one of CATEGORIES.
scopes = st.one_of(
    st.tuples(st.just(ScopeKind.RECORD), st.integers(0, 2)),
    st.tuples(st.just(ScopeKind.CATEGORY), st.integers(0, 1)),
    st.tuples(st.just(ScopeKind.ALL), st.just(0)),
)
via = st.sampled_from(["patient", "guardian", "signature", "guardian signature"])


class RegistryMachine(RuleBasedStateMachine):
    w3: ClassVar[Web3]
    world: ClassVar[World]
    rpc: ClassVar[httpx.Client]
    url: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        self.snapshot = self._rpc("evm_snapshot", [])
        self.reg: ConsentRegistry = self.world.env.client(self.w3)
        self.model = Model()
        self.decoder = EventDecoder(registry_event_abi(self.world.env.abi))

    def teardown(self) -> None:
        assert self._rpc("evm_revert", [self.snapshot]) is True

    # ------------------------------------------------------------ helpers

    def _rpc(self, method: str, params: list[Any]) -> Any:
        return self.w3.provider.make_request(method, params)["result"]  # type: ignore[arg-type]

    def _scope(
        self, patient: LocalAccount, scope: tuple[ScopeKind, int]
    ) -> tuple[ScopeKind, bytes]:
        kind, index = scope
        if kind is ScopeKind.RECORD:
            own = [r for r in self.world.records if r.patient == patient.address]
            other = [r for r in self.world.records if r.patient != patient.address]
            return kind, (own[index] if index < 2 else other[0]).record_id
        if kind is ScopeKind.CATEGORY:
            return kind, category_id(CATEGORIES[index])
        return kind, ALL_SCOPE_ID

    def _actor(self, patient: LocalAccount, how: str) -> LocalAccount:
        guardian = self.model.guardians.get(patient.address)
        if how in ("guardian", "guardian signature") and guardian is not None:
            return next(a for a in self.world.guardian_candidates if a.address == guardian)
        return patient

    def _expect(self, error: type[ContractError] | None, action: Any) -> Receipt | None:
        if error is None:
            return action()  # type: ignore[no-any-return]
        with pytest.raises(error):
            action()
        return None

    # ------------------------------------------------------------ rules

    @rule(
        patient=st.integers(0, 1),
        grantee=st.integers(0, 3),
        scope=scopes,
        purposes=st.integers(1, 31),
        ticks=st.integers(1, 3),
        how=via,
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
        p = self.world.patients[patient]
        g = self.world.grantees[grantee]
        kind, scope_id = self._scope(p, scope)
        expires_at = latest_timestamp(self.w3) + ticks * TICK
        key = (p.address, kind, scope_id, g.address)
        stored = self.model.grants.get(key)
        actor = self._actor(p, how)
        epoch = 0 if actor is p else self.model.epochs[p.address]
        error: type[ContractError] | None = None
        if kind is ScopeKind.RECORD and scope[1] == 2:
            error = RecordNotOwned
        elif stored is not None and (stored[:2], stored[3]) == ((purposes, expires_at), epoch):
            error = ConsentUnchanged

        if how.endswith("signature"):
            request = eip712.GrantRequest(
                patient=p.address,
                grantee=g.address,
                scope_kind=kind,
                scope_id=scope_id,
                purposes=purposes,
                expires_at=expires_at,
                signer=actor.address,
                nonce=self.reg.nonce_of(actor.address),
                deadline=expires_at,
            )
            signature = eip712.sign(actor, self.reg.domain, request)
            self._expect(
                error,
                lambda: self.reg.grant_by_sig(self.world.env.actors.relayer, request, signature),
            )
        elif actor is p:
            self._expect(
                error, lambda: self.reg.grant(p, g.address, kind, scope_id, purposes, expires_at)
            )
        else:
            self._expect(
                error,
                lambda: self.reg.grant_for(
                    actor, p.address, g.address, kind, scope_id, purposes, expires_at
                ),
            )
        if error is None:
            self.model.grants[key] = (purposes, expires_at, self.model.tick + ticks, epoch)

    @precondition(lambda self: bool(self.model.grants))
    @rule(data=st.data(), how=via)
    def revoke_stored(self, data: st.DataObject, how: str) -> None:
        key = data.draw(st.sampled_from(sorted(self.model.grants)))
        patient = next(i for i, p in enumerate(self.world.patients) if p.address == key[0])
        grantee = next(i for i, g in enumerate(self.world.grantees) if g.address == key[3])
        self._revoke(patient, grantee, key[1], key[2], how)

    @rule(patient=st.integers(0, 1), grantee=st.integers(0, 3), scope=scopes, how=via)
    def revoke(self, patient: int, grantee: int, scope: tuple[ScopeKind, int], how: str) -> None:
        kind, scope_id = self._scope(self.world.patients[patient], scope)
        self._revoke(patient, grantee, kind, scope_id, how)

    def _revoke(
        self, patient: int, grantee: int, kind: ScopeKind, scope_id: bytes, how: str
    ) -> None:
        p = self.world.patients[patient]
        g = self.world.grantees[grantee]
        key = (p.address, kind, scope_id, g.address)
        error = None if self.model.live(key) else ConsentNotFound
        actor = self._actor(p, how)
        if how.endswith("signature"):
            request = eip712.RevokeRequest(
                patient=p.address,
                grantee=g.address,
                scope_kind=kind,
                scope_id=scope_id,
                signer=actor.address,
                nonce=self.reg.nonce_of(actor.address),
                deadline=latest_timestamp(self.w3) + TICK,
            )
            signature = eip712.sign(actor, self.reg.domain, request)
            self._expect(
                error,
                lambda: self.reg.revoke_by_sig(self.world.env.actors.relayer, request, signature),
            )
        elif actor is p:
            self._expect(error, lambda: self.reg.revoke(p, g.address, kind, scope_id))
        else:
            self._expect(
                error, lambda: self.reg.revoke_for(actor, p.address, g.address, kind, scope_id)
            )
        if error is None:
            del self.model.grants[key]

    @rule(patient=st.integers(0, 1), candidate=st.integers(0, 2))
    def set_guardian(self, patient: int, candidate: int) -> None:
        p = self.world.patients[patient]
        guardian = p if candidate == 2 else self.world.guardian_candidates[candidate]
        current = self.model.guardians.get(p.address)
        error: type[ContractError] | None = None
        if guardian.address == p.address:
            error = InvalidGuardian
        elif current == guardian.address:
            error = GuardianUnchanged
        self._expect(error, lambda: self.reg.set_guardian(p, guardian.address))
        if error is None:
            bumps = 2 if current is not None else 1  # a replacement emits Removed, then Set
            self.model.epochs[p.address] = self.model.epochs.get(p.address, 0) + bumps
            self.model.guardians[p.address] = guardian.address

    @rule(patient=st.integers(0, 1))
    def remove_guardian(self, patient: int) -> None:
        p = self.world.patients[patient]
        has_guardian = p.address in self.model.guardians
        self._expect(None if has_guardian else NoGuardian, lambda: self.reg.remove_guardian(p))
        if has_guardian:
            del self.model.guardians[p.address]
            self.model.epochs[p.address] += 1

    @rule(patient=st.integers(0, 1), ticks=st.integers(1, 3), reason=st.sampled_from(REASONS))
    def open_break_glass(self, patient: int, ticks: int, reason: bytes) -> None:
        p = self.world.patients[patient]
        institution = self.world.env.actors.emergency
        key = (p.address, institution.address)
        error: type[ContractError] | None = None
        if self.model.break_glass_open(*key):
            error = BreakGlassAlreadyOpen
        elif self.model.tick < self.model.reopen_tick.get(key, 0):
            error = BreakGlassCoolingDown
        elif self.model.last_reason.get(key) == reason:
            error = BreakGlassReasonReused
        receipt = self._expect(
            error,
            lambda: self.reg.open_break_glass(institution, p.address, ticks * TICK, reason),
        )
        if receipt is not None:
            until = int(self.w3.eth.get_block(receipt.block_number)["timestamp"]) + ticks * TICK
            self.model.break_glass[key] = (until, self.model.tick + ticks)
            self.model.last_reason[key] = reason

    @rule(patient=st.integers(0, 1), how=st.sampled_from(["patient", "guardian"]))
    def close_break_glass(self, patient: int, how: str) -> None:
        p = self.world.patients[patient]
        institution = self.world.env.actors.emergency
        is_open = self.model.break_glass_open(p.address, institution.address)
        closer = self._actor(p, how)
        self._expect(
            None if is_open else BreakGlassNotOpen,
            lambda: self.reg.close_break_glass(closer, p.address, institution.address),
        )
        if is_open:
            del self.model.break_glass[(p.address, institution.address)]
            self.model.reopen_tick[(p.address, institution.address)] = (
                self.model.tick + COOLDOWN_TICKS
            )

    @rule(signer=st.integers(0, 1))
    def burn_nonce(self, signer: int) -> None:
        account = self.world.patients[signer]
        before = self.reg.nonce_of(account.address)
        self.reg.burn_nonce(account, before)
        assert self.reg.nonce_of(account.address) == before + 1

    @rule(ticks=st.integers(1, 2))
    def time_travel(self, ticks: int) -> None:
        increase_time(self.w3, ticks * TICK)
        self.model.tick += ticks

    @precondition(lambda self: bool(self.model.reopen_tick))
    @rule(ticks=st.sampled_from([COOLDOWN_TICKS - 1, COOLDOWN_TICKS]))
    def wait_out_a_cool_down(self, ticks: int) -> None:
        increase_time(self.w3, ticks * TICK)
        self.model.tick += ticks

    # ------------------------------------------------------------ the property

    @invariant()
    def chain_matches_model(self) -> None:
        block = hex(self.w3.eth.block_number)
        cases = [
            (p.address, g.address, record, purpose)
            for p in self.world.patients
            for g in (*self.world.grantees, p)
            for record in self.world.records
            for purpose in PURPOSES
        ]
        batch = []
        for i, (patient, grantee, record, purpose) in enumerate(cases):
            args = abi_encode(_ARGS, [patient, grantee, record.record_id, int(purpose)])
            for j, selector in enumerate((_HAS_CONSENT, _ACCESS_BASIS)):
                call = {"to": self.reg.address, "data": "0x" + (selector + args).hex()}
                batch.append(
                    {
                        "jsonrpc": "2.0",
                        "id": 2 * i + j,
                        "method": "eth_call",
                        "params": [call, block],
                    }
                )
        answers = {
            a["id"]: bytes.fromhex(a["result"][2:])
            for a in self.rpc.post(self.url, json=batch).json()
        }
        number = int(block, 16)
        timestamp = int(self.w3.eth.get_block(number)["timestamp"])
        timeline = self._replayed(number)
        for i, (patient, grantee, record, purpose) in enumerate(cases):
            expected_basis, expected_until = self.model.basis(patient, grantee, record, purpose)
            (has,) = abi_decode(["bool"], answers[2 * i])
            basis, until = abi_decode(["uint8", "uint64"], answers[2 * i + 1])
            where = f"{patient=} {grantee=} record={record.record_id.hex()[:8]} {purpose=!s}"
            assert has is (expected_basis is not Basis.NONE), where
            assert (Basis(basis), until) == (expected_basis, expected_until), where
            replayed = timeline.access_basis_at(
                patient, grantee, record.record_id, int(purpose),
                block_number=number, block_timestamp=timestamp,
            )  # fmt: skip
            assert replayed == (expected_basis, expected_until), f"replay: {where}"
        for key in self.model.grants:
            patient, kind, scope_id, grantee = key
            terms = self.reg.consent_of(patient, grantee, kind, scope_id, block_identifier=number)
            stored = timeline.grant_at(patient, grantee, kind, scope_id, number)
            expected = self.model.grants[key][:2] if self.model.live(key) else (0, 0)
            assert (terms.purposes, terms.expires_at) == expected, key
            replayed_terms = (stored.purposes, stored.expires_at) if stored else (0, 0)
            assert replayed_terms == expected, f"replay: {key}"

    def _replayed(self, block: int) -> ConsentTimeline:
        """The audit's replay up to ``block``: complete against the event digest, folded."""
        result = replay(
            RpcClient(self.url, client=self.rpc),
            address=self.reg.address,
            from_block=self.world.env.deploy_block,
            decoder=self.decoder,
            target_block=block,
        )
        assert result.complete, result.problems
        return ConsentTimeline(result.events)


def test_has_consent_matches_the_python_model(chain: Web3, world: World, anvil: Any) -> None:
    RegistryMachine.w3 = chain
    RegistryMachine.world = world
    RegistryMachine.url = anvil.url
    with httpx.Client(timeout=30) as rpc:
        RegistryMachine.rpc = rpc
        run_state_machine_as_test(
            RegistryMachine,
            settings=settings(max_examples=25, stateful_step_count=20, deadline=None),
        )
