"""A lean JSON-RPC transport for the fetch path's two chain calls.

Every fetch asks the node twice (``eth_blockNumber``, then ``eth_call`` of ``accessDecision`` at
that block), so the per-call cost of the HTTP client is paid twice per request on one Python core.
:class:`KeepAliveRpc` keeps one persistent ``http.client`` connection per thread (no pool
locks, no header models: about a fifth of httpx's CPU per call); :class:`HttpxRpc` adapts an
``httpx.Client`` (tests hand in ``httpx.MockTransport``). Both raise :class:`RpcTransportError`
on any transport failure, which the caller maps to a 503 (fail closed).
"""

from __future__ import annotations

import http.client
import threading
from typing import Protocol
from urllib.parse import urlsplit

import httpx

__all__ = ["HttpxRpc", "KeepAliveRpc", "RpcTransport", "RpcTransportError"]


class RpcTransportError(Exception):
    """The node could not be reached or did not answer with HTTP 200 (``reason`` says why)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RpcTransport(Protocol):
    def post(self, body: bytes) -> bytes:
        """POST a JSON-RPC request body; the response body of an HTTP 200."""
        ...

    def close(self) -> None: ...


_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class KeepAliveRpc:
    """One keep-alive ``http.client`` connection per calling thread, to one node URL."""

    def __init__(self, url: str, *, timeout_s: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout_s = timeout_s
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self._timeout_s)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        self._local.conn = None
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)

    def post(self, body: bytes) -> bytes:
        # A kept-alive connection the node closed meanwhile fails on first use: retry once on a
        # fresh one. JSON-RPC reads are idempotent; this transport only carries reads.
        for attempt in (0, 1):
            conn = self._connection()
            reused = conn.sock is not None
            try:
                conn.request("POST", self._path, body, _HEADERS)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self._drop(conn)
                if attempt == 0 and reused and not isinstance(exc, TimeoutError):
                    continue
                raise RpcTransportError(type(exc).__name__) from exc
            if response.will_close:
                self._drop(conn)
            if response.status != 200:
                raise RpcTransportError(f"HTTP {response.status}")
            return data
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()


class HttpxRpc:
    """The same interface on an ``httpx.Client``."""

    def __init__(self, url: str, client: httpx.Client) -> None:
        self._url = url
        self._client = client

    def post(self, body: bytes) -> bytes:
        try:
            response = self._client.post(self._url, content=body, headers=_HEADERS)
        except httpx.HTTPError as exc:
            raise RpcTransportError(type(exc).__name__) from exc
        if response.status_code != 200:
            raise RpcTransportError(f"HTTP {response.status_code}")
        return response.content

    def close(self) -> None:
        self._client.close()
