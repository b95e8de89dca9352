"""The index's positions and results: a block as a header names it, where the index stands,
one account's consents, and what the index did."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.index.digest import DigestState
from ledger.index.errors import ConsentIndexError
from ledger.index.fold import GrantInForce

__all__ = ["AccountConsents", "BlockRef", "IndexPosition", "IndexStats"]


@dataclass(frozen=True)
class BlockRef:
    """A block as a header names it: number, hash, chain time."""

    number: int
    hash: str
    timestamp: int

    @classmethod
    def from_header(cls, header: Any) -> BlockRef:
        """From an ``eth_getBlockByNumber`` answer; ``ConsentIndexError`` when malformed."""
        try:
            number, block_hash, timestamp = header["number"], header["hash"], header["timestamp"]
            ref = cls(int(number, 16), str(block_hash), int(timestamp, 16))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConsentIndexError(f"malformed block header from the node: {exc!r}") from None
        if len(ref.hash) != 66 or not ref.hash.startswith("0x"):
            raise ConsentIndexError(f"malformed block hash from the node: {ref.hash!r}")
        return ref


@dataclass(frozen=True)
class IndexPosition:
    """Where the index stands: after every event of block ``block_number`` (hash
    ``block_hash``, chain time ``timestamp``), ``event_count`` events in all, digest head
    ``digest_head``."""

    block_number: int
    block_hash: str
    timestamp: int
    event_count: int
    digest_head: bytes

    @property
    def digest(self) -> DigestState:
        return DigestState(self.digest_head, self.event_count)

    def as_dict(self) -> dict[str, Any]:
        return {
            "block_number": self.block_number,
            "block_hash": self.block_hash,
            "timestamp": self.timestamp,
            "event_count": self.event_count,
            "digest_head": "0x" + self.digest_head.hex(),
        }

    @classmethod
    def from_dict(cls, value: Any) -> IndexPosition:
        """What :meth:`as_dict` wrote; ``ValueError`` / ``KeyError`` / ``TypeError`` otherwise."""
        head = str(value["digest_head"])
        if not head.startswith("0x") or len(head) != 50:
            raise ValueError(f"malformed digest head {head!r}")
        return cls(
            int(value["block_number"]),
            str(value["block_hash"]),
            int(value["timestamp"]),
            int(value["event_count"]),
            bytes.fromhex(head[2:]),
        )


@dataclass(frozen=True)
class AccountConsents:
    """The consents one account granted (as patient) and received (as grantee), at
    ``position``; lapsed ones included (``GrantInForce.in_force(position.timestamp)``)."""

    position: IndexPosition
    granted: tuple[GrantInForce, ...]
    received: tuple[GrantInForce, ...]


@dataclass
class IndexStats:
    """What the index did since it was made."""

    events: int = 0
    ranges: int = 0
    digest_checks: int = 0
    rollbacks: int = 0
    blocks_rolled_back: int = 0
    reorgs_seen: int = 0
    snapshots_written: int = 0
    head_races: int = 0  # digest checks at the head answered on the next block's state
