"""Real services, started once per session and stopped in ``finally``.

- ``service_dir``: the session's scratch directory.
- ``contract_build``: the session's one compiled-contract cache (``service_dir / "build"``),
  named in ``$CONSENT_TEST_BUILD_CACHE`` for the helpers (``tests.helpers.build``);
  ``contract_artifacts`` compiles into it once.
- ``anvil``: a real anvil node on a free port (no state file); ``chain`` isolates each test's
  chain changes with ``evm_snapshot`` / ``evm_revert``.
- ``ipfs_node``: a real js-ipfs node (offline) on a free port with a throw-away repo.
- ``throwaway_anvil``: a node of the test's own, for tests that kill it or move its clock.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from ledger.chain.build import Artifact, compile_contracts
from ledger.chain.node import connect, dev_accounts
from ledger.devstack.services import AnvilNode, IpfsNode, free_port
from tests.helpers.build import BUILD_CACHE_ENV


@dataclass
class Anvil:
    node: AnvilNode
    url: str
    chain_id: int
    accounts: list[LocalAccount]


@pytest.fixture(scope="session")
def service_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="consent-test-") as d:
        yield Path(d)


@pytest.fixture(scope="session", autouse=True)
def contract_build(service_dir: Path) -> Iterator[Path]:
    """The session's build cache directory, named in ``$CONSENT_TEST_BUILD_CACHE``.

    Nothing is compiled here: the first compile into it (``contract_artifacts``, a gateway's
    start, ``deploy_registry``) writes the cache and every later one reads it."""
    build = service_dir / "build"
    build.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(BUILD_CACHE_ENV, str(build))
        yield build


@pytest.fixture(scope="session")
def contract_artifacts(contract_build: Path) -> dict[str, Artifact]:
    """Every compiled contract, from the session's build cache."""
    return compile_contracts(cache_dir=contract_build)


@pytest.fixture(scope="session")
def anvil(service_dir: Path) -> Iterator[Anvil]:
    node = AnvilNode(port=free_port(), log_path=service_dir / "anvil.log")
    try:
        node.start()
        yield Anvil(node=node, url=node.url, chain_id=node.chain_id, accounts=dev_accounts())
    finally:
        node.stop()


@pytest.fixture(scope="session")
def w3(anvil: Anvil) -> Web3:
    return connect(anvil.url)


@pytest.fixture
def chain(w3: Web3) -> Iterator[Web3]:
    """The session chain, with every change this test makes reverted afterwards."""
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    try:
        yield w3
    finally:
        reverted = w3.provider.make_request("evm_revert", [snapshot])  # type: ignore[arg-type]
        assert reverted.get("result") is True, reverted


@pytest.fixture(scope="session")
def ipfs_node(service_dir: Path) -> Iterator[IpfsNode]:
    node = IpfsNode(
        repo=service_dir / "ipfs", api_port=free_port(), log_path=service_dir / "ipfs.log"
    )
    try:
        node.start()
        yield node
    finally:
        node.stop()


@pytest.fixture
def throwaway_anvil(tmp_path: Path) -> Iterator[AnvilNode]:
    """An anvil node of the test's own, for tests that kill it or move its clock for good."""
    node = AnvilNode(port=free_port(), log_path=tmp_path / "anvil.log")
    try:
        node.start()
        yield node
    finally:
        node.stop()
