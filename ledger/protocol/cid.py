"""IPFS content identifiers computed locally: the CIDv1 that a Kubo-compatible ``add`` (raw
leaves, fixed-size chunker of ``DEFAULT_CHUNK_SIZE``, balanced layout of ``MAX_LINKS`` links)
gives a byte string, and the check that bytes hash to a CID. Pure: both sides use it (the
gateway before it pins, a centre's client for the blob its custody manifest names, a reader for
what it got from a gateway or IPFS)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NewType

from multiformats import CID, multihash, varint

__all__ = ["DEFAULT_CHUNK_SIZE", "MAX_LINKS", "Cid", "compute_cid", "verify_cid"]

Cid = NewType("Cid", str)
"""A CID in canonical text form: CIDv1, base32 (``b...``)."""

DEFAULT_CHUNK_SIZE = 262_144
MAX_LINKS = 174


def _raw_cid(chunk: bytes) -> bytes:
    return bytes(
        CID("base32", 1, "raw", multihash.wrap(hashlib.sha256(chunk).digest(), "sha2-256"))
    )


def _pb_varint(field: int, value: int) -> bytes:
    return varint.encode(field << 3) + varint.encode(value)


def _pb_bytes(field: int, payload: bytes) -> bytes:
    return varint.encode(field << 3 | 2) + varint.encode(len(payload)) + payload


@dataclass(frozen=True)
class _Node:
    cid: bytes  # binary CID
    content_size: int  # file bytes below this node
    dag_size: int  # encoded bytes of this node and everything below (the link Tsize)


def _parent(children: Sequence[_Node]) -> _Node:
    """A dag-pb UnixFS File node over ``children`` (protobuf: Links (2) before Data (1))."""
    unixfs = _pb_varint(1, 2)  # Type = File
    unixfs += _pb_varint(3, sum(c.content_size for c in children))  # filesize
    unixfs += b"".join(_pb_varint(4, c.content_size) for c in children)  # blocksizes
    links = b"".join(
        _pb_bytes(2, _pb_bytes(1, c.cid) + _pb_bytes(2, b"") + _pb_varint(3, c.dag_size))
        for c in children
    )
    block = links + _pb_bytes(1, unixfs)
    cid = bytes(
        CID("base32", 1, "dag-pb", multihash.wrap(hashlib.sha256(block).digest(), "sha2-256"))
    )
    return _Node(
        cid=cid,
        content_size=sum(c.content_size for c in children),
        dag_size=len(block) + sum(c.dag_size for c in children),
    )


def compute_cid(
    data: bytes, *, chunk_size: int = DEFAULT_CHUNK_SIZE, max_links: int = MAX_LINKS
) -> Cid:
    """The CIDv1 that ``add`` (raw leaves, fixed-size chunker, balanced layout) gives ``data``."""
    if chunk_size < 1 or max_links < 2:
        raise ValueError("chunk_size must be >= 1 and max_links >= 2")
    if len(data) <= chunk_size:
        return Cid(str(CID.decode(_raw_cid(data)).set(base="base32")))
    level = [
        _Node(cid=_raw_cid(chunk), content_size=len(chunk), dag_size=len(chunk))
        for chunk in (data[i : i + chunk_size] for i in range(0, len(data), chunk_size))
    ]
    while True:
        level = [_parent(level[i : i + max_links]) for i in range(0, len(level), max_links)]
        if len(level) == 1:
            return Cid(str(CID.decode(level[0].cid).set(base="base32")))


def verify_cid(cid: str, data: bytes, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> bool:
    """Do ``data`` hash to ``cid``? Recomputed locally; see the module docstring for layouts."""
    if not isinstance(cid, str) or not cid or len(cid) > 512:
        return False
    try:
        wanted = CID.decode(cid)
    except Exception:  # multiformats raises KeyError/ValueError/IndexError/binascii.Error
        return False
    if wanted.hashfun.name != "sha2-256":
        return False
    if wanted.codec.name == "raw":
        return wanted.raw_digest == hashlib.sha256(data).digest()
    if wanted.codec.name != "dag-pb" or len(data) <= chunk_size:
        return False
    computed = CID.decode(compute_cid(data, chunk_size=chunk_size))
    return computed.digest == wanted.digest
