"""The access log: every fetch decision as a leaf of an append-only RFC 9162 Merkle tree.

The leaf format (version 1, the canonical JSON of a :class:`Decision`) is
``ledger.protocol.access_leaf``: this log writes its ``canonical_leaf`` and the audit reads the
same leaves with its ``parse_leaf``.

Appends go through one sequencer so that leaf indices are dense and every replica agrees on
them: a process lock (group commit: the holder writes every queued entry in one transaction)
plus, in the same transaction, the sequencer row (``SELECT ... FOR
UPDATE`` on PostgreSQL; ``UPDATE ... RETURNING`` on SQLite, which takes the database write lock
first and so never deadlocks on a lock upgrade). Leaf hashes are mirrored in memory (loaded at
start, extended on append, topped up from the database when another replica appended), and
:class:`ledger.protocol.merkle.MerkleTree` answers roots and proofs from them in O(log n).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, Integer, bindparam, insert, select, update

from gateway.storage.engine import is_postgres
from gateway.storage.tables import ACCESS_LOG, CHECKPOINT, LOG_SEQUENCER, Checkpoint
from ledger.protocol.access_leaf import Decision, canonical_leaf
from ledger.protocol.merkle import EMPTY_ROOT, MerkleTree, leaf_hash

__all__ = ["AccessLog", "Appended"]

_LOG = ACCESS_LOG
_SEQ = LOG_SEQUENCER
_CKPT = CHECKPOINT
# Built once (the append path runs them per group commit): reserve ``n`` indices on SQLite (the
# UPDATE takes the database write lock first), and the multi-row leaf insert.
_SQLITE_RESERVE = (
    update(_SEQ)
    .where(_SEQ.c.id == 1)
    .values(next_idx=_SEQ.c.next_idx + bindparam("n", type_=Integer))
    .returning(_SEQ.c.next_idx)
)
_INSERT_LEAVES = insert(_LOG)


@dataclass(slots=True)
class _Pending:
    """A queued append: its leaf, then the index it got or the error that failed it."""

    leaf: bytes
    digest: bytes
    patient: str
    requester: str
    index: int | None = None
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class Appended:
    index: int
    leaf: bytes
    leaf_hash: bytes


class AccessLog:
    """The append-only access log in the database, with Merkle roots and proofs."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], float] = time.time,
        on_append: Callable[[int], None] | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._on_append = on_append
        self._postgres = is_postgres(engine)
        self._append_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._mirror_lock = threading.Lock()
        self._leaves: list[bytes] = []
        self._tree = MerkleTree(self._leaves)
        self.sync()

    # -- writes ------------------------------------------------------------------------------

    def append(self, decision: Decision) -> Appended:
        """Append ``decision`` as the next leaf; returns once it is committed.

        Group commit: appends queue up; whichever thread holds the sequencer lock writes every
        queued entry in one transaction (one sequencer update for the whole range, one
        multi-row insert, one commit) and the others find theirs done. No caller returns before
        the transaction holding its entry has committed; a failed transaction fails every
        append in it.
        """
        leaf = canonical_leaf(decision)
        item = _Pending(
            leaf=leaf,
            digest=leaf_hash(leaf),
            patient=decision.patient.lower(),
            requester=decision.requester.lower(),
        )
        with self._queue_lock:
            self._queue.append(item)
        with self._append_lock:
            if item.index is None and item.error is None:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._write(batch)
        if item.error is not None:
            raise item.error
        index = item.index
        if index is None:  # _write gives every entry of its batch an index or an error
            raise RuntimeError("access-log append neither written nor failed")
        if self._on_append is not None:
            self._on_append(index + 1)
        return Appended(index=index, leaf=leaf, leaf_hash=item.digest)

    def _write(self, batch: list[_Pending]) -> None:
        """One transaction for ``batch``: reserve a dense index range, insert, commit."""
        n = len(batch)
        try:
            with self._engine.begin() as conn:
                if self._postgres:
                    first = int(
                        conn.execute(
                            select(_SEQ.c.next_idx).where(_SEQ.c.id == 1).with_for_update()
                        ).scalar_one()
                    )
                    conn.execute(update(_SEQ).where(_SEQ.c.id == 1).values(next_idx=first + n))
                else:
                    first = int(conn.execute(_SQLITE_RESERVE, {"n": n}).scalar_one()) - n
                conn.execute(
                    _INSERT_LEAVES,
                    [
                        {
                            "idx": first + i,
                            "leaf": p.leaf,
                            "leaf_hash": p.digest,
                            "patient": p.patient,
                            "requester": p.requester,
                        }
                        for i, p in enumerate(batch)
                    ],
                )
        except BaseException as exc:  # every waiter in the batch learns of it
            for p in batch:
                p.error = exc
            if not isinstance(exc, Exception):
                raise
            return
        with self._mirror_lock:
            if first == len(self._leaves):
                self._leaves.extend(p.digest for p in batch)
        if first + n > len(self._leaves):  # another replica appended in between
            self.sync()
        for i, p in enumerate(batch):
            p.index = first + i

    def record_checkpoint(
        self, *, tree_size: int, root: bytes, gateway: str, tx_hash: str, block_number: int
    ) -> Checkpoint:
        row = Checkpoint(
            tree_size=tree_size,
            root_hash="0x" + root.hex(),
            gateway=gateway,
            tx_hash=tx_hash,
            block_number=block_number,
            anchored_at=self._clock(),
        )
        with self._engine.begin() as conn:
            conn.execute(insert(_CKPT).values(**row.model_dump()))
        return row

    # -- reads -------------------------------------------------------------------------------

    def sync(self) -> int:
        """Top up the in-memory leaf hashes from the database; returns the log size."""
        with self._mirror_lock:
            start = len(self._leaves)
            with self._engine.connect() as conn:
                rows = conn.execute(
                    select(_LOG.c.idx, _LOG.c.leaf_hash)
                    .where(_LOG.c.idx >= start)
                    .order_by(_LOG.c.idx)
                ).all()
            for idx, digest in rows:
                if idx != len(self._leaves):
                    break  # a gap: an append still committing elsewhere; take it next time
                self._leaves.append(bytes(digest))
            return len(self._leaves)

    @property
    def size(self) -> int:
        return len(self._leaves)

    def root(self, tree_size: int | None = None) -> bytes:
        if tree_size is not None and tree_size > len(self._leaves):
            self.sync()
        if tree_size == 0 or (tree_size is None and not self._leaves):
            return EMPTY_ROOT
        return self._tree.root(tree_size)

    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        if tree_size > len(self._leaves):
            self.sync()
        return self._tree.inclusion_proof(index, tree_size)

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        if second > len(self._leaves):
            self.sync()
        return self._tree.consistency_proof(first, second)

    def entries_for_patient(
        self, patient: str, *, after: int = -1, limit: int = 100
    ) -> list[tuple[int, bytes, bytes]]:
        """``(index, leaf, leaf_hash)`` of decisions about ``patient``'s records, in order."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(_LOG.c.idx, _LOG.c.leaf, _LOG.c.leaf_hash)
                .where(_LOG.c.patient == patient.lower(), _LOG.c.idx > after)
                .order_by(_LOG.c.idx)
                .limit(limit)
            ).all()
        return [(int(i), bytes(leaf), bytes(h)) for i, leaf, h in rows]

    def leaves(self, *, upto: int | None = None) -> list[bytes]:
        """The canonical leaves ``0 .. upto-1`` (default: every committed, gap-free leaf)."""
        size = self.sync() if upto is None else upto
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(_LOG.c.idx, _LOG.c.leaf).where(_LOG.c.idx < size).order_by(_LOG.c.idx)
            ).all()
        out: list[bytes] = []
        for idx, leaf in rows:
            if idx != len(out):
                break  # never export past a gap
            out.append(bytes(leaf))
        return out

    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint recorded after its on-chain receipt, by tree size."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(_CKPT).order_by(_CKPT.c.tree_size)).mappings().all()
        return [Checkpoint.model_validate(dict(r)) for r in rows]

    def latest_checkpoint(self) -> Checkpoint | None:
        with self._engine.connect() as conn:
            row = (
                conn.execute(select(_CKPT).order_by(_CKPT.c.tree_size.desc()).limit(1))
                .mappings()
                .first()
            )
        return Checkpoint.model_validate(dict(row)) if row is not None else None

    def checkpoint_at(self, tree_size: int) -> Checkpoint | None:
        with self._engine.connect() as conn:
            row = (
                conn.execute(select(_CKPT).where(_CKPT.c.tree_size == tree_size)).mappings().first()
            )
        return Checkpoint.model_validate(dict(row)) if row is not None else None
