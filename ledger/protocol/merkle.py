"""RFC 9162 (Certificate Transparency v2) Merkle tree over SHA-256, for the access log.

Definitions (RFC 9162 §2.1.1)::

    MTH({})        = SHA-256()                       (EMPTY_ROOT)
    leaf hash      = SHA-256(0x00 || leaf)           (leaf_hash)
    MTH(D[n])      = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))   k = largest power of 2 < n

Proofs are exactly the RFC's ``inclusion_path`` (§2.1.3.1 ``PATH(m, D[n])``) and
``consistency_path`` (§2.1.4.1 ``PROOF(m, D[n])``): lists of 32-byte node hashes, leaf indices
0-based. Verification follows §2.1.3.2 and §2.1.4.2 literally (bit-shifting ``fn``/``sn``) and
returns ``bool``; it never raises on hostile input. Consistency conventions for the edge cases
the RFC leaves open follow the CT reference (transparency-dev/merkle): ``old_size == new_size``
needs an empty proof and equal roots; ``old_size == 0`` needs an empty proof (and we also require
``old_root`` to be the empty-tree hash); ``old_size > new_size`` fails.

Why not ``pymerkle`` (7.0.0, installed): its hashing and roots do match RFC 9162 (checked in
the tests), but its proofs are not in the RFC format (the path includes the leaf itself plus
``rule``/``subset`` bit lists, sizes in metadata), its indices are 1-based, it stores entries
rather than leaf hashes we already keep in a table, and it warns (DeprecationWarning) on
``get_state``. Interoperable proofs for patients and auditors matter more than reuse, and the
RFC algorithms are a few lines each.

Efficiency: :class:`MerkleTree` wraps any append-only ``Sequence[bytes]`` of leaf hashes (a list,
or a lazy view of a DB column) and memoises the hashes of *perfect* subtrees (aligned, 2^level
leaves), which never change once complete because the log is append-only. Every root, proof
node and range hash is a fold of O(log n) perfect subtrees, so after the cache is warm
``root(n)``, inclusion and consistency proofs cost O(log n) hashes each, and the whole cache is
built once in O(n) over the life of the log. Only subtrees of at least ``2**min_cached_level``
leaves are cached (default 16) to keep memory at ~n/16 entries; smaller ones are rehashed from
leaves (at most 15 hashes). The cache may be any ``MutableMapping[tuple[int, int], bytes]``
keyed by ``(level, index)``, e.g. a DB-backed mapping, so it can persist across restarts.
"""

from __future__ import annotations

import hashlib
from collections.abc import MutableMapping, Sequence
from typing import ClassVar

from ledger.protocol.errors import DomainError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "InvalidTreeSize",
    "LeafIndexOutOfRange",
    "MerkleError",
    "MerkleTree",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion_proof",
    "root_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


class MerkleError(DomainError):
    """A Merkle request that cannot be answered (bad sizes or indices)."""

    code: ClassVar[str] = "merkle_error"


class InvalidTreeSize(MerkleError):
    """A tree size is negative, larger than the log, or sizes are out of order."""

    code: ClassVar[str] = "invalid_tree_size"

    def __init__(self, *, tree_size: int, available: int, reason: str) -> None:
        super().__init__(
            f"invalid tree size {tree_size} (log has {available} leaves): {reason}",
            tree_size=tree_size,
            available=available,
            reason=reason,
        )
        self.tree_size = tree_size
        self.available = available
        self.reason = reason


class LeafIndexOutOfRange(MerkleError):
    """A leaf index is not in ``[0, tree_size)``."""

    code: ClassVar[str] = "leaf_index_out_of_range"

    def __init__(self, *, index: int, tree_size: int) -> None:
        super().__init__(
            f"leaf index {index} not in a tree of size {tree_size}",
            index=index,
            tree_size=tree_size,
        )
        self.index = index
        self.tree_size = tree_size


