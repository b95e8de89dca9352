"""The verified consent index on a real anvil: decisions equal the contract's, a node that lies
about the logs is refused, snapshots resume only where the chain confirms them, reorganisations
roll back to the common ancestor, unknown events are folded and counted.

The audit world (``tests.plugins.audit``) is the history most tests index: every scope, an
expiry, a guardian, break-glass opened and closed, a revoke, two events in one block.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from web3 import Web3

from ledger.audit.state import ConsentTimeline
from ledger.chain.rpc import RpcClient
from ledger.index import (
    BlockRef,
    ConsentIndex,
    ConsentIndexError,
    ConsentState,
    IndexRefused,
    ReorgTooDeep,
    SnapshotInvalid,
)
from ledger.index.fold import access_basis
from ledger.protocol.consent_types import (
    ALL_SCOPE_ID,
    EMERGENCY_ROLE,
    GATEWAY_ROLE,
    NO_EXPIRY,
    Basis,
    Purpose,
    ScopeKind,
    category_id,
)
from ledger.protocol.contract_errors import InvalidPurpose
from ledger.protocol.events import (
    BreakGlassClosed,
    BreakGlassOpened,
    ConsentGranted,
    ConsentRevoked,
    EventDecoder,
    GuardianRemoved,
    GuardianSet,
    RecordRegistered,
    RegistryEvent,
    RoleGranted,
    RoleRevoked,
    registry_event_abi,
)
from tests.helpers.audit_world import World
from tests.helpers.index import chain_consents, chain_decisions, chain_roles, editing_client
from tests.helpers.registry import (
    RegistryEnv,
    deploy_env,
    increase_time,
    latest_timestamp,
    register,
)

PURPOSES = (Purpose.TREATMENT, Purpose.RESEARCH, Purpose.INSURANCE, Purpose.EMERGENCY)


def head_at(rpc: RpcClient, block: int) -> BlockRef:
    return BlockRef.from_header(rpc.call("eth_getBlockByNumber", [hex(block), False]))


def world_index(world: World, rpc: RpcClient | None = None, **kw: Any) -> ConsentIndex:
    return ConsentIndex(
        rpc or world.rpc(),
        address=world.address,
        start_block=world.deploy_block,
        decoder=world.decoder(),
        **kw,
    )


def world_queries(world: World) -> list[tuple[str, str, bytes, int]]:
    a = world.actors
    grantees = [a.patient, a.doctor, a.researcher, a.insurer, a.er, a.guardian, a.stranger]
    return [
        (a.patient.address, g.address, record, int(purpose))
        for g in grantees
        for record in (world.rec_lab, world.rec_img, bytes(32))
        for purpose in PURPOSES
    ]


def assert_matches_chain(index: ConsentIndex, rpc: RpcClient, queries: list[Any]) -> int:
    """Every query answered by the index equals ``accessDecision`` at the index's block."""
    position = index.position
    assert position is not None
    chain = chain_decisions(rpc, index.address, queries, position.block_number)
    for query, expected in zip(queries, chain, strict=True):
        assert index.access_decision(*query) == expected, query
    return position.block_number


# ------------------------------------------------------------------------------ honest node


def test_every_past_block_of_the_audit_world_decides_as_the_contract(world: World) -> None:
    rpc = world.rpc()
    index = world_index(world, rpc, range_blocks=1)  # one block per range: stop at each
    queries = world_queries(world)
    seen: set[Basis] = set()
    for block in range(world.deploy_block, world.end_block + 1):
        index.sync(head_at(rpc, block))
        assert index.position is not None
        assert index.position.block_number == block
        assert_matches_chain(index, rpc, queries)
        seen |= {index.access_decision(*q).basis for q in queries}
    assert seen == set(Basis)  # every basis occurred, each decided as the contract did
    assert index.stats.digest_checks >= world.end_block - world.deploy_block
    assert not index.unknown_events


