"""The verified consent index's errors. Every one means "no decision": callers fail closed.

::

    ConsentIndexError (a ChainError)
    ├── IndexRefused        the node's logs contradict the registry's event digest (a log
    │   │                   dropped, invented, altered or reordered), or a registry log the
    │   │                   index cannot read; sticky: the index serves nothing until reset
    │   └── ReorgTooDeep    the chain reorganised below the undo the index keeps; sticky
    ├── ChainUnsettled      the chain kept reorganising while the index caught up (retry later)
    ├── SnapshotInvalid     a snapshot file unreadable, of another chain or registry, or whose
    │                       position the chain does not hold (reorganised away, or forged)
    └── HeadTooOld          the chain head observed for a request is older than
                            ``max_head_age_s`` by the local clock (a node that lost its peers)
"""

from __future__ import annotations

from ledger.chain.node import ChainError

__all__ = [
    "ChainUnsettled",
    "ConsentIndexError",
    "HeadTooOld",
    "IndexRefused",
    "ReorgTooDeep",
    "SnapshotInvalid",
]


class ConsentIndexError(ChainError):
    """Root of the index's errors: no decision can be taken."""


class IndexRefused(ConsentIndexError):
    """The index will not serve: what the node returned contradicts the on-chain event digest
    (``block`` is the first block found wrong, when known)."""

    def __init__(self, reason: str, *, block: int | None = None) -> None:
        where = f" (block {block})" if block is not None else ""
        super().__init__(f"the consent index refuses to serve: {reason}{where}")
        self.reason = reason
        self.block = block


class ReorgTooDeep(IndexRefused):
    """The chain reorganised below the oldest block the index can roll back to."""


class ChainUnsettled(ConsentIndexError):
    """Reorganisations kept changing the blocks being applied; nothing was applied."""


class SnapshotInvalid(ConsentIndexError):
    """A snapshot that must not be served from (``reason`` says why)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"index snapshot {path}: {reason}")
        self.path = path
        self.reason = reason


class HeadTooOld(ConsentIndexError):
    """The head observed for a request is ``age_s`` seconds old, over ``max_head_age_s``."""

    def __init__(self, *, block: int, chain_time: int, age_s: float, max_head_age_s: float) -> None:
        super().__init__(
            f"chain head {block} (chain time {chain_time}) is {age_s:.0f} s old, "
            f"over the {max_head_age_s:g} s limit"
        )
        self.block = block
        self.chain_time = chain_time
        self.age_s = age_s
        self.max_head_age_s = max_head_age_s
