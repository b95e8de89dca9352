"""The test suite's fixtures, as pytest plugins (one module per kind of service).

- ``tests.plugins.services``: the session's anvil, IPFS node and compiled-contract cache;
  ``chain`` (each test's changes reverted with ``evm_snapshot`` / ``evm_revert``).
- ``tests.plugins.gateway``: the session gateways (SQLite and PostgreSQL) and their registry.
- ``tests.plugins.audit``: the audit world, a consent history built once per session.

Plain helper functions live in ``tests.helpers``; test modules import those, never fixtures
and never each other.
"""

import pytest

pytest.register_assert_rewrite("tests.helpers")

pytest_plugins = [
    "tests.plugins.services",
    "tests.plugins.gateway",
    "tests.plugins.audit",
]
