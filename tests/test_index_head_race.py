"""The head race: anvil may answer ``eventDigest()`` pinned to the head's hash on the state of
the block being mined, so the head's digest is ahead of its logs although nothing lies. The
index checks the block before the head (out of that race's reach): when it agrees, it observes
the head again instead of counting a lie. A node that really drops the head block's logs gets
no decision served (the index does not settle), and is refused once a block follows."""

from __future__ import annotations

from typing import Any

import pytest
from web3 import Web3

from ledger.index import ChainUnsettled, ConsentIndex, IndexRefused
from ledger.index.digest import EVENT_DIGEST_SELECTOR
from ledger.protocol.consent_types import ALL_SCOPE_ID, NO_EXPIRY, Basis, ScopeKind
from ledger.protocol.events import EventDecoder, registry_event_abi
from tests.helpers.index import chain_decisions, editing_client
from tests.helpers.registry import RegistryEnv, deploy_env, register


@pytest.fixture(scope="module")
def env(w3: Web3, anvil: Any) -> RegistryEnv:
    return deploy_env(w3, anvil.accounts)


def _index(env: RegistryEnv, rpc: Any) -> ConsentIndex:
    decoder = EventDecoder(registry_event_abi(env.abi))
    return ConsentIndex(rpc, address=env.address, start_block=env.deploy_block, decoder=decoder)


def _granted(chain: Web3, env: RegistryEnv) -> tuple[str, tuple[str, str, bytes, int]]:
    """A grant mined in the head block: ``(head hash, decision query)``."""
    registry = env.client(chain)
    a = env.actors
    record = register(registry, env, a.patient.address)
    registry.grant(a.patient, a.doctor.address, ScopeKind.ALL, ALL_SCOPE_ID, 0b1, NO_EXPIRY)
    head = chain.eth.get_block("latest")
    return "0x" + bytes(head["hash"]).hex(), (a.patient.address, a.doctor.address, record, 0)


def _pinned_digest(method: str, params: list[Any], block_hash: str) -> bool:
    return (
        method == "eth_call"
        and params[0].get("data") == EVENT_DIGEST_SELECTOR
        and isinstance(params[1], dict)
        and str(params[1].get("blockHash", "")).lower() == block_hash
    )


def test_a_head_digest_ahead_of_its_logs_is_a_race_when_the_block_before_agrees(
    chain: Web3, env: RegistryEnv, anvil: Any
) -> None:
    head_hash, query = _granted(chain, env)
    raced = {"left": 3}

    def edit(method: str, params: list[Any], result: Any) -> Any:
        if _pinned_digest(method, params, head_hash) and raced["left"] > 0:
            raced["left"] -= 1  # the next block's state: one more event, another head
            count = int(str(result)[-16:], 16) + 1
            return "0x" + (b"\x11" * 24 + bytes(32) + count.to_bytes(8, "big")).hex()
        return result

    rpc, _ = editing_client(anvil.url, edit=edit)
    try:
        index = _index(env, rpc)
        position = index.sync()
        assert index.refused is None
        assert index.stats.head_races == 3
        assert "0x" + position.block_hash[2:].lower() == head_hash
        decision = index.access_decision(*query)
        assert decision.basis is Basis.ALL
        (expected,) = chain_decisions(rpc, env.address, [query], decision.block_number)
        assert decision == expected
    finally:
        rpc.close()


def test_a_node_that_drops_the_head_blocks_logs_is_refused_once_a_block_follows(
    chain: Web3, env: RegistryEnv, anvil: Any
) -> None:
    _, query = _granted(chain, env)
    head = int(chain.eth.block_number)

    def edit(method: str, params: list[Any], result: Any) -> Any:
        if method == "eth_getLogs":
            return [log for log in result if int(log["blockNumber"], 16) != head]
        return result

    rpc, _ = editing_client(anvil.url, edit=edit)
    try:
        index = _index(env, rpc)
        with pytest.raises(ChainUnsettled):  # no decision: the index does not settle
            index.sync()
        assert index.refused is None
        # nothing of the head block was applied: no position claims the head without its grant
        assert index.position is None or index.position.block_number < head
        chain.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        with pytest.raises(IndexRefused):
            index.sync()
        assert index.refused is not None
        with pytest.raises(IndexRefused):
            index.access_decision(*query)
    finally:
        rpc.close()
