"""Writes ``custody.json``, the threshold-custody vectors shared by the Python tests, the node
script ``tests/js/custody_combine.mjs`` and (later) the portal's browser tests.

SLIP-39 splitting and ECIES sealing are randomised, so a new run writes new (equally valid)
vectors; the committed file is the reference. Keys and addresses are derived from fixed labels.

    PYTHONPATH=. python tests/vectors/make_custody.py > tests/vectors/custody.json
"""

from __future__ import annotations

import base64
import hashlib
import json

import coincurve
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from ledger.protocol import custody

CASES = [(1, 1), (2, 3), (3, 5)]


def label_key(label: str) -> bytes:
    return keccak(f"consent-ledger custody vector: {label}".encode())


def case(threshold: int, n: int) -> dict[str, object]:
    data_key = hashlib.sha256(f"data key {threshold}-of-{n}".encode()).digest()
    privates = [label_key(f"custody key {i}") for i in range(n)]
    members = [
        custody.CustodyMember(
            gateway=to_checksum_address(label_key(f"gateway {i}")[-20:]),
            custody_key=custody.custody_public_key(private),
        )
        for i, private in enumerate(privates)
    ]
    requester = label_key("requester")
    requester_pub = coincurve.PrivateKey(requester).public_key.format(compressed=False)
    shares = custody.split_key(data_key, threshold=threshold, n=n)
    commitments = [custody.share_commitment(s) for s in shares]
    sealed = custody.SealedShares(
        threshold=threshold,
        members=tuple(members),
        sealed_shares=tuple(
            custody.seal_share(s, m.custody_key) for s, m in zip(shares, members, strict=True)
        ),
        commitments=tuple(commitments),
    )
    blob = b"CLRE\x02 a stand-in for the record blob"
    manifest = sealed.manifest(
        blob_cid="bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
        blob_size=len(blob),
        blob_sha256=hashlib.sha256(blob).digest(),
    )
    out: dict[str, object] = {
        "name": f"{threshold}-of-{n}",
        "data_key": "0x" + data_key.hex(),
        "threshold": threshold,
        "members": [
            {
                "gateway": m.gateway,
                "custody_key": "0x" + m.custody_key.hex(),
                "custody_private_key": "0x" + p.hex(),
            }
            for m, p in zip(members, privates, strict=True)
        ],
        "shares": [s.decode("ascii") for s in shares],
        "commitments": ["0x" + c.hex() for c in commitments],
        "shares_commitment": "0x" + custody.shares_commitment(commitments).hex(),
        "custody_set_hash": "0x" + custody.custody_set_hash(threshold, members).hex(),
        "sealed_shares": [base64.b64encode(s).decode("ascii") for s in sealed.sealed_shares],
        "requester_private_key": "0x" + requester.hex(),
        "requester_public_key": "0x" + requester_pub.hex(),
        "released": [
            base64.b64encode(custody.reseal_share(s, requester_pub)).decode("ascii") for s in shares
        ],
        "manifest": manifest.to_bytes().decode("ascii"),
    }
    if threshold < n:
        # A lying gateway: a well-formed SLIP-39 share of another key, at the same index.
        other = custody.split_key(hashlib.sha256(b"another key").digest(), threshold=threshold, n=n)
        index = n - 1
        out["tampered"] = {
            "index": index,
            "gateway": members[index].gateway,
            "share": other[index].decode("ascii"),
            "released": base64.b64encode(custody.reseal_share(other[index], requester_pub)).decode(
                "ascii"
            ),
        }
    return out


def main() -> None:
    doc = {
        "description": "Threshold custody vectors: SLIP-39 (one 1-of-1 group per gateway, group"
        " threshold t, empty passphrase, iteration exponent 0, extendable flag off), shares as"
        " ASCII mnemonics, commitment sha256(share), shares_commitment keccak256(abi.encode("
        "bytes32[])), custody_set_hash keccak256(abi.encode(uint8, address[], bytes[])), ECIES"
        " as eciespy 0.4 / eciesjs 0.4 by default. Test keys only.",
        "format": custody.CUSTODY_FORMAT,
        "cases": [case(t, n) for t, n in CASES],
    }
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
