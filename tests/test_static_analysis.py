"""Slither on the registry: no high or medium finding unless justified in the source.

Slither (slither-analyzer, a dev dependency) compiles through crytic-compile in its
``solc-json`` mode, pointed at the project's solc (``ledger.chain.build.solc_binary()``, the
npm-backed front unless a native solc 0.8.30 is on PATH), which only needs ``--version`` and
``--standard-json``. The standard-JSON input is the build's own (same sources, EVM version and
optimizer), with two changes crytic-compile needs: OpenZeppelin units are named by their path
on disk (``hardhat_local/node_modules/@openzeppelin/...``, reached through a remapping) so it can
find each file, and the output asks for the AST.

A finding is justified by ``// slither-disable-next-line <detector>`` right above the line,
with the reason in the comment lines just above that; slither then drops the finding.
OpenZeppelin (``node_modules``) and ``contracts/test`` are filtered out.

The same run from the command line::

    .venv/bin/python -c "import json, tests.test_static_analysis as t; \\
        print(json.dumps(t.standard_json_input()))" > /tmp/slither-input.json
    .venv/bin/slither /tmp/slither-input.json --compile-force-framework solc-json \\
        --solc hardhat_local/bin/solc --solc-working-dir . \\
        --exclude-dependencies --filter-paths 'node_modules|contracts/test'
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest

from ledger.chain.build import _SETTINGS, _resolve_imports, _source_units, solc_binary
from ledger.paths import PROJECT_ROOT, contracts_dir, hardhat_local_dir

ANALYSED = "contracts/ConsentRegistry.sol"
FILTER_PATHS = ["node_modules", "contracts/test"]
BLOCKING_IMPACTS = {"High", "Medium"}
_DISABLE_RE = re.compile(r"^\s*//\s*slither-disable-next-line\s+([A-Za-z0-9_,-]+)")


def standard_json_input() -> dict[str, Any]:
    """The build's standard-JSON input, adapted for crytic-compile (see the module docstring)."""
    node_modules = (hardhat_local_dir() / "node_modules").relative_to(PROJECT_ROOT).as_posix()
    sources = {
        (f"{node_modules}/{unit}" if unit.startswith("@") else unit): {"content": text}
        for unit, text in _resolve_imports(_source_units()).items()
    }
    settings = {k: v for k, v in _SETTINGS.items() if k not in ("outputSelection", "metadata")}
    settings["remappings"] = [f"@openzeppelin/={node_modules}/@openzeppelin/"]
    settings["outputSelection"] = {
        "*": {
            "*": ["abi", "evm.bytecode", "evm.deployedBytecode", "devdoc", "userdoc"],
            "": ["ast"],
        }
    }
    return {"language": "Solidity", "sources": sources, "settings": settings}


def _import_slither() -> tuple[Any, ...]:
    try:
        from crytic_compile import CryticCompile
        from crytic_compile.platform.solc_standard_json import SolcStandardJson
        from slither import Slither
        from slither.detectors import all_detectors
        from slither.detectors.abstract_detector import AbstractDetector
    except ImportError as exc:  # a dev dependency: its absence is a failure, not a skip
        pytest.fail(f"slither-analyzer (a dev dependency) is not installed: {exc}")
    return CryticCompile, SolcStandardJson, Slither, all_detectors, AbstractDetector


@pytest.fixture(scope="module")
def slither_run() -> tuple[Any, list[dict[str, Any]]]:
    crytic_compile, solc_standard_json, slither_cls, all_detectors, abstract_detector = (
        _import_slither()
    )
    compiled = crytic_compile(
        solc_standard_json(standard_json_input()),
        solc=str(solc_binary()),
        solc_working_dir=str(PROJECT_ROOT),
    )
    slither = slither_cls(compiled, exclude_dependencies=True, filter_paths=FILTER_PATHS)
    detectors = [
        cls
        for _, cls in inspect.getmembers(all_detectors, inspect.isclass)
        if issubclass(cls, abstract_detector) and cls is not abstract_detector
    ]
    for detector in detectors:
        slither.register_detector(detector)
    findings = [finding for per_detector in slither.run_detectors() for finding in per_detector]
    return slither, findings


def _describe(finding: dict[str, Any]) -> str:
    first_line = str(finding["description"]).strip().splitlines()[0]
    return f"[{finding['impact']}] {finding['check']}: {first_line}"


def test_slither_analyses_the_registry(slither_run: tuple[Any, list[dict[str, Any]]]) -> None:
    slither, _ = slither_run
    names = {contract.name for contract in slither.contracts}
    assert {"ConsentRegistry", "IConsentRegistry"} <= names
    assert len(slither.detectors) > 50


def test_slither_has_no_unjustified_high_or_medium_finding(
    slither_run: tuple[Any, list[dict[str, Any]]],
) -> None:
    _, findings = slither_run
    blocking = [_describe(f) for f in findings if f["impact"] in BLOCKING_IMPACTS]
    assert blocking == [], "\n".join(blocking)


def test_every_slither_suppression_in_the_contracts_gives_a_reason() -> None:
    unjustified = []
    for path in sorted(contracts_dir().rglob("*.sol")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            match = _DISABLE_RE.match(line)
            if match is None:
                continue
            trailing = line[match.end() :].strip(" -:")
            above = lines[number - 1].strip() if number > 0 else ""
            reason_above = above.startswith("//") and _DISABLE_RE.match(above) is None
            if not trailing and not (reason_above and len(above) > len("// ") + 10):
                unjustified.append(f"{path.relative_to(PROJECT_ROOT)}:{number + 1}: {line.strip()}")
    assert unjustified == [], "slither suppressions without a reason:\n" + "\n".join(unjustified)
