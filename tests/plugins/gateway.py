"""Gateway fixtures: a real stack on the session's ``anvil`` and ``ipfs_node``.

- ``gateway_registry``: the registry the shared gateways use, deployed once (admin = dev
  account 0; dev account 1 admitted as a gateway, dev account 2 as a centre).
- ``gateway``: one gateway per backend for the whole session, parametrised over SQLite and
  PostgreSQL; the PostgreSQL run is skipped, with the reason, when no server answers at
  127.0.0.1:5432 (database ``test``, user ``postgres``). Its accounts: dev account 1 as the
  gateway account for the SQLite app; registrar and relayer, and all three for the PostgreSQL
  app, are fresh funded accounts, so no two apps share a nonce.
- ``sqlite_gateway``: a SQLite gateway of the test's own, anchoring off (for tests that inspect
  its files).

The helpers they are built from are in ``tests.helpers.gateway``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3

from ledger.chain.deployment import Deployment
from ledger.chain.node import dev_accounts
from ledger.chain.registry import ConsentRegistry
from tests.helpers.gateway import (
    Stack,
    build_stack,
    close_stack,
    deploy_registry,
    drop_schema,
    fresh_relayer,
    funded_account,
    postgres_url,
)


@pytest.fixture(scope="session")
def gateway_registry(w3: Web3, contract_build: Path) -> tuple[ConsentRegistry, Deployment]:
    return deploy_registry(w3, cache_dir=contract_build)


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def gateway(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    anvil: Any,
    w3: Web3,
    ipfs_node: Any,
    gateway_registry: tuple[ConsentRegistry, Deployment],
) -> Iterator[Stack]:
    """The gateway on the session chain and IPFS node, on SQLite and on PostgreSQL."""
    registry, deployment = gateway_registry
    backend = str(request.param)
    schema = None
    if backend == "postgres":
        database_url, schema = postgres_url()
        gateway_account = fresh_relayer(w3, registry)
    else:
        database_url, gateway_account = None, dev_accounts()[1]
    try:
        stack = build_stack(
            home=tmp_path_factory.mktemp(f"gateway-{backend}"),
            w3=w3,
            chain_url=anvil.url,
            ipfs_url=ipfs_node.url,
            registry=registry,
            deployment=deployment,
            relayer=funded_account(w3),
            gateway_account=gateway_account,
            database_url=database_url,
            backend=backend,
        )
        try:
            yield stack
        finally:
            close_stack(stack)
    finally:
        if schema is not None:
            drop_schema(schema)


@pytest.fixture
def sqlite_gateway(
    anvil: Any,
    w3: Web3,
    ipfs_node: Any,
    service_dir: Path,
    gateway_registry: tuple[ConsentRegistry, Deployment],
) -> Iterator[Stack]:
    """A per-test SQLite gateway on the session services (for tests that inspect files)."""
    registry, deployment = gateway_registry
    stack = build_stack(
        home=service_dir / f"gateway-{uuid.uuid4().hex[:8]}",
        w3=w3,
        chain_url=anvil.url,
        ipfs_url=ipfs_node.url,
        registry=registry,
        deployment=deployment,
        relayer=fresh_relayer(w3, registry),
        anchor_enabled=False,
    )
    try:
        yield stack
    finally:
        close_stack(stack)
