"""A plain-ASGI fast path for the hot route, ``GET /v1/records/{record_id}?purpose=...``.

Under load most of a fetch's Python time went to the framework (routing, dependency solving,
the exception middleware), not to the decision. This middleware answers the common, well-formed
shape of that request itself, with exactly the service call the FastAPI route makes
(:meth:`gateway.services.fetch.RecordFetches.fetch_json`), the same session lookup
(:func:`gateway.api.deps.resolve_principal`, with the token parsed by
:func:`gateway.api.deps.bearer_token`) and the same error
bodies; everything else (no or odd ``Authorization`` header, extra or repeated query parameters,
another method or path) falls through to FastAPI unchanged, so validation errors and the
OpenAPI contract stay FastAPI's.

It says when it is on: every answer it gives carries ``X-Fast-Path: served`` and counts in
``gateway_fast_path_responses_total{status}``, and ``gateway_fast_path_active`` is 1 while it
serves (0, with an error logged at start, when the app has no fetch route to stand in for).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api.deps import bearer_token, resolve_principal
from gateway.errors import ChainUnavailable, http_status_of
from gateway.metrics import Metrics
from gateway.services.auth import AuthService
from gateway.services.fetch import parse_purpose
from gateway.services.records import RecordService
from ledger.protocol.errors import DomainError

__all__ = ["FAST_PATH_HEADER", "ROUTE_TEMPLATE", "FetchFastPath"]

log = logging.getLogger("gateway")

#: The route template the fast path stands in for, and the paths of it that it serves.
ROUTE_TEMPLATE = "/v1/records/{record_id}"
_PATH = re.compile(r"/v1/records/(0x[0-9a-fA-F]{64})")
_QUERY = re.compile(rb"purpose=([A-Za-z0-9_]{1,32})")
#: The header on every answer the fast path gives (and on none FastAPI gives).
FAST_PATH_HEADER = "x-fast-path"
_SERVED = (FAST_PATH_HEADER.encode(), b"served")
_JSON_HEADERS = [(b"content-type", b"application/json"), _SERVED]


class FetchFastPath:
    """Serves well-formed record fetches without the framework; passes everything else on."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        auth: Callable[[], AuthService],
        records: Callable[[], RecordService],
        route: BaseRoute | None,
        error_response: Callable[[DomainError], Response],
        metrics: Metrics,
    ) -> None:
        self.app = app
        self._auth = auth
        self._records = records
        self._error_response = error_response
        self._metrics = metrics
        path = getattr(route, "path", None)
        methods = getattr(route, "methods", None) or ()
        self._route = route if path == ROUTE_TEMPLATE and "GET" in methods else None
        metrics.fast_path_active.set(0 if self._route is None else 1)
        if self._route is None:
            log.error(
                "fetch fast path off: it serves GET %s, the app's fetch route is %s %s",
                ROUTE_TEMPLATE,
                ",".join(sorted(methods)) or "-",
                path,
            )

    @property
    def active(self) -> bool:
        """Whether well-formed fetches are served here (the app has the route it stands in for)."""
        return self._route is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or self._route is None:
            await self.app(scope, receive, send)
            return
        path = _PATH.fullmatch(scope["path"])
        query = _QUERY.fullmatch(scope["query_string"]) if path is not None else None
        token = bearer_token(scope) if query is not None else None
        if path is None or query is None or token is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self._route  # the metrics label, as the router would set it
        auth = self._auth()
        try:
            principal = await resolve_principal(auth, token)
            purpose = parse_purpose(query.group(1).decode("ascii"))
            body = await run_in_threadpool(
                self._records().fetch_json, principal, path.group(1), purpose
            )
        except DomainError as exc:
            if http_status_of(exc) >= 500:
                log.warning("GET %s -> %d %s", scope["path"], http_status_of(exc), exc.code)
            if isinstance(exc, ChainUnavailable):  # the URL (maybe with an API key): log only
                log.warning("chain node %s: %s", exc.url, exc.reason)
            response = self._error_response(exc)
            response.raw_headers.append(_SERVED)
            self._metrics.fast_path_responses.labels(str(response.status_code)).inc()
            await response(scope, receive, send)
            return
        self._metrics.fast_path_responses.labels("200").inc()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode()), *_JSON_HEADERS],
            }
        )
        await send({"type": "http.response.body", "body": body})
