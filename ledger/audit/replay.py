"""Replay every log of the registry and prove the replay complete against its event digest.

The registry folds every log it emits into ``head' = bytes24(keccak256(head || topic0 || ... ||
topicN || data))``, ``count' = count + 1`` (``IConsentRegistry``'s NatSpec; initial head zero).
:func:`replay` fetches the deployment's logs with ``eth_getLogs`` from its deploy block to a
target block ``head - confirmations``, orders them by ``(block, logIndex)``, recomputes that
digest from the raw topics and data, and compares it with ``eventDigest()`` read at the target
block's hash (EIP-1898). Equal digests prove the replay saw exactly the registry's logs, in
order; nothing here trusts the node beyond that.

Fetching is adaptive (:func:`ledger.chain.logs.fetch_logs`): a range the provider refuses as too
large is halved, and the chunk grows again after light answers. Logs with ``removed: true`` are
dropped and counted; logs of one block that disagree on the block hash mean the chain
reorganised under the replay, which is then retried.

When the digests differ, :func:`replay` localises every divergence: it bisects on
``eventDigest()`` at past blocks (``eth_call`` with a block number; needs an archive node, which
every dev chain and most providers are) to find the first block whose digest differs, fetches
that block's receipts, proves them against the on-chain digest and names the missing, extra,
altered or reordered logs. The verified logs of that block replace the node's answer and the
search goes on, so a node that hid several events is caught for each.

All I/O goes through :class:`ledger.chain.rpc.RpcClient` (an ``httpx.Client`` or another
transport handed in), so tests put a real node behind an ``httpx.MockTransport`` that lies.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address

from ledger.chain.logs import FetchStats, ProgressFn, fetch_logs
from ledger.chain.node import ChainError
from ledger.chain.rpc import RpcClient, RpcError
from ledger.index.digest import (
    EVENT_DIGEST_SELECTOR,
    ZERO_HEAD,
    DigestState,
    Keccak256,
    fold_digest,
    gc_paused,
    parse_event_digest,
)
from ledger.protocol.events import EventDecoder, RawLog, RegistryEvent

__all__ = [
    "EVENT_DIGEST_SELECTOR",
    "BlockClock",
    "DigestMismatchKind",
    "DigestProblem",
    "DigestState",
    "ReorgDetected",
    "ReplayError",
    "ReplayResult",
    "fold_digest",
    "gc_paused",
    "read_event_digest",
    "replay",
]


# ------------------------------------------------------------------------------ errors


class ReplayError(ChainError):
    """The replay could not be completed (the audit cannot verify)."""


class ReorgDetected(ReplayError):
    """The chain reorganised below the target block while replaying (retries exhausted)."""


# ------------------------------------------------------------------------------ digest


def read_event_digest(rpc: RpcClient, address: str, block: int | Mapping[str, Any]) -> DigestState:
    """``eventDigest()`` at a block (number, or an EIP-1898 ``{"blockHash": ...}``)."""
    raw = rpc.eth_call(address, EVENT_DIGEST_SELECTOR, block)
    try:
        return parse_event_digest(raw)
    except ValueError as exc:
        raise ReplayError(f"eventDigest() at {block} answered {exc}") from None


def _block_digests(logs: Sequence[RawLog]) -> tuple[list[int], list[DigestState]]:
    """Per block with logs: the block numbers and the digest after each (for bisection)."""
    blocks: list[int] = []
    states: list[DigestState] = []
    head = ZERO_HEAD
    hasher = Keccak256()
    for i, log in enumerate(logs):
        head = hasher(b"".join((head, *log.topics, log.data)))[:24]
        if i + 1 == len(logs) or logs[i + 1].block_number != log.block_number:
            blocks.append(log.block_number)
            states.append(DigestState(head, i + 1))
    return blocks, states


# ------------------------------------------------------------------------------ diagnosis


class DigestMismatchKind(StrEnum):
    MISSING = "missing"  # the node's answer lacks a log the registry emitted
    EXTRA = "extra"  # the node's answer has a log the registry did not emit
    ALTERED = "altered"  # a log at a position differs from what was emitted there
    REORDERED = "reordered"  # a log emitted in the block appears at another position
    UNLOCATED = "unlocated"  # the digests differ and the cause could not be narrowed down


@dataclass(frozen=True)
class DigestProblem:
    """One divergence between the replayed logs and what the registry folded."""

    kind: DigestMismatchKind
    message: str
    block_number: int | None = None
    log_index: int | None = None
    tx_hash: str | None = None
    event: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------ replay


@dataclass
class ReplayResult:
    """What a replay saw and whether it is provably complete."""

    chain_id: int
    address: ChecksumAddress
    from_block: int
    target_block: int
    target_hash: str
    head_block: int
    logs: list[RawLog]
    events: list[RegistryEvent]
    computed: DigestState
    onchain: DigestState
    problems: list[DigestProblem]
    removed_dropped: int = 0
    requests: int = 0
    halvings: int = 0
    repaired: bool = False
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        """The replayed logs are exactly the registry's (digest and count equal)."""
        return self.computed == self.onchain and not self.problems


