"""Limits on what an unauthenticated client can make the gateway do.

- :class:`RateLimiter`: a token bucket per client address (bounded number of addresses).
- :class:`RequestGuard`: plain-ASGI middleware that, before any body is read,
  refuses ``POST /v1/auth/nonce`` and ``POST /v1/auth/login`` beyond the per-address rate
  (429 ``rate_limited`` with ``Retry-After`` and the limit named), and authenticates the bearer
  session of the routes that take a body on behalf of a signed-in account (``POST /v1/records``,
  ``POST /v1/consents``): without a valid session the answer is 401 and the connection is
  closed, so an unauthenticated upload is never parsed, spooled or buffered.

The client address is the ASGI ``client`` (behind a reverse proxy, run uvicorn with
``--proxy-headers --forwarded-allow-ips`` naming the proxy, so it is the real client's).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api.deps import bearer_token
from gateway.errors import RateLimited
from gateway.services.auth import AuthService
from ledger.protocol.errors import DomainError

__all__ = ["AUTH_FIRST", "RATE_LIMITED", "RateLimiter", "RequestGuard"]

#: POST routes limited per client address (they need no session, so anyone can call them).
RATE_LIMITED = frozenset({"/v1/auth/nonce", "/v1/auth/login"})
#: POST routes whose body is read only after the bearer session is verified.
AUTH_FIRST = frozenset({"/v1/records", "/v1/custody/records", "/v1/consents"})


class RateLimiter:
    """Token buckets keyed by client address: ``burst`` at once, refilled at ``per_minute``.

    At most ``max_keys`` addresses are tracked (least recently seen dropped first), so a
    flood from many addresses costs bounded memory.
    """

    def __init__(
        self,
        *,
        per_minute: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.per_minute = per_minute
        self.burst = burst
        self._rate_s = per_minute / 60.0
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"{self.burst} at once, then {self.per_minute:g} per minute, per client address"

    def acquire(self, key: str) -> float:
        """Take one token for ``key``: 0.0 if allowed, else the seconds until one is free."""
        with self._lock:
            now = self._clock()
            tokens, last = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self._rate_s)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[key] = (tokens, now)
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        return 0.0 if allowed else (1.0 - tokens) / self._rate_s


class RequestGuard:
    """Rate limits and authentication that happen before a request body is read."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        auth: Callable[[], AuthService],
        limiter: RateLimiter,
        error_response: Callable[[DomainError], Response],
    ) -> None:
        self.app = app
        self._auth = auth
        self._limiter = limiter
        self._error_response = error_response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path in RATE_LIMITED:
            client = scope.get("client")
            wait = self._limiter.acquire(client[0] if client else "unknown")
            if wait > 0.0:
                retry = max(1, math.ceil(wait))
                exc = RateLimited(limit=f"{path}: {self._limiter.describe()}", retry_after_s=retry)
                response = self._error_response(exc)
                response.headers["Retry-After"] = str(retry)
                await response(scope, receive, send)
                return
        elif path in AUTH_FIRST:
            auth = self._auth()
            token = bearer_token(scope)
            try:
                if auth.cached(token) is None:  # no I/O when cached
                    await run_in_threadpool(auth.authenticate, token)
            except DomainError as exc:
                response = self._error_response(exc)
                # The body was never read: close the connection instead of draining it.
                response.headers["Connection"] = "close"
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
