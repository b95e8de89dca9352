"""The one JSON-RPC layer: a transport protocol, its transports, and the client every caller uses.

Every caller speaks JSON-RPC through :class:`RpcClient` over an injectable :class:`RpcTransport`:
the gateway's hot path (``eth_blockNumber`` and ``accessDecision`` per fetch), the registrar's
raw sends, the consents listing's and the audit's chunked ``eth_getLogs``
(:mod:`ledger.chain.logs`) and the audit's batches. web3 stays where it earns its place: ABI
encoding and the typed registry client (:mod:`ledger.chain.registry`).

Transports:

- :class:`KeepAliveRpc` keeps one persistent ``http.client`` connection per thread (no pool
  locks, no header models: about a fifth of httpx's CPU per call; every fetch asks the node
  twice, on one Python core);
- :class:`HttpxRpc` adapts an ``httpx.Client`` (tests hand in ``httpx.MockTransport``, or a
  proxy that lies);
- :class:`FreshConnectionRpc` opens a connection per request, so that a failure to connect
  proves nothing was sent (:class:`RpcNotConnected`): the registrar's
  ``eth_sendRawTransaction``, whose crash rule depends on knowing that.

A transport raises :class:`RpcTransportError` on any transport failure and on an answer other
than HTTP 200 (with its status and body). :class:`RpcClient` turns that into
``ChainUnavailable`` (fail closed), except that with ``http_errors_as_answers`` (the audit's
choice) an error status with a body is read as the JSON-RPC answer it carries (providers answer
"range too large" with HTTP 400 or 413).
"""

from __future__ import annotations

import http.client
import itertools
import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from ledger.chain.node import ChainError, ChainUnavailable

__all__ = [
    "FreshConnectionRpc",
    "HttpxRpc",
    "KeepAliveRpc",
    "MalformedAnswer",
    "ProviderRpc",
    "RpcClient",
    "RpcError",
    "RpcNotConnected",
    "RpcTransport",
    "RpcTransportError",
]


