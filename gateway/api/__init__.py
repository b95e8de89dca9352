"""The HTTP API (``/v1``), ``/healthz`` and ``/metrics``: one router per resource.

Routes are thin: parse, call one service method, shape the answer. Handlers that do blocking
I/O (database, chain, IPFS) are plain ``def`` so FastAPI runs them in its thread pool.
Every error is ``{"error": {"code", "message", "details"}}`` (see ``gateway.app``).
"""

from __future__ import annotations

from fastapi import APIRouter

from gateway.api import access_log, auth, consents, custody, ops, records

__all__ = ["router"]

router = APIRouter()
for _resource in (auth, records, custody, consents, access_log, ops):
    router.include_router(_resource.router)
