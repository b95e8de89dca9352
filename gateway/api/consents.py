"""Consents on-chain and the gasless relay of signed grants and revokes (``/v1/consents``)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from gateway.api.deps import PrincipalDep, StateDep
from gateway.api.responses import CONTRACT, errors
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
    responses=errors(401, 503),
)
def list_consents(state: StateDep, principal: PrincipalDep) -> ConsentsPublic:
    return state.consents.list_for(principal.address)


_RELAY_CODES = (
    "relay_gas_cap_exceeded",
    "relay_quota_exceeded",
    "relay_rate_limited",
    "upstream_failed",
    *CONTRACT,
)

_OUTCOME_LINK: dict[str, Any] = {
    "OutcomeOfRelay": {
        "operationId": "relay_outcome_v1_consents_relays__tx_hash__get",
        "parameters": {"tx_hash": "$response.body#/tx_hash"},
        "description": "the outcome of the relayed transaction",
    },
    "ListConsents": {"operationId": "list_consents_v1_consents_get"},
}

_PENDING_RESPONSE: dict[str, Any] = {
    "model": RelayPending,
    "description": "Sent, not mined within the policy's receipt wait: GET status_url later.",
    "links": _OUTCOME_LINK,
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
        200: {"links": _OUTCOME_LINK},
        202: _PENDING_RESPONSE,
        **errors(400, 401, 403, 404, 409, 413, 422, 429, 502, 503, extra=_RELAY_CODES),
    },
)
async def relay_consent(state: StateDep, principal: PrincipalDep, body: RelayRequest) -> Any:
    """Sends ``grantBySig`` / ``revokeBySig`` with the patient's EIP-712 signature under the
    relayer policy (``GET /v1/consents/policy``) and answers with the mined receipt, or 202
    with the transaction hash when it is not mined within the policy's receipt wait.

    Rules the schema cannot express, checked by the gateway and the registry: ``request`` has
    exactly the fields of ``action`` (422 ``invalid_request``); ``signature`` must be the
    signer's EIP-712 signature of that request (422 ``contract_invalid_signature``), made
    before ``deadline`` (422 ``contract_signature_expired``), with the signer's current nonce
    (409 ``contract_invalid_account_nonce``); the signer must be the patient or their guardian
    (403 ``contract_not_patient_or_guardian``), ``expiresAt`` in the future (422
    ``contract_expiry_in_past``), and a revoke must name a stored consent (404
    ``contract_consent_not_found``). The relayer policy may refuse it (403
    ``relay_gas_cap_exceeded``, 429 ``relay_quota_exceeded`` / ``relay_rate_limited``)."""
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
        **errors(401, 403, 404, 409, 422, 429, 502, 503, extra=_RELAY_CODES),
    },
)
def relay_outcome(
    state: StateDep,
    principal: PrincipalDep,
    tx_hash: Annotated[str, Path(pattern=r"^0[xX][0-9a-fA-F]{64}$", examples=["0x" + "ab" * 32])],
) -> Any:
    """What ``POST /v1/consents`` would have answered had it waited: the mined receipt, 202
    while pending, or the registry's error when the transaction reverted."""
    del principal
    submitted = state.relay.lookup(tx_hash)
    result = state.relay.outcome(submitted)
    if result is None:
        return JSONResponse(state.relay.pending(submitted).model_dump(), status_code=202)
    return result