def _same_log(a: RawLog, b: RawLog) -> bool:
    return a.topics == b.topics and a.data == b.data


def _event_name(decoder: EventDecoder, log: RawLog) -> str | None:
    return decoder.topics.get(log.topics[0]) if log.topics else None


class _Diagnoser:
    def __init__(self, rpc: RpcClient, address: str, decoder: EventDecoder) -> None:
        self.rpc = rpc
        self.address = address
        self.decoder = decoder
        self._cache: dict[int, DigestState] = {}

    def onchain(self, block: int) -> DigestState:
        state = self._cache.get(block)
        if state is None:
            state = read_event_digest(self.rpc, self.address, block)
            self._cache[block] = state
        return state

    def first_divergent_block(self, logs: Sequence[RawLog], lo: int, hi: int) -> int | None:
        """The first block in ``[lo, hi]`` after which our digest differs from the chain's."""
        blocks, states = _block_digests(logs)

        def ours(block: int) -> DigestState:
            i = bisect.bisect_right(blocks, block)
            return states[i - 1] if i else DigestState(ZERO_HEAD, 0)

        if self.onchain(hi) == ours(hi):
            return None
        while lo < hi:
            mid = (lo + hi) // 2
            if self.onchain(mid) == ours(mid):
                lo = mid + 1
            else:
                hi = mid
        return lo

    def true_logs(self, block: int, before: DigestState, after: DigestState) -> list[RawLog] | None:
        """The registry's logs of ``block`` from its receipts, if they fold from ``before`` to
        ``after`` (the on-chain digests), i.e. proven; else ``None``."""
        try:
            receipts = self.rpc.call("eth_getBlockReceipts", [hex(block)])
        except RpcError:
            receipts = None
        if receipts is None:
            try:
                header = self.rpc.call("eth_getBlockByNumber", [hex(block), False])
                hashes = header["transactions"] if header else []
                receipts = self.rpc.batch([("eth_getTransactionReceipt", [h]) for h in hashes])
            except (RpcError, KeyError, TypeError):
                return None
        address = self.address.lower()
        found: list[RawLog] = []
        for receipt in receipts or []:
            if not isinstance(receipt, Mapping):
                return None
            for entry in receipt.get("logs", []):
                if str(entry.get("address", "")).lower() == address:
                    found.append(RawLog.from_rpc(entry))
        found.sort(key=lambda log: log.log_index)
        return found if fold_digest(found, before) == after else None

    def compare(
        self, block: int, ours: Sequence[RawLog], truth: Sequence[RawLog]
    ) -> list[DigestProblem]:
        problems: list[DigestProblem] = []
        ours_by_index = {log.log_index: log for log in ours}
        matched_ours: set[int] = set()
        for t in truth:
            o = ours_by_index.get(t.log_index)
            if o is not None and _same_log(o, t):
                matched_ours.add(t.log_index)
                continue
            moved = next(
                (
                    x
                    for x in ours
                    if x.log_index != t.log_index
                    and x.log_index not in matched_ours
                    and _same_log(x, t)
                ),
                None,
            )
            name = _event_name(self.decoder, t)
            if moved is not None:
                matched_ours.add(moved.log_index)
                problems.append(
                    DigestProblem(
                        DigestMismatchKind.REORDERED,
                        f"{name} emitted at {block}:{t.log_index} "
                        f"was replayed at {block}:{moved.log_index}",
                        block,
                        t.log_index,
                        t.tx_hash,
                        name,
                        {"emitted_index": t.log_index, "replayed_index": moved.log_index},
                    )
                )
            elif o is not None:
                matched_ours.add(o.log_index)
                problems.append(
                    DigestProblem(
                        DigestMismatchKind.ALTERED,
                        f"the log at {block}:{t.log_index} differs from the {name} "
                        "the registry emitted",
                        block,
                        t.log_index,
                        t.tx_hash,
                        name,
                        {"replayed_event": _event_name(self.decoder, o)},
                    )
                )
            else:
                problems.append(
                    DigestProblem(
                        DigestMismatchKind.MISSING,
                        f"{name} at block {block} log {t.log_index} (tx {t.tx_hash}) "
                        "is missing from the node's eth_getLogs",
                        block,
                        t.log_index,
                        t.tx_hash,
                        name,
                    )
                )
        for o in ours:
            if o.log_index not in matched_ours:
                name = _event_name(self.decoder, o)
                problems.append(
                    DigestProblem(
                        DigestMismatchKind.EXTRA,
                        f"{name} at block {block} log {o.log_index} (tx {o.tx_hash}) "
                        "was not emitted by the registry",
                        block,
                        o.log_index,
                        o.tx_hash,
                        name,
                    )
                )
        return problems


