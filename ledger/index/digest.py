"""The registry's running event digest, recomputed from raw logs.

The registry folds every log it emits (its own events and OpenZeppelin's role events) into
``head' = bytes24(keccak256(head || topic0 || ... || topicN || data))``, ``count' = count + 1``
(``IConsentRegistry``'s NatSpec; initial head zero), and ``eventDigest()`` returns
``(head, count)``. Folding the logs a node returned and comparing with ``eventDigest()`` at the
same block proves the node returned exactly the registry's logs, in order: the audit's replay
(:mod:`ledger.audit.replay`) does it once for a whole history, the verified consent index
(:mod:`ledger.index.index`) at every block it applies.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from eth_hash.auto import keccak

from ledger.protocol.events import RawLog

__all__ = [
    "EVENT_DIGEST_SELECTOR",
    "ZERO_HEAD",
    "DigestState",
    "Keccak256",
    "fold_digest",
    "gc_paused",
    "parse_event_digest",
]

EVENT_DIGEST_SELECTOR = "0x" + keccak(b"eventDigest()")[:4].hex()
ZERO_HEAD = bytes(24)


@dataclass(frozen=True)
class DigestState:
    """The registry's running event digest: a 24-byte head and an event count."""

    head: bytes
    count: int

    def as_dict(self) -> dict[str, Any]:
        return {"head": "0x" + self.head.hex(), "count": self.count}


class Keccak256:
    """Keccak-256 for many small inputs: one reused pycryptodome state (about 2 µs a hash
    instead of 4.5 through ``eth_hash``); falls back to ``eth_hash`` if pycryptodome's raw
    interface is not there. Not thread-safe: make one per fold."""

    def __init__(self) -> None:
        self._fast: Callable[[bytes], bytes] | None = None
        try:
            # pycryptodome's raw Keccak interface (typed loosely: its stubs omit these names).
            raw_api: Any = importlib.import_module("Crypto.Util._raw_api")
            module: Any = importlib.import_module("Crypto.Hash.keccak")
            VoidPointer, c_size_t, c_ubyte = raw_api.VoidPointer, raw_api.c_size_t, raw_api.c_ubyte
            create_string_buffer, get_raw_buffer = (
                raw_api.create_string_buffer,
                raw_api.get_raw_buffer,
            )

            lib = module._raw_keccak_lib
            pointer = VoidPointer()
            if lib.keccak_init(pointer.address_of(), c_size_t(64), c_ubyte(24)):
                return
            state = pointer.get()
            self._state, self._lib = state, lib
            buffer = create_string_buffer(32)
            reset, absorb, squeeze = lib.keccak_reset, lib.keccak_absorb, lib.keccak_digest

            def fast(data: bytes) -> bytes:
                reset(state)
                absorb(state, data, len(data))
                squeeze(state, buffer, 32, 1)
                return bytes(get_raw_buffer(buffer))

            if fast(b"") == keccak(b""):
                self._fast = fast
        except (ImportError, AttributeError, TypeError):  # pragma: no cover - other backends
            self._fast = None

    def __call__(self, data: bytes) -> bytes:
        return self._fast(data) if self._fast is not None else bytes(keccak(data))

    def __del__(self) -> None:
        lib = getattr(self, "_lib", None)
        if lib is not None:
            lib.keccak_destroy(self._state)


def fold_digest(logs: Iterable[RawLog], start: DigestState | None = None) -> DigestState:
    """The digest after folding ``logs`` (in order) into ``start`` (default: the empty digest)."""
    head = start.head if start is not None else ZERO_HEAD
    count = start.count if start is not None else 0
    hasher = Keccak256()
    join = b"".join
    for log in logs:
        head = hasher(join((head, *log.topics, log.data)))[:24]
        count += 1
    return DigestState(head, count)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building hundreds of thousands of acyclic
    objects (logs, events): its generation scans would otherwise cost a third of a replay."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def parse_event_digest(raw: bytes) -> DigestState:
    """``eventDigest()``'s ABI-encoded answer ``(bytes24 head, uint64 count)``; ``ValueError``
    when it is not exactly that."""
    if len(raw) != 64 or any(raw[24:32]) or any(raw[32:56]):
        raise ValueError(f"{len(raw)} malformed bytes")
    return DigestState(raw[:24], int.from_bytes(raw[56:64], "big"))
