"""The consent state rebuilt from events equals what the contract answered at each past block."""

from __future__ import annotations

import pytest

from ledger.audit.replay import BlockClock, replay
from ledger.audit.state import ConsentTimeline, OutOfOrderEvent
from ledger.protocol.consent_types import Basis, Purpose, ScopeKind


@pytest.fixture
def timeline(world) -> ConsentTimeline:
    result = replay(
        world.rpc(),
        address=world.address,
        from_block=world.deploy_block,
        decoder=world.decoder(),
        target_block=world.end_block,
    )
    assert result.complete
    return ConsentTimeline(result.events)


def test_state_at_every_past_block_matches_has_consent(world, timeline, w3) -> None:
    registry = world.registry(w3)
    clock = BlockClock(world.rpc())
    a = world.actors
    grantees = [a.patient.address, a.doctor.address, a.researcher.address, a.insurer.address,
                a.er.address, a.guardian.address, a.stranger.address]  # fmt: skip
    blocks = range(world.deploy_block, world.end_block + 1)
    times = clock.timestamps(blocks)
    checked = 0
    for block in blocks:
        for grantee in grantees:
            for record in (world.rec_lab, world.rec_img, bytes(32)):
                for purpose in (
                    Purpose.TREATMENT,
                    Purpose.RESEARCH,
                    Purpose.INSURANCE,
                    Purpose.EMERGENCY,
                ):
                    ours = timeline.access_basis_at(
                        a.patient.address, grantee, record, int(purpose),
                        block_number=block, block_timestamp=times[block],
                    )  # fmt: skip
                    chain = registry.access_basis(
                        a.patient.address, grantee, record, int(purpose), block_identifier=block
                    )
                    assert ours == (chain.basis, chain.until), (
                        block,
                        grantee,
                        record.hex(),
                        purpose,
                    )
                    allowed = registry.has_consent(
                        a.patient.address, grantee, record, int(purpose), block_identifier=block
                    )
                    assert (
                        timeline.access_at(
                            a.patient.address, grantee, record, int(purpose), block, times[block]
                        )[0]
                        == allowed
                    )
                    checked += 1
    assert checked > 1000


def test_every_basis_occurs_in_the_world(world, timeline) -> None:
    clock = BlockClock(world.rpc())
    a = world.actors
    seen: set[Basis] = set()
    for block in range(world.deploy_block, world.end_block + 1):
        ts = clock.timestamp(block)
        for grantee, record, purpose in world.reads:
            seen.add(timeline.access_at(a.patient.address, grantee, record, purpose, block, ts)[1])
    assert {
        Basis.NONE,
        Basis.OWNER,
        Basis.RECORD,
        Basis.CATEGORY,
        Basis.ALL,
        Basis.GUARDIAN,
        Basis.EMERGENCY,
    } <= seen


def test_state_at_lists_grants_in_force_and_lapsed(world, timeline) -> None:
    clock = BlockClock(world.rpc())
    a = world.actors
    before = world.checkpoints[0].block_number
    state = timeline.state_at(
        a.patient.address, block_number=before, timestamp=clock.timestamp(before)
    )
    assert {(g.grantee, g.scope_kind) for g in state.grants} == {
        (a.doctor.address, ScopeKind.RECORD),
        (a.researcher.address, ScopeKind.CATEGORY),
        (a.insurer.address, ScopeKind.ALL),
    }
    assert len(state.records) == 2
    assert state.guardian is None
    end = world.end_block
    later = timeline.state_at(a.patient.address, block_number=end, timestamp=clock.timestamp(end))
    assert {g.grantee for g in later.grants} == {a.doctor.address}
    assert {g.grantee for g in later.expired} == {a.researcher.address}
    assert later.guardian == a.guardian.address
    assert later.break_glass == ()


def test_invalid_purpose_is_refused_like_the_contract(timeline, world) -> None:
    with pytest.raises(ValueError, match="InvalidPurpose"):
        timeline.access_at(
            world.actors.patient.address,
            world.actors.doctor.address,
            world.rec_lab,
            32,
            world.end_block,
            0,
        )


def test_events_out_of_order_are_refused(world) -> None:
    result = replay(
        world.rpc(),
        address=world.address,
        from_block=world.deploy_block,
        decoder=world.decoder(),
        target_block=world.end_block,
    )
    timeline = ConsentTimeline(result.events[:5])
    with pytest.raises(OutOfOrderEvent):
        timeline.apply(result.events[2])


