"""The browser origins of the custody federation: who may call this gateway's API from a page.

Under threshold custody a patient's portal, served by one member, signs in to every member and
asks each for its share, so those requests cross origins. The origins come from the chain, not
from configuration: the URL the registry's ``federation()`` lists for each member. They are
used twice, both read through one short cache (:class:`FederationOrigins`):

* CORS (:class:`FederationCors`): a request whose ``Origin`` is a member's origin gets the
  CORS answer (bearer tokens, no cookies: ``Access-Control-Allow-Credentials`` is never sent);
  any other origin gets none, so its page cannot read the answer;
* the portal's CSP ``connect-src`` (``gateway.portal_static``): the portal may fetch from the
  members, and from nowhere else but this origin and the chain RPC.

When the chain cannot be read the set is the last one read, or empty: nothing is opened up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from ledger.chain.registry import Federation

__all__ = ["FederationCors", "FederationOrigins", "origin_of"]

_log = logging.getLogger(__name__)


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL, lowercase; ``None`` for anything else."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


class FederationOrigins:
    """The origins of the federation's member URLs, re-read from the chain every ``ttl_s``."""

    def __init__(
        self,
        read: Callable[[], Federation],
        *,
        ttl_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._origins: frozenset[str] = frozenset()
        self._read_at: float | None = None

    def __call__(self) -> frozenset[str]:
        with self._lock:
            now = self._clock()
            if self._read_at is not None and now - self._read_at < self._ttl_s:
                return self._origins
            self._read_at = now
            try:
                fed = self._read()
            except Exception as exc:  # chain down: keep the last set read (or none)
                _log.warning("federation origins not refreshed: %s", exc)
                return self._origins
            found = (origin_of(m.url) for m in fed.members)
            self._origins = frozenset(o for o in found if o is not None)
            return self._origins


class FederationCors(CORSMiddleware):
    """Starlette's CORS middleware, with the allowed origins read from the federation."""

    def __init__(self, app: ASGIApp, *, origins: Callable[[], frozenset[str]]) -> None:
        super().__init__(
            app,
            allow_origins=[],
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Accept"],
            allow_credentials=False,
            expose_headers=["Retry-After"],
            max_age=600,
        )
        self._federation_origins = origins

    def is_allowed_origin(self, origin: str) -> bool:
        return origin.lower() in self._federation_origins()
