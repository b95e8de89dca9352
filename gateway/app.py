"""The gateway's FastAPI application factory.

Run it with ``uvicorn gateway.app:create_app --factory`` (settings from ``CONSENT_*``), or in
tests with ``create_app(Settings(...))``. The registry ABI is the one shipped with the package
(``ledger.chain.abi``): starting needs no Solidity compiler. Everything expensive — the web3
contract object, the database engine, HTTP connection pools — is built here once, never per
request. The chain and IPFS may be down at start: the gateway still starts, ``/healthz``
answers 503 with the details, and requests that need them fail closed with 503.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api import records, router
from gateway.api.deps import GatewayState
from gateway.errors import (
    BodyTooLarge,
    ChainIdMismatch,
    ChainUnavailable,
    PayloadTooLarge,
    http_status_of,
)
from gateway.fastpath import FetchFastPath
from gateway.federation_origins import FederationCors, FederationOrigins
from gateway.ipfs import IpfsClient
from gateway.limits import RateLimiter, RequestGuard
from gateway.metrics import Metrics, MetricsMiddleware
from gateway.openapi import METADATA, exact_integer_bounds
from gateway.portal_static import mount_portal
from gateway.services.anchor import Anchorer
from gateway.services.auth import AuthService
from gateway.services.chain import ChainAccess
from gateway.services.consents import ConsentDirectory
from gateway.services.custody import CIPHERTEXT_OVERHEAD, MAX_MANIFEST_BYTES
from gateway.services.decisions import IndexDecisions
from gateway.services.records import RecordService
from gateway.services.relay import ConsentRelay, RelayLedger, RelayPolicy
from gateway.settings import Settings, get_settings
from gateway.storage.access_log import AccessLog
from gateway.storage.engine import init_db, is_sqlite, make_engine
from ledger.chain.abi import registry_abi
from ledger.chain.node import connect
from ledger.chain.rpc import KeepAliveRpc
from ledger.protocol.errors import DomainError

__all__ = ["BodyLimitMiddleware", "ChainIdRefused", "create_app", "error_body"]

log = logging.getLogger("gateway")

_MULTIPART_OVERHEAD = 64 * 1024


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one error shape: ``{"error": {"code", "message", "details"}}``."""
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _gateway_error_response(exc: DomainError) -> JSONResponse:
    body = exc.to_dict()
    code = str(body.pop("code"))
    message = str(body.pop("message"))
    return JSONResponse(
        error_body(code, message, body), status_code=http_status_of(exc), headers=exc.headers()
    )


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def _allowed_methods(request: Request) -> list[str]:
    """Every documented method of the request's path (all routes, not only the first)."""
    app: FastAPI = request.app
    methods: set[str] = set()
    for template, operations in app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            methods.update(m.upper() for m in operations)
    return sorted(methods)


