"""Strict freshness: a decision taken on the verified index at a position no older than a chain
head observed *after* the request arrived.

:class:`FreshIndex` coalesces head observations: one request to the node is in flight at a
time, and it serves every request that arrived before it was sent. A request that arrives while
one is in flight waits for the next (the one in flight may have been answered from a state
older than the request), and all requests that arrived meanwhile share that next one. So under
any load there are at most two observations per round trip, and the request after a revoke's
receipt sees a head at or past the revoke's block.

An observation is one ``eth_getBlockByNumber("latest")``: the head's number, hash and chain
time in one round trip (the hash tells a reorganisation at the same height apart; the time is
what ``max_head_age_s`` judges). When the observed head is not the index's position, the index
catches up (or rolls back) first; then the decision is a lookup. With ``max_head_age_s`` set, a
head whose chain time is older than that by the local clock makes every decision fail closed
(:class:`ledger.index.errors.HeadTooOld`): a node that lost its peers answers from an old state
in which a revoke mined elsewhere is invisible. Leave it unset for an automining local node,
whose head only moves with transactions.

Sync code, thread-safe: the gateway's fetch path runs in a thread pool.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ledger.chain.registry import AccessDecision
from ledger.chain.rpc import RpcClient
from ledger.index.errors import HeadTooOld
from ledger.index.index import ConsentIndex
from ledger.index.position import AccountConsents, BlockRef, IndexPosition

__all__ = ["FreshIndex", "HeadObservation"]


@dataclass(frozen=True)
class HeadObservation:
    """The chain head as one observation (``round``: its number, counting from 1) saw it."""

    head: BlockRef
    round: int


class FreshIndex:
    """Decisions on ``index`` no older than a head observed after each request arrived.

    ``rpc`` (default: the index's) answers the head observations; ``clock`` is the local clock
    ``max_head_age_s`` is judged by (seconds since the epoch)."""

    def __init__(
        self,
        index: ConsentIndex,
        *,
        rpc: RpcClient | None = None,
        max_head_age_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.index = index
        self.rpc = rpc if rpc is not None else index.rpc
        self.max_head_age_s = max_head_age_s
        self._clock = clock
        self._cond = threading.Condition()
        self._sent = 0  # observations sent
        self._done = 0  # observations answered (or failed)
        self._in_flight = False
        self._latest: HeadObservation | None = None
        self._error: BaseException | None = None
        self._waiting = 0
        self._sync_lock = threading.Lock()
        self._synced_round = 0  # the index is at (or past) the head of this observation

    @property
    def observations(self) -> int:
        """Head observations sent so far."""
        return self._sent

    @property
    def waiting(self) -> int:
        """Requests waiting for a head observation now."""
        return self._waiting

    # -- observing the head -----------------------------------------------------------------

    def observe(self) -> HeadObservation:
        """A head observation sent after this call began (shared with every caller that began
        before it was sent). Raises what the node's failure raised (``ChainUnavailable`` ...)."""
        with self._cond:
            needed = self._sent + 1  # the first observation sent after this arrival
            self._waiting += 1
            try:
                while self._done < needed:
                    if self._in_flight:
                        self._cond.wait()
                        continue
                    self._in_flight = True
                    self._sent += 1
                    number = self._sent
                    self._cond.release()
                    observed: HeadObservation | None = None
                    error: BaseException | None = None
                    try:
                        observed = HeadObservation(self._fetch_head(), number)
                    except BaseException as exc:  # handed to every waiter of this round
                        error = exc
                    finally:
                        self._cond.acquire()
                    self._done = number
                    self._in_flight = False
                    self._latest, self._error = observed, error
                    self._cond.notify_all()
                if self._error is not None:
                    raise self._error
                assert self._latest is not None
                return self._latest
            finally:
                self._waiting -= 1

    def _fetch_head(self) -> BlockRef:
        return BlockRef.from_header(self.rpc.call("eth_getBlockByNumber", ["latest", False]))

    # -- fresh reads ------------------------------------------------------------------------

    def fresh(self) -> IndexPosition:
        """The index position to decide at: caught up to a head observed after this call
        began, whose chain time is within ``max_head_age_s``."""
        observation = self.observe()
        if self._synced_round < observation.round:
            with self._sync_lock:
                if self._synced_round < observation.round:
                    self.index.sync(observation.head)
                    self._synced_round = observation.round
        head = observation.head
        limit = self.max_head_age_s
        if limit is not None:
            age = self._clock() - head.timestamp
            if age > limit:
                raise HeadTooOld(
                    block=head.number, chain_time=head.timestamp, age_s=age, max_head_age_s=limit
                )
        position = self.index.position
        assert position is not None
        return position

    def access_decision(
        self, patient: str, grantee: str, record_id: bytes, purpose: int
    ) -> AccessDecision:
        """``accessDecision`` on the index, at a position no older than a head observed after
        the call began (see the module notes); the decision names that position."""
        self.fresh()
        return self.index.access_decision(patient, grantee, record_id, purpose)

    def consents(self, account: str) -> AccountConsents:
        """The consents of ``account`` (granted and received), fresh as a decision is."""
        self.fresh()
        return self.index.consents(account)
