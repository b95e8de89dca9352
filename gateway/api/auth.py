"""Sign-in with Ethereum: nonces, logins, the current session (``/v1/auth``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gateway.api.deps import PrincipalDep, StateDep
from gateway.api.responses import JSON_413, pick
from ledger.protocol.wire import (
    LoginRequest,
    NoncePublic,
    SessionPublic,
)

__all__ = ["router"]

router = APIRouter()


@router.post(
    "/v1/auth/nonce",
    tags=["auth"],
    summary="Get a single-use SIWE nonce",
    responses={**pick(429, 503), **JSON_413},
)
def new_nonce(state: StateDep) -> NoncePublic:
    """A fresh nonce to put in an EIP-4361 message (with the domain, URI and chain id given)."""
    return state.auth.new_nonce()


@router.post(
    "/v1/auth/login",
    tags=["auth"],
    summary="Sign in with Ethereum",
    responses={**pick(400, 401, 422, 429, 503), **JSON_413},
)
def login(state: StateDep, body: LoginRequest) -> SessionPublic:
    """Verify a signed EIP-4361 message (domain, URI, chain id, nonce, times, signature); the
    nonce is consumed, so a replayed message is refused. Returns a bearer session."""
    return state.auth.login(body.message, body.signature)


@router.get("/v1/auth/session", tags=["auth"], summary="Who am I", responses=pick(401))
def whoami(principal: PrincipalDep) -> dict[str, Any]:
    return {
        "address": principal.address,
        "public_key": "0x" + principal.public_key.hex(),
        "expires_at": principal.expires_at,
    }