def test_one_sync_equals_block_by_block(world: World) -> None:
    rpc = world.rpc()
    index = world_index(world, rpc)
    position = index.sync(head_at(rpc, world.end_block))
    timeline = ConsentTimeline(_events(world))
    assert position.event_count == timeline.event_count
    assert_matches_chain(index, rpc, world_queries(world))
    a = world.actors
    granted = index.consents(a.patient.address).granted
    keys = [g.key for g in granted]
    assert keys, "the patient's consents are listed"
    terms = chain_consents(rpc, index.address, keys, position.block_number)
    assert [(g.purposes, g.expires_at) for g in granted] == terms
    received = index.consents(a.doctor.address).received
    assert {g.grantee for g in received} == {a.doctor.address}
    assert all(g.key in keys for g in received)


def _events(world: World) -> list[RegistryEvent]:
    from ledger.audit.replay import replay

    result = replay(
        world.rpc(),
        address=world.address,
        from_block=world.deploy_block,
        decoder=world.decoder(),
        target_block=world.end_block,
    )
    assert result.complete
    return result.events


def test_a_purpose_above_31_is_refused_as_the_contract_reverts(world: World) -> None:
    rpc = world.rpc()
    index = world_index(world, rpc)
    index.sync(head_at(rpc, world.end_block))
    a = world.actors
    with pytest.raises(InvalidPurpose):
        index.access_decision(a.patient.address, a.doctor.address, world.rec_lab, 32)


def test_no_decision_before_the_first_sync(world: World) -> None:
    index = world_index(world)
    a = world.actors
    with pytest.raises(ConsentIndexError, match="not caught up"):
        index.access_decision(a.patient.address, a.doctor.address, world.rec_lab, 0)


def test_an_event_the_index_does_not_know_is_folded_and_counted(world: World) -> None:
    """An index older than the registry (its ABI lacks an event the registry emits) still
    proves every block: the unknown log is folded into the digest and counted, nothing else."""
    abi = [e for e in registry_event_abi(world.interface_abi) if e["name"] != "BreakGlassClosed"]
    rpc = world.rpc()
    index = world_index(world, rpc)
    index.decoder = EventDecoder(abi)
    position = index.sync(head_at(rpc, world.end_block))
    closed = EventDecoder(registry_event_abi(world.interface_abi)).topic0_of("BreakGlassClosed")
    assert index.unknown_events == {"0x" + closed.hex(): 1}
    assert position.event_count == len(_events(world))
    assert index.refused is None


# ------------------------------------------------------------------------------ lying node


def _lying_logs(world: World, change: Any) -> RpcClient:
    def edit(method: str, params: list[Any], result: Any) -> Any:
        return change(result) if method == "eth_getLogs" else result

    rpc, _ = editing_client(world.url, edit=edit)
    world.open_clients.append(rpc)
    return rpc


def _assert_refused(world: World, rpc: RpcClient, block: int | None) -> IndexRefused:
    index = world_index(world, rpc)
    with pytest.raises(IndexRefused) as caught:
        index.sync(head_at(rpc, world.end_block))
    assert index.refused is not None
    if block is not None:
        assert caught.value.block == block
    a = world.actors
    with pytest.raises(IndexRefused):  # the flag holds: no decision at all, not a stale one
        index.access_decision(a.patient.address, a.patient.address, world.rec_lab, 0)
    with pytest.raises(IndexRefused):
        index.sync(head_at(world.rpc(), world.end_block))
    return caught.value


