"""The verified consent index: the registry's consent state, fed block by block from its logs,
each applied block proven against the on-chain event digest.

:meth:`ConsentIndex.sync` catches up from the applied position to a chain head in ranges of
blocks. For each range it fetches the registry's logs (``eth_getLogs`` in adaptive chunks,
:func:`ledger.chain.logs.fetch_logs`), folds them, block by block, into the running event digest
(:mod:`ledger.index.digest`) and reads ``eventDigest()`` at every block that has logs and at the
range's last block, all in JSON-RPC batches, each call pinned to the block's hash (EIP-1898,
``requireCanonical``). Only when every digest matches are the range's events folded into the
state (:class:`ledger.index.state.ConsentState`, by the fold table the audit uses too). The
digest is a hash chain over every log of the registry, so a node that drops, invents, alters or
reorders a log is caught at the first block it lied about: the index then refuses to serve
(:class:`ledger.index.errors.IndexRefused`, kept in :attr:`ConsentIndex.refused`) until
:meth:`ConsentIndex.reset`. Blocks without registry logs change nothing and are covered by the
next check (the digest read there folds them). An event type the index does not know (a newer
registry) is folded into the digest and counted in :attr:`ConsentIndex.unknown_events`, and
changes no state; a log of a known type that does not decode is refused.

A decision (:meth:`ConsentIndex.access_decision`) is ``ConsentRegistry.accessDecision`` at the
applied position: the same basis and ``until``, and the same ledger position (event count,
block number, the block's chain time, which expiries are judged at), as the one
``AccessDecision`` type the gateway uses.

Reorganisations: the index keeps, for the last ``max_reorg_depth`` blocks, the hash, digest and
undo journal of every block it applied with logs and of every range end. Before each range it
checks that its applied block is still canonical (the parent of what follows); when not, or when
a log comes back ``removed``, a block's logs disagree on its hash, or a pinned ``eth_call``
finds its block gone, it rolls back to the newest kept block still canonical (the common
ancestor) and applies forward again. A reorganisation deeper than that is
:class:`ledger.index.errors.ReorgTooDeep`.

Snapshots: :meth:`ConsentIndex.save_snapshot` writes the state and its position atomically
(temporary file, fsync, rename); :meth:`ConsentIndex.open` loads one only after the chain
confirms its position (the block hash is canonical and ``eventDigest()`` there is the
snapshot's), else replays from the start block, so a restart does not replay from genesis.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address

from ledger.chain.abi import registry_abi
from ledger.chain.logs import FetchStats, fetch_logs
from ledger.chain.registry import AccessDecision
from ledger.chain.rpc import RpcClient, RpcError
from ledger.index.digest import (
    EVENT_DIGEST_SELECTOR,
    ZERO_HEAD,
    DigestState,
    Keccak256,
    gc_paused,
    parse_event_digest,
)
from ledger.index.errors import (
    ChainUnsettled,
    ConsentIndexError,
    IndexRefused,
    ReorgTooDeep,
    SnapshotInvalid,
)
from ledger.index.fold import MAX_PURPOSE, access_basis
from ledger.index.position import AccountConsents, BlockRef, IndexPosition, IndexStats
from ledger.index.snapshot import Snapshot, read_snapshot, write_snapshot
from ledger.index.state import ConsentState, UndoEntry
from ledger.protocol.contract_errors import InvalidPurpose
from ledger.protocol.events import (
    EventDecoder,
    MalformedLog,
    RawLog,
    RegistryEvent,
    UnknownEvent,
    registry_event_abi,
)

__all__ = ["AccountConsents", "BlockRef", "ConsentIndex", "IndexPosition", "IndexStats"]

log = logging.getLogger("ledger.index")

T = TypeVar("T")
_Fetched = tuple[list[RawLog], int]  # a range's logs and how many came back removed


@dataclass
class _Applied:
    """A block the index can roll back to: its hash and the digest after it, and the undo of
    the changes made in it (``None``: not kept, the block was deeper than a reorg can reach)."""

    block_number: int
    block_hash: str
    digest: DigestState
    journal: list[UndoEntry] | None
    timestamp: int | None = None


class _HeadRace(Exception):
    """The head's digest is ahead of its logs, the block before it agrees (see sync)."""


class _Reorganised(Exception):
    """The blocks being applied changed under the index."""


