"""Anchors access-log checkpoints on-chain: every N new entries or every T seconds.

A background thread wakes when the log has grown by ``every`` entries since the last anchored
checkpoint (the access log pokes it on append) or after ``interval_s`` with any new entry, and
sends ``anchorCheckpoint(treeSize, rootHash)`` from the gateway's account; never more than one
transaction per ``min_gap_s`` (under load a checkpoint covers everything appended meanwhile,
instead of one transaction per ``every`` entries). The checkpoint is
recorded in the database only after its receipt. When several replicas share one database and
one gateway account, the contract's strictly-growing rule (``CheckpointNotGrowing``) makes a
lost race harmless: that replica skips, the other's checkpoint stands.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.exc import IntegrityError

from gateway.errors import ContractRejected
from gateway.metrics import Metrics
from gateway.services.chain import ChainAccess
from gateway.storage.access_log import AccessLog
from gateway.storage.tables import Checkpoint
from ledger.protocol.errors import DomainError

__all__ = ["Anchorer"]

log = logging.getLogger("gateway")


class Anchorer:
    """Anchors checkpoints of ``access_log`` from ``chain``'s gateway account."""

    def __init__(
        self,
        access_log: AccessLog,
        chain: ChainAccess,
        *,
        every: int,
        interval_s: float,
        metrics: Metrics,
        min_gap_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.access_log = access_log
        self.chain = chain
        self.every = every
        self.interval_s = interval_s
        self.min_gap_s = min_gap_s
        self.metrics = metrics
        self._clock = clock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._anchor_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        latest = access_log.latest_checkpoint()
        self._anchored = latest.tree_size if latest is not None else 0
        self._last_at = clock()
        self.last_error: str | None = None

    @property
    def anchored_size(self) -> int:
        return self._anchored

    def notify(self, size: int) -> None:
        """Called after an append with the new log size."""
        if size - self._anchored >= self.every:
            self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="checkpoint-anchorer", daemon=True
            )
            self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None

    def _due(self) -> bool:
        pending = self.access_log.size - self._anchored
        if pending <= 0 or self._clock() - self._last_at < self.min_gap_s:
            return False
        return pending >= self.every or self._clock() - self._last_at >= self.interval_s

    def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            self._wake.wait(timeout=max(0.2, min(1.0, self.interval_s / 4)) + backoff)
            self._wake.clear()
            rest = self.min_gap_s - (self._clock() - self._last_at)
            if rest > 0:  # appends keep poking; anchor at most once per min_gap_s
                self._stop.wait(rest)
            if self._stop.is_set():
                return
            try:
                self.access_log.sync()
                if self._due():
                    self.anchor_now()
                backoff = 0.0
                self.last_error = None
            except Exception as exc:  # keep anchoring alive through chain / DB outages
                self.last_error = f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"
                log.warning("checkpoint anchoring failed: %s", self.last_error)
                backoff = min(30.0, backoff * 2 + 1.0)

    def anchor_now(self) -> Checkpoint | None:
        """Anchor the current log size if it grew; the recorded checkpoint, or None."""
        with self._anchor_lock:
            size = self.access_log.sync()
            latest = self.access_log.latest_checkpoint()
            self._anchored = max(self._anchored, latest.tree_size if latest else 0)
            if size <= self._anchored:
                return None
            root = self.access_log.root(size)
            account = self.chain.gateway_account
            try:
                receipt = self.chain.send(lambda r: r.anchor_checkpoint(account, size, root))
            except ContractRejected as exc:
                if exc.error == "CheckpointNotGrowing":
                    log.info("checkpoint %d already superseded on-chain", size)
                    self._last_at = self._clock()
                    return None
                raise
            except DomainError:
                raise
            row: Checkpoint | None
            try:
                row = self.access_log.record_checkpoint(
                    tree_size=size,
                    root=root,
                    gateway=account.address,
                    tx_hash=receipt.tx_hash,
                    block_number=receipt.block_number,
                )
            except IntegrityError:
                row = self.access_log.checkpoint_at(size)
            self._anchored = size
            self._last_at = self._clock()
            self.metrics.checkpoints.inc()
            self.metrics.anchored_size.set(size)
            log.info(
                "anchored checkpoint size=%d root=0x%s tx=%s", size, root.hex(), receipt.tx_hash
            )
            return row
