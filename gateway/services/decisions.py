"""Fetch decisions from the verified consent index (``decision_source = "index"``).

One :class:`ledger.index.ConsentIndex` per gateway process, over the gateway's keep-alive
JSON-RPC client, from the registry's deployment block, with a snapshot under the gateway's home;
one :class:`ledger.index.FreshIndex` on it with the gateway's ``max_head_age_s``. A decision is
then one head observation shared by every request that arrived before it was sent (no
``eth_call`` per request), a catch-up when the head moved, and a lookup.

Opening is lazy: nothing touches the chain when the app is built, so the gateway starts with
the chain down (``/healthz`` says so). The index is opened (snapshot confirmed against the
chain, else replayed from the deployment block) on the first decision, or earlier by
:meth:`IndexDecisions.warm_up`, which the app runs once in a background thread at start; a
failure to open leaves nothing behind and the next decision tries again.

Errors fail closed: a head older than ``max_head_age_s`` is :class:`gateway.errors.ChainStale`;
anything else (node unreachable, an index that refuses to serve because the node's logs
contradict the event digest, a chain that will not settle) is
:class:`gateway.errors.ChainUnavailable`. A refusal is sticky: the index serves nothing until
the gateway restarts (and replays or confirms its snapshot again).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from gateway.errors import ChainStale, ChainUnavailable
from ledger.chain.node import ChainError
from ledger.chain.node import ChainUnavailable as NodeUnavailable
from ledger.chain.registry import AccessDecision
from ledger.chain.rpc import RpcClient
from ledger.index import ConsentIndex, FreshIndex, HeadTooOld, IndexRefused

__all__ = ["IndexDecisions", "StaleHead"]

log = logging.getLogger("gateway")

#: Write the index snapshot again after this many new registry events (and at shutdown).
SNAPSHOT_EVERY_EVENTS = 10_000


class StaleHead(ChainStale):
    """``ChainStale`` from the index, with the ledger position of the stale head (the index
    caught up to it before judging its age) for the access-log leaf."""

    def __init__(self, exc: HeadTooOld, event_count: int | None) -> None:
        super().__init__(
            block=exc.block,
            chain_time=exc.chain_time,
            age_s=exc.age_s,
            max_head_age_s=exc.max_head_age_s,
        )
        self.event_count = event_count


class IndexDecisions:
    """``accessDecision`` answered by the verified consent index, strictly fresh."""

    def __init__(
        self,
        rpc: RpcClient,
        *,
        url: str,
        address: str,
        start_block: int,
        snapshot_path: Path,
        max_head_age_s: float | None,
    ) -> None:
        self.rpc = rpc
        self.url = url  # for ChainUnavailable (logged, never shown to a caller)
        self.address = address
        self.start_block = start_block
        self.snapshot_path = snapshot_path
        self.max_head_age_s = max_head_age_s
        self._fresh: FreshIndex | None = None
        self._open_lock = threading.Lock()

    @property
    def index(self) -> ConsentIndex | None:
        """The index, once opened."""
        fresh = self._fresh
        return fresh.index if fresh is not None else None

    def _opened(self) -> FreshIndex:
        fresh = self._fresh
        if fresh is not None:
            return fresh
        with self._open_lock:
            if self._fresh is None:
                index = ConsentIndex.open(
                    self.rpc,
                    address=self.address,
                    start_block=self.start_block,
                    snapshot_path=self.snapshot_path,
                    snapshot_every_events=SNAPSHOT_EVERY_EVENTS,
                )
                self._fresh = FreshIndex(index, max_head_age_s=self.max_head_age_s)
            return self._fresh

    def access_decision(
        self, patient: str, grantee: str, record_id: bytes, purpose: int
    ) -> AccessDecision:
        """The decision at an index position no older than a head observed after this call
        began. Raises ``StaleHead`` (a ``ChainStale``) or ``ChainUnavailable``."""
        try:
            fresh = self._opened()
            return fresh.access_decision(patient, grantee, record_id, purpose)
        except HeadTooOld as exc:
            index = self.index
            position = index.position if index is not None else None
            count = (
                position.event_count
                if position is not None and position.block_number == exc.block
                else None
            )
            raise StaleHead(exc, count) from None
        except NodeUnavailable as exc:
            raise ChainUnavailable(url=self.url, reason=exc.reason) from None
        except IndexRefused as exc:
            raise ChainUnavailable(url=self.url, reason="consent index refused") from exc
        except (ChainError, ValueError, KeyError, TypeError) as exc:
            # an error answer, a malformed header, a chain that will not settle: no decision
            raise ChainUnavailable(url=self.url, reason=type(exc).__name__) from exc

    def warm_up(self) -> None:
        """Open the index and catch up once (at start, in the background); failures are
        logged and left to the first decision."""
        try:
            self._opened().fresh()
        except HeadTooOld:
            pass  # caught up; decisions fail closed until the head is fresh
        except Exception as exc:
            log.warning("consent index not ready at start: %s", type(exc).__name__)

    def start_warm_up(self) -> threading.Thread:
        thread = threading.Thread(target=self.warm_up, name="consent-index-warm-up", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Write the snapshot (best effort: a snapshot is an optimisation, never trusted
        without the chain confirming it)."""
        index = self.index
        if index is None or index.position is None or index.refused is not None:
            return
        try:
            index.save_snapshot()
        except Exception as exc:
            log.warning("consent index snapshot not written: %s", type(exc).__name__)