@dataclass
class _Mismatch(Exception):
    block: int
    ours: DigestState
    theirs: DigestState


@dataclass
class _Block:
    number: int
    hash: str
    logs: list[RawLog] = field(default_factory=list)
    digest: DigestState | None = None


def _their_digest(number: int, answer: Any) -> DigestState:
    try:
        return parse_event_digest(bytes.fromhex(str(answer)[2:]))
    except ValueError:
        raise ConsentIndexError(
            f"eventDigest() at block {number} answered {str(answer)[:80]}"
        ) from None


@lru_cache(maxsize=65536)
def _checksum(address: str) -> ChecksumAddress:
    return to_checksum_address(address)


class ConsentIndex:
    """The registry at ``address``, indexed from ``start_block`` (its deploy block) over
    ``rpc``. Thread-safe: one caller syncs at a time, decisions read between applied ranges."""

    def __init__(
        self,
        rpc: RpcClient,
        *,
        address: str,
        start_block: int,
        decoder: EventDecoder | None = None,
        max_reorg_depth: int = 64,
        range_blocks: int = 2_000,
        target_logs: int = 5_000,
        batch_size: int = 1_000,
        max_attempts: int = 5,
        snapshot_path: Path | None = None,
        snapshot_every_events: int | None = None,
    ) -> None:
        self.rpc = rpc
        self.address: ChecksumAddress = to_checksum_address(address)
        self._address_lower = self.address.lower()
        self._digest_query = {"to": self.address, "data": EVENT_DIGEST_SELECTOR}
        self.start_block = start_block
        self.decoder = decoder or EventDecoder(registry_event_abi(registry_abi()))
        self.max_reorg_depth = max_reorg_depth
        self.range_blocks = range_blocks
        self.target_logs = target_logs
        self._range = min(range_blocks, 8)  # grows fast over light blocks (see _adapt)
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.snapshot_path = snapshot_path
        self.snapshot_every_events = snapshot_every_events
        self.refused: IndexRefused | None = None
        # topic0 (0x hex) -> logs of that unknown type folded (counted when applied; a roll-back
        # does not uncount them)
        self.unknown_events: Counter[str] = Counter()
        self.stats = IndexStats()
        self._state = ConsentState()
        self._position: IndexPosition | None = None
        self._applied: list[_Applied] = []
        self._sync_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._chain_id: int | None = None
        self._snapshot_count = 0

    @classmethod
    def open(
        cls, rpc: RpcClient, *, address: str, start_block: int, snapshot_path: Path, **options: Any
    ) -> ConsentIndex:
        """An index resumed from ``snapshot_path`` when the chain confirms it, else a fresh one
        from ``start_block`` (a missing or invalid snapshot is logged, never served)."""
        index = cls(
            rpc, address=address, start_block=start_block, snapshot_path=snapshot_path, **options
        )
        if snapshot_path.exists():
            try:
                index.load_snapshot(snapshot_path)
            except SnapshotInvalid as exc:
                log.warning("%s; indexing from block %d instead", exc, start_block)
        return index

    # -- state ------------------------------------------------------------------------------

    @property
    def position(self) -> IndexPosition | None:
        """The applied position (``None`` before the first sync)."""
        return self._position

    def reset(self) -> None:
        """Forget everything, including a refusal: the next sync replays from the start block."""
        with self._sync_lock, self._state_lock:
            self._state = ConsentState()
            self._position = None
            self._applied = []
            self.refused = None
            self.unknown_events.clear()

    def _check_serving(self) -> None:
        refused = self.refused
        if refused is not None:
            raise type(refused)(refused.reason, block=refused.block)

    def _refuse(self, error: IndexRefused) -> IndexRefused:
        self.refused = error
        log.error("%s", error)
        return error

    # -- decisions and reads ----------------------------------------------------------------

    def access_decision(
        self, patient: str, grantee: str, record_id: bytes, purpose: int
    ) -> AccessDecision:
        """``accessDecision(patient, grantee, recordId, purpose)`` at the applied position.
        Raises ``InvalidPurpose`` as the contract reverts, :class:`IndexRefused` when the
        index refuses to serve, ``ConsentIndexError`` before the first sync."""
        self._check_serving()
        if not 0 <= purpose <= MAX_PURPOSE:
            raise InvalidPurpose(purpose)
        p, g, rid = _checksum(patient), _checksum(grantee), bytes(record_id)
        with self._state_lock:
            position = self._require_position()
            basis, until = access_basis(self._state, p, g, rid, purpose, position.timestamp)
        return AccessDecision(
            basis, until, position.event_count, position.block_number, position.timestamp
        )

    def consents(self, account: str) -> AccountConsents:
        """The consents ``account`` granted and those granted to it, at the applied position."""
        self._check_serving()
        who = _checksum(account)
        with self._state_lock:
            position = self._require_position()
            granted = tuple(self._state.granted_by(who))
            received = tuple(self._state.granted_to(who))
        return AccountConsents(position, granted, received)

    def query(self, read: Callable[[ConsentState], T]) -> tuple[T, IndexPosition]:
        """``read(state)`` at the applied position, with that position (e.g.
        ``index.query(lambda s: s.has_role(EMERGENCY_ROLE, account))``)."""
        self._check_serving()
        with self._state_lock:
            position = self._require_position()
            return read(self._state), position

    def _require_position(self) -> IndexPosition:
        if self._position is None:
            raise ConsentIndexError("the consent index has not caught up yet")
        return self._position

    # -- catching up ------------------------------------------------------------------------

    def sync(self, head: BlockRef | None = None) -> IndexPosition:
        """Catch up to ``head`` (default: the node's latest block), rolling back first if the
        chain reorganised. Returns the new position (at ``head``, or later when another sync
        already went further on the same chain)."""
        with self._sync_lock:
            self._check_serving()
            if head is None:
                head = self._latest()
            position = self._position
            if (
                position is not None
                and position.block_number == head.number
                and position.block_hash == head.hash
            ):
                return position
            with gc_paused():
                if self._position is None:
                    self._start()
                mismatches = races = attempts = 0
                while attempts < self.max_attempts:
                    attempts += 1
                    try:
                        self._sync_to(head)
                        break
                    except _Reorganised:
                        self.stats.reorgs_seen += 1
                    except _HeadRace:  # no verdict (a lie in the head block is caught once
                        self.stats.head_races += 1  # a block follows): a few ms each, bounded
                        races += 1
                        attempts -= races <= 8 * self.max_attempts
                        time.sleep(0.001 * min(races, 8))
                    except _Mismatch as exc:
                        # Once may be a reorganisation between the calls; twice is a lie.
                        mismatches += 1
                        if mismatches >= 2:
                            raise self._refuse(
                                IndexRefused(
                                    f"the registry's logs do not fold to its event digest "
                                    f"(ours {exc.ours.count} events 0x{exc.ours.head.hex()}, "
                                    f"the chain's {exc.theirs.count} 0x{exc.theirs.head.hex()})",
                                    block=exc.block,
                                )
                            ) from None
                    head = self._latest()
                else:
                    raise ChainUnsettled(
                        f"the chain kept reorganising; {self.max_attempts} attempts"
                    )
            position = self._require_position()
        self._maybe_snapshot()
        return position

    def _latest(self) -> BlockRef:
        return BlockRef.from_header(self.rpc.call("eth_getBlockByNumber", ["latest", False]))

    def _start(self) -> None:
        if self.start_block > 0:
            parent = BlockRef.from_header(self._header(self.start_block - 1))
        else:
            parent = BlockRef(-1, "", 0)
        empty = DigestState(ZERO_HEAD, 0)
        with self._state_lock:
            self._applied = [_Applied(parent.number, parent.hash, empty, None, parent.timestamp)]
            self._position = IndexPosition(
                parent.number, parent.hash, parent.timestamp, 0, ZERO_HEAD
            )

    def _header(self, number: int) -> Any:
        header = self.rpc.call("eth_getBlockByNumber", [hex(number), False])
        if header is None:
            raise ConsentIndexError(f"the node has no block {number}")
        return header

    def _sync_to(self, head: BlockRef) -> None:
        """Apply ranges up to ``head``; while one range is verified and folded, the next one's
        logs are already being fetched (a node serialises a large answer for about as long
        as the index takes to verify it)."""
        ahead: tuple[int, int, Future[tuple[list[RawLog], int]]] | None = None
        pool: ThreadPoolExecutor | None = None
        try:
            while True:
                position = self._require_position()
                if position.block_number == head.number and position.block_hash == head.hash:
                    return
                start = position.block_number + 1
                if ahead is not None and ahead[0] == start:
                    end = ahead[1]
                else:
                    end = min(head.number, position.block_number + self._range)
                calls: list[tuple[str, Sequence[Any]]] = []
                if position.block_number >= 0:
                    calls.append(("eth_getBlockByNumber", [hex(position.block_number), False]))
                if end > position.block_number and end != head.number:
                    calls.append(("eth_getBlockByNumber", [hex(end), False]))
                answers = self.rpc.batch(calls)
                if position.block_number >= 0:
                    current = answers[0]
                    if current is None or current.get("hash") != position.block_hash:
                        self._roll_back()  # the applied block is no longer canonical
                        ahead = None
                        continue
                if end <= position.block_number:
                    return  # the head is behind the applied block, which is still canonical
                target = head if end == head.number else BlockRef.from_header(answers[-1])
                if ahead is not None and ahead[:2] == (start, end):
                    fetched = ahead[2].result()
                else:
                    fetched = self._fetch(start, end)
                ahead = None
                self._adapt(end - start + 1, len(fetched[0]))
                blocks = self._verify(position, target, fetched, at_head=end == head.number)
                if end < head.number:  # fetched while this range is decoded and folded
                    pool = pool or ThreadPoolExecutor(1, thread_name_prefix="index-logs")
                    following = min(head.number, end + self._range)
                    ahead = (end + 1, following, pool.submit(self._fetch, end + 1, following))
                self._apply(blocks, target, head.number)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _fetch(self, start: int, end: int) -> tuple[list[RawLog], int]:
        """The registry's logs of ``[start, end]`` and how many came back ``removed``."""
        stats = FetchStats()
        logs = fetch_logs(
            self.rpc,
            address=self.address,
            from_block=start,
            to_block=end,
            chunk_blocks=end - start + 1,
            stats=stats,
        )
        return logs, stats.removed

    def _adapt(self, blocks: int, logs: int) -> None:
        """Aim ranges at about ``target_logs`` logs: shrink after a heavy one, grow after a
        light one (up to ``range_blocks``)."""
        target = self.target_logs
        if logs > 2 * target:
            self._range = max(1, blocks * target // logs)
        elif logs < target // 2:
            self._range = min(self.range_blocks, max(self._range, blocks) * 2)

    def _verify(
        self, position: IndexPosition, end: BlockRef, fetched: _Fetched, *, at_head: bool = False
    ) -> list[_Block]:
        """The range's blocks, each proven against ``eventDigest()`` at its hash."""
        logs, removed = fetched
        self.stats.ranges += 1
        if removed:
            raise _Reorganised
        blocks = self._blocks(logs, position.block_number + 1, end)
        try:
            self._check_digests(blocks, position.digest, end)
        except _Mismatch as exc:
            if at_head and exc.block == end.number and exc.theirs.count > exc.ours.count:
                self._head_race_or_lie(exc, blocks, position)
            raise
        return blocks

    def _head_race_or_lie(self, exc: _Mismatch, blocks: list[_Block], at: IndexPosition) -> None:
        """The head's digest is ahead of its logs: anvil answers a call pinned to the head on
        the state of the block being mined, so this alone proves nothing. The block before the
        head is out of that race's reach: ``_HeadRace`` when the chain's digest there is ours,
        else return (a lie below the head)."""
        before, ours = exc.block - 1, at.digest
        ours = next((b.digest for b in reversed(blocks) if b.number <= before and b.digest), ours)
        if before > at.block_number:
            pinned = {"blockHash": self._header(before)["hash"], "requireCanonical": True}
            try:
                answer = self.rpc.call("eth_call", [self._digest_query, pinned])
            except RpcError:
                raise _Reorganised from None
            if _their_digest(before, answer) != ours:
                return
        raise _HeadRace

    def _apply(self, blocks: list[_Block], end: BlockRef, head: int) -> None:
        """Fold the verified blocks into the state; the position moves to ``end``."""
        events = [self._decode(block) for block in blocks]
        keep_from = head - self.max_reorg_depth
        with self._state_lock:
            state = self._state
            for block, decoded in zip(blocks, events, strict=True):
                journal: list[UndoEntry] | None = [] if block.number > keep_from else None
                state.journal = journal
                for event in decoded:
                    state.apply(event)
                assert block.digest is not None
                timestamp = end.timestamp if block.number == end.number else None
                self._applied.append(
                    _Applied(block.number, block.hash, block.digest, journal, timestamp)
                )
            state.journal = None
            digest = blocks[-1].digest
            assert digest is not None
            self._position = IndexPosition(
                end.number, end.hash, end.timestamp, digest.count, digest.head
            )
            self._prune()
        self.stats.events += sum(len(b.logs) for b in blocks)

    def _blocks(self, logs: list[RawLog], start: int, end: BlockRef) -> list[_Block]:
        """The range's blocks with logs (in order) and its last block, each with its logs."""
        logs.sort(key=lambda entry: (entry.block_number, entry.log_index))
        blocks: list[_Block] = []
        for entry in logs:
            if entry.address.lower() != self._address_lower:
                raise self._refuse(
                    IndexRefused(
                        f"the node returned a log of {entry.address} for the registry",
                        block=entry.block_number,
                    )
                )
            if not start <= entry.block_number <= end.number:
                raise self._refuse(
                    IndexRefused(
                        f"the node returned a log of block {entry.block_number} for blocks "
                        f"{start}..{end.number}",
                        block=entry.block_number,
                    )
                )
            if not blocks or blocks[-1].number != entry.block_number:
                blocks.append(_Block(entry.block_number, entry.block_hash))
            elif blocks[-1].hash != entry.block_hash:
                raise _Reorganised  # one block, two hashes: the chain moved between chunks
            blocks[-1].logs.append(entry)
        if not blocks or blocks[-1].number != end.number:
            blocks.append(_Block(end.number, end.hash))
        elif blocks[-1].hash != end.hash:
            raise _Reorganised
        return blocks

    def _check_digests(self, blocks: list[_Block], start: DigestState, end: BlockRef) -> None:
        """Fold each block's logs and compare with ``eventDigest()`` pinned to its hash."""
        hasher = Keccak256()
        join = b"".join
        head, count = start.head, start.count
        for block in blocks:
            for entry in block.logs:
                head = hasher(join((head, *entry.topics, entry.data)))[:24]
            count += len(block.logs)
            block.digest = DigestState(head, count)
        query = self._digest_query
        calls = [
            ("eth_call", [query, {"blockHash": block.hash, "requireCanonical": True}])
            for block in blocks
        ]
        answers: list[Any] = []
        try:
            for i in range(0, len(calls), self.batch_size):
                answers += self.rpc.batch(calls[i : i + self.batch_size])
        except RpcError:
            raise _Reorganised from None  # a pinned block is gone (or was never canonical)
        self.stats.digest_checks += len(calls)
        for block, answer in zip(blocks, answers, strict=True):
            theirs = _their_digest(block.number, answer)
            if theirs != block.digest:
                assert block.digest is not None
                raise _Mismatch(block.number, block.digest, theirs)

    def _decode(self, block: _Block) -> list[RegistryEvent]:
        events: list[RegistryEvent] = []
        decode = self.decoder.decode
        for entry in block.logs:
            try:
                events.append(decode(entry))
            except UnknownEvent as exc:
                self.unknown_events["0x" + exc.topic0.hex()] += 1
            except MalformedLog as exc:
                raise self._refuse(
                    IndexRefused(f"a registry log the index cannot read: {exc}", block=block.number)
                ) from None
        return events

    def _prune(self) -> None:
        """Keep the blocks a reorganisation can reach, and the newest one below them."""
        position = self._position
        assert position is not None
        floor = position.block_number - self.max_reorg_depth
        applied = self._applied
        keep = 0
        while keep + 1 < len(applied) and applied[keep + 1].block_number < floor:
            keep += 1
        if keep:
            del applied[:keep]

    def _roll_back(self) -> None:
        """Undo back to the newest kept block still canonical (the common ancestor)."""
        applied = self._applied
        numbers = [a.block_number for a in reversed(applied) if a.block_number >= 0]
        headers = self.rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
        canonical = {n: h for n, h in zip(numbers, headers, strict=True) if h is not None}
        target: int | None = None
        for i in range(len(applied) - 1, -1, -1):
            entry = applied[i]
            header = canonical.get(entry.block_number)
            if entry.block_number < 0 or (
                header is not None and header["hash"] == entry.block_hash
            ):
                target = i
                break
        if target is None or any(a.journal is None for a in applied[target + 1 :]):
            raise self._refuse(
                ReorgTooDeep(
                    f"the chain reorganised below the {self.max_reorg_depth} blocks the index "
                    "can roll back",
                    block=applied[0].block_number,
                )
            )
        anchor = applied[target]
        header = canonical.get(anchor.block_number)
        timestamp = BlockRef.from_header(header).timestamp if header is not None else 0
        with self._state_lock:
            position = self._require_position()
            for entry in reversed(applied[target + 1 :]):
                assert entry.journal is not None
                self._state.undo(entry.journal)
            del applied[target + 1 :]
            self._position = IndexPosition(
                anchor.block_number,
                anchor.block_hash,
                timestamp,
                anchor.digest.count,
                anchor.digest.head,
            )
        self.stats.rollbacks += 1
        self.stats.blocks_rolled_back += position.block_number - anchor.block_number
        log.warning(
            "chain reorganised: rolled back from block %d to %d",
            position.block_number,
            anchor.block_number,
        )

    # -- snapshots --------------------------------------------------------------------------

    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = self.rpc.chain_id()
        return self._chain_id

    def save_snapshot(self, path: Path | None = None) -> Path:
        """Write the state and its position to ``path`` (default: ``snapshot_path``)
        atomically: a crash leaves the previous snapshot or the new one, never a mix."""
        target = path if path is not None else self.snapshot_path
        if target is None:
            raise ValueError("no snapshot path")
        with self._sync_lock:  # nothing changes the state while it is written
            self._check_serving()
            position = self._require_position()
            write_snapshot(
                target,
                Snapshot(
                    chain_id=self.chain_id(),
                    registry=self.address,
                    start_block=self.start_block,
                    position=position,
                    unknown_events=dict(self.unknown_events),
                    state=self._state.to_json(),
                ),
            )
            self._snapshot_count = position.event_count
            self.stats.snapshots_written += 1
        return target

    def _maybe_snapshot(self) -> None:
        every, position = self.snapshot_every_events, self._position
        if self.snapshot_path is None or every is None or position is None:
            return
        if position.event_count - self._snapshot_count >= every:
            self.save_snapshot()

    def load_snapshot(self, path: Path) -> IndexPosition:
        """Resume from a snapshot once the chain confirms its position; ``SnapshotInvalid``
        (nothing changed) otherwise."""
        where = str(path)
        snapshot = read_snapshot(path)
        if snapshot.registry != self.address:
            raise SnapshotInvalid(where, f"a snapshot of registry {snapshot.registry}")
        if snapshot.start_block != self.start_block:
            raise SnapshotInvalid(where, f"indexed from block {snapshot.start_block}")
        if snapshot.chain_id != self.chain_id():
            raise SnapshotInvalid(where, f"a snapshot of chain {snapshot.chain_id}")
        position = snapshot.position
        self._confirm(where, position)
        try:
            state = ConsentState.from_json(snapshot.state)
        except (ValueError, KeyError, TypeError) as exc:
            raise SnapshotInvalid(where, f"malformed state: {exc!r}") from None
        with self._sync_lock, self._state_lock:
            self._state = state
            self._position = position
            self._applied = [
                _Applied(
                    position.block_number,
                    position.block_hash,
                    position.digest,
                    None,
                    position.timestamp,
                )
            ]
            self.unknown_events = Counter(snapshot.unknown_events)
            self.refused = None
            self._snapshot_count = position.event_count
        log.info("consent index resumed from %s at block %d", where, position.block_number)
        return position

    def _confirm(self, where: str, position: IndexPosition) -> None:
        """The chain holds ``position``: its block is canonical, with that digest."""
        query = {"to": self.address, "data": EVENT_DIGEST_SELECTOR}
        pinned = {"blockHash": position.block_hash, "requireCanonical": True}
        try:
            header, raw = self.rpc.batch(
                [
                    ("eth_getBlockByNumber", [hex(position.block_number), False]),
                    ("eth_call", [query, pinned]),
                ]
            )
            digest = parse_event_digest(bytes.fromhex(str(raw)[2:]))
        except (RpcError, ValueError) as exc:
            raise SnapshotInvalid(where, f"the chain does not hold its position: {exc}") from None
        if header is None or header.get("hash") != position.block_hash:
            raise SnapshotInvalid(where, f"block {position.block_number} is no longer canonical")
        if digest != position.digest or int(header["timestamp"], 16) != position.timestamp:
            raise SnapshotInvalid(where, "the chain's event digest there is another")
