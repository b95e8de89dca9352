"""The layout's rules, read from the source with ``ast`` (nothing is imported).

- No module under ``ledger/`` imports ``gateway``: imports point one way.
- No import cycle among the modules of ``ledger/`` and ``gateway/``.
- No Python file under ``ledger/`` or ``gateway/`` is over 700 lines.
- ``ledger/protocol/`` imports no I/O library.

Every import statement counts, wherever it is: at module level, inside a function, under
``if TYPE_CHECKING:``. Each checker is shown to catch a planted violation on a small tree.
"""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ledger", "gateway")
MAX_LINES = 700
#: Libraries that do I/O (network, database, processes); pure protocol code needs none.
IO_LIBRARIES = frozenset(
    {
        "fastapi",
        "http",
        "httpx",
        "psycopg",
        "requests",
        "socket",
        "sqlalchemy",
        "sqlmodel",
        "starlette",
        "subprocess",
        "urllib",
        "uvicorn",
        "web3",
    }
)


@dataclass(frozen=True)
class Import:
    """One imported name: ``module`` (dotted, absolute) imported by ``importer`` at ``line``."""

    importer: str
    module: str
    line: int


# ------------------------------------------------------------------------------ the checker


def modules_under(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Every Python module of ``packages`` under ``root``, by dotted name."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path) -> Iterator[Import]:
    """Every module ``name`` (the module in ``path``) imports, anywhere in the file.

    ``from a.b import c`` yields ``a.b.c``: ``c`` may be a submodule or a name defined in
    ``a.b`` (:func:`import_graph` tells the two apart). Relative imports are resolved against
    the module's package."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[: -(node.level - 1)]
                prefix = ".".join(base)
                source = f"{prefix}.{node.module}" if node.module else prefix
            else:
                source = node.module or ""
            for alias in node.names:
                module = source if alias.name == "*" else f"{source}.{alias.name}"
                yield Import(name, module, node.lineno)


def _top(module: str) -> str:
    return module.partition(".")[0]


def all_imports(root: Path, packages: tuple[str, ...] = PACKAGES) -> list[Import]:
    return [
        found
        for name, path in modules_under(root, packages).items()
        for found in imports_of(name, path)
    ]


def ledger_imports_of_gateway(root: Path) -> list[Import]:
    """Imports of ``gateway`` (or anything in it) by modules of ``ledger``."""
    return sorted(
        {i for i in all_imports(root, ("ledger",)) if _top(i.module) == "gateway"},
        key=lambda i: (i.importer, i.line, i.module),
    )


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the modules of ``packages`` it imports: each imported name counts as an import
    of the longest module its dotted path names (``from a.b import C`` of a class ``C`` is an
    import of ``a.b``, of a submodule ``c`` an import of ``a.b.c`` only)."""
    modules = modules_under(root, packages)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for found in all_imports(root, packages):
        target = found.module
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != found.importer:
            graph[found.importer].add(target)
    return graph


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (its first module repeated at the end), or None."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        cycle: list[str] = list(reversed(error.args[1]))
        return cycle
    return None


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles of ``graph`` until none is left: each found cycle is broken at its first
    edge and the search goes on, so every module caught in a cycle is named at least once."""
    remaining = {name: set(targets) for name, targets in graph.items()}
    cycles: list[list[str]] = []
    while (cycle := import_cycle(remaining)) is not None:
        cycles.append(cycle)
        remaining[cycle[0]].discard(cycle[1])
    return cycles


def oversized_files(
    root: Path, packages: tuple[str, ...] = PACKAGES, limit: int = MAX_LINES
) -> list[tuple[str, int]]:
    """Python files over ``limit`` lines, as (path relative to ``root``, line count)."""
    sizes = (
        (path.relative_to(root).as_posix(), len(path.read_text(encoding="utf-8").splitlines()))
        for package in packages
        for path in sorted((root / package).rglob("*.py"))
    )
    return [(path, lines) for path, lines in sizes if lines > limit]


def io_imports(root: Path, package: str = "ledger.protocol") -> list[Import]:
    """Imports of an I/O library by the modules of ``package``."""
    inside = [
        found
        for name, path in modules_under(root, (_top(package),)).items()
        if name == package or name.startswith(package + ".")
        for found in imports_of(name, path)
    ]
    return sorted(
        {i for i in inside if _top(i.module) in IO_LIBRARIES},
        key=lambda i: (i.importer, i.line, i.module),
    )


# ------------------------------------------------------------------------------ the project


def test_no_module_under_ledger_imports_gateway() -> None:
    found = ledger_imports_of_gateway(ROOT)
    assert found == [], "\n".join(f"{i.importer}:{i.line} imports {i.module}" for i in found)


def test_the_modules_of_ledger_and_gateway_import_no_cycle() -> None:
    graph = import_graph(ROOT)
    assert "gateway.app" in graph
    assert "ledger.protocol" in graph
    cycles = import_cycles(graph)
    assert cycles == [], "\n".join("import cycle: " + " -> ".join(c) for c in cycles)


def test_no_python_file_under_ledger_or_gateway_is_over_700_lines() -> None:
    found = oversized_files(ROOT)
    assert found == [], "\n".join(f"{path}: {lines} lines" for path, lines in found)


def test_ledger_protocol_imports_no_io_library() -> None:
    assert (ROOT / "ledger" / "protocol" / "__init__.py").is_file()
    found = io_imports(ROOT)
    assert found == [], "\n".join(f"{i.importer}:{i.line} imports {i.module}" for i in found)


# ---------------------------------------------------------------- the checker, on planted trees


def _tree(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for package in PACKAGES:
        (root / package).mkdir(exist_ok=True)
        (root / package / "__init__.py").touch()
    return root


CLEAN = {
    "ledger/protocol/__init__.py": "",
    "ledger/protocol/merkle.py": "import hashlib\nfrom ledger.protocol import errors\n",
    "ledger/protocol/errors.py": "class DomainError(Exception):\n    pass\n",
    "ledger/chain/__init__.py": "",
    "ledger/chain/rpc.py": "import httpx\nfrom ..protocol.merkle import root_hash\n",
    "gateway/app.py": "import fastapi\nfrom ledger.chain import rpc\nfrom . import errors\n",
    "gateway/errors.py": "from ledger.protocol.errors import DomainError\n",
}


def test_a_clean_tree_passes_every_check(tmp_path: Path) -> None:
    root = _tree(tmp_path, CLEAN)
    assert ledger_imports_of_gateway(root) == []
    graph = import_graph(root)
    assert graph["gateway.app"] == {"ledger.chain.rpc", "gateway.errors"}
    assert graph["ledger.chain.rpc"] == {"ledger.protocol.merkle"}
    assert import_cycle(graph) is None
    assert import_cycles(graph) == []
    assert oversized_files(root) == []
    assert io_imports(root) == []


@pytest.mark.parametrize(
    "source",
    [
        "import gateway.app\n",
        "from gateway import errors\n",
        "from gateway.errors import http_status_of\n",
        "def f():\n    from gateway.app import create_app\n    return create_app\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import gateway\n",
        "class C:\n    def m(self):\n        import gateway.errors as e\n        return e\n",
    ],
)
def test_a_planted_import_of_gateway_in_ledger_is_found(tmp_path: Path, source: str) -> None:
    root = _tree(tmp_path, {**CLEAN, "ledger/chain/planted.py": "import os\n" + source})
    found = ledger_imports_of_gateway(root)
    assert found
    assert {i.importer for i in found} == {"ledger.chain.planted"}
    assert all(i.module.startswith("gateway") for i in found)


def test_gateway_importing_ledger_is_not_a_violation(tmp_path: Path) -> None:
    root = _tree(tmp_path, {**CLEAN, "gateway/more.py": "import ledger.protocol.merkle\n"})
    assert ledger_imports_of_gateway(root) == []


def test_a_planted_cycle_is_named_module_by_module(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            **CLEAN,
            "ledger/chain/a.py": "from ledger.chain import b\n",
            # a function-level import closes the loop
            "ledger/chain/b.py": "def f():\n    from ledger.chain.a import g\n    return g\n",
        },
    )
    graph = import_graph(root)
    cycle = import_cycle(graph)
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"ledger.chain.a", "ledger.chain.b"}
    assert [set(c) for c in import_cycles(graph)] == [{"ledger.chain.a", "ledger.chain.b"}]


def test_every_planted_cycle_is_reported(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            **CLEAN,
            "ledger/chain/a.py": "import ledger.chain.b\n",
            "ledger/chain/b.py": "import ledger.chain.a\n",
            "gateway/x.py": "import gateway.y\n",
            "gateway/y.py": "def f():\n    import gateway.x\n",
        },
    )
    cycles = import_cycles(import_graph(root))
    assert sorted(sorted(set(c)) for c in cycles) == [
        ["gateway.x", "gateway.y"],
        ["ledger.chain.a", "ledger.chain.b"],
    ]


def test_a_planted_cycle_across_the_two_packages_is_found(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            **CLEAN,
            "ledger/protocol/wire.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from gateway.errors import DomainError\n"
            ),
            "gateway/errors.py": "from ledger.protocol.wire import Model\n",
        },
    )
    cycle = import_cycle(import_graph(root))
    assert cycle is not None
    assert set(cycle) == {"ledger.protocol.wire", "gateway.errors"}


def test_a_relative_import_cycle_is_found(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            **CLEAN,
            "gateway/api/__init__.py": "from .routes import router\n",
            "gateway/api/routes.py": "from . import deps\n",
            "gateway/api/deps.py": "from .. import api\n",
        },
    )
    cycle = import_cycle(import_graph(root))
    assert cycle is not None
    assert set(cycle) == {"gateway.api", "gateway.api.routes", "gateway.api.deps"}


def test_a_planted_file_over_the_limit_is_found(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            **CLEAN,
            "gateway/at_limit.py": "x = 1\n" * MAX_LINES,
            "ledger/chain/too_long.py": "x = 1\n" * (MAX_LINES + 1),
        },
    )
    assert oversized_files(root) == [("ledger/chain/too_long.py", MAX_LINES + 1)]


@pytest.mark.parametrize(
    "source",
    [
        "import httpx\n",
        "import sqlalchemy.orm\n",
        "from web3 import Web3\n",
        "from fastapi import FastAPI\n",
        "import requests\n",
        "import socket\n",
        "def run():\n    import subprocess\n    return subprocess\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from httpx import Client\n",
    ],
)
def test_a_planted_io_import_in_protocol_is_found(tmp_path: Path, source: str) -> None:
    root = _tree(tmp_path, {**CLEAN, "ledger/protocol/planted.py": "import hashlib\n" + source})
    found = io_imports(root)
    assert found
    assert {i.importer for i in found} == {"ledger.protocol.planted"}


def test_io_imports_outside_protocol_are_allowed(tmp_path: Path) -> None:
    root = _tree(tmp_path, {**CLEAN, "ledger/chain/node.py": "import web3\nimport subprocess\n"})
    assert io_imports(root) == []
