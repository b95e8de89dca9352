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
from gateway.services.auth import AuthService
from gateway.services.fetch import parse_purpose
from gateway.services.records import RecordService
from ledger.protocol.errors import DomainError

__all__ = ["FetchFastPath"]

log = logging.getLogger("gateway")

_PATH = re.compile(r"/v1/records/(0x[0-9a-fA-F]{64})")
_QUERY = re.compile(rb"purpose=([A-Za-z0-9_]{1,32})")
_JSON_HEADERS = [(b"content-type", b"application/json")]


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
    ) -> None:
        self.app = app
        self._auth = auth
        self._records = records
        self._route = route
        self._error_response = error_response

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
            await self._error_response(exc)(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode()), *_JSON_HEADERS],
            }
        )
        await send({"type": "http.response.body", "body": body})
