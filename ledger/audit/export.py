"""The exported access log: the document a gateway serves and the audit reads.

Exported access-log format (``consent-ledger/access-log``, version 1)
--------------------------------------------------------------------

One JSON document (the gateway serves it, e.g. ``GET /audit/access-log``, or writes it to a
file)::

    {
      "format": "consent-ledger/access-log",
      "version": 1,
      "gateway": "0x…",             # the account that anchors this log's checkpoints
      "chain_id": 31337,            # optional, checked when present
      "registry": "0x…",            # optional, checked when present
      "entries": [
        {"index": 0,
         "leaf": "{\\"block\\":12,\\"decision\\":\\"allowed\\",…,\\"v\\":1}",
         "leaf_hash": "0x…"},       # optional; SHA-256(0x00 || leaf) when present
        …
      ],
      "checkpoints": [              # optional: the gateway's claims, checked against the chain
        {"tree_size": 16, "root_hash": "0x…", "block_number": 40, "tx_hash": "0x…"}
      ]
    }

- ``entries`` are in index order, indices dense from 0. ``leaf`` is the exact leaf text that was
  hashed (``ledger.protocol.access_leaf``: its fields, version and canonical form); the leaf
  hash is ``SHA-256(0x00 || utf8(leaf))`` (RFC 9162). A leaf given as a JSON object instead of a
  string is serialised canonically first.

:func:`build_access_log_export` builds this document from leaves and checkpoints;
:meth:`AccessLogExport.from_document` and :func:`load_access_log` read it back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address

from ledger.protocol.access_leaf import LeafDecision, canonical_json, hex_bytes, parse_leaf
from ledger.protocol.merkle import leaf_hash

__all__ = [
    "ACCESS_LOG_FORMAT",
    "ACCESS_LOG_VERSION",
    "AccessLogError",
    "AccessLogExport",
    "ExportedCheckpoint",
    "LogEntry",
    "build_access_log_export",
    "load_access_log",
]

ACCESS_LOG_FORMAT = "consent-ledger/access-log"
ACCESS_LOG_VERSION = 1


class AccessLogError(ValueError):
    """An exported access log that cannot be read at all."""


@dataclass(frozen=True, slots=True)
class LogEntry:
    index: int
    leaf: bytes
    leaf_hash: bytes
    decision: LeafDecision | None  # None when the leaf does not parse
    problem: str | None = None  # why the leaf is malformed


@dataclass(frozen=True, slots=True)
class ExportedCheckpoint:
    tree_size: int
    root_hash: bytes
    block_number: int | None = None
    tx_hash: str | None = None


@dataclass(frozen=True)
class AccessLogExport:
    """A gateway's exported access log (see the module docstring for the format)."""

    gateway: ChecksumAddress
    entries: tuple[LogEntry, ...]
    checkpoints: tuple[ExportedCheckpoint, ...] = ()
    chain_id: int | None = None
    registry: ChecksumAddress | None = None
    source: str = ""
    index_gaps: tuple[tuple[int, int], ...] = ()  # (expected index, found index)

    @classmethod
    def from_document(cls, doc: Mapping[str, Any], *, source: str = "") -> AccessLogExport:
        if not isinstance(doc, Mapping):
            raise AccessLogError("the access log is not a JSON object")
        if doc.get("format") != ACCESS_LOG_FORMAT or doc.get("version") != ACCESS_LOG_VERSION:
            raise AccessLogError(
                f"not a {ACCESS_LOG_FORMAT} v{ACCESS_LOG_VERSION} document "
                f"(format={doc.get('format')!r}, version={doc.get('version')!r})"
            )
        try:
            gateway = to_checksum_address(doc["gateway"])
            raw_entries = list(doc["entries"])
            registry = doc.get("registry")
            chain_id = doc.get("chain_id")
            checkpoints = tuple(
                ExportedCheckpoint(
                    int(c["tree_size"]),
                    hex_bytes(c["root_hash"], 32),
                    None if c.get("block_number") is None else int(c["block_number"]),
                    c.get("tx_hash"),
                )
                for c in doc.get("checkpoints", [])
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise AccessLogError(f"malformed access-log document: {exc!r}") from exc
        entries: list[LogEntry] = []
        gaps: list[tuple[int, int]] = []
        expected = 0
        for position, raw in enumerate(raw_entries):
            entry = _parse_entry(raw, position)
            if entry.index != expected:
                gaps.append((expected, entry.index))
            expected = entry.index + 1
            entries.append(entry)
        return cls(
            gateway=gateway,
            entries=tuple(entries),
            checkpoints=checkpoints,
            chain_id=None if chain_id is None else int(chain_id),
            registry=None if registry is None else to_checksum_address(registry),
            source=source,
            index_gaps=tuple(gaps),
        )

    def to_document(self) -> dict[str, Any]:
        return build_access_log_export(
            gateway=self.gateway,
            leaves=[e.leaf for e in self.entries],
            indices=[e.index for e in self.entries],
            checkpoints=self.checkpoints,
            chain_id=self.chain_id,
            registry=self.registry,
        )


def build_access_log_export(
    *,
    gateway: str,
    leaves: Sequence[bytes],
    checkpoints: Iterable[ExportedCheckpoint] = (),
    chain_id: int | None = None,
    registry: str | None = None,
    indices: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The export document of a log whose leaves (canonical bytes) are ``leaves``."""
    doc: dict[str, Any] = {
        "format": ACCESS_LOG_FORMAT,
        "version": ACCESS_LOG_VERSION,
        "gateway": to_checksum_address(gateway),
    }
    if chain_id is not None:
        doc["chain_id"] = chain_id
    if registry is not None:
        doc["registry"] = to_checksum_address(registry)
    doc["entries"] = [
        {
            "index": indices[i] if indices is not None else i,
            "leaf": leaf.decode("utf-8"),
            "leaf_hash": "0x" + leaf_hash(leaf).hex(),
        }
        for i, leaf in enumerate(leaves)
    ]
    doc["checkpoints"] = [
        {
            "tree_size": c.tree_size,
            "root_hash": "0x" + c.root_hash.hex(),
            "block_number": c.block_number,
            "tx_hash": c.tx_hash,
        }
        for c in checkpoints
    ]
    return doc


def _parse_entry(raw: Any, position: int) -> LogEntry:
    if not isinstance(raw, Mapping) or "leaf" not in raw:
        raise AccessLogError(f"entry #{position} is not an object with a leaf")
    try:
        index = int(raw.get("index", position))
    except (TypeError, ValueError) as exc:
        raise AccessLogError(f"entry #{position}: bad index {raw.get('index')!r}") from exc
    leaf_value = raw["leaf"]
    if isinstance(leaf_value, str):
        leaf = leaf_value.encode("utf-8")
    elif isinstance(leaf_value, Mapping):
        leaf = canonical_json(leaf_value)
    else:
        raise AccessLogError(f"entry {index}: leaf is neither a string nor an object")
    digest = leaf_hash(leaf)
    problems: list[str] = []
    claimed = raw.get("leaf_hash")
    if claimed is not None:
        try:
            if hex_bytes(claimed, 32) != digest:
                problems.append("leaf_hash is not SHA-256(0x00 || leaf)")
        except ValueError:
            problems.append(f"leaf_hash {claimed!r} is not 32 bytes of 0x hex")
    decision, problem = parse_leaf(leaf)
    if problem:
        problems.append(problem)
    return LogEntry(index, leaf, digest, decision, "; ".join(problems) or None)


def load_access_log(source: str | Path, *, client: httpx.Client | None = None) -> AccessLogExport:
    """An exported access log from a file path or an ``http(s)://`` URL."""
    text = str(source)
    try:
        if text.startswith(("http://", "https://")):
            own = client is None
            http = client if client is not None else httpx.Client(timeout=60.0)
            try:
                response = http.get(text)
                response.raise_for_status()
                doc = response.json()
            finally:
                if own:
                    http.close()
        else:
            doc = json.loads(Path(text).read_text(encoding="utf-8"))
    except (OSError, ValueError, httpx.HTTPError) as exc:
        raise AccessLogError(f"cannot read the access log from {text}: {exc}") from exc
    return AccessLogExport.from_document(doc, source=text)
