"""The index's snapshot file: its position, its state and what it was made from, as one JSON
document written atomically (a temporary file in the same directory, fsync, rename, fsync of the
directory), with a SHA-256 of the state so a damaged file is refused. Loading checks the file
only; the index then asks the chain to confirm the position before serving from it
(:meth:`ledger.index.index.ConsentIndex.load_snapshot`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address

from ledger.index.errors import SnapshotInvalid
from ledger.index.position import IndexPosition

__all__ = ["SNAPSHOT_FORMAT", "Snapshot", "read_snapshot", "write_snapshot"]

SNAPSHOT_FORMAT = "consent-index/1"


@dataclass(frozen=True)
class Snapshot:
    chain_id: int
    registry: ChecksumAddress
    start_block: int
    position: IndexPosition
    unknown_events: Mapping[str, int]
    state: Mapping[str, Any]  # ConsentState.to_json()


def write_snapshot(path: Path, snapshot: Snapshot) -> None:
    body = {
        "format": SNAPSHOT_FORMAT,
        "chain_id": snapshot.chain_id,
        "registry": snapshot.registry,
        "start_block": snapshot.start_block,
        "position": snapshot.position.as_dict(),
        "unknown_events": dict(snapshot.unknown_events),
        "state_sha256": _state_hash(snapshot.state),
        "state": snapshot.state,
    }
    _write_atomically(path, json.dumps(body, separators=(",", ":")).encode())


def read_snapshot(path: Path) -> Snapshot:
    """The snapshot in ``path``; ``SnapshotInvalid`` when unreadable, of another format, or
    damaged (its state does not match its checksum)."""
    where = str(path)
    try:
        body = json.loads(path.read_bytes())
        if not isinstance(body, dict) or body.get("format") != SNAPSHOT_FORMAT:
            raise SnapshotInvalid(where, f"not a {SNAPSHOT_FORMAT} snapshot")
        state = body["state"]
        if _state_hash(state) != body.get("state_sha256"):
            raise SnapshotInvalid(where, "the state does not match its checksum")
        return Snapshot(
            chain_id=int(body["chain_id"]),
            registry=to_checksum_address(body["registry"]),
            start_block=int(body["start_block"]),
            position=IndexPosition.from_dict(body["position"]),
            unknown_events={str(k): int(v) for k, v in body["unknown_events"].items()},
            state=state,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SnapshotInvalid(where, f"unreadable: {exc!r}") from None


def _state_hash(state: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(state, separators=(",", ":")).encode()).hexdigest()


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with _directory(path.parent) as dir_fd:
        os.fsync(dir_fd)


@contextlib.contextmanager
def _directory(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)
