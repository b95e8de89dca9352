"""Where Consent Ledger finds its sources and keeps its local state.

Everything a local stack writes lives under one directory, ``$CONSENT_HOME`` (default
``.consent/`` in the working directory): chain state, IPFS repository, database, deployment
file, build cache and logs. Deleting that directory resets the local ledger.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "PROJECT_ROOT",
    "StatePaths",
    "contracts_dir",
    "hardhat_local_dir",
    "state_paths",
]

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def hardhat_local_dir() -> Path:
    """The npm project holding the local chain node, IPFS node, solc and OpenZeppelin."""
    override = os.environ.get("CONSENT_HARDHAT_LOCAL")
    return Path(override).resolve() if override else PROJECT_ROOT / "hardhat_local"


def contracts_dir() -> Path:
    return PROJECT_ROOT / "contracts"


class StatePaths:
    """The layout of ``$CONSENT_HOME``."""

    def __init__(self, home: Path) -> None:
        self.home = home

    @property
    def chain_state(self) -> Path:
        return self.home / "chain" / "state.json"

    @property
    def ipfs_repo(self) -> Path:
        return self.home / "ipfs"

    @property
    def database(self) -> Path:
        return self.home / "gateway.sqlite3"

    @property
    def deployment(self) -> Path:
        return self.home / "deployment.json"

    @property
    def build_cache(self) -> Path:
        return self.home / "build"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def keys(self) -> Path:
        return self.home / "keys"

    @property
    def kek(self) -> Path:
        return self.home / "gateway-kek.key"

    def ensure(self) -> StatePaths:
        for d in (self.home, self.chain_state.parent, self.logs, self.build_cache, self.keys):
            d.mkdir(parents=True, exist_ok=True)
        return self


def state_paths(home: Path | str | None = None) -> StatePaths:
    """The state layout for ``home``, else ``$CONSENT_HOME``, else ``./.consent``."""
    if home is None:
        home = os.environ.get("CONSENT_HOME") or Path.cwd() / ".consent"
    return StatePaths(Path(home).resolve())
