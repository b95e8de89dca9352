"""Strict freshness on a real anvil: after a revoke's receipt the next decision is denied;
concurrent requests share head observations; a request that arrived after an observation was
sent waits for the next one; a stale head or an unreachable node fails closed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from web3 import Web3

from ledger.chain.node import ChainUnavailable
from ledger.chain.registry import AccessDecision
from ledger.chain.rpc import RpcClient
from ledger.devstack.services import free_port
from ledger.index import ConsentIndex, FreshIndex, HeadTooOld
from ledger.protocol.consent_types import ALL_SCOPE_ID, NO_EXPIRY, Basis, ScopeKind
from ledger.protocol.events import EventDecoder, registry_event_abi
from tests.helpers.index import chain_decisions, editing_client
from tests.helpers.registry import RegistryEnv, deploy_env, register

WAIT_S = 10.0


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


def _index(env: RegistryEnv, rpc: RpcClient) -> ConsentIndex:
    decoder = EventDecoder(registry_event_abi(env.abi))
    return ConsentIndex(rpc, address=env.address, start_block=env.deploy_block, decoder=decoder)


def _granted(chain: Web3, env: RegistryEnv) -> tuple[Any, tuple[str, str, bytes, int]]:
    registry = env.client(chain)
    a = env.actors
    record = register(registry, env, a.patient.address)
    registry.grant(a.patient, a.doctor.address, ScopeKind.ALL, ALL_SCOPE_ID, 0b1, NO_EXPIRY)
    return registry, (a.patient.address, a.doctor.address, record, 0)


def _is_head(method: str, params: list[Any]) -> bool:
    return method == "eth_getBlockByNumber" and params[:1] == ["latest"]


def _until(condition: Any) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.001)


def test_the_request_after_a_revoke_receipt_is_denied(
    chain: Web3, env: RegistryEnv, rpc: RpcClient
) -> None:
    registry, query = _granted(chain, env)
    fresh = FreshIndex(_index(env, rpc))
    assert fresh.access_decision(*query).basis is Basis.ALL
    a = env.actors
    receipt = registry.revoke(a.patient, a.doctor.address, ScopeKind.ALL, ALL_SCOPE_ID)
    decision = fresh.access_decision(*query)
    assert not decision.allowed
    assert decision.block_number >= receipt.block_number
    (expected,) = chain_decisions(rpc, env.address, [query], decision.block_number)
    assert decision == expected
    assert fresh.consents(a.patient.address).granted == ()


def test_concurrent_requests_share_head_observations(
    chain: Web3, env: RegistryEnv, anvil: Any
) -> None:
    """20 requests arrive while the first observation is in flight: all 19 share the next."""
    _, query = _granted(chain, env)
    requests = 20
    heads = {"n": 0}
    fresh: FreshIndex | None = None

    def before(method: str, params: list[Any]) -> None:
        if fresh is not None and _is_head(method, params):
            heads["n"] += 1
            if heads["n"] == 1:  # hold the first observation until every request is waiting
                _until(lambda: fresh is not None and fresh.waiting == requests)

    client, _ = editing_client(anvil.url, before=before)
    try:
        index = _index(env, client)
        index.sync()
        fresh = FreshIndex(index)
        with ThreadPoolExecutor(max_workers=requests) as pool:
            decisions = list(pool.map(lambda _: fresh.access_decision(*query), range(requests)))
        assert heads["n"] == 2
        assert fresh.observations == 2
        assert {d.basis for d in decisions} == {Basis.ALL}
    finally:
        client.close()


def test_a_request_arriving_after_an_observation_was_sent_waits_for_the_next(
    chain: Web3, env: RegistryEnv, anvil: Any
) -> None:
    """A's observation is answered by the node before the revoke is mined, and held in
    flight; B arrives after the revoke's receipt: B must not take A's answer."""
    registry, query = _granted(chain, env)
    answered, release = threading.Event(), threading.Event()
    armed = {"on": False, "heads": 0}

    def edit(method: str, params: list[Any], result: Any) -> Any:
        if _is_head(method, params):
            armed["heads"] += 1
            if armed["on"]:
                armed["on"] = False
                answered.set()
                assert release.wait(WAIT_S)
        return result

    client, _ = editing_client(anvil.url, edit=edit)
    try:
        fresh = FreshIndex(_index(env, client))
        assert fresh.access_decision(*query).allowed
        armed["on"], armed["heads"] = True, 0
        with ThreadPoolExecutor(max_workers=2) as pool:
            first = pool.submit(fresh.access_decision, *query)
            assert answered.wait(WAIT_S)  # A's observation was sent and answered: head H0
            a = env.actors
            receipt = registry.revoke(a.patient, a.doctor.address, ScopeKind.ALL, ALL_SCOPE_ID)
            second = pool.submit(fresh.access_decision, *query)  # B arrives after the receipt
            _until(lambda: fresh.waiting == 2)
            release.set()
            a_decision: AccessDecision = first.result(WAIT_S)
            b_decision: AccessDecision = second.result(WAIT_S)
        assert a_decision.allowed  # A arrived before the revoke: the old head serves it
        assert a_decision.block_number < receipt.block_number
        assert not b_decision.allowed  # B waited for an observation sent after it arrived
        assert b_decision.block_number >= receipt.block_number
        assert armed["heads"] == 2
    finally:
        client.close()


def test_a_head_older_than_max_head_age_fails_closed(
    chain: Web3, env: RegistryEnv, rpc: RpcClient
) -> None:
    _, query = _granted(chain, env)
    index = _index(env, rpc)
    assert FreshIndex(index, max_head_age_s=600).access_decision(*query).allowed
    later = FreshIndex(index, max_head_age_s=600, clock=lambda: time.time() + 3_600)
    with pytest.raises(HeadTooOld) as caught:
        later.access_decision(*query)
    assert caught.value.age_s > 600
    assert caught.value.max_head_age_s == 600


def test_an_unreachable_node_fails_every_waiter(env: RegistryEnv, rpc: RpcClient) -> None:
    index = _index(env, rpc)
    index.sync()
    down = RpcClient(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    try:
        fresh = FreshIndex(index, rpc=down)
        a = env.actors
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [
                pool.submit(
                    fresh.access_decision, a.patient.address, a.doctor.address, bytes(32), 0
                )
                for _ in range(4)
            ]
            for future in futures:
                with pytest.raises(ChainUnavailable):
                    future.result(WAIT_S)
    finally:
        down.close()