def leaf_hash(entry: bytes) -> bytes:
    """``SHA-256(0x00 || entry)``: the hash stored for a log entry."""
    return hashlib.sha256(_LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``: an interior node."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """RFC 9162 tree over an append-only sequence of leaf hashes, with a subtree cache.

    ``leaf_hashes`` may grow between calls (appends only; rewriting a leaf would poison the
    cache, which is exactly what the log forbids). ``size`` is ``len(leaf_hashes)``.
    """

    def __init__(
        self,
        leaf_hashes: Sequence[bytes],
        *,
        cache: MutableMapping[tuple[int, int], bytes] | None = None,
        min_cached_level: int = 4,
    ) -> None:
        self._leaves = leaf_hashes
        self._cache: MutableMapping[tuple[int, int], bytes] = {} if cache is None else cache
        self._min_cached_level = max(1, min_cached_level)

    @property
    def size(self) -> int:
        return len(self._leaves)

    def root(self, tree_size: int | None = None) -> bytes:
        """``MTH(D[0:tree_size])``; the whole log by default."""
        n = self._check_size(tree_size)
        if n == 0:
            return EMPTY_ROOT
        return self._range(0, n)

    def inclusion_proof(self, index: int, tree_size: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.3.1 ``PATH(index, D[0:tree_size])``."""
        n = self._check_size(tree_size)
        if not 0 <= index < n:
            raise LeafIndexOutOfRange(index=index, tree_size=n)
        lo, hi, m = 0, n, index
        # Iterative form of the recursion; nodes are collected leaf-to-root, as in the RFC.
        stack: list[bytes] = []
        while hi - lo > 1:
            k = _split(hi - lo)
            if m < k:
                stack.append(self._range(lo + k, hi))
                hi = lo + k
            else:
                stack.append(self._range(lo, lo + k))
                lo, m = lo + k, m - k
        return list(reversed(stack))

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 9162 §2.1.4.1 ``PROOF(old_size, D[0:new_size])``; empty when the sizes are
        equal or ``old_size`` is 0."""
        n = self._check_size(new_size)
        if not 0 <= old_size <= n:
            raise InvalidTreeSize(
                tree_size=old_size, available=n, reason="old size must be in [0, new size]"
            )
        if old_size in (0, n):
            return []
        stack: list[bytes] = []
        lo, hi, m, whole = 0, n, old_size, True
        while True:
            size = hi - lo
            if m == size:
                if not whole:
                    stack.append(self._range(lo, hi))
                break
            k = _split(size)
            if m <= k:
                stack.append(self._range(lo + k, hi))
                hi = lo + k
            else:
                stack.append(self._range(lo, lo + k))
                lo, m, whole = lo + k, m - k, False
        return list(reversed(stack))

    # -- internals -------------------------------------------------------------------------

    def _check_size(self, tree_size: int | None) -> int:
        available = len(self._leaves)
        if tree_size is None:
            return available
        if not 0 <= tree_size <= available:
            raise InvalidTreeSize(
                tree_size=tree_size, available=available, reason="must be in [0, log size]"
            )
        return tree_size

    def _range(self, lo: int, hi: int) -> bytes:
        """``MTH(D[lo:hi])`` for a range produced by RFC splitting (``lo`` aligned)."""
        n = hi - lo
        if n & (n - 1) == 0:
            level = n.bit_length() - 1
            return self._perfect(level, lo >> level)
        k = _split(n)
        return node_hash(self._range(lo, lo + k), self._range(lo + k, hi))

    def _perfect(self, level: int, index: int) -> bytes:
        """Hash of the complete subtree of ``2**level`` leaves starting at ``index << level``."""
        if level == 0:
            return self._leaves[index]
        key = (level, index)
        cacheable = level >= self._min_cached_level
        if cacheable:
            hit = self._cache.get(key)
            if hit is not None:
                return hit
        value = node_hash(
            self._perfect(level - 1, 2 * index), self._perfect(level - 1, 2 * index + 1)
        )
        if cacheable:
            self._cache[key] = value
        return value


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """``MTH`` of a whole sequence of leaf hashes (no cache kept)."""
    return MerkleTree(leaf_hashes).root()


def inclusion_proof(
    leaf_hashes: Sequence[bytes], *, index: int, tree_size: int | None = None
) -> list[bytes]:
    """One-shot :meth:`MerkleTree.inclusion_proof`."""
    return MerkleTree(leaf_hashes).inclusion_proof(index, tree_size)


def consistency_proof(
    leaf_hashes: Sequence[bytes], *, old_size: int, new_size: int | None = None
) -> list[bytes]:
    """One-shot :meth:`MerkleTree.consistency_proof`."""
    return MerkleTree(leaf_hashes).consistency_proof(old_size, new_size)


def _valid_hashes(*hashes: bytes) -> bool:
    return all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in hashes)


def root_from_inclusion_proof(
    *, leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes]
) -> bytes | None:
    """RFC 9162 §2.1.3.2 steps 1-4: the root the proof leads to, or ``None`` if it is
    structurally invalid (index out of range, wrong length, bad hash sizes)."""
    if not 0 <= index < tree_size or not _valid_hashes(leaf_hash, *proof):
        return None
    fn, sn = index, tree_size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        return None
    return r


def verify_inclusion(
    *, leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: does ``proof`` show leaf ``index`` of a ``tree_size`` tree with head
    ``root`` has hash ``leaf_hash``?"""
    computed = root_from_inclusion_proof(
        leaf_hash=leaf_hash, index=index, tree_size=tree_size, proof=proof
    )
    return computed is not None and isinstance(root, bytes) and computed == root


def verify_consistency(
    *,
    old_size: int,
    new_size: int,
    old_root: bytes,
    new_root: bytes,
    proof: Sequence[bytes],
) -> bool:
    """RFC 9162 §2.1.4.2: is the ``new_size`` tree with head ``new_root`` an append-only
    extension of the ``old_size`` tree with head ``old_root``?"""
    if not _valid_hashes(old_root, new_root, *proof):
        return False
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    # 1. An empty path fails.
    if not proof:
        return False
    path = list(proof)
    # 2. If first is an exact power of 2, prepend first_hash.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    # 3.
    fn, sn = old_size - 1, new_size - 1
    # 4.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5.
    fr = sr = path[0]
    # 6.
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # 7.
    return sn == 0 and fr == old_root and sr == new_root
