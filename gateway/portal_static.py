"""The portal's static pages at ``/portal/`` and its trust anchors at ``/portal/config.json``.

The portal (``gateway/portal/``, an npm project built by ``make install`` into
``gateway/portal/dist``) is plain static files: HTML, one script bundle and one style sheet,
no secrets, no CDN. Every answer under ``/portal`` carries a strict Content-Security-Policy:
scripts, styles and images from this origin only (no inline script, no ``eval``), and
``connect-src`` this origin, the chain RPC URL the browser reads the chain at directly
(``portal_chain_url``) and the custody federation's members (``gateway.federation_origins``:
a record is opened by asking each of them for its share). A portal that was not built answers
503 with the command to run.

``/portal/config.json`` names the chain id, the registry address, its deployment block and that
chain RPC URL, from the gateway's own settings. A served page trusts its server for its code:
whoever controls this gateway could serve a portal that lies. The config is what the honest
portal checks the chain against, not a defence against its own server.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from starlette.middleware.gzip import GZipMiddleware
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from gateway.settings import Settings

__all__ = ["DEFAULT_PORTAL_DIR", "content_security_policy", "mount_portal", "portal_chain_url"]

DEFAULT_PORTAL_DIR = Path(__file__).resolve().parent / "portal" / "dist"

_NOT_BUILT = (
    "The portal is not built on this gateway. Run `make install` (it runs `npm ci` and "
    "`npm run build` in gateway/portal), or set CONSENT_PORTAL_DIR to a built portal.\n"
)


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def portal_chain_url(settings: Settings) -> str | None:
    """The chain RPC URL browsers are told to use: ``portal_chain_url``, else the gateway's own
    ``chain_url`` when it is on a loopback host (a remote one may carry a provider's API key,
    which must never reach a browser), else none."""
    if settings.portal_chain_url:
        return settings.portal_chain_url
    return settings.chain_url if _is_loopback(settings.chain_url) else None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(chain_url: str | None, peers: frozenset[str] = frozenset()) -> str:
    """The portal's CSP: everything from this origin only; for fetch also the chain RPC's
    origin and ``peers`` (the federation members' origins)."""
    connect = " ".join(["'self'", *([_origin(chain_url)] if chain_url else []), *sorted(peers)])
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            "font-src 'self'",
            f"connect-src {connect}",
            "manifest-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


class _PortalFiles:
    """StaticFiles (gzip when asked) with the portal's security headers, or 503 while
    nothing is built."""

    def __init__(self, directory: Path, headers: Callable[[], dict[str, str]]) -> None:
        self.directory = directory
        self.headers = headers
        files = StaticFiles(directory=directory, html=True, check_dir=False)
        self.files = GZipMiddleware(files, minimum_size=1024)  # the bundle: a third on the wire

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        extra = [(k.lower().encode(), v.encode()) for k, v in self.headers().items()]

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        if not (self.directory / "index.html").is_file():
            response = PlainTextResponse(_NOT_BUILT, status_code=503)
            await response(scope, receive, with_headers)
            return
        await self.files(scope, receive, with_headers)


def mount_portal(
    app: FastAPI,
    settings: Settings,
    *,
    peers: Callable[[], frozenset[str]] = frozenset,
) -> None:
    """Serve the portal at ``/portal/`` and its config at ``/portal/config.json``; ``peers``
    gives the origins the portal may also fetch from (the federation's members)."""
    chain_url = portal_chain_url(settings)

    def headers() -> dict[str, str]:
        return {
            "Content-Security-Policy": content_security_policy(chain_url, peers()),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cross-Origin-Opener-Policy": "same-origin",
            "Cache-Control": "no-cache",
        }

    @app.get("/portal", include_in_schema=False)
    def portal_root() -> RedirectResponse:
        return RedirectResponse("/portal/", status_code=308)

    @app.get("/portal/config.json", include_in_schema=False)
    def portal_config() -> JSONResponse:
        body: dict[str, Any] = {
            "chain_id": settings.expected_chain_id(),
            "registry": settings.registry(),
            "deploy_block": settings.deployment_block(),
            "chain_rpc_url": chain_url,
            "siwe_domain": settings.siwe_domain,
            "siwe_uri": settings.siwe_uri,
        }
        return JSONResponse(body, headers=headers())

    app.mount("/portal", _PortalFiles(settings.portal_dir or DEFAULT_PORTAL_DIR, headers))
