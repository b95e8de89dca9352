"""The audit world: one consent history on the session anvil, built once per session.

``audit_world`` is built on first use, before any function-scoped fixture of that test (so
outside the ``chain`` fixture's snapshot, which would otherwise revert it); ``world`` hands it to
a test and closes the RPC clients the test opened through it. See ``tests.helpers.audit_world``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3

from tests.helpers.audit_world import World, build_world


@pytest.fixture(scope="session")
def audit_world(w3: Web3, anvil: Any, contract_build: Path) -> World:
    return build_world(w3, anvil.url)


@pytest.fixture
def world(audit_world: World) -> Iterator[World]:
    try:
        yield audit_world
    finally:
        audit_world.close_clients()