def _coarse_problem(computed: DigestState, onchain: DigestState, why: str) -> DigestProblem:
    if computed.count < onchain.count:
        kind = DigestMismatchKind.MISSING
        what = f"{onchain.count - computed.count} event(s) missing"
    elif computed.count > onchain.count:
        kind = DigestMismatchKind.EXTRA
        what = f"{computed.count - onchain.count} extra event(s)"
    else:
        kind = DigestMismatchKind.REORDERED
        what = "same number of events but a different digest: reordered or altered"
    return DigestProblem(
        kind,
        f"{what} (replayed {computed.count}, the registry folded {onchain.count}); {why}",
        details={"computed": computed.as_dict(), "onchain": onchain.as_dict()},
    )


def _diagnose(
    rpc: RpcClient,
    address: str,
    decoder: EventDecoder,
    logs: list[RawLog],
    *,
    from_block: int,
    target: int,
    max_divergences: int,
) -> tuple[list[DigestProblem], list[RawLog] | None]:
    """Localise divergences; returns the problems and, when every one was proven from receipts,
    the repaired log list (else ``None``)."""
    diagnoser = _Diagnoser(rpc, address, decoder)
    problems: list[DigestProblem] = []
    current = list(logs)
    lo = from_block
    for _ in range(max_divergences):
        try:
            block = diagnoser.first_divergent_block(current, lo, target)
        except (RpcError, ReplayError) as exc:
            problems.append(
                _coarse_problem(
                    fold_digest(current),
                    diagnoser.onchain(target),
                    f"past digests unavailable ({exc})",
                )
            )
            return problems, None
        if block is None:
            return problems, current
        # The replay folds from zero at ``from_block`` (the deploy block): before it there is no
        # registry to ask (a divergence among the constructor's own events lands here).
        before = diagnoser.onchain(block - 1) if block > from_block else DigestState(ZERO_HEAD, 0)
        after = diagnoser.onchain(block)
        ours = [log for log in current if log.block_number == block]
        truth = diagnoser.true_logs(block, before, after)
        if truth is None:
            delta = after.count - before.count
            problems.append(
                _coarse_problem(
                    fold_digest(current),
                    diagnoser.onchain(target),
                    f"first divergence in block {block}: the registry folded {delta} "
                    "event(s) there, "
                    f"the replay has {len(ours)} (receipts unavailable or unproven)",
                )
            )
            return problems, None
        problems.extend(diagnoser.compare(block, ours, truth))
        current = [log for log in current if log.block_number != block]
        at = bisect.bisect_left([log.block_number for log in current], block)
        current[at:at] = truth
        lo = block + 1
    problems.append(
        DigestProblem(
            DigestMismatchKind.UNLOCATED,
            f"more than {max_divergences} divergent blocks; stopped localising",
        )
    )
    return problems, None


def replay(
    rpc: RpcClient,
    *,
    address: str,
    from_block: int,
    decoder: EventDecoder,
    target_block: int | None = None,
    confirmations: int = 0,
    chunk_blocks: int = 10_000,
    progress: ProgressFn | None = None,
    max_divergences: int = 20,
    retries: int = 2,
) -> ReplayResult:
    """Replay the registry at ``address`` from ``from_block`` (its deploy block) to
    ``target_block`` (default: head - ``confirmations``) and check it against the event digest.

    Divergences are localised and named in ``problems``. When each was proven from the
    block's receipts, ``logs`` / ``events`` are the repaired, verified history and
    ``repaired`` is set; the problems stay (the node's ``eth_getLogs`` could not be trusted).
    Raises :class:`ReplayError` (or ``ChainUnavailable``) when it cannot replay at all, and
    :class:`MalformedLog` when a log of the registry is not a registry event.
    """
    started = time.perf_counter()
    checksum = to_checksum_address(address)
    chain_id = rpc.chain_id()
    head = rpc.block_number()
    target = head - confirmations if target_block is None else target_block
    if target < from_block:
        raise ReplayError(
            f"target block {target} (head {head} - {confirmations} confirmations) is before "
            f"the deploy block {from_block}"
        )
    with gc_paused():
        return _replay(
            rpc, checksum, from_block, decoder, target, head, chain_id, chunk_blocks, progress,
            max_divergences, retries, started,
        )  # fmt: skip


