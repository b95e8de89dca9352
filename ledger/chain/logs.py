"""Every log of a contract over a block range, fetched in bounded, adaptive ``eth_getLogs`` chunks.

A range the provider refuses as too large or as having too many results (the messages of geth,
Erigon, Besu, Nethermind, Alchemy, Infura, QuickNode, Ankr, Cloudflare and others, see
:func:`is_range_too_large`) is halved (or cut to the range the provider suggests), and the chunk
grows again after light answers. Logs with ``removed: true`` are dropped and counted. The audit's
replay (:mod:`ledger.audit.replay`), the registry client's break-glass history and the gateway's
consents listing all read logs through :func:`fetch_logs`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ledger.chain.node import ChainError
from ledger.chain.rpc import RpcClient, RpcError
from ledger.protocol.events import RawLog

__all__ = [
    "FetchStats",
    "LogFetchError",
    "ProgressFn",
    "RangeTooLarge",
    "fetch_logs",
    "is_range_too_large",
]


class LogFetchError(ChainError):
    """The logs could not be fetched (a malformed answer, or a range refused block by block)."""


class RangeTooLarge(LogFetchError):
    """Even a one-block ``eth_getLogs`` range is refused."""

    def __init__(self, block: int, reason: str) -> None:
        super().__init__(f"the node refuses eth_getLogs even for block {block} alone: {reason}")
        self.block = block
        self.reason = reason


_TOO_LARGE = re.compile(
    r"block range|range (?:is )?too (?:large|wide|big|long)|exceeds? (?:the )?max(?:imum)?"
    r"|exceed(?:ed|s)? .*range|too many (?:results|logs|blocks|records)"
    r"|more than \d+ (?:results|logs)"
    r"|query returned more than|response size|log response size exceeded|limit exceeded"
    r"|range limit|max(?:imum)? range|is limited to|query timeout|timed? ?out|payload too large"
    r"|result set too large|response is too big|block count|requested range|max results",
    re.IGNORECASE,
)
_SUGGESTED = re.compile(r"\[\s*(0x[0-9a-fA-F]+)\s*,\s*(0x[0-9a-fA-F]+)\s*\]")


def is_range_too_large(error: RpcError) -> bool:
    """Whether an ``eth_getLogs`` error means "ask for a smaller range".

    Recognises JSON-RPC code -32005 (limit exceeded, EIP-1474), HTTP 413, and the wording of
    common nodes and providers: geth "query returned more than 10000 results", Erigon / Ankr
    "block range is too wide", Besu "Requested range exceeds maximum range limit", Alchemy
    "Log response size exceeded", QuickNode "eth_getLogs is limited to a 10000 range",
    Cloudflare "Max range: 800", Nethermind "too many blocks", "query timeout exceeded".
    """
    if error.code in (-32005, 413):
        return True
    return bool(_TOO_LARGE.search(error.rpc_message)) or bool(
        isinstance(error.data, str) and _TOO_LARGE.search(error.data)
    )


def _suggested_end(error: RpcError, start: int) -> int | None:
    """The end of the range a provider suggests (Alchemy, Infura) if it starts at ``start``."""
    for text in (error.rpc_message, error.data if isinstance(error.data, str) else ""):
        match = _SUGGESTED.search(text)
        if match:
            lo, hi = int(match.group(1), 16), int(match.group(2), 16)
            if lo == start and hi >= start:
                return hi
    return None


ProgressFn = Callable[[int, int, int], None]
"""``progress(blocks_done, blocks_total, logs_so_far)``."""


@dataclass
class FetchStats:
    """What a fetch cost: requests sent, ranges halved, ``removed`` logs dropped."""

    requests: int = 0
    halvings: int = 0
    removed: int = 0


def _topic(value: Any) -> Any:
    """A topic filter position as JSON: bytes as ``0x`` hex, alternatives as a list, None."""
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, list | tuple):
        return [_topic(v) for v in value]
    return value


def fetch_logs(
    rpc: RpcClient,
    *,
    address: str,
    from_block: int,
    to_block: int,
    chunk_blocks: int = 10_000,
    max_chunk_blocks: int = 1_000_000,
    light_answer: int = 2_000,
    progress: ProgressFn | None = None,
    stats: FetchStats | None = None,
    topics: Sequence[Any] | None = None,
) -> list[RawLog]:
    """Every log of ``address`` in ``[from_block, to_block]`` (``removed`` ones dropped), in the
    node's order; ranges halve on refusal and double again after answers under ``light_answer``
    logs. ``topics`` filters as ``eth_getLogs`` does (``0x`` strings or bytes, a list for
    alternatives, None for any; no ``topics``: every log of ``address``)."""
    stats = stats if stats is not None else FetchStats()
    logs: list[RawLog] = []
    total = to_block - from_block + 1
    chunk = max(1, chunk_blocks)
    start = from_block
    from_rpc = RawLog.from_rpc
    while start <= to_block:
        end = min(to_block, start + chunk - 1)
        stats.requests += 1
        try:
            query: dict[str, Any] = {
                "address": address,
                "fromBlock": hex(start),
                "toBlock": hex(end),
            }
            if topics is not None:
                query["topics"] = [_topic(t) for t in topics]
            answer = rpc.call("eth_getLogs", [query])
        except RpcError as exc:
            if not is_range_too_large(exc):
                raise
            if end == start:
                raise RangeTooLarge(start, exc.rpc_message) from exc
            stats.halvings += 1
            suggested = _suggested_end(exc, start)
            if suggested is not None and suggested < end:
                chunk = suggested - start + 1
            else:
                chunk = max(1, (end - start + 1) // 2)
            continue
        if not isinstance(answer, list):
            raise LogFetchError(f"eth_getLogs answered {type(answer).__name__}, not a list")
        try:
            for entry in answer:
                log = from_rpc(entry)
                if log.removed:
                    stats.removed += 1
                    continue
                logs.append(log)
        except (KeyError, ValueError, TypeError) as exc:
            raise LogFetchError(f"eth_getLogs answered a malformed log: {exc!r}") from exc
        start = end + 1
        if len(answer) < light_answer:
            chunk = min(max_chunk_blocks, chunk * 2)
        if progress is not None:
            progress(start - from_block, total, len(logs))
    return logs