def test_the_replay_ends_a_guardians_grants_with_the_guardian(anvil, chain, request) -> None:
    """The audit's replay of a guardian's front-run grant, its removal, a re-appointment, a
    replacement, a nonce burn and a break-glass close agrees with the contract at every block."""
    from eth_utils.crypto import keccak

    from ledger.chain.rpc import RpcClient
    from ledger.protocol.consent_types import ALL_SCOPE_ID
    from ledger.protocol.events import (
        BreakGlassClosed,
        BreakGlassOpened,
        EventDecoder,
        GuardianRemoved,
        NonceBurned,
        registry_event_abi,
    )
    from tests.helpers.registry import deploy_env, register

    env = deploy_env(chain, anvil.accounts)
    reg = env.client(chain)
    a = env.actors
    p = a.patient.address
    record = register(reg, env, p)
    reg.grant(a.patient, a.doctor.address, ScopeKind.ALL, ALL_SCOPE_ID, 1, 2**40)
    reg.set_guardian(a.patient, a.guardian.address)
    made = reg.grant_for(a.guardian, p, a.stranger.address, ScopeKind.ALL, ALL_SCOPE_ID,
                         2**32 - 1, 2**64 - 1)  # fmt: skip
    removed = reg.remove_guardian(a.patient)
    reg.set_guardian(a.patient, a.guardian.address)  # re-appointed: the old grant stays ended
    reg.grant_for(a.guardian, p, a.relayer.address, ScopeKind.ALL, ALL_SCOPE_ID, 1, 2**40)
    reg.set_guardian(a.patient, a.stranger.address)  # replaced: that grant ends too
    reg.burn_nonce(a.patient)
    reg.open_break_glass(a.emergency, p, 600, keccak(text="ward 3"))
    reg.close_break_glass(a.patient, p, a.emergency.address)
    end = chain.eth.block_number

    rpc = RpcClient(anvil.url)
    request.addfinalizer(rpc.close)
    decoder = EventDecoder(registry_event_abi(env.abi))
    result = replay(
        rpc, address=env.address, from_block=env.deploy_block, decoder=decoder, target_block=end
    )
    assert result.complete
    timeline = ConsentTimeline(result.events)
    clock = BlockClock(rpc)
    for block in range(made.block_number - 1, end + 1):
        ts = clock.timestamp(block)
        for grantee in (a.doctor, a.stranger, a.relayer, a.guardian):
            for purpose in (Purpose.TREATMENT, Purpose.RESEARCH):
                chain_answer = reg.access_basis(p, grantee.address, record, int(purpose),
                                                block_identifier=block)  # fmt: skip
                ours = timeline.access_basis_at(p, grantee.address, record, int(purpose),
                                                block_number=block, block_timestamp=ts)  # fmt: skip
                assert ours == (chain_answer.basis, chain_answer.until), (block, grantee.address)
            terms = reg.consent_of(p, grantee.address, ScopeKind.ALL, ALL_SCOPE_ID,
                                   block_identifier=block)  # fmt: skip
            stored = timeline.grant_at(p, grantee.address, ScopeKind.ALL, ALL_SCOPE_ID, block)
            replayed = (stored.purposes, stored.expires_at) if stored else (0, 0)
            assert replayed == (terms.purposes, terms.expires_at), (block, grantee.address)
    state = timeline.state_at(p, block_number=end, timestamp=clock.timestamp(end))
    assert {g.grantee for g in state.grants} == {a.doctor.address}
    assert {g.grantee for g in state.guardian_ended} == {a.stranger.address, a.relayer.address}
    (front_run,) = [g for g in state.guardian_ended if g.grantee == a.stranger.address]
    ending = timeline.ending_event(front_run)
    assert isinstance(ending, GuardianRemoved)
    assert ending.block_number == removed.block_number
    ended = {g.grantee: at for g, at in timeline.all_grants()}
    assert ended[a.stranger.address] == (removed.block_number, ending.log_index)
    # The nonce burn and the break-glass pair are replayed (the timeline folds the burn as not
    # changing who may read, and lists the break-glass events among the patient's).
    burns = [e for e in result.events if getattr(e, "signer", None) == p]
    assert [b.nonce for b in burns] == [0]
    assert isinstance(burns[0], NonceBurned)
    assert [
        type(e).__name__
        for e in timeline.patient_events(p)
        if isinstance(e, BreakGlassOpened | BreakGlassClosed)
    ] == ["BreakGlassOpened", "BreakGlassClosed"]
