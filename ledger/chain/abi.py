"""The registry's ABI, shipped inside the package so that a client runs without node or solc.

``ledger/chain/abi/*.json`` are build artefacts written by ``python -m ledger.chain.abi``
(``make abi``) from a fresh compile of ``contracts/``; ``tests/test_foundation.py`` fails when
they differ from one. Everything that only talks to a deployed registry (the CLI, the audit,
the gateway) reads these; only deploying needs the compiler (``ledger.chain.build``).
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["SHIPPED", "interface_abi", "load_abi", "registry_abi", "write_shipped"]

#: The contracts whose ABI ships with the package.
SHIPPED = ("ConsentRegistry", "IConsentRegistry")


@lru_cache(maxsize=len(SHIPPED))
def _load(name: str) -> str:
    if name not in SHIPPED:
        raise KeyError(f"no shipped ABI for {name!r} (shipped: {', '.join(SHIPPED)})")
    return resources.files(__package__).joinpath("abi", f"{name}.json").read_text("utf-8")


def load_abi(name: str) -> list[dict[str, Any]]:
    """The shipped ABI of contract ``name`` (a fresh list each call)."""
    abi: list[dict[str, Any]] = json.loads(_load(name))
    return abi


def registry_abi() -> list[dict[str, Any]]:
    """The ABI of ``ConsentRegistry``: every function, event and custom error."""
    return load_abi("ConsentRegistry")


def interface_abi() -> list[dict[str, Any]]:
    """The ABI of ``IConsentRegistry`` (the events an audit decodes)."""
    return load_abi("IConsentRegistry")


def render(abi: list[dict[str, Any]]) -> str:
    """The exact text a shipped ABI file holds (sorted keys, one line per entry)."""
    lines = [json.dumps(entry, sort_keys=True, separators=(",", ":")) for entry in abi]
    return "[\n" + ",\n".join(lines) + "\n]\n"


def write_shipped(directory: Path | None = None) -> list[Path]:
    """Compile the contracts and write the shipped ABI files; returns the paths written."""
    from ledger.chain.build import compile_contracts

    target = directory or Path(__file__).resolve().parent / "abi"
    target.mkdir(parents=True, exist_ok=True)
    artifacts = compile_contracts()
    written = []
    for name in SHIPPED:
        path = target / f"{name}.json"
        path.write_text(render(artifacts[name].abi), encoding="utf-8")
        written.append(path)
    _load.cache_clear()
    return written


if __name__ == "__main__":
    for written_path in write_shipped(Path(sys.argv[1]) if len(sys.argv) > 1 else None):
        print(written_path.name)
