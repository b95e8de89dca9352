"""The session's one compiled-contract cache.

The ``contract_build`` fixture (``tests.plugins.services``) names the directory in
``$CONSENT_TEST_BUILD_CACHE`` for the whole session, so plain helpers called from test bodies
(``build_stack``, ``deploy_env`` ...) find it without a fixture argument. A gateway or a local
stack compiles into ``<home>/build``: :func:`share_build_cache` makes that a link to the session
cache, so the contracts are compiled once per session instead of once per home.
"""

from __future__ import annotations

import os
from pathlib import Path

from ledger.paths import StatePaths

BUILD_CACHE_ENV = "CONSENT_TEST_BUILD_CACHE"


def session_build_cache() -> Path:
    """The session's build cache directory."""
    value = os.environ.get(BUILD_CACHE_ENV)
    if not value:
        raise RuntimeError(
            f"${BUILD_CACHE_ENV} is unset: the contract_build fixture (tests.plugins.services) "
            "sets it for the session"
        )
    return Path(value)


def share_build_cache(home: Path) -> Path:
    """Link ``home``'s build cache to the session's (unless ``home`` already has one)."""
    build = StatePaths(home).build_cache
    if not build.exists() and not build.is_symlink():
        build.parent.mkdir(parents=True, exist_ok=True)
        build.symlink_to(session_build_cache(), target_is_directory=True)
    return build