def _install_error_handlers(app: FastAPI) -> None:
    async def on_gateway_error(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, DomainError):  # registered for DomainError only
            return await on_unexpected(request, exc)
        if http_status_of(exc) >= 500:
            log.warning(
                "%s %s -> %d %s", request.method, request.url.path, http_status_of(exc), exc.code
            )
        if isinstance(exc, ChainUnavailable):  # the URL (maybe with an API key): log only
            log.warning("chain node %s: %s", exc.url, exc.reason)
        return _gateway_error_response(exc)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, RequestValidationError):
            return await on_unexpected(request, exc)
        errors = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in exc.errors()  # never echo "input": it may be an uploaded plaintext
        ]
        return JSONResponse(
            error_body("invalid_request", "request validation failed", {"errors": errors}),
            status_code=422,
        )

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, StarletteHTTPException):
            return await on_unexpected(request, exc)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names only the first matching route's methods
            headers["Allow"] = ", ".join(_allowed_methods(request) or [headers.get("Allow", "")])
        return JSONResponse(
            error_body(code, str(exc.detail)), status_code=exc.status_code, headers=headers
        )

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return JSONResponse(error_body("internal_error", "internal error"), status_code=500)

    app.add_exception_handler(DomainError, on_gateway_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


class _BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Refuses request bodies above their limit with 413 before reading them whole: an upload
    (``POST /v1/records``) up to ``upload_limit``, a threshold-custody upload (``POST
    /v1/custody/records``: ciphertext and manifest) up to ``custody_upload_limit`` (both
    ``payload_too_large``), every other body up to ``limit`` (``body_too_large``)."""

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        upload_limit: int | None = None,
        custody_upload_limit: int | None = None,
    ) -> None:
        self.app = app
        self.limit = limit
        self.upload_limit = upload_limit if upload_limit is not None else limit
        self.uploads = {
            "/v1/records": self.upload_limit,
            "/v1/custody/records": (
                custody_upload_limit if custody_upload_limit is not None else self.upload_limit
            ),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload_limit = self.uploads.get(scope["path"]) if scope["method"] == "POST" else None
        upload = upload_limit is not None
        limit = upload_limit if upload_limit is not None else self.limit
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _send_413(send, _too_large(upload, limit))
                return
        received = 0
        started = exceeded = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                # The framework caught the overflow while parsing and answers with its own
                # error (a 400): answer 413 instead, once.
                started = True
                await _send_413(send, _too_large(upload, limit))
                return
            if exceeded:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                started = True
                await _send_413(send, _too_large(upload, limit))


def _too_large(upload: bool, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(limit=limit) if upload else BodyTooLarge(limit=limit)


async def _send_413(send: Send, exc: PayloadTooLarge) -> None:
    response = _gateway_error_response(exc)
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(response.body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": response.body})


def _build_state(settings: Settings, metrics: Metrics) -> GatewayState:
    engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
    init_db(engine)
    abi = registry_abi()  # shipped with the package: no compiler at start
    w3 = connect(settings.chain_url, timeout_s=settings.chain_timeout_s)
    relayer: LocalAccount = Account.from_key(settings.relayer_key_bytes)
    gateway_account: LocalAccount = Account.from_key(settings.gateway_key_bytes)
    registrar: LocalAccount = Account.from_key(settings.registrar_key_bytes)
    chain = ChainAccess(
        w3,
        url=settings.chain_url,
        address=settings.registry(),
        abi=abi,
        relayer=relayer,
        gateway_account=gateway_account,
        registrar=registrar,
        chain_id=settings.expected_chain_id(),
        max_in_flight=settings.max_in_flight_tx,
        # The fetch path's two calls: one kept-alive http.client connection per worker thread
        # (a fifth of httpx's CPU per call; the pool lock was the hot spot under load).
        rpc=KeepAliveRpc(settings.chain_url, timeout_s=settings.chain_timeout_s),
    )
    http = httpx.Client(
        base_url=settings.ipfs_url,
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
    )
    ipfs = IpfsClient(http, timeout_s=settings.ipfs_timeout_s)
    anchorer_box: list[Anchorer] = []

    def on_append(size: int) -> None:
        if anchorer_box:
            anchorer_box[0].notify(size)

    access_log = AccessLog(engine, on_append=on_append)
    anchorer = Anchorer(
        access_log,
        chain,
        every=settings.checkpoint_every,
        interval_s=settings.checkpoint_interval_s,
        min_gap_s=settings.checkpoint_min_gap_s,
        metrics=metrics,
    )
    anchorer_box.append(anchorer)
    auth = AuthService(
        engine,
        domain=settings.siwe_domain,
        uri=settings.siwe_uri,
        chain_id=lambda: chain.chain_id,
        nonce_ttl_s=settings.siwe_nonce_ttl_s,
        session_ttl_s=settings.session_ttl_s,
        max_age_s=settings.siwe_max_age_s,
    )
    records = RecordService(
        engine,
        chain=chain,
        blobs=ipfs,
        kek=settings.kek_bytes,
        access_log=access_log,
        metrics=metrics,
        max_upload_bytes=settings.max_upload_bytes,
        blob_cache_bytes=settings.blob_cache_bytes,
        pending_grace_s=settings.upload_grace_s,
        tx_timeout_s=settings.tx_timeout_s,
        max_head_age_s=settings.max_head_age_s,
    )
    records.custody_key = settings.custody_key_bytes
    if settings.decision_source == "index":
        # Opened lazily (see gateway.services.decisions): nothing here touches the chain.
        records.decisions = IndexDecisions(
            chain.rpc_client,
            url=settings.chain_url,
            address=settings.registry(),
            start_block=settings.deployment_block(),
            snapshot_path=settings.home / "consent-index.json",
            max_head_age_s=settings.max_head_age_s,
        )
    return GatewayState(
        engine=engine,
        chain=chain,
        ipfs=ipfs,
        ipfs_http=http,
        auth=auth,
        records=records,
        relay=ConsentRelay(
            chain,
            metrics=metrics,
            abi=abi,
            ledger=RelayLedger(
                engine,
                RelayPolicy(
                    gas_cap=settings.relay_gas_cap,
                    patient_quota_per_hour=settings.relay_patient_quota_per_hour,
                    rate_per_minute=settings.relay_rate_per_minute,
                    receipt_wait_s=settings.relay_receipt_wait_s,
                ),
            ),
        ),
        consents=ConsentDirectory(chain, abi=abi, from_block=settings.deployment_block()),
        access_log=access_log,
        anchorer=anchorer,
        metrics=metrics,
        auditors=frozenset(settings.auditor_addresses),
        chain_id=settings.expected_chain_id(),
    )


def _recover_uploads(state: GatewayState, settings: Settings) -> None:
    """Resolve uploads a crash cut short, before serving (see ``RecordService``). A SQLite
    database belongs to this one gateway process, so every pending row is abandoned; on
    PostgreSQL other replicas may be mid-upload, so only rows older than the grace period."""
    older_than_s = 0.0 if is_sqlite(state.engine) else settings.upload_grace_s
    try:
        state.records.recover_pending(older_than_s)
    except Exception as exc:  # a database down at start: the next start or a retry resolves
        log.error("upload recovery at start failed: %s", type(exc).__name__)


class ChainIdRefused(RuntimeError):
    """The gateway refuses to start: its chain node is on another chain than the deployment."""


def _check_chain_id(state: GatewayState) -> None:
    """Compare the node's chain id with the deployment's; a node that does not answer is
    reported by ``/healthz`` (and compared again there) instead."""
    try:
        state.chain.check_chain_id()
    except ChainIdMismatch as exc:
        raise ChainIdRefused(
            f"refusing to start: {exc.message}. Point CONSENT_CHAIN_URL at the network the "
            f"registry was deployed on, or use that network's deployment file "
            f"(CONSENT_DEPLOYMENT_FILE / CONSENT_CHAIN_ID)"
        ) from None
    except ChainUnavailable as exc:
        log.warning("chain node unreachable at start (%s): chain id not checked yet", exc.reason)


def _fetch_route() -> BaseRoute | None:
    """The route of ``gateway.api.records.fetch_record`` (the fast path stands in for it and
    labels its metrics with it), found by its endpoint, not by its path: FastAPI wraps included
    routers, and a path of its own would hide a route that moved."""
    for route in records.router.routes:
        if isinstance(route, APIRoute) and route.endpoint is records.fetch_record:
            return route
    return None


def create_app(
    settings: Settings | None = None, *, clock: Callable[[], float] = time.monotonic
) -> FastAPI:
    """The gateway app. Refuses to start on a missing or placeholder KEK (``Settings``).

    ``clock`` is the monotonic clock of the per-address sign-in limiter (injectable for tests).
    """
    settings = settings if settings is not None else get_settings()
    metrics = Metrics()
    state = _build_state(settings, metrics)
    try:
        _check_chain_id(state)
    except ChainIdRefused:
        state.chain.close()
        state.ipfs_http.close()
        state.engine.dispose()
        raise

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _recover_uploads(state, settings)
        decisions = state.records.decisions
        if decisions is not None:
            decisions.start_warm_up()  # catch up before the first request, if the chain answers
        if settings.anchor_enabled:
            state.anchorer.start()
        try:
            yield
        finally:
            state.anchorer.stop()
            if decisions is not None:
                decisions.close()
            state.ipfs_http.close()
            state.chain.close()
            state.engine.dispose()

    app = FastAPI(**METADATA, lifespan=lifespan)  # type: ignore[arg-type]
    app.state.gateway = state
    app.state.settings = settings
    # Uploaded files stay in memory up to this app's upload limit (InMemoryUploadRoute): a
    # spooled temp file on disk would be plaintext at rest.
    app.state.upload_spool_bytes = settings.max_upload_bytes + _MULTIPART_OVERHEAD
    _install_error_handlers(app)
    app.include_router(router)
    exact_integer_bounds(app)
    # The custody federation's origins, from the chain: their portals may call this API (CORS)
    # and this gateway's portal may fetch from them (its CSP).
    origins = FederationOrigins(lambda: app.state.gateway.records.federation())
    mount_portal(app, settings, peers=origins)  # static pages at /portal/ (not in the API schema)
    app.add_middleware(
        FetchFastPath,
        auth=lambda: app.state.gateway.auth,
        records=lambda: app.state.gateway.records,
        route=_fetch_route(),
        error_response=_gateway_error_response,
        metrics=metrics,
    )
    # Before any body is read: per-address limits on nonces and logins, and the session of
    # an upload or relay checked (an unauthenticated 45 MB upload is never parsed).
    app.add_middleware(
        RequestGuard,
        auth=lambda: app.state.gateway.auth,
        limiter=RateLimiter(
            per_minute=settings.auth_rate_per_minute, burst=settings.auth_rate_burst, clock=clock
        ),
        error_response=_gateway_error_response,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(
        BodyLimitMiddleware,
        limit=settings.max_json_body_bytes,
        upload_limit=settings.max_upload_bytes + _MULTIPART_OVERHEAD,
        # the blob is the file plus its header, nonce, salt and tag; the manifest is bounded
        custody_upload_limit=settings.max_upload_bytes
        + CIPHERTEXT_OVERHEAD
        + MAX_MANIFEST_BYTES
        + _MULTIPART_OVERHEAD,
    )
    app.add_middleware(FederationCors, origins=origins)  # outermost: answers preflights first
    return app
