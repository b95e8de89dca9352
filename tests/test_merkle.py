"""RFC 9162 Merkle tree: reference vectors, a naive model, and property tests."""

from __future__ import annotations

import hashlib
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.protocol.errors import DomainError
from ledger.protocol.merkle import (
    EMPTY_ROOT,
    InvalidTreeSize,
    LeafIndexOutOfRange,
    MerkleError,
    MerkleTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

# Reference data shared by the CT implementations (certificate-transparency C++/Go,
# transparency-dev/merkle proof/verify_test.go).
LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
LEAF_HASHES = [leaf_hash(x) for x in LEAVES]
ROOTS = {
    0: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}
# (0-based leaf index, tree size, path)
INCLUSION_VECTORS = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
# (old size, new size, path)
CONSISTENCY_VECTORS = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]


# -- naive model straight from the RFC definitions ------------------------------------------


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def naive_mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + naive_mth(d[:k]) + naive_mth(d[k:])).digest()


def naive_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*naive_path(m, d[:k]), naive_mth(d[k:])]
    return [*naive_path(m - k, d[k:]), naive_mth(d[:k])]


def naive_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [naive_mth(d)]
    k = _k(len(d))
    if m <= k:
        return [*naive_subproof(m, d[:k], b), naive_mth(d[k:])]
    return [*naive_subproof(m - k, d[k:], False), naive_mth(d[:k])]