class RpcTransportError(Exception):
    """The node could not be reached or did not answer with HTTP 200 (``reason`` says why;
    ``status`` and ``body`` are the HTTP answer's, when there was one)."""

    def __init__(
        self, reason: str, *, status: int | None = None, body: bytes = b"", detail: str = ""
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.body = body
        self.detail = detail


class RpcNotConnected(RpcTransportError):
    """The connection could not even be opened: the request certainly never left."""


class RpcTransport(Protocol):
    def post(self, body: bytes) -> bytes:
        """POST a JSON-RPC request body; the response body of an HTTP 200."""
        ...

    def close(self) -> None: ...


_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class _Endpoint:
    """The parts of a node URL ``http.client`` needs."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    def connection(self, timeout_s: float) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=timeout_s)


class KeepAliveRpc:
    """One keep-alive ``http.client`` connection per calling thread, to one node URL."""

    def __init__(self, url: str, *, timeout_s: float) -> None:
        self._endpoint = _Endpoint(url)
        self._path = self._endpoint.path
        self._timeout_s = timeout_s
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._endpoint.connection(self._timeout_s)
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
                raise RpcTransportError(type(exc).__name__, detail=str(exc)) from exc
            if response.will_close:
                self._drop(conn)
            if response.status != 200:
                raise RpcTransportError(
                    f"HTTP {response.status}", status=response.status, body=data
                )
            return data
        raise RpcTransportError("no connection")  # pragma: no cover - the loop returns or raises

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()


class FreshConnectionRpc:
    """A connection of its own per request (closed after it): a failure to connect raises
    :class:`RpcNotConnected`, which proves nothing was sent (a kept-alive connection's silent
    retry could not tell)."""

    def __init__(self, url: str, *, timeout_s: float) -> None:
        self._endpoint = _Endpoint(url)
        self._timeout_s = timeout_s

    def post(self, body: bytes) -> bytes:
        conn = self._endpoint.connection(self._timeout_s)
        try:
            try:
                conn.connect()
            except OSError as exc:
                raise RpcNotConnected(type(exc).__name__, detail=str(exc)) from None
            try:
                conn.request("POST", self._endpoint.path, body, _HEADERS)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                raise RpcTransportError(type(exc).__name__, detail=str(exc)) from None
        finally:
            conn.close()
        if response.status != 200:
            raise RpcTransportError(f"HTTP {response.status}", status=response.status, body=data)
        return data

    def close(self) -> None:
        """Nothing to close: every request closes its own connection."""


class HttpxRpc:
    """The same interface on an ``httpx.Client``."""

    def __init__(self, url: str, client: httpx.Client) -> None:
        self._url = url
        self._client = client

    def post(self, body: bytes) -> bytes:
        try:
            response = self._client.post(self._url, content=body, headers=_HEADERS)
        except httpx.HTTPError as exc:
            raise RpcTransportError(type(exc).__name__, detail=str(exc)) from exc
        if response.status_code != 200:
            raise RpcTransportError(
                f"HTTP {response.status_code}",
                status=response.status_code,
                body=response.content,
            )
        return response.content

    def close(self) -> None:
        self._client.close()


class ProviderRpc:
    """The same interface on a web3 provider (``provider.make_request``), so that a client built
    on a ``Web3`` (the typed registry client) speaks raw JSON-RPC over that same connection."""

    def __init__(self, provider: Any) -> None:
        self._provider = provider

    def post(self, body: bytes) -> bytes:
        request = json.loads(body)
        requests = request if isinstance(request, list) else [request]
        answers = []
        for one in requests:
            try:
                answer = dict(self._provider.make_request(one["method"], one["params"]))
            except (OSError, TimeoutError) as exc:  # requests' errors are OSErrors
                raise RpcTransportError(type(exc).__name__, detail=str(exc)) from exc
            answer["id"] = one["id"]
            answers.append(answer)
        return json.dumps(answers if isinstance(request, list) else answers[0]).encode()

    def close(self) -> None:
        """The provider belongs to its ``Web3``: left open."""


# ------------------------------------------------------------------------------ the client


class RpcError(ChainError):
    """A JSON-RPC error answer (``raw`` is the answer's ``error`` member as sent)."""

    def __init__(
        self, method: str, code: int, message: str, data: Any = None, *, raw: Any = None
    ) -> None:
        super().__init__(f"{method}: RPC error {code}: {message}")
        self.method = method
        self.code = code
        self.rpc_message = message
        self.data = data
        self.raw = raw if raw is not None else {"code": code, "message": message}


class MalformedAnswer(RpcError):
    """The node's answer is not a JSON-RPC answer at all: not JSON (``not_json``), or JSON with
    neither a result nor an error."""

    def __init__(self, method: str, code: int, message: str, *, not_json: bool = False) -> None:
        super().__init__(method, code, message)
        self.not_json = not_json


class RpcClient:
    """JSON-RPC 2.0 over an :class:`RpcTransport` (single calls and batches).

    ``transport`` defaults to an :class:`HttpxRpc` on ``client`` (or a new ``httpx.Client``);
    it may be swapped later (``client.transport = ...``, e.g. for a node that lies).
    A transport failure raises ``ChainUnavailable``; an error answer :class:`RpcError`; an
    answer that is no JSON-RPC answer :class:`MalformedAnswer`. With ``http_errors_as_answers``
    an HTTP error status is read as the JSON-RPC answer in its body (HTTP 413, or an error status
    without a body, is an :class:`RpcError` with that status as its code); without it, any
    status but 200 is ``ChainUnavailable``.
    """

    def __init__(
        self,
        url: str,
        *,
        client: httpx.Client | None = None,
        transport: RpcTransport | None = None,
        timeout_s: float = 60.0,
        http_errors_as_answers: bool = True,
    ) -> None:
        self.url = url
        if transport is None:
            transport = HttpxRpc(
                url, client if client is not None else httpx.Client(timeout=timeout_s)
            )
        self.transport = transport
        self._lenient = http_errors_as_answers
        self._ids = itertools.count(1)

    def close(self) -> None:
        self.transport.close()

    def _post(self, body: Any) -> Any:
        method = _method_of(body)
        try:
            raw = self.transport.post(json.dumps(body, separators=(",", ":")).encode())
            status = 200
        except RpcTransportError as exc:
            if exc.status is None or not self._lenient:
                reason = (
                    f"{exc.reason}: {exc.detail}" if exc.detail and self._lenient else exc.reason
                )
                raise ChainUnavailable(
                    self.url, reason, sent=not isinstance(exc, RpcNotConnected)
                ) from exc
            status, raw = exc.status, exc.body
            if status == 413:
                raise RpcError(method, 413, "payload too large (HTTP 413)") from exc
            if not raw:
                raise RpcError(method, status, f"HTTP {status}") from exc
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise MalformedAnswer(
                method, status, f"answer is not JSON (HTTP {status})", not_json=True
            ) from exc

    def call(self, method: str, params: Sequence[Any]) -> Any:
        """The ``result`` of one call."""
        answer = self._post(
            {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}
        )
        return _result(method, answer)

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Results in the order of ``calls``; any error answer raises."""
        if not calls:
            return []
        first = next(self._ids)
        body = [
            {"jsonrpc": "2.0", "id": first + i, "method": m, "params": list(p)}
            for i, (m, p) in enumerate(calls)
        ]
        for _ in range(len(calls) - 1):
            next(self._ids)
        answer = self._post(body)
        if isinstance(answer, dict):  # some nodes answer a whole batch with one error
            return [_result(calls[0][0], answer)]
        if not isinstance(answer, list):
            raise MalformedAnswer(calls[0][0], 0, "the batch answer is not a list")
        by_id = {a.get("id"): a for a in answer if isinstance(a, dict)}
        return [_result(m, by_id.get(first + i, {})) for i, (m, _) in enumerate(calls)]

    # -- typed helpers --------------------------------------------------------------------

    def block_number(self) -> int:
        return int(self.call("eth_blockNumber", []), 16)

    def chain_id(self) -> int:
        return int(self.call("eth_chainId", []), 16)

    def block(self, number: int) -> Mapping[str, Any]:
        header = self.call("eth_getBlockByNumber", [hex(number), False])
        if header is None:
            raise ChainError(f"the node has no block {number}")
        return dict(header)

    def eth_call(self, to: str, data: str, block: int | str | Mapping[str, Any]) -> bytes:
        tag: Any = hex(block) if isinstance(block, int) else block
        result = self.call("eth_call", [{"to": to, "data": data}, tag])
        return bytes.fromhex(result[2:])


def _method_of(body: Any) -> str:
    if isinstance(body, list):
        return str(body[0].get("method", "batch")) if body else "batch"
    return str(body.get("method", "?"))


def _result(method: str, answer: Any) -> Any:
    if not isinstance(answer, Mapping):
        raise MalformedAnswer(method, 0, f"the answer is a {type(answer).__name__}, not an object")
    if "error" in answer and answer["error"] is not None:
        error = answer["error"]
        if isinstance(error, Mapping):
            raise RpcError(
                method,
                int(error.get("code", 0)),
                str(error.get("message", "")),
                error.get("data"),
                raw=error,
            )
        raise RpcError(method, 0, str(error), raw=error)
    if "result" not in answer:
        raise MalformedAnswer(method, 0, "answer has neither result nor error")
    return answer["result"]
