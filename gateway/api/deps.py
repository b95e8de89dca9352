"""The dependencies every route shares: the gateway's state and the signed-in principal.

The fast path (:mod:`gateway.fastpath`) and the request guard (:mod:`gateway.limits`) parse the
bearer token of a raw ASGI request with :func:`bearer_token` and resolve it with
:func:`resolve_principal`, the same lookup :func:`get_principal` makes for the routes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import httpx
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from starlette.types import Scope

from gateway.ipfs import IpfsClient
from gateway.metrics import Metrics
from gateway.services.anchor import Anchorer
from gateway.services.auth import AuthService, Principal
from gateway.services.chain import ChainAccess
from gateway.services.consents import ConsentDirectory
from gateway.services.records import RecordService
from gateway.services.relay import ConsentRelay
from gateway.storage.access_log import AccessLog

__all__ = [
    "GatewayState",
    "PrincipalDep",
    "StateDep",
    "bearer_token",
    "get_principal",
    "get_state",
    "resolve_principal",
]


@dataclass
class GatewayState:
    """Everything a request needs, built once by ``create_app``."""

    engine: Engine
    chain: ChainAccess
    ipfs: IpfsClient
    ipfs_http: httpx.Client
    auth: AuthService
    records: RecordService
    relay: ConsentRelay
    consents: ConsentDirectory
    access_log: AccessLog
    anchorer: Anchorer
    metrics: Metrics
    auditors: frozenset[str] = field(default_factory=frozenset)
    chain_id: int | None = None


_bearer = HTTPBearer(auto_error=False, description="The token from POST /v1/auth/login")


async def get_state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


StateDep = Annotated[GatewayState, Depends(get_state)]


async def resolve_principal(auth: AuthService, token: str | None) -> Principal:
    """The session of ``token``: from memory without I/O (on the event loop) when cached, else
    looked up in the database in the thread pool; ``Unauthenticated`` otherwise."""
    principal = auth.cached(token)
    if principal is not None:
        return principal
    return await run_in_threadpool(auth.authenticate, token)


async def get_principal(
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    token = credentials.credentials if credentials is not None else None
    return await resolve_principal(state.auth, token)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def bearer_token(scope: Scope) -> str | None:
    """The token of a single ``Authorization: Bearer <token>`` header of a raw ASGI request,
    else None."""
    found: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            if found is not None:
                return None
            found = value
    if found is None:
        return None
    scheme, _, token = found.partition(b" ")
    if scheme.lower() != b"bearer" or not token or b" " in token:
        return None
    try:
        return token.decode("ascii")
    except UnicodeDecodeError:
        return None
