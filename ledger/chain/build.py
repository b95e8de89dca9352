"""Reproducible contract build through py-solc-x.

The compiler is pinned (``SOLC_VERSION``). A native ``solc`` of exactly that version on PATH is
used when present; otherwise ``hardhat_local/bin/solc``, a solc-compatible front for the npm
``solc`` package. Everything that changes bytecode is fixed here: source unit names are paths
relative to the project root (``contracts/ConsentRegistry.sol``, ``@openzeppelin/...``), the EVM
version, optimizer runs and metadata settings. Artifacts are cached by a hash of the compiler
version, the settings and every source's content, so an unchanged tree compiles once.

Only compiling needs py-solc-x (imported when a compile runs): importing this module for
:class:`Artifact` does not, and a client that talks to a deployed registry reads the shipped ABI
(``ledger.chain.abi``) instead.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

from ledger.paths import PROJECT_ROOT, contracts_dir, hardhat_local_dir

__all__ = [
    "EVM_VERSION",
    "SOLC_VERSION",
    "Artifact",
    "BuildError",
    "compile_contracts",
    "solc_binary",
]

SOLC_VERSION = "0.8.30"
EVM_VERSION = "cancun"
OPTIMIZER_RUNS = 200

_SETTINGS: dict[str, Any] = {
    "evmVersion": EVM_VERSION,
    "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
    "viaIR": False,
    "metadata": {"bytecodeHash": "ipfs", "useLiteralContent": False},
    "outputSelection": {
        "*": {
            "*": [
                "abi",
                "evm.bytecode.object",
                "evm.deployedBytecode.object",
                "evm.deployedBytecode.immutableReferences",
                "evm.methodIdentifiers",
                "storageLayout",
            ]
        }
    },
}


class BuildError(Exception):
    """The contracts could not be compiled (compiler missing, or errors in the sources)."""


@dataclass(frozen=True)
class Artifact:
    """One compiled contract."""

    name: str
    source: str
    abi: list[dict[str, Any]]
    bytecode: bytes
    deployed_bytecode: bytes
    method_identifiers: dict[str, str]
    immutable_ranges: tuple[tuple[int, int], ...] = ()

    def runtime_matches(self, code: bytes) -> bool:
        """Whether on-chain runtime ``code`` is this artifact's, immutables masked out."""
        if len(code) != len(self.deployed_bytecode):
            return False
        expected, actual = bytearray(self.deployed_bytecode), bytearray(code)
        for start, length in self.immutable_ranges:
            expected[start : start + length] = bytes(length)
            actual[start : start + length] = bytes(length)
        return expected == actual

    @property
    def abi_hash(self) -> str:
        canonical = json.dumps(self.abi, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _solcx() -> ModuleType:
    """py-solc-x, needed only to compile (a dependency of the project, not of a shipped ABI)."""
    try:
        return importlib.import_module("solcx")
    except ImportError as exc:
        raise BuildError(f"compiling the contracts needs py-solc-x: {exc}") from exc


def solc_binary() -> Path:
    """A native solc of the pinned version if on PATH, else the npm-backed front."""
    solcx = _solcx()
    native = shutil.which("solc")
    if native is not None:
        try:
            version = solcx.wrapper.get_solc_version(native)
        except (solcx.exceptions.SolcError, OSError, ValueError):
            version = None
        if version is not None and str(version) == SOLC_VERSION:
            return Path(native)
    front = hardhat_local_dir() / "bin" / "solc"
    if not (hardhat_local_dir() / "node_modules" / "solc").is_dir():
        raise BuildError(
            f"no solc {SOLC_VERSION}: run `npm ci --prefix hardhat_local` (or `make up`) first"
        )
    return front


def _source_units() -> dict[str, Path]:
    """Project sources keyed by their unit names (paths relative to the project root)."""
    units: dict[str, Path] = {}
    for path in sorted(contracts_dir().rglob("*.sol")):
        units[path.relative_to(PROJECT_ROOT).as_posix()] = path
    if not units:
        raise BuildError(f"no Solidity sources under {contracts_dir()}")
    return units


def _resolve_imports(units: dict[str, Path]) -> dict[str, str]:
    """Every source the build needs, project and OpenZeppelin, as unit name -> content."""
    node_modules = hardhat_local_dir() / "node_modules"
    contents: dict[str, str] = {}
    pending = list(units.items())
    while pending:
        unit, path = pending.pop()
        if unit in contents:
            continue
        text = path.read_text(encoding="utf-8")
        contents[unit] = text
        for imported in _imports_of(text):
            if imported.startswith("."):
                child_unit = (Path(unit).parent / imported).as_posix()
                child_unit = _normalise(child_unit)
                child_path = (
                    PROJECT_ROOT / child_unit
                    if not child_unit.startswith("@")
                    else node_modules / child_unit
                )
            elif imported.startswith("@"):
                child_unit, child_path = imported, node_modules / imported
            else:
                child_unit, child_path = imported, PROJECT_ROOT / imported
            if not child_path.is_file():
                raise BuildError(f"{unit}: cannot find import {imported!r}")
            pending.append((child_unit, child_path))
    return dict(sorted(contents.items()))


def _normalise(unit: str) -> str:
    parts: list[str] = []
    for part in unit.split("/"):
        if part == "..":
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return "/".join(parts)


def _imports_of(text: str) -> list[str]:
    found: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("import "):
            quote = '"' if '"' in stripped else "'"
            pieces = stripped.split(quote)
            if len(pieces) >= 3:
                found.append(pieces[1])
    return found


def _input_json(sources: dict[str, str]) -> dict[str, Any]:
    return {
        "language": "Solidity",
        "sources": {unit: {"content": text} for unit, text in sources.items()},
        "settings": _SETTINGS,
    }


def compile_contracts(*, cache_dir: Path | None = None) -> dict[str, Artifact]:
    """Compile every contract under ``contracts/``; artifacts keyed by contract name.

    Interfaces are included (ABI only, empty bytecode).

    With ``cache_dir``, output is cached by sha256(compiler version, settings, sources).
    """
    sources = _resolve_imports(_source_units())
    standard_input = _input_json(sources)
    key = hashlib.sha256(
        json.dumps([SOLC_VERSION, standard_input], sort_keys=True).encode()
    ).hexdigest()
    return _compile_cached(key, json.dumps(standard_input, sort_keys=True), cache_dir)


@lru_cache(maxsize=4)
def _compile_cached(key: str, standard_input: str, cache_dir: Path | None) -> dict[str, Artifact]:
    cached = cache_dir / f"{key}.json" if cache_dir is not None else None
    if cached is not None and cached.is_file():
        output = json.loads(cached.read_text(encoding="utf-8"))
    else:
        binary = solc_binary()
        solcx = _solcx()
        try:
            output = solcx.compile_standard(
                json.loads(standard_input), solc_binary=binary, allow_empty=False
            )
        except solcx.exceptions.SolcError as exc:
            raise BuildError(str(exc)) from exc
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".tmp")
            tmp.write_text(json.dumps(output, sort_keys=True), encoding="utf-8")
            tmp.replace(cached)
    return _artifacts(output)


def _artifacts(output: dict[str, Any]) -> dict[str, Artifact]:
    artifacts: dict[str, Artifact] = {}
    for unit, contracts in output.get("contracts", {}).items():
        if not unit.startswith("contracts/"):
            continue
        for name, data in contracts.items():
            bytecode = data["evm"]["bytecode"]["object"]  # empty for interfaces
            artifacts[name] = Artifact(
                name=name,
                source=unit,
                abi=data["abi"],
                bytecode=bytes.fromhex(bytecode),
                deployed_bytecode=bytes.fromhex(data["evm"]["deployedBytecode"]["object"]),
                method_identifiers=data["evm"].get("methodIdentifiers", {}),
                immutable_ranges=tuple(
                    (int(ref["start"]), int(ref["length"]))
                    for refs in data["evm"]["deployedBytecode"]
                    .get("immutableReferences", {})
                    .values()
                    for ref in refs
                ),
            )
    return artifacts
