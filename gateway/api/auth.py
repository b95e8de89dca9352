"""Sign-in with Ethereum: nonces, logins, the current session (``/v1/auth``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gateway.api.deps import PrincipalDep, StateDep
from gateway.api.responses import errors
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
    responses={
        200: {
            "links": {
                "SignIn": {
                    "operationId": "login_v1_auth_login_post",
                    "description": "sign an EIP-4361 message with this nonce and sign in",
                }
            }
        },
        **errors(413, 429, 503),
    },
)
def new_nonce(state: StateDep) -> NoncePublic:
    """A fresh nonce to put in an EIP-4361 message (with the domain, URI and chain id given)."""
    return state.auth.new_nonce()


@router.post(
    "/v1/auth/login",
    tags=["auth"],
    summary="Sign in with Ethereum",
    responses={
        200: {
            "links": {
                "Session": {"operationId": "whoami_v1_auth_session_get"},
                "UploadRecord": {"operationId": "upload_record_v1_records_post"},
                "ListRecords": {"operationId": "list_records_v1_records_get"},
            }
        },
        **errors(
            400,
            401,
            413,
            422,
            429,
            503,
            extra=(
                "siwe_malformed_message",
                "siwe_nonce_invalid",
                "siwe_error",
                "siwe_domain_mismatch",
                "siwe_uri_mismatch",
                "siwe_chain_mismatch",
                "siwe_expired",
                "siwe_not_yet_valid",
                "siwe_bad_signature",
                "siwe_address_mismatch",
            ),
        ),
    },
)
def login(state: StateDep, body: LoginRequest) -> SessionPublic:
    """Verify a signed EIP-4361 message (domain, URI, chain id, nonce, times, signature); the
    nonce is consumed, so a replayed message is refused. Returns a bearer session.

    Rules the schema cannot express: ``message`` must follow the EIP-4361 grammar with an
    EIP-55 checksummed address (400 ``siwe_malformed_message`` otherwise); its domain, URI and
    chain id must be this gateway's, its nonce one this gateway issued and not yet used, its
    times current, and ``signature`` the message's ``personal_sign`` by its address (401
    ``siwe_*`` / ``siwe_nonce_invalid`` otherwise)."""
    return state.auth.login(body.message, body.signature)


@router.get("/v1/auth/session", tags=["auth"], summary="Who am I", responses=errors(401, 503))
def whoami(principal: PrincipalDep) -> dict[str, Any]:
    return {
        "address": principal.address,
        "public_key": "0x" + principal.public_key.hex(),
        "expires_at": principal.expires_at,
    }
