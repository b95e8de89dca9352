"""The JavaScript twin of threshold custody: npm ``slip39`` and ``eciesjs``, as the browser portal
will use them, read what Python's ``shamir-mnemonic`` and ``eciespy`` write, and the other way.

The node script is ``tests/js/custody_combine.mjs``; its packages come from ``hardhat_local``
(``npm ci --prefix hardhat_local``).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import shamir_mnemonic

from ledger.protocol import custody
from ledger.protocol.custody import CustodyManifest, CustodyMember

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "js" / "custody_combine.mjs"
NODE_MODULES = ROOT / "hardhat_local" / "node_modules"
VECTORS = ROOT / "tests" / "vectors" / "custody.json"
#: The SLIP-39 specification's own test vectors, as shipped with the npm package.
OFFICIAL_VECTORS = NODE_MODULES / "slip39" / "test" / "vectors.json"


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    assert found is not None, "node is required (hardhat_local)"
    for package in ("slip39", "eciesjs"):
        assert (NODE_MODULES / package).is_dir(), "run npm ci --prefix hardhat_local"
    return found


def run_js(node: str, *args: str, stdin: dict[str, Any] | None = None) -> dict[str, Any]:
    result = subprocess.run(
        [node, str(SCRIPT), *args],
        input=None if stdin is None else json.dumps(stdin),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def federation(n: int) -> tuple[list[CustodyMember], list[bytes]]:
    keys = [custody.new_custody_key() for _ in range(n)]
    members = [
        CustodyMember(gateway="0x" + os.urandom(20).hex(), custody_key=public) for _, public in keys
    ]
    return members, [private for private, _ in keys]


def test_js_checks_the_shared_vectors(node: str) -> None:
    """Every t-subset combines, t-1 shares do not, sealed and released shares open, the tampered
    share is named: in JavaScript, on the file the Python tests check too."""
    result = run_js(node, "vectors", str(VECTORS))
    assert result["ok"] is True
    assert result["checked"] >= 40


def test_both_libraries_pass_the_slip39_specification_vectors(node: str) -> None:
    vectors = json.loads(OFFICIAL_VECTORS.read_text())
    assert len(vectors) >= 40
    for description, mnemonics, secret, *_ in vectors:
        try:
            got = shamir_mnemonic.combine_mnemonics(mnemonics, b"TREZOR").hex()
        except shamir_mnemonic.MnemonicError:
            got = ""
        assert got == secret, description
    assert run_js(node, "official", str(OFFICIAL_VECTORS)) == {"ok": True, "checked": len(vectors)}


@pytest.mark.parametrize(("threshold", "n"), [(1, 1), (2, 3), (3, 5)])
def test_python_splits_and_seals_javascript_combines(node: str, threshold: int, n: int) -> None:
    members, privates = federation(n)
    data_key = os.urandom(32)
    manifest = custody.build_manifest(
        data_key,
        threshold=threshold,
        members=members,
        blob_cid="bafkreiblob",
        blob_size=1,
        blob_sha256=bytes(32),
    )
    requester_priv, requester_pub = custody.new_custody_key()
    released = {
        i: custody.reseal_share(custody.unseal_share(manifest, i, privates[i]), requester_pub)
        for i in range(n)
    }
    b64 = {str(i): base64.b64encode(s).decode() for i, s in released.items()}
    request = {
        "requester_private_key": requester_priv.hex(),
        "threshold": manifest.threshold,
        "commitments": [m.commitment for m in manifest.members],
    }
    last = list(range(n))[-threshold:]
    result = run_js(node, "combine", stdin={**request, "released": {k: b64[str(k)] for k in last}})
    assert result == {"data_key": data_key.hex(), "bad": []}

    if threshold < n:
        # A lying gateway 0: a valid share of another key, re-sealed to the requester.
        other = custody.split_key(os.urandom(32), threshold=threshold, n=n)[0]
        lying = {**b64, "0": base64.b64encode(custody.reseal_share(other, requester_pub)).decode()}
        assert run_js(node, "combine", stdin={**request, "released": lying}) == {
            "data_key": data_key.hex(),
            "bad": [0],
        }
        short = {k: lying[k] for k in list(lying)[:threshold]}
        result = run_js(node, "combine", stdin={**request, "released": short})
        assert result == {"error": "not_enough_shares", "have": threshold - 1, "bad": [0]}


def test_javascript_splits_and_seals_python_combines(node: str) -> None:
    members, privates = federation(5)
    data_key = os.urandom(32)
    out = run_js(
        node,
        "split",
        stdin={
            "data_key": data_key.hex(),
            "threshold": 3,
            "public_keys": [m.custody_key.hex() for m in members],
        },
    )
    sealed = custody.SealedShares(
        threshold=3,
        members=tuple(members),
        sealed_shares=tuple(base64.b64decode(s) for s in out["sealed"]),
        commitments=tuple(bytes.fromhex(c[2:]) for c in out["commitments"]),
    )
    manifest = CustodyManifest.parse(
        sealed.manifest(blob_cid="bafy", blob_size=1, blob_sha256=bytes(32)).to_bytes()
    )
    shares = {i: custody.unseal_share(manifest, i, privates[i]) for i in (4, 0, 2)}
    assert custody.combine_shares(shares, manifest=manifest) == data_key
    assert (
        custody.combine_shares(
            {i: custody.unseal_share(manifest, i, privates[i]) for i in (1, 3, 4)},
            manifest=manifest,
        )
        == data_key
    )
