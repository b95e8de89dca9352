"""The record rows the upload, recovery and fetch services share: the ``record`` table, a cache
of live rows (they never change), a byte-bounded cache of verified ciphertext, and the parsing
of the request fields that name a record.

All I/O comes in through constructors (an engine, a :class:`gateway.services.chain.ChainAccess`,
an :class:`gateway.ipfs.IpfsClient`), so tests hand in real services or fakes without
monkeypatching. Routes stay thin: they parse, call one method, and shape the answer.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from sqlalchemy import Engine, or_, select

from gateway.errors import (
    InvalidRequest,
)
from gateway.ipfs import IpfsClient
from gateway.metrics import Metrics
from gateway.services.chain import ChainAccess
from gateway.services.registrar import Registrar
from gateway.storage.access_log import AccessLog
from gateway.storage.engine import db_guard
from gateway.storage.tables import RECORD, Record
from ledger.protocol.consent_types import category_id, category_name
from ledger.protocol.wire import RecordPublic

__all__ = [
    "BYTES32_RE",
    "RecordStore",
    "parse_address",
    "parse_category",
    "parse_record_id",
    "parse_signature",
    "record_public",
]


_ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")
#: A bytes32 as 0x + 64 hex digits (record ids, categories, salts).
BYTES32_RE = re.compile(r"^0x[0-9a-fA-F]{64}$")


def parse_address(value: str, *, what: str) -> ChecksumAddress:
    if not isinstance(value, str) or not _ADDRESS_RE.match(value.strip()):
        raise InvalidRequest(f"{what} is not a 0x-prefixed 20-byte address", field=what)
    return to_checksum_address(value.strip())


def parse_category(value: str) -> bytes:
    text = value.strip()
    if BYTES32_RE.match(text):
        return bytes.fromhex(text[2:])
    try:
        return category_id(text)
    except (ValueError, UnicodeEncodeError) as exc:
        raise InvalidRequest(str(exc), field="category") from None


def parse_record_id(value: str) -> bytes:
    if not BYTES32_RE.match(value):
        raise InvalidRequest("record id is not 0x + 64 hex digits", record_id=value)
    return bytes.fromhex(value[2:])


def parse_signature(value: str) -> bytes:
    text = value.strip()
    text = text[2:] if text[:2] in ("0x", "0X") else text
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise InvalidRequest("signature is not hex", field="signature") from None
    if len(raw) != 65:
        raise InvalidRequest("signature must be 65 bytes r || s || v", field="signature")
    return raw


def record_public(row: Record) -> RecordPublic:
    category = bytes.fromhex(row.category[2:])
    try:
        name = category_name(category)
    except UnicodeDecodeError:
        name = row.category
    return RecordPublic(
        record_id=row.record_id,
        patient=to_checksum_address(row.patient),
        centre=to_checksum_address(row.centre),
        category=name,
        category_id=row.category,
        content_digest=row.content_digest,
        issued_at=row.issued_at,
        cid=row.cid or "",
        size=row.size,
        tx_hash=row.tx_hash,
        block_number=row.block_number,
    )


class _BlobCache:
    """A byte-bounded LRU of verified ciphertext, keyed by CID (immutable by construction)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict[str, bytes] = OrderedDict()
        # the standard base64 of each cached blob (what a fetch response carries), made once
        self._encoded: dict[str, bytes] = {}
        self._size = 0
        self._lock = threading.Lock()

    def get(self, cid: str) -> bytes | None:
        if self._capacity == 0:
            return None
        with self._lock:
            blob = self._items.get(cid)
            if blob is not None:
                self._items.move_to_end(cid)
            return blob

    def encoded(self, cid: str) -> bytes | None:
        """The base64 of the cached blob ``cid`` (no LRU bump: ``get`` just did it)."""
        return self._encoded.get(cid)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._encoded.clear()
            self._size = 0

    def put(self, cid: str, blob: bytes) -> None:
        if 2 * len(blob) > self._capacity // 4:
            return
        encoded = base64.b64encode(blob)
        with self._lock:
            if cid in self._items:
                return
            self._items[cid] = blob
            self._encoded[cid] = encoded
            self._size += len(blob) + len(encoded)
            while self._size > self._capacity:
                old_cid, old = self._items.popitem(last=False)
                self._size -= len(old) + len(self._encoded.pop(old_cid, b""))


class RecordStore:
    """The state the record services share (see :class:`gateway.services.records.RecordService`)."""

    def __init__(
        self,
        engine: Engine,
        *,
        chain: ChainAccess,
        blobs: IpfsClient,
        kek: bytes,
        access_log: AccessLog,
        metrics: Metrics,
        max_upload_bytes: int,
        blob_cache_bytes: int = 0,
        clock: Callable[[], float] = time.time,
        pending_grace_s: float = 300.0,
        tx_timeout_s: float = 60.0,
        max_head_age_s: float | None = None,
    ) -> None:
        self._engine = engine
        # A decision evaluated at a chain time older than this (by our clock) fails closed.
        self.max_head_age_s = max_head_age_s
        self.chain = chain
        self.blobs = blobs
        # Longer than any upload may take (IPFS add + the registration's receipt wait): a
        # pending row older than this has no live uploader and is resolved by whoever meets it.
        self.pending_grace_s = pending_grace_s
        self.registrar = Registrar(
            chain,
            sender=lambda: chain.sender(chain.registrar),
            timeout_s=tx_timeout_s,
        )
        self._kek = kek
        self.access_log = access_log
        self.metrics = metrics
        self.max_upload_bytes = max_upload_bytes
        self._clock = clock
        self._blob_cache = _BlobCache(blob_cache_bytes)
        self._rows: OrderedDict[str, Record] = OrderedDict()
        self._rows_lock = threading.Lock()

    def clear_caches(self) -> None:
        """Forget cached record rows and ciphertext (after restoring a database backup)."""
        with self._rows_lock:
            self._rows.clear()
        self._blob_cache.clear()

    def _row(self, rid_hex: str, *, include_pending: bool = False) -> Record | None:
        with self._rows_lock:
            cached = self._rows.get(rid_hex)
        if cached is not None:
            return cached
        table = RECORD
        with db_guard(), self._engine.connect() as conn:
            found = (
                conn.execute(select(table).where(table.c.record_id == rid_hex)).mappings().first()
            )
        if found is None:
            return None
        row = Record.model_validate(dict(found))
        if row.status == "live":
            with self._rows_lock:  # live rows never change: cache them
                self._rows[rid_hex] = row
                if len(self._rows) > 50_000:
                    self._rows.popitem(last=False)
            return row
        return row if include_pending else None

    def list_for(self, address: str, *, limit: int = 100, offset: int = 0) -> list[RecordPublic]:
        """Live records where ``address`` is the patient or the uploading centre."""
        table = RECORD
        who = address.lower()
        with db_guard(), self._engine.connect() as conn:
            rows = (
                conn.execute(
                    select(table)
                    .where(
                        table.c.status == "live", or_(table.c.patient == who, table.c.centre == who)
                    )
                    .order_by(table.c.created_at, table.c.record_id)
                    .limit(limit)
                    .offset(offset)
                )
                .mappings()
                .all()
            )
        return [record_public(Record.model_validate(dict(r))) for r in rows]