def test_a_node_that_drops_the_revoke_is_refused(world: World) -> None:
    def drop(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [log for log in logs if int(log["blockNumber"], 16) != world.revoke_block]

    refused = _assert_refused(world, _lying_logs(world, drop), None)
    assert "digest" in refused.reason


def test_a_node_that_invents_a_log_is_refused(world: World) -> None:
    def invent(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not logs:
            return logs
        fake = dict(logs[-1])
        fake["logIndex"] = hex(int(fake["logIndex"], 16) + 7)
        return [*logs, fake]

    _assert_refused(world, _lying_logs(world, invent), None)


def test_a_node_that_reorders_two_logs_of_a_block_is_refused(world: World) -> None:
    block = world.two_in_one_block

    def swap(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        same = [log for log in logs if int(log["blockNumber"], 16) == block]
        if len(same) == 2:
            same[0]["logIndex"], same[1]["logIndex"] = same[1]["logIndex"], same[0]["logIndex"]
        return logs

    _assert_refused(world, _lying_logs(world, swap), block)


def test_a_node_that_alters_a_log_is_refused(world: World) -> None:
    def alter(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for log in logs:
            if int(log["blockNumber"], 16) == world.revoke_block:
                log["data"] = log["data"][:-1] + ("1" if log["data"][-1] != "1" else "2")
        return logs

    _assert_refused(world, _lying_logs(world, alter), world.revoke_block)


def test_a_log_of_another_contract_is_refused(world: World) -> None:
    def foreign(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for log in logs[:1]:
            log["address"] = "0x" + "11" * 20
        return logs

    refused = _assert_refused(world, _lying_logs(world, foreign), None)
    assert "another" in refused.reason or "0x1111" in refused.reason


def test_a_log_outside_the_blocks_asked_for_is_refused(world: World) -> None:
    def move(method: str, params: list[Any], result: Any) -> Any:
        if method == "eth_getLogs" and result:
            result[0]["blockNumber"] = hex(int(params[0]["toBlock"], 16) + 50)
        return result

    rpc, _ = editing_client(world.url, edit=move)
    world.open_clients.append(rpc)
    refused = _assert_refused(world, rpc, None)
    assert "for blocks" in refused.reason


def test_reset_after_a_refusal_replays_from_the_start(world: World) -> None:
    lies = {"on": True}

    def drop(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return logs[1:] if lies["on"] else logs

    rpc = _lying_logs(world, drop)
    index = world_index(world, rpc)
    with pytest.raises(IndexRefused):
        index.sync(head_at(rpc, world.end_block))
    lies["on"] = False
    index.reset()
    index.sync(head_at(rpc, world.end_block))
    assert_matches_chain(index, world.rpc(), world_queries(world))


def test_a_removed_log_makes_the_index_refetch(world: World) -> None:
    """``removed: true`` is a reorganisation signal: nothing of that answer is applied."""
    first = {"done": False}

    def mark(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if logs and not first["done"]:
            first["done"] = True
            return [{**logs[0], "removed": True}, *logs[1:]]
        return logs

    rpc = _lying_logs(world, mark)
    index = world_index(world, rpc)
    index.sync(head_at(rpc, world.end_block))
    assert index.stats.reorgs_seen == 1
    assert_matches_chain(index, world.rpc(), world_queries(world))


# ------------------------------------------------------------------------------ snapshots


def test_a_restart_resumes_from_the_snapshot(world: World, tmp_path: Path) -> None:
    rpc = world.rpc()
    middle = world.revoke_block
    path = tmp_path / "index.json"
    first = world_index(world, rpc, snapshot_path=path)
    first.sync(head_at(rpc, middle))
    first.save_snapshot()
    assert not list(tmp_path.glob(".index.json.*")), "no temporary file is left behind"

    counted, transport = editing_client(world.url)
    world.open_clients.append(counted)
    resumed = ConsentIndex.open(
        counted,
        address=world.address,
        start_block=world.deploy_block,
        snapshot_path=path,
        decoder=world.decoder(),
    )
    assert resumed.position == first.position
    assert_matches_chain(resumed, rpc, world_queries(world))
    assert transport.calls["eth_getLogs"] == 0, "nothing replayed to resume"
    end = resumed.sync(head_at(rpc, world.end_block))
    assert_matches_chain(resumed, rpc, world_queries(world))
    assert first.position is not None
    assert resumed.stats.events == end.event_count - first.position.event_count


def test_a_damaged_snapshot_is_refused(world: World, tmp_path: Path) -> None:
    rpc = world.rpc()
    path = tmp_path / "index.json"
    index = world_index(world, rpc, snapshot_path=path)
    index.sync(head_at(rpc, world.end_block))
    index.save_snapshot()
    body = json.loads(path.read_bytes())
    body["state"]["grants"] = body["state"]["grants"][1:]  # a grant silently lost
    path.write_text(json.dumps(body))
    with pytest.raises(SnapshotInvalid, match="checksum"):
        world_index(world, rpc).load_snapshot(path)
    path.write_text("{not json")
    with pytest.raises(SnapshotInvalid, match="unreadable"):
        world_index(world, rpc).load_snapshot(path)


def test_a_snapshot_whose_digest_the_chain_does_not_hold_is_refused(
    world: World, tmp_path: Path
) -> None:
    """A snapshot claiming a position the chain never had (here: one event short) is never
    served, even with a consistent checksum."""
    from ledger.index.snapshot import read_snapshot, write_snapshot

    rpc = world.rpc()
    path = tmp_path / "index.json"
    index = world_index(world, rpc, snapshot_path=path)
    index.sync(head_at(rpc, world.end_block))
    index.save_snapshot()
    snapshot = read_snapshot(path)
    forged = type(snapshot.position)(**{**snapshot.position.__dict__, "event_count": 1})
    write_snapshot(path, type(snapshot)(**{**snapshot.__dict__, "position": forged}))
    with pytest.raises(SnapshotInvalid, match="digest"):
        world_index(world, rpc).load_snapshot(path)
    fresh = ConsentIndex.open(
        rpc,
        address=world.address,
        start_block=world.deploy_block,
        snapshot_path=path,
        decoder=world.decoder(),
    )
    assert fresh.position is None  # falls back to indexing from the start block


# ------------------------------------------------------------------------------ reorganisations


@pytest.fixture(scope="module")
def env(w3: Web3, anvil: Any) -> RegistryEnv:
    return deploy_env(w3, anvil.accounts)


@pytest.fixture
def rpc(anvil: Any) -> Iterator[RpcClient]:
    client = RpcClient(anvil.url)
    try:
        yield client
    finally:
        client.close()


def _env_index(env: RegistryEnv, rpc: RpcClient, **kw: Any) -> ConsentIndex:
    decoder = EventDecoder(registry_event_abi(env.abi))
    return ConsentIndex(
        rpc, address=env.address, start_block=env.deploy_block, decoder=decoder, **kw
    )


def _rpc(w3: Web3, method: str, params: list[Any]) -> Any:
    return w3.provider.make_request(method, params)["result"]  # type: ignore[arg-type]


def test_a_reorganisation_rolls_back_to_the_common_ancestor(
    chain: Web3, env: RegistryEnv, rpc: RpcClient
) -> None:
    registry = env.client(chain)
    a = env.actors
    record = register(registry, env, a.patient.address)
    index = _env_index(env, rpc)
    queries = [
        (a.patient.address, g.address, record, int(p))
        for g in (a.doctor, a.stranger, a.guardian)
        for p in PURPOSES
    ]
    ancestor = index.sync().block_number
    fork = _rpc(chain, "evm_snapshot", [])
    registry.grant(a.patient, a.doctor.address, ScopeKind.ALL, ALL_SCOPE_ID, 0b11, NO_EXPIRY)
    registry.set_guardian(a.patient, a.guardian.address)
    old = index.sync()
    assert index.access_decision(*queries[0]).basis is Basis.ALL
    # The other branch: from the ancestor, longer, with other events.
    assert _rpc(chain, "evm_revert", [fork]) is True
    registry.reset_nonces()
    registry.grant(a.patient, a.stranger.address, ScopeKind.RECORD, record, 0b1, NO_EXPIRY)
    for _ in range(3):
        _rpc(chain, "evm_mine", [])
    new = index.sync()
    assert new.block_number > old.block_number
    assert index.stats.rollbacks == 1
    assert index.stats.blocks_rolled_back == old.block_number - ancestor
    assert_matches_chain(index, rpc, queries)
    assert index.access_decision(*queries[0]).basis is Basis.NONE  # the grant is gone
    assert index.consents(a.patient.address).granted[0].grantee == a.stranger.address


def test_a_same_height_reorganisation_is_seen(
    chain: Web3, env: RegistryEnv, rpc: RpcClient
) -> None:
    """anvil_reorg replaces the last blocks with others at the same heights."""
    registry = env.client(chain)
    a = env.actors
    record = register(registry, env, a.patient.address)
    index = _env_index(env, rpc)
    registry.grant(a.patient, a.doctor.address, ScopeKind.RECORD, record, 0b1, NO_EXPIRY)
    before = index.sync()
    query = (a.patient.address, a.doctor.address, record, 0)
    assert index.access_decision(*query).basis is Basis.RECORD
    _rpc(chain, "anvil_reorg", [1, []])  # the grant's block, replaced by an empty one
    registry.reset_nonces()
    after = index.sync()
    assert after.block_number == before.block_number
    assert after.block_hash != before.block_hash
    assert after.event_count == before.event_count - 1
    assert index.access_decision(*query).basis is Basis.NONE
    assert_matches_chain(index, rpc, [query])


def test_a_reorganisation_below_the_kept_undo_is_refused(
    chain: Web3, env: RegistryEnv, rpc: RpcClient
) -> None:
    registry = env.client(chain)
    a = env.actors
    index = _env_index(env, rpc, max_reorg_depth=2)
    fork = _rpc(chain, "evm_snapshot", [])
    for purposes in (1, 2, 3, 1, 2):
        registry.grant(
            a.patient, a.doctor.address, ScopeKind.ALL, ALL_SCOPE_ID, purposes, NO_EXPIRY
        )
    index.sync()
    assert _rpc(chain, "evm_revert", [fork]) is True
    registry.reset_nonces()
    for _ in range(8):
        _rpc(chain, "evm_mine", [])
    with pytest.raises(ReorgTooDeep):
        index.sync()
    assert isinstance(index.refused, ReorgTooDeep)


def test_roles_follow_grants_and_revokes(chain: Web3, env: RegistryEnv, rpc: RpcClient) -> None:
    registry = env.client(chain)
    a = env.actors
    index = _env_index(env, rpc)
    registry.grant_role(a.admin, EMERGENCY_ROLE, a.stranger.address)
    registry.revoke_role(a.admin, EMERGENCY_ROLE, a.emergency.address)
    registry.grant_role(a.admin, GATEWAY_ROLE, a.doctor.address)
    position = index.sync()
    pairs = [
        (role, acct.address)
        for role in (EMERGENCY_ROLE, GATEWAY_ROLE)
        for acct in (a.stranger, a.emergency, a.doctor, a.gateway)
    ]
    ours = [
        index.query(functools.partial(ConsentState.has_role, role=r, account=x))[0]
        for r, x in pairs
    ]
    assert ours == chain_roles(rpc, env.address, pairs, position.block_number)
    members, _ = index.query(lambda s: s.role_members(EMERGENCY_ROLE))
    assert members == {a.stranger.address}


def test_expiry_is_judged_at_the_chain_time_of_the_position(
    chain: Web3, env: RegistryEnv, rpc: RpcClient
) -> None:
    registry = env.client(chain)
    a = env.actors
    record = register(registry, env, a.patient.address)
    index = _env_index(env, rpc)
    expires = latest_timestamp(chain) + 100
    registry.grant(
        a.patient, a.doctor.address, ScopeKind.CATEGORY, category_id("laboratory"), 0b1, expires
    )
    query = (a.patient.address, a.doctor.address, record, 0)
    index.sync()
    assert index.access_decision(*query).basis is Basis.CATEGORY
    increase_time(chain, 200)  # a new block, past the expiry
    decision = index.access_decision(*query)
    assert decision.basis is Basis.CATEGORY  # the index has not seen the new block yet
    index.sync()
    assert index.access_decision(*query).basis is Basis.NONE
    assert_matches_chain(index, rpc, [query])


# ------------------------------------------------------------------------------ one state machine


_A = [Web3.to_checksum_address(f"0x{i:040x}") for i in range(1, 7)]
_REC = [bytes([i]) * 32 for i in range(1, 4)]
_CAT = [category_id("laboratory"), category_id("imaging")]


@st.composite
def _histories(draw: st.DrawFn) -> list[RegistryEvent]:
    """Random, contract-shaped event sequences over a few accounts (no chain)."""
    events: list[RegistryEvent] = []
    patient = _A[0]
    for i, rid in enumerate(_REC):
        events.append(
            RecordRegistered(
                1,
                i,
                "0x",
                rid,
                patient if i < 2 else _A[1],
                _A[5],
                _CAT[i % 2],
                bytes(32),
                1,
                "cid",
            )
        )
    steps = draw(st.lists(st.integers(0, 6), min_size=1, max_size=40))
    for n, kind in enumerate(steps, start=2):
        who = draw(st.sampled_from(_A[1:5]))
        at = (n, 0)
        if kind == 0:
            scope = draw(
                st.sampled_from(
                    [
                        (ScopeKind.RECORD, _REC[0]),
                        (ScopeKind.RECORD, _REC[1]),
                        (ScopeKind.CATEGORY, _CAT[0]),
                        (ScopeKind.ALL, bytes(32)),
                    ]
                )
            )
            actor = draw(st.sampled_from([patient, _A[4]]))
            events.append(
                ConsentGranted(
                    *at,
                    "0x",
                    patient,
                    who,
                    *scope,
                    draw(st.integers(1, 31)),
                    draw(st.integers(5, 60)),
                    actor,
                )
            )
        elif kind == 1:
            scope = draw(st.sampled_from([(ScopeKind.RECORD, _REC[0]), (ScopeKind.ALL, bytes(32))]))
            events.append(ConsentRevoked(*at, "0x", patient, who, *scope, patient))
        elif kind == 2:
            events.append(GuardianSet(*at, "0x", patient, who))
        elif kind == 3:
            events.append(GuardianRemoved(*at, "0x", patient, who))
        elif kind == 4:
            events.append(
                BreakGlassOpened(*at, "0x", patient, who, draw(st.integers(5, 60)), bytes(32))
            )
        elif kind == 5:
            events.append(BreakGlassClosed(*at, "0x", patient, who, patient, 99))
        else:
            role = RoleGranted if draw(st.booleans()) else RoleRevoked
            events.append(role(*at, "0x", EMERGENCY_ROLE, who, _A[5]))
    return events


@settings(max_examples=60, deadline=None)
@given(history=_histories(), now=st.integers(0, 70))
def test_the_index_state_and_the_audit_timeline_agree(
    history: list[RegistryEvent], now: int
) -> None:
    """The index's state now and the audit's timeline at the last position answer alike."""
    state = ConsentState()
    for event in history:
        state.apply(event)
    timeline = ConsentTimeline(history)
    last = history[-1].block_number
    for grantee in _A:
        for rid in _REC:
            for purpose in (0, 1, 4):
                ours = access_basis(state, _A[0], grantee, rid, purpose, now)
                theirs = timeline.access_basis_at(
                    _A[0], grantee, rid, purpose, block_number=last, block_timestamp=now
                )
                assert ours == theirs
        for kind, sid in ((ScopeKind.RECORD, _REC[0]), (ScopeKind.ALL, bytes(32))):
            stored = state.consent_of(_A[0], grantee, kind, sid)
            assert stored == timeline.grant_at(_A[0], grantee, kind, sid, last)
        assert state.has_role(EMERGENCY_ROLE, grantee) == timeline.has_role_at(
            EMERGENCY_ROLE, grantee, last
        )
    # and the state survives its snapshot body
    again = ConsentState.from_json(json.loads(json.dumps(state.to_json())))
    assert again.to_json() == state.to_json()


@settings(max_examples=40, deadline=None)
@given(history=_histories(), cut=st.integers(0, 40))
def test_undo_restores_the_state_exactly(history: list[RegistryEvent], cut: int) -> None:
    state = ConsentState()
    cut = min(cut, len(history))
    for event in history[:cut]:
        state.apply(event)
    before = _canonical(state)
    state.journal = []
    for event in history[cut:]:
        state.apply(event)
    journal, state.journal = state.journal, None
    state.undo(journal)
    assert _canonical(state) == before
    assert state.granted_by(_A[0]) == [g for g in state.granted_by(_A[0])]


def _canonical(state: ConsentState) -> str:
    body = state.to_json()
    return json.dumps(
        {k: sorted(v, key=json.dumps) if isinstance(v, list) else v for k, v in body.items()},
        sort_keys=True,
    )
