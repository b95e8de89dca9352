"""The portal's RFC 9162 inclusion-proof check (``gateway/portal/src/merkle.ts``) gives the same
answers as ``ledger.protocol.merkle`` on shared vectors: every leaf of trees of 1..40 leaves,
valid proofs and tampered ones (a flipped bit, another index, another tree size, a proof one
hash short or long, another root). It runs in Node on the module as Vite builds it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ledger.paths import PROJECT_ROOT
from ledger.protocol.merkle import inclusion_proof, leaf_hash, root_hash, verify_inclusion

PORTAL = PROJECT_ROOT / "gateway" / "portal"
OUT = PORTAL / "node_modules" / ".cache" / "merkle-test"

RUNNER = """
import { readFileSync } from 'node:fs'
import { leafHash, verifyInclusionHex } from './merkle.js'
const cases = JSON.parse(readFileSync(0, 'utf8'))
const toHex = (b) => '0x' + Buffer.from(b).toString('hex')
const out = cases.map((c) => c.entry !== undefined
  ? toHex(leafHash(Buffer.from(c.entry, 'utf8')))
  : verifyInclusionHex(c.leaf, c.index, c.size, c.proof, c.root))
process.stdout.write(JSON.stringify(out))
"""


@pytest.fixture(scope="module")
def portal_merkle() -> Path:
    npx = shutil.which("npx")
    if npx is None or not (PORTAL / "node_modules" / "vite").is_dir():
        pytest.fail("the portal's npm packages are missing: run `make install`")
    subprocess.run(
        [npx, "vite", "build", "--ssr", "src/merkle.ts", "--outDir", str(OUT), "--emptyOutDir"],
        cwd=PORTAL,
        check=True,
        capture_output=True,
    )
    runner = OUT / "runner.mjs"
    runner.write_text(RUNNER, encoding="utf-8")
    return runner


def _run(runner: Path, cases: list[dict[str, Any]]) -> list[Any]:
    done = subprocess.run(
        ["node", str(runner)],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        check=True,
        cwd=runner.parent,
    )
    return list(json.loads(done.stdout))


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def _flip(h: bytes) -> bytes:
    return bytes([h[0] ^ 1]) + h[1:]


def test_inclusion_checks_agree_with_the_python_implementation(portal_merkle: Path) -> None:
    cases: list[dict[str, Any]] = []
    expected: list[bool] = []

    def case(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> None:
        cases.append(
            {
                "leaf": _hex(leaf),
                "index": index,
                "size": size,
                "proof": [_hex(p) for p in proof],
                "root": _hex(root),
            }
        )
        expected.append(
            verify_inclusion(leaf_hash=leaf, index=index, tree_size=size, proof=proof, root=root)
        )

    for size in range(1, 41):
        leaves = [leaf_hash(f"entry {i} of {size}".encode()) for i in range(size)]
        root = root_hash(leaves)
        for index in range(size):
            proof = inclusion_proof(leaves, index=index, tree_size=size)
            case(leaves[index], index, size, proof, root)
            case(_flip(leaves[index]), index, size, proof, root)
            case(leaves[index], (index + 1) % size, size, proof, root)
            case(leaves[index], index, size + 1, proof, root)
            case(leaves[index], index, size, proof, _flip(root))
            if proof:
                case(leaves[index], index, size, proof[:-1], root)
                case(leaves[index], index, size, [*proof[:-1], _flip(proof[-1])], root)
            case(leaves[index], index, size, [*proof, leaves[0]], root)
    case(leaves[0], -1, 5, [], root)  # out of range
    case(leaves[0], 0, 0, [], root)
    assert sum(expected) >= sum(range(1, 41))  # every valid proof ...
    assert expected.count(False) > 3 * sum(range(1, 41))  # ... and many refused ones
    assert _run(portal_merkle, cases) == expected


def test_leaf_hashes_agree(portal_merkle: Path) -> None:
    entries = ['{"v":1}', "", "读取 ✓", json.dumps({"a": [1, 2]}, separators=(",", ":"))]
    got = _run(portal_merkle, [{"entry": e} for e in entries])
    assert got == [_hex(leaf_hash(e.encode())) for e in entries]
