"""A small typed client for the Kubo RPC API (``/api/v0``) over httpx, and local CID checks.

Works against Kubo, an IPFS Cluster proxy and the local js-ipfs 0.66.1 node alike, because it
only uses what they share: every call is a ``POST`` (the API refuses GET with 405), arguments in
the query string, a ``timeout=`` query argument on every call (a ``cat`` or ``pin/add`` of a CID
the node lacks otherwise waits forever), plus an httpx timeout a few seconds longer as a
backstop. ``cid-base=base32`` is passed wherever a CID comes back (js-ipfs answers base58btc
``zb2...`` for CIDv1 otherwise). The client is built around an ``httpx.Client`` whose
``base_url`` points at the node, so tests hand in a real node or an ``httpx.MockTransport``.

Adding and verifying content
----------------------------
``add`` pins explicit import options instead of trusting node defaults::

    cid-version=1  raw-leaves=true  hash=sha2-256  chunker=size-262144  trickle=false

and the multipart part carries ``Content-Type: application/octet-stream`` (js-ipfs answers
"No content-type in multipart part" without one). With these options both js-ipfs 0.66 and
Kubo build the same DAG, which :func:`compute_cid` rebuilds locally from the bytes:

* content of at most one chunk (256 KiB): a single ``raw`` block, CID = CIDv1(raw,
  sha2-256(bytes)). The empty file is the raw block of no bytes.
* larger content: raw leaves of 256 KiB, grouped 174 per dag-pb node (UnixFS ``File`` with
  ``filesize`` and ``blocksizes``, links named ``""`` with cumulative ``Tsize``), groups of
  nodes grouped again 174 at a time until one root remains (the "balanced" layout).

:func:`verify_cid` recomputes the CID from the bytes and compares codec and multihash; it never
asks the node (``only-hash=true`` would trust it). ``add`` itself checks the CID the node
returns against the local computation and raises :class:`IpfsProtocolError` if they differ, so
a node configured with another layout fails loudly instead of producing unverifiable CIDs.
Only sha2-256 and these two layouts are recognised; anything else verifies as ``False``.

Errors: ``httpx`` transport errors and timeouts become :class:`IpfsUnavailable`; an error
answer whose message says the node could not get the block in time (js-ipfs "request timed
out", Kubo "context deadline exceeded", offline "not found locally") is :class:`IpfsNotFound`;
other error answers are :class:`IpfsApiError`; answers of an unexpected shape are
:class:`IpfsProtocolError`. ``pin_rm`` of something not pinned is not an error (idempotent).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
from multiformats import CID

from gateway.errors import GatewayError
from ledger.protocol.cid import DEFAULT_CHUNK_SIZE, MAX_LINKS, Cid, compute_cid, verify_cid

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_LINKS",
    "Cid",
    "InvalidCid",
    "IpfsApiError",
    "IpfsClient",
    "IpfsError",
    "IpfsNotFound",
    "IpfsProtocolError",
    "IpfsUnavailable",
    "NodeId",
    "NodeVersion",
    "compute_cid",
    "parse_cid",
    "verify_cid",
]


DEFAULT_TIMEOUT_S = 30.0
_HTTP_MARGIN_S = 5.0
_NOT_FOUND_MARKERS = (
    "timed out",
    "deadline exceeded",
    "not found locally",
    "block was not found",
    "no link named",
)


# -- errors ---------------------------------------------------------------------------------


class IpfsError(GatewayError):
    """Root of IPFS failures."""

    code: ClassVar[str] = "ipfs_error"
    http_status: ClassVar[int] = 502


class IpfsUnavailable(IpfsError):
    """The node could not be reached, or did not answer within the httpx timeout."""

    code: ClassVar[str] = "ipfs_unavailable"
    http_status: ClassVar[int] = 503

    def __init__(self, *, endpoint: str, reason: str) -> None:
        super().__init__(
            f"IPFS node unavailable ({endpoint}): {reason}", endpoint=endpoint, reason=reason
        )
        self.endpoint = endpoint
        self.reason = reason


class IpfsNotFound(IpfsError):
    """The node could not produce the CID within the API timeout (it does not have it)."""

    code: ClassVar[str] = "ipfs_not_found"

    def __init__(self, *, cid: str, endpoint: str, message: str) -> None:
        super().__init__(
            f"IPFS could not get {cid} ({endpoint}): {message}",
            cid=cid,
            endpoint=endpoint,
            detail=message,
        )
        self.cid = cid
        self.endpoint = endpoint
        self.detail = message


class IpfsApiError(IpfsError):
    """Any other error answer of the RPC API."""

    code: ClassVar[str] = "ipfs_api_error"

    def __init__(self, *, endpoint: str, status: int, message: str) -> None:
        super().__init__(
            f"IPFS API {endpoint} answered {status}: {message}",
            endpoint=endpoint,
            status=status,
            detail=message,
        )
        self.endpoint = endpoint
        self.status = status
        self.detail = message


class IpfsProtocolError(IpfsError):
    """The node answered, but not in the documented shape (or with a CID we cannot verify)."""

    code: ClassVar[str] = "ipfs_protocol_error"

    def __init__(self, *, endpoint: str, reason: str) -> None:
        super().__init__(
            f"unexpected IPFS answer ({endpoint}): {reason}", endpoint=endpoint, reason=reason
        )
        self.endpoint = endpoint
        self.reason = reason


class InvalidCid(IpfsError):
    """Text that is not a CID."""

    code: ClassVar[str] = "invalid_cid"
    http_status: ClassVar[int] = 400

    def __init__(self, *, text: str, reason: str) -> None:
        super().__init__(f"not a CID: {text!r} ({reason})", text=text, reason=reason)
        self.text = text
        self.reason = reason


# -- CIDs -----------------------------------------------------------------------------------


def _decode(text: str) -> CID:
    if not isinstance(text, str) or not text or len(text) > 512:
        raise InvalidCid(text=str(text)[:80], reason="empty or too long")
    try:
        return CID.decode(text)
    except Exception as exc:  # multiformats raises KeyError/ValueError/IndexError/binascii.Error
        raise InvalidCid(text=text[:80], reason=type(exc).__name__) from None


def parse_cid(text: str) -> Cid:
    """Validate a CID (v0 or v1, any multibase) and return it as canonical CIDv1 base32."""
    return Cid(str(_decode(text).set(version=1, base="base32")))


# -- node information -----------------------------------------------------------------------


@dataclass(frozen=True)
class NodeId:
    """``/api/v0/id``."""

    id: str
    public_key: str
    agent_version: str
    protocol_version: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class NodeVersion:
    """``/api/v0/version`` (js-ipfs 0.66 reports its ipfs-core version, e.g. ``0.18.1``)."""

    version: str
    commit: str
    repo: str
    system: str | None = None


# -- the client -----------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


class IpfsClient:
    """Kubo RPC API client. ``client.base_url`` is the node's API root (``http://host:5001``)."""

    def __init__(
        self,
        client: httpx.Client,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        self._http = client
        self._timeout_s = timeout_s
        self._chunk_size = chunk_size

    @property
    def chunk_size(self) -> int:
        """The chunker's block size: ``compute_cid(data, chunk_size=...)`` gives ``add``'s CID."""
        return self._chunk_size

    # -- transport --

    def _post(
        self,
        endpoint: str,
        *,
        params: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
        cid: str | None = None,
    ) -> httpx.Response:
        seconds = self._timeout_s if timeout_s is None else timeout_s
        query = {**(params or {}), "timeout": _duration(seconds)}
        try:
            response = self._http.post(
                f"/api/v0/{endpoint}",
                params=query,
                files=files,
                timeout=httpx.Timeout(seconds + _HTTP_MARGIN_S),
            )
        except httpx.TimeoutException as exc:
            raise IpfsUnavailable(
                endpoint=endpoint, reason=f"timeout: {type(exc).__name__}"
            ) from None
        except httpx.TransportError as exc:
            raise IpfsUnavailable(
                endpoint=endpoint, reason=f"{type(exc).__name__}: {exc}"
            ) from None
        if response.status_code == 200:
            return response
        message = _error_message(response)
        if cid is not None and any(m in message.lower() for m in _NOT_FOUND_MARKERS):
            raise IpfsNotFound(cid=cid, endpoint=endpoint, message=message)
        raise IpfsApiError(endpoint=endpoint, status=response.status_code, message=message)

    def _json(self, endpoint: str, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise IpfsProtocolError(endpoint=endpoint, reason="not JSON") from None
        if not isinstance(body, dict):
            raise IpfsProtocolError(endpoint=endpoint, reason="not a JSON object")
        return body

    # -- content --

    def add(self, data: bytes, *, pin: bool = True, timeout_s: float | None = None) -> Cid:
        """Store ``data``; return its CIDv1 (checked against a local recomputation)."""
        params = {
            "cid-version": "1",
            "cid-base": "base32",
            "raw-leaves": "true",
            "hash": "sha2-256",
            "chunker": f"size-{self._chunk_size}",
            "trickle": "false",
            "pin": "true" if pin else "false",
            "progress": "false",
        }
        response = self._post(
            "add",
            params=params,
            timeout_s=timeout_s,
            files={"file": ("blob", data, "application/octet-stream")},
        )
        entries = []
        for line in response.text.splitlines():
            if line.strip():
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    raise IpfsProtocolError(endpoint="add", reason="not JSON lines") from None
        added = [e for e in entries if isinstance(e, dict) and "Hash" in e]
        if len(added) != 1:
            raise IpfsProtocolError(
                endpoint="add", reason=f"expected one added entry, got {len(added)}"
            )
        entry = added[0]
        try:
            cid = parse_cid(str(entry["Hash"]))
            size = int(entry.get("Size", 0))  # a number on js-ipfs, a string on Kubo
        except (InvalidCid, ValueError, TypeError):
            raise IpfsProtocolError(endpoint="add", reason=f"bad entry {entry!r}") from None
        if size < len(data):
            raise IpfsProtocolError(endpoint="add", reason=f"size {size} < {len(data)} bytes sent")
        expected = compute_cid(data, chunk_size=self._chunk_size)
        if cid != expected:
            raise IpfsProtocolError(
                endpoint="add", reason=f"node returned {cid}, local computation gives {expected}"
            )
        return cid

    def cat(self, cid: str, *, timeout_s: float | None = None) -> bytes:
        """The bytes of ``cid``. The caller should :func:`verify_cid` them (the gateway does)."""
        canonical = parse_cid(cid)
        return self._post(
            "cat", params={"arg": canonical}, timeout_s=timeout_s, cid=canonical
        ).content

    # -- pins --

    def pin_add(self, cid: str, *, timeout_s: float | None = None) -> None:
        """Pin ``cid`` recursively (fetching it if needed; IpfsNotFound if it cannot)."""
        canonical = parse_cid(cid)
        response = self._post(
            "pin/add",
            params={"arg": canonical, "recursive": "true", "cid-base": "base32"},
            timeout_s=timeout_s,
            cid=canonical,
        )
        pins = self._json("pin/add", response).get("Pins")
        if not isinstance(pins, list) or canonical not in {_canonical_or_none(p) for p in pins}:
            raise IpfsProtocolError(endpoint="pin/add", reason=f"pin of {canonical} not confirmed")

    def pin_rm(self, cid: str, *, timeout_s: float | None = None) -> bool:
        """Unpin ``cid``; ``True`` if a pin was removed, ``False`` if it was not pinned."""
        canonical = parse_cid(cid)
        try:
            self._post(
                "pin/rm",
                params={"arg": canonical, "recursive": "true", "cid-base": "base32"},
                timeout_s=timeout_s,
            )
        except IpfsApiError as exc:
            if "not pinned" in exc.detail.lower():
                return False
            raise
        return True

    def pin_ls(
        self, *, pin_type: str = "recursive", timeout_s: float | None = None
    ) -> dict[Cid, str]:
        """Every pin of ``pin_type`` (``recursive``, ``direct``, ``indirect`` or ``all``)."""
        response = self._post(
            "pin/ls", params={"type": pin_type, "cid-base": "base32"}, timeout_s=timeout_s
        )
        return _pin_keys(self._json("pin/ls", response))

    def is_pinned(self, cid: str, *, timeout_s: float | None = None) -> bool:
        """Whether ``cid`` is pinned (directly, recursively or as part of another pin)."""
        canonical = parse_cid(cid)
        try:
            response = self._post(
                "pin/ls",
                params={"arg": canonical, "type": "all", "cid-base": "base32"},
                timeout_s=timeout_s,
            )
        except IpfsApiError as exc:
            if "not pinned" in exc.detail.lower():
                return False
            raise
        return canonical in _pin_keys(self._json("pin/ls", response))

    # -- node --

    def id(self) -> NodeId:
        body = self._json("id", self._post("id"))
        try:
            return NodeId(
                id=str(body["ID"]),
                public_key=str(body.get("PublicKey", "")),
                agent_version=str(body.get("AgentVersion", "")),
                protocol_version=str(body.get("ProtocolVersion", "")),
                addresses=tuple(str(a) for a in body.get("Addresses") or ()),
            )
        except (KeyError, TypeError):
            raise IpfsProtocolError(endpoint="id", reason="no ID") from None

    def version(self) -> NodeVersion:
        body = self._json("version", self._post("version"))
        if "Version" not in body:
            raise IpfsProtocolError(endpoint="version", reason="no Version")
        system = body.get("System")
        return NodeVersion(
            version=str(body["Version"]),
            commit=str(body.get("Commit", "")),
            repo=str(body.get("Repo", "")),
            system=None if system is None else str(system),
        )


def _canonical_or_none(text: object) -> Cid | None:
    try:
        return parse_cid(str(text))
    except InvalidCid:
        return None


def _pin_keys(body: Mapping[str, Any]) -> dict[Cid, str]:
    keys = body.get("Keys")
    if not isinstance(keys, dict):
        raise IpfsProtocolError(endpoint="pin/ls", reason="no Keys object")
    out: dict[Cid, str] = {}
    for key, value in keys.items():
        canonical = _canonical_or_none(key)
        if canonical is not None:
            out[canonical] = str(value.get("Type", "")) if isinstance(value, dict) else ""
    return out


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict):
        for key in ("Message", "message", "error"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return response.text[:500]
