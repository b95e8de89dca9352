"""Consents on-chain and the gasless relay of signed grants and revokes (``/v1/consents``)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from gateway.api.deps import PrincipalDep, StateDep
from gateway.api.responses import JSON_413, error_example, pick
from gateway.errors import (
    ChainUnavailable,
)
from ledger.protocol.wire import (
    ConsentsPublic,
    RelayPending,
    RelayPolicyPublic,
    RelayRequest,
    RelayResult,
)

__all__ = ["router"]

router = APIRouter()


@router.get(
    "/v1/consents",
    tags=["consents"],
    summary="Consents I granted and consents granted to me (on-chain)",
    responses=pick(401, 503),
)
def list_consents(state: StateDep, principal: PrincipalDep) -> ConsentsPublic:
    return state.consents.list_for(principal.address)


_RELAY_REFUSALS: dict[int | str, dict[str, Any]] = {
    403: error_example(
        "relay_gas_cap_exceeded",
        "the relay needs more than the gas cap of 200000: the signer's ERC-1271 isValidSignature "
        "needs more gas than the cap (or a contract_* refusal, e.g. not the patient or guardian)",
        limit="relay_gas_cap",
        gas_cap=200000,
        reason="the signer's ERC-1271 isValidSignature needs more gas than the cap",
        signer="0x90F79bf6EB2c4f870365E785982E1f101E93b906",
    ),
    429: {
        **error_example(
            "relay_quota_exceeded",
            "0x90f7... has had 10 relayed transactions in the last 3600 s "
            "(relay_patient_quota_per_hour); retry in 1200 s or send it yourself "
            "(or relay_rate_limited: the gateway's rate per minute)",
            retry_after_s=1200,
            limit="relay_patient_quota_per_hour",
            patient="0x90f79bf6eb2c4f870365e785982e1f101e93b906",
            quota=10,
            window_s=3600,
        ),
        "headers": {
            "Retry-After": {
                "description": "seconds until the limit lets a relay through",
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            }
        },
    },
}

_PENDING_RESPONSE: dict[str, Any] = {
    "model": RelayPending,
    "description": "Sent, not mined within the policy's receipt wait: GET status_url later.",
}


@router.get(
    "/v1/consents/policy",
    tags=["consents"],
    summary="The relayer policy: gas cap, quota, rate, receipt wait",
)
def relay_policy(state: StateDep) -> RelayPolicyPublic:
    """The limits under which this gateway pays for relayed consent changes. A refusal names
    the limit it hit (``limit`` in the error's details)."""
    return state.relay.public_policy()


@router.post(
    "/v1/consents",
    tags=["consents"],
    summary="Relay a signed grant or revoke (gasless)",
    response_model=RelayResult,
    responses={
        202: _PENDING_RESPONSE,
        **pick(400, 401, 404, 409, 422, 502, 503),
        **_RELAY_REFUSALS,
        **JSON_413,
    },
)
async def relay_consent(state: StateDep, principal: PrincipalDep, body: RelayRequest) -> Any:
    """Sends ``grantBySig`` / ``revokeBySig`` with the patient's EIP-712 signature under the
    relayer policy (``GET /v1/consents/policy``) and answers with the mined receipt, or 202
    with the transaction hash when it is not mined within the policy's receipt wait. The
    contract checks the signature, nonce and deadline."""
    del principal  # any signed-in account may relay; the signature is the authority
    relay = state.relay
    submitted = await run_in_threadpool(relay.submit, body.action, body.request, body.signature)
    # Wait on the event loop, not in a worker thread: each poll is one short RPC.
    deadline = time.monotonic() + relay.policy.receipt_wait_s
    delay = 0.005
    while True:
        try:
            result = await run_in_threadpool(relay.outcome, submitted)
        except ChainUnavailable:
            result = None  # sent: the client asks for the outcome later
            deadline = 0.0
        if result is not None:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return JSONResponse(relay.pending(submitted).model_dump(), status_code=202)
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.25)


@router.get(
    "/v1/consents/relays/{tx_hash}",
    tags=["consents"],
    summary="The outcome of a relayed transaction",
    response_model=RelayResult,
    responses={
        202: _PENDING_RESPONSE,
        **pick(401, 404, 409, 422, 502, 503),
        403: _RELAY_REFUSALS[403],
    },
)
def relay_outcome(state: StateDep, principal: PrincipalDep, tx_hash: str) -> Any:
    """What ``POST /v1/consents`` would have answered had it waited: the mined receipt, 202
    while pending, or the registry's error when the transaction reverted."""
    del principal
    submitted = state.relay.lookup(tx_hash)
    result = state.relay.outcome(submitted)
    if result is None:
        return JSONResponse(state.relay.pending(submitted).model_dump(), status_code=202)
    return result