def hashes_for(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def flip(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[bit // 8 % len(b)] ^= 1 << (bit % 8)
    return bytes(b)


# -- reference vectors ----------------------------------------------------------------------


def test_empty_root_is_sha256_of_empty_string() -> None:
    assert EMPTY_ROOT.hex() == ROOTS[0]
    assert MerkleTree([]).root() == EMPTY_ROOT


@pytest.mark.parametrize("size", range(0, 9))
def test_roots_match_rfc_reference_vectors(size: int) -> None:
    tree = MerkleTree(LEAF_HASHES)
    assert tree.root(size).hex() == ROOTS[size]
    assert root_hash(LEAF_HASHES[:size]).hex() == ROOTS[size]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION_VECTORS)
def test_inclusion_proofs_match_reference_vectors(index: int, size: int, path: list[str]) -> None:
    proof = inclusion_proof(LEAF_HASHES, index=index, tree_size=size)
    assert [p.hex() for p in proof] == path
    assert verify_inclusion(
        leaf_hash=LEAF_HASHES[index],
        index=index,
        tree_size=size,
        proof=proof,
        root=bytes.fromhex(ROOTS[size]),
    )


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY_VECTORS)
def test_consistency_proofs_match_reference_vectors(old: int, new: int, path: list[str]) -> None:
    proof = consistency_proof(LEAF_HASHES, old_size=old, new_size=new)
    assert [p.hex() for p in proof] == path
    assert verify_consistency(
        old_size=old,
        new_size=new,
        old_root=bytes.fromhex(ROOTS[old]),
        new_root=bytes.fromhex(ROOTS[new]),
        proof=proof,
    )


def test_pymerkle_roots_agree_with_ours() -> None:
    pymerkle = pytest.importorskip("pymerkle")
    tree = pymerkle.InmemoryTree(algorithm="sha256")
    ours: list[bytes] = []
    for i in range(40):
        entry = i.to_bytes(2, "big") * (i % 5)
        tree.append_entry(entry)
        ours.append(leaf_hash(entry))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            assert tree.get_state() == root_hash(ours)


# -- corruption probes on the vectors (as in transparency-dev/merkle) -------------------------


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION_VECTORS[1:])
def test_corrupted_inclusion_proofs_fail(index: int, size: int, path: list[str]) -> None:
    proof = [bytes.fromhex(p) for p in path]
    root = bytes.fromhex(ROOTS[size])
    leaf = LEAF_HASHES[index]
    # the control: the genuine proof verifies, so each refusal below is the corruption's doing
    assert verify_inclusion(leaf_hash=leaf, index=index, tree_size=size, proof=proof, root=root)
    some = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
    probes: list[tuple[int, int, bytes, bytes, list[bytes]]] = [
        (index - 1, size, root, leaf, proof),
        (index + 1, size, root, leaf, proof),
        (index ^ 2, size, root, leaf, proof),
        (index, size * 2, root, leaf, proof),
        (index, size // 2, root, leaf, proof),
        (index, size, root, b"WrongLeaf", proof),
        (index, size, EMPTY_ROOT, leaf, proof),
        (index, size, some, leaf, proof),
        (index, size, root, leaf, [*proof, b""]),
        (index, size, root, leaf, [*proof, root]),
        (index, size, root, leaf, [b"", *proof]),
        (index, size, root, leaf, [root, *proof]),
        (index, size, root, leaf, proof[:-1]),
        (index, size, root, leaf, [proof[0], some, *proof[1:]]),
    ]
    probes += [
        (index, size, root, leaf, [flip(p, 3) if j == i else p for j, p in enumerate(proof)])
        for i in range(len(proof))
    ]
    for i, s, r, lh, pr in probes:
        assert not verify_inclusion(leaf_hash=lh, index=i, tree_size=s, proof=pr, root=r)


@pytest.mark.parametrize(("old", "new", "path"), [v for v in CONSISTENCY_VECTORS if v[2]])
def test_corrupted_consistency_proofs_fail(old: int, new: int, path: list[str]) -> None:
    proof = [bytes.fromhex(p) for p in path]
    r1, r2 = bytes.fromhex(ROOTS[old]), bytes.fromhex(ROOTS[new])
    # the control: the genuine proof verifies, so each refusal below is the corruption's doing
    assert verify_consistency(old_size=old, new_size=new, old_root=r1, new_root=r2, proof=proof)
    probes: list[tuple[int, int, bytes, bytes, list[bytes]]] = [
        (old - 1, new, r1, r2, proof),
        (old + 1, new, r1, r2, proof),
        (old ^ 2, new, r1, r2, proof),
        (old, new * 2, r1, r2, proof),
        (old, new // 2, r1, r2, proof),
        (old, new, b"WrongRoot", r2, proof),
        (old, new, r1, b"WrongRoot", proof),
        (old, new, r2, r1, proof),
        (old, new, r1, r2, []),
        (old, new, r1, r2, [*proof, b""]),
        (old, new, r1, r2, [*proof, r1]),
        (old, new, r1, r2, [*proof, r2]),
        (old, new, r1, r2, [b"", *proof]),
        (old, new, r1, r2, [r1, *proof]),
        (old, new, r1, r2, [r2, *proof]),
        (old, new, r1, r2, [proof[0], *proof]),
        (old, new, r1, r2, proof[:-1]),
    ]
    probes += [
        (old, new, r1, r2, [flip(p, 4) if j == i else p for j, p in enumerate(proof)])
        for i in range(len(proof))
    ]
    for o, n, a, b, pr in probes:
        assert not verify_consistency(old_size=o, new_size=n, old_root=a, new_root=b, proof=pr)


def test_trivial_consistency_cases() -> None:
    r1, r2 = ROOTS[1], ROOTS[2]
    one, two = bytes.fromhex(r1), bytes.fromhex(r2)
    assert verify_consistency(
        old_size=0, new_size=0, old_root=EMPTY_ROOT, new_root=EMPTY_ROOT, proof=[]
    )
    assert verify_consistency(old_size=0, new_size=2, old_root=EMPTY_ROOT, new_root=two, proof=[])
    assert not verify_consistency(old_size=0, new_size=2, old_root=one, new_root=two, proof=[])
    assert verify_consistency(old_size=1, new_size=1, old_root=one, new_root=one, proof=[])
    assert not verify_consistency(old_size=1, new_size=1, old_root=one, new_root=two, proof=[])
    assert not verify_consistency(old_size=1, new_size=1, old_root=one, new_root=one, proof=[one])
    assert not verify_consistency(old_size=2, new_size=1, old_root=two, new_root=one, proof=[])
    assert not verify_consistency(old_size=1, new_size=2, old_root=one, new_root=two, proof=[])
    assert not verify_consistency(
        old_size=0, new_size=0, old_root=EMPTY_ROOT, new_root=EMPTY_ROOT, proof=[EMPTY_ROOT]
    )


def test_single_leaf_inclusion() -> None:
    h = leaf_hash(b"data")
    assert verify_inclusion(leaf_hash=h, index=0, tree_size=1, proof=[], root=h)
    assert not verify_inclusion(leaf_hash=h, index=0, tree_size=1, proof=[], root=b"")
    assert not verify_inclusion(leaf_hash=b"", index=0, tree_size=1, proof=[], root=h)
    for index, size in [(0, 0), (1, 0), (2, 1), (-1, 1)]:
        assert not verify_inclusion(leaf_hash=h, index=index, tree_size=size, proof=[], root=h)
        assert root_from_inclusion_proof(leaf_hash=h, index=index, tree_size=size, proof=[]) is None


# -- argument errors ------------------------------------------------------------------------


def test_bad_requests_raise_documented_errors() -> None:
    tree = MerkleTree(LEAF_HASHES)
    with pytest.raises(LeafIndexOutOfRange) as exc:
        tree.inclusion_proof(8)
    assert (exc.value.index, exc.value.tree_size) == (8, 8)
    with pytest.raises(LeafIndexOutOfRange):
        tree.inclusion_proof(3, 3)
    with pytest.raises(LeafIndexOutOfRange):
        tree.inclusion_proof(-1)
    with pytest.raises(InvalidTreeSize) as size_exc:
        tree.root(9)
    assert size_exc.value.available == 8
    with pytest.raises(InvalidTreeSize):
        tree.consistency_proof(5, 4)
    with pytest.raises(InvalidTreeSize):
        tree.consistency_proof(-1)
    assert issubclass(MerkleError, DomainError)
    assert not hasattr(MerkleError, "http_status")  # a protocol error names no HTTP status
    assert LeafIndexOutOfRange(index=1, tree_size=0).to_dict()["code"] == "leaf_index_out_of_range"


# -- growth and the cache -------------------------------------------------------------------


def test_appending_keeps_old_roots_and_cache_is_reused() -> None:
    leaves: list[bytes] = []
    cache: dict[tuple[int, int], bytes] = {}
    tree = MerkleTree(leaves, cache=cache, min_cached_level=1)
    roots = []
    for h in hashes_for(300):
        leaves.append(h)
        roots.append(tree.root())
    assert all(tree.root(i + 1) == roots[i] for i in range(300))
    assert roots[-1] == naive_mth(leaves)
    # perfect subtrees only: at most one per internal node of the complete parts
    assert 0 < len(cache) < 300


def test_hash_count_is_logarithmic_once_warm() -> None:
    counted: list[int] = []

    class CountingList(list[bytes]):
        def __getitem__(self, i):  # type: ignore[no-untyped-def,override]
            counted.append(1)
            return super().__getitem__(i)

    leaves = CountingList(hashes_for(1 << 12))
    tree = MerkleTree(leaves, min_cached_level=1)
    tree.root()
    counted.clear()
    for n in (1000, 2047, 4095, 4096):
        tree.root(n)
        tree.inclusion_proof(n - 1, n)
        tree.consistency_proof(n // 3, n)
    assert len(counted) < 100  # leaf reads; a cold O(n) walk would read thousands


def test_large_tree_is_fast() -> None:
    n = 100_000
    tree = MerkleTree(hashes_for(n))
    root = tree.root()
    for i in (0, 12_345, n - 1):
        proof = tree.inclusion_proof(i)
        assert verify_inclusion(
            leaf_hash=leaf_hash(i.to_bytes(4, "big")), index=i, tree_size=n, proof=proof, root=root
        )
    proof = tree.consistency_proof(77_777)
    assert verify_consistency(
        old_size=77_777, new_size=n, old_root=tree.root(77_777), new_root=root, proof=proof
    )


# -- properties -----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(n=st.integers(min_value=1, max_value=130), data=st.data())
def test_inclusion_matches_naive_and_verifies(n: int, data: st.DataObject) -> None:
    d = hashes_for(n)
    tree = MerkleTree(d, min_cached_level=data.draw(st.integers(1, 5)))
    m = data.draw(st.integers(0, n - 1))
    root = tree.root()
    assert root == naive_mth(d)
    proof = tree.inclusion_proof(m)
    assert proof == naive_path(m, d)
    assert verify_inclusion(leaf_hash=d[m], index=m, tree_size=n, proof=proof, root=root)
    if proof:
        j = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        bad = [flip(p, bit) if i == j else p for i, p in enumerate(proof)]
        assert not verify_inclusion(leaf_hash=d[m], index=m, tree_size=n, proof=bad, root=root)
    assert not verify_inclusion(
        leaf_hash=flip(d[m], 0), index=m, tree_size=n, proof=proof, root=root
    )
    assert not verify_inclusion(
        leaf_hash=d[m], index=m, tree_size=n, proof=proof, root=flip(root, 7)
    )


@settings(max_examples=200, deadline=None)
@given(n=st.integers(min_value=1, max_value=130), data=st.data())
def test_consistency_matches_naive_and_verifies(n: int, data: st.DataObject) -> None:
    d = hashes_for(n)
    tree = MerkleTree(d)
    m = data.draw(st.integers(1, n))
    proof = tree.consistency_proof(m)
    expected = [] if m == n else naive_subproof(m, d, True)
    assert proof == expected
    old_root, new_root = tree.root(m), tree.root()
    assert old_root == naive_mth(d[:m])
    assert verify_consistency(
        old_size=m, new_size=n, old_root=old_root, new_root=new_root, proof=proof
    )
    if proof:
        j = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        bad = [flip(p, bit) if i == j else p for i, p in enumerate(proof)]
        assert not verify_consistency(
            old_size=m, new_size=n, old_root=old_root, new_root=new_root, proof=bad
        )
        assert not verify_consistency(
            old_size=m, new_size=n, old_root=flip(old_root, bit), new_root=new_root, proof=proof
        )
        assert not verify_consistency(
            old_size=m, new_size=n, old_root=old_root, new_root=flip(new_root, bit), proof=proof
        )


@settings(max_examples=300, deadline=None)
@given(
    index=st.integers(-3, 40),
    size=st.integers(-3, 40),
    proof=st.lists(st.binary(min_size=0, max_size=40), max_size=8),
    leaf=st.binary(max_size=40),
    root=st.binary(max_size=40),
)
def test_verifiers_never_raise_on_garbage(
    index: int, size: int, proof: list[bytes], leaf: bytes, root: bytes
) -> None:
    assert isinstance(
        verify_inclusion(leaf_hash=leaf, index=index, tree_size=size, proof=proof, root=root), bool
    )
    assert isinstance(
        verify_consistency(
            old_size=index, new_size=size, old_root=leaf, new_root=root, proof=proof
        ),
        bool,
    )


def test_node_hash_prefix() -> None:
    a, b = b"a" * 32, b"b" * 32
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