def _replay(
    rpc: RpcClient,
    checksum: ChecksumAddress,
    from_block: int,
    decoder: EventDecoder,
    target: int,
    head: int,
    chain_id: int,
    chunk_blocks: int,
    progress: ProgressFn | None,
    max_divergences: int,
    retries: int,
    started: float,
) -> ReplayResult:
    for attempt in range(retries + 1):
        header = rpc.block(target)
        target_hash = str(header["hash"])
        stats = FetchStats()
        logs = fetch_logs(
            rpc,
            address=checksum,
            from_block=from_block,
            to_block=target,
            chunk_blocks=chunk_blocks,
            progress=progress,
            stats=stats,
        )
        logs.sort(key=lambda log: (log.block_number, log.log_index))
        reorged = _inconsistent_blocks(logs) or stats.removed > 0
        onchain = read_event_digest(
            rpc, checksum, {"blockHash": target_hash, "requireCanonical": True}
        )
        computed = fold_digest(logs)
        if computed == onchain:
            break
        if (reorged or str(rpc.block(target)["hash"]) != target_hash) and attempt < retries:
            continue
        break
    if str(rpc.block(target)["hash"]) != target_hash:
        raise ReorgDetected(f"block {target} changed hash while replaying; raise --confirmations")

    problems: list[DigestProblem] = []
    repaired = False
    foreign = [log for log in logs if log.address.lower() != checksum.lower()]
    if foreign:
        problems.append(
            DigestProblem(
                DigestMismatchKind.EXTRA,
                f"the node returned {len(foreign)} log(s) of other contracts "
                "for the registry's address",
                foreign[0].block_number,
                foreign[0].log_index,
                foreign[0].tx_hash,
            )
        )
        logs = [log for log in logs if log not in foreign]
        computed = fold_digest(logs)
    duplicates = _duplicates(logs)
    if duplicates:
        for dup in duplicates:
            problems.append(
                DigestProblem(
                    DigestMismatchKind.EXTRA,
                    f"the node returned block {dup.block_number} log {dup.log_index} twice",
                    dup.block_number,
                    dup.log_index,
                    dup.tx_hash,
                    _event_name(decoder, dup),
                )
            )
        logs = _dedupe(logs)
        computed = fold_digest(logs)
    if computed != onchain:
        found, fixed = _diagnose(
            rpc,
            checksum,
            decoder,
            logs,
            from_block=from_block,
            target=target,
            max_divergences=max_divergences,
        )
        problems.extend(found)
        if fixed is not None and fold_digest(fixed) == onchain:
            logs, repaired = fixed, True
            computed = onchain
    decode = decoder.decode
    events = [decode(log) for log in logs]
    return ReplayResult(
        chain_id=chain_id,
        address=checksum,
        from_block=from_block,
        target_block=target,
        target_hash=target_hash,
        head_block=head,
        logs=logs,
        events=events,
        computed=computed,
        onchain=onchain,
        problems=problems,
        removed_dropped=stats.removed,
        requests=stats.requests,
        halvings=stats.halvings,
        repaired=repaired,
        seconds=time.perf_counter() - started,
    )


def _inconsistent_blocks(logs: Sequence[RawLog]) -> bool:
    seen: dict[int, str] = {}
    return any(seen.setdefault(log.block_number, log.block_hash) != log.block_hash for log in logs)


def _duplicates(logs: Sequence[RawLog]) -> list[RawLog]:
    return [b for a, b in itertools.pairwise(logs) if a.position == b.position]


def _dedupe(logs: Sequence[RawLog]) -> list[RawLog]:
    out: list[RawLog] = []
    for log in logs:
        if out and out[-1].position == log.position:
            continue
        out.append(log)
    return out


# ------------------------------------------------------------------------------ block times


class BlockClock:
    """Block timestamps (and hashes), fetched in JSON-RPC batches and cached."""

    def __init__(self, rpc: RpcClient, *, batch_size: int = 200) -> None:
        self._rpc = rpc
        self._batch = batch_size
        self._times: dict[int, int] = {}

    def timestamps(self, blocks: Iterable[int]) -> dict[int, int]:
        wanted = sorted({b for b in blocks if b not in self._times})
        for i in range(0, len(wanted), self._batch):
            part = wanted[i : i + self._batch]
            headers = self._rpc.batch([("eth_getBlockByNumber", [hex(b), False]) for b in part])
            for number, header in zip(part, headers, strict=True):
                if header is None:
                    raise ReplayError(f"the node has no block {number}")
                self._times[number] = int(header["timestamp"], 16)
        return {b: self._times[b] for b in blocks}

    def timestamp(self, block: int) -> int:
        return self.timestamps([block])[block]
