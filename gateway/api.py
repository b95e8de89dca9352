"""The HTTP API (``/v1``), ``/healthz`` and ``/metrics``.

Routes are thin: parse, call one service method, shape the answer. Handlers that do blocking
I/O (database, chain, IPFS) are plain ``def`` so FastAPI runs them in its thread pool.
Every error is ``{"error": {"code", "message", "details"}}`` (see ``gateway.app``).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine

from gateway import db
from gateway.accesslog import AccessLog
from gateway.anchor import Anchorer
from gateway.errors import (
    ChainIdMismatch,
    ChainUnavailable,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
)
from gateway.ipfs import IpfsClient
from gateway.metrics import Metrics
from gateway.relay import ConsentDirectory, ConsentRelay
from gateway.service import AuthService, ChainAccess, Principal, RecordService, parse_purpose
from ledger.protocol.envelope import Envelope
from ledger.protocol.errors import DomainError
from ledger.protocol.merkle import MerkleError
from ledger.protocol.wire import (
    AccessLogEntryPublic,
    AccessLogPage,
    CheckpointPublic,
    ConsentsPublic,
    ConsistencyPublic,
    HealthPublic,
    LoginRequest,
    NoncePublic,
    RecordPublic,
    RecordsPublic,
    RelayPending,
    RelayPolicyPublic,
    RelayRequest,
    RelayResult,
    SessionPublic,
)

__all__ = ["ERROR_RESPONSES", "GatewayState", "router"]


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


def _error_example(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {
        "description": message,
        "content": {
            "application/json": {
                "example": {"error": {"code": code, "message": message, "details": details}}
            }
        },
    }


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error_example(
        "siwe_malformed_message",
        "malformed SIWE message: too few lines (or a body that does not parse: bad_request)",
        reason="too few lines",
    ),
    401: _error_example(
        "unauthenticated", "authentication required: session expired", reason="session expired"
    ),
    403: _error_example(
        "consent_denied",
        "0x15d3... holds no consent for record 0x1f... (purpose 1) at block 42",
        requester="0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
        record_id="0x" + "1f" * 32,
        purpose=1,
        block_number=42,
        event_count=118,
        chain_time=1767225600,
    ),
    404: _error_example("record_not_found", "no record 0x1f...", record_id="0x" + "1f" * 32),
    409: _error_example("conflict", "an upload of this attestation is in progress; retry shortly"),
    413: _error_example("payload_too_large", "the upload exceeds 52428800 bytes", limit=52428800),
    "413_json": _error_example(
        "body_too_large", "the request body exceeds 65536 bytes", limit=65536
    ),
    429: {
        **_error_example(
            "rate_limited",
            "too many requests: /v1/auth/nonce: 60 at once, then 120 per minute, per client "
            "address; retry after 1 s",
            limit="/v1/auth/nonce: 60 at once, then 120 per minute, per client address",
            retry_after_s=1,
        ),
        "headers": {
            "Retry-After": {
                "description": "seconds until the next request is accepted",
                "required": True,
                "schema": {"type": "integer", "minimum": 1},
            }
        },
    },
    422: _error_example("invalid_request", "request validation failed", errors=[]),
    502: _error_example(
        "blob_tampered",
        "the stored ciphertext of 0x1f... is corrupt: does not match its CID",
        reason="does not match its CID",
    ),
    503: _error_example(
        "chain_unavailable",
        "the chain node is unreachable: ConnectionError",
        reason="ConnectionError",
    ),
}


def _pick(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: ERROR_RESPONSES[c] for c in codes}


#: a JSON body over ``max_json_body_bytes``
_JSON_413: dict[int | str, dict[str, Any]] = {413: ERROR_RESPONSES["413_json"]}


router = APIRouter()
_bearer = HTTPBearer(auto_error=False, description="The token from POST /v1/auth/login")


async def get_state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


StateDep = Annotated[GatewayState, Depends(get_state)]


async def get_principal(
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    token = credentials.credentials if credentials is not None else None
    principal = state.auth.cached(token)  # no I/O: stay on the event loop
    if principal is not None:
        return principal
    return await run_in_threadpool(state.auth.authenticate, token)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


# ------------------------------------------------------------------------------------ auth


@router.post(
    "/v1/auth/nonce",
    tags=["auth"],
    summary="Get a single-use SIWE nonce",
    responses={**_pick(429, 503), **_JSON_413},
)
def new_nonce(state: StateDep) -> NoncePublic:
    """A fresh nonce to put in an EIP-4361 message (with the domain, URI and chain id given)."""
    return state.auth.new_nonce()


@router.post(
    "/v1/auth/login",
    tags=["auth"],
    summary="Sign in with Ethereum",
    responses={**_pick(400, 401, 422, 429, 503), **_JSON_413},
)
def login(state: StateDep, body: LoginRequest) -> SessionPublic:
    """Verify a signed EIP-4361 message (domain, URI, chain id, nonce, times, signature); the
    nonce is consumed, so a replayed message is refused. Returns a bearer session."""
    return state.auth.login(body.message, body.signature)


@router.get("/v1/auth/session", tags=["auth"], summary="Who am I", responses=_pick(401))
def whoami(principal: PrincipalDep) -> dict[str, Any]:
    return {
        "address": principal.address,
        "public_key": "0x" + principal.public_key.hex(),
        "expires_at": principal.expires_at,
    }


# --------------------------------------------------------------------------------- records


@router.post(
    "/v1/records",
    tags=["records"],
    summary="Upload an attested checkup result (centre)",
    status_code=201,
    responses={
        200: {"description": "The same attestation was uploaded before; the existing record."},
        **_pick(400, 401, 403, 409, 413, 422, 502, 503),
    },
)
def upload_record(
    state: StateDep,
    principal: PrincipalDep,
    response: Response,
    file: Annotated[UploadFile, File(description="The result (any format); plaintext")],
    patient: Annotated[str, Form(examples=["0x90F79bf6EB2c4f870365E785982E1f101E93b906"])],
    category: Annotated[str, Form(description="name (e.g. laboratory) or bytes32 hex")],
    issued_at: Annotated[int, Form(ge=0, description="UNIX seconds, as attested")],
    signature: Annotated[str, Form(description="The centre's EIP-712 RecordAttestation signature")],
    salt: Annotated[
        str,
        Form(
            description="The 32-byte salt of the attested digest sha256(salt || file), 0x hex;"
            " kept only inside the encrypted record"
        ),
    ],
    content_digest: Annotated[
        str | None,
        Form(description="sha256(salt || file), 0x hex (optional cross-check)"),
    ] = None,
) -> RecordPublic:
    """The signed-in centre's attested result: encrypted, pinned on IPFS and registered
    on-chain, all or nothing. Retrying the same attestation answers 200 with the same record."""
    limit = state.records.max_upload_bytes
    if file.size is not None and file.size > limit:
        raise PayloadTooLarge(limit=limit)
    data = file.file.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(limit=limit)
    record, created = state.records.upload(
        principal,
        data=data,
        patient=patient,
        category=category,
        issued_at=issued_at,
        signature=signature,
        salt=salt,
        content_digest=content_digest,
    )
    del data
    if not created:
        response.status_code = 200
    return record


@router.get(
    "/v1/records",
    tags=["records"],
    summary="My records (as patient) and my uploads (as centre)",
    responses=_pick(401, 503),
)
def list_records(
    state: StateDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
) -> RecordsPublic:
    return RecordsPublic(
        records=state.records.list_for(principal.address, limit=limit, offset=offset)
    )


@router.get(
    "/v1/records/{record_id}",
    tags=["records"],
    summary="Fetch a record (consent checked on-chain)",
    response_model=Envelope,
    responses=_pick(401, 403, 404, 422, 502, 503),
)
def fetch_record(
    state: StateDep,
    principal: PrincipalDep,
    record_id: str,
    purpose: Annotated[
        str,
        Query(
            description="purpose name (treatment, research, ...) or id 0..31",
            examples=["treatment"],
        ),
    ],
) -> Response:
    """The ciphertext with its data key sealed to the caller's public key, if the chain says
    the caller holds consent for ``purpose`` at the block named in ``block_number``
    (``event_count`` and ``chain_time`` name the exact ledger state and time the chain
    evaluated). Every decision is appended to the access log. Open it with
    ``ledger.protocol.envelope.open_envelope``."""
    # The envelope's JSON, assembled by the service (the ciphertext's base64 is cached per
    # verified blob): no model validation and dump of ~90 KB of base64 per read.
    body = state.records.fetch_json(principal, record_id, parse_purpose(purpose))
    return Response(body, media_type="application/json")


# -------------------------------------------------------------------------------- consents


@router.get(
    "/v1/consents",
    tags=["consents"],
    summary="Consents I granted and consents granted to me (on-chain)",
    responses=_pick(401, 503),
)
def list_consents(state: StateDep, principal: PrincipalDep) -> ConsentsPublic:
    return state.consents.list_for(principal.address)


_RELAY_REFUSALS: dict[int | str, dict[str, Any]] = {
    403: _error_example(
        "relay_gas_cap_exceeded",
        "the relay needs more than the gas cap of 200000: the signer's ERC-1271 isValidSignature "
        "needs more gas than the cap (or a contract_* refusal, e.g. not the patient or guardian)",
        limit="relay_gas_cap",
        gas_cap=200000,
        reason="the signer's ERC-1271 isValidSignature needs more gas than the cap",
        signer="0x90F79bf6EB2c4f870365E785982E1f101E93b906",
    ),
    429: {
        **_error_example(
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
        **_pick(400, 401, 404, 409, 422, 502, 503),
        **_RELAY_REFUSALS,
        **_JSON_413,
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
        **_pick(401, 404, 409, 422, 502, 503),
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


# ------------------------------------------------------------------------------ access log


def _checkpoint_public(state: GatewayState) -> CheckpointPublic | None:
    latest = state.access_log.latest_checkpoint()
    if latest is None:
        return None
    return CheckpointPublic(**latest.model_dump())


@router.get(
    "/v1/access-log/checkpoint",
    tags=["access log"],
    summary="The latest checkpoint anchored on-chain",
    responses=_pick(404, 503),
)
def latest_checkpoint(state: StateDep) -> CheckpointPublic:
    checkpoint = _checkpoint_public(state)
    if checkpoint is None:
        raise NotFound("no checkpoint has been anchored yet", log_size=state.access_log.size)
    return checkpoint


@router.get(
    "/v1/access-log/entries",
    tags=["access log"],
    summary="Reads of my records, with inclusion proofs",
    responses=_pick(401, 403, 503),
)
def access_log_entries(
    state: StateDep,
    principal: PrincipalDep,
    patient: Annotated[str | None, Query(description="must be the caller (default)")] = None,
    after: Annotated[
        int, Query(ge=-1, le=2**63 - 1, description="only entries with a larger index")
    ] = -1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AccessLogPage:
    """Decisions about the caller's records. Each entry carries the RFC 9162 inclusion proof
    against the latest anchored checkpoint (null while no checkpoint covers it yet)."""
    who = patient if patient is not None else principal.address
    if who.lower() != principal.address.lower():
        raise Forbidden(
            account=principal.address, reason="a patient sees only reads of their own records"
        )
    checkpoint = _checkpoint_public(state)
    size = checkpoint.tree_size if checkpoint is not None else 0
    entries = []
    for index, leaf, digest in state.access_log.entries_for_patient(who, after=after, limit=limit):
        proof = (
            ["0x" + h.hex() for h in state.access_log.inclusion_proof(index, size)]
            if index < size
            else None
        )
        entries.append(
            AccessLogEntryPublic(
                index=index,
                leaf=leaf.decode(),
                leaf_hash="0x" + digest.hex(),
                entry=json.loads(leaf),
                inclusion_proof=proof,
            )
        )
    return AccessLogPage(checkpoint=checkpoint, log_size=state.access_log.size, entries=entries)


@router.get(
    "/v1/access-log/consistency",
    tags=["access log"],
    summary="RFC 9162 consistency proof between two tree sizes",
    responses=_pick(422, 503),
)
def consistency(
    state: StateDep,
    first: Annotated[int, Query(ge=0)],
    second: Annotated[int | None, Query(ge=0, description="default: latest checkpoint")] = None,
) -> ConsistencyPublic:
    log = state.access_log
    if second is None:
        checkpoint = log.latest_checkpoint()
        second = checkpoint.tree_size if checkpoint is not None else log.sync()
    if first > second:
        raise InvalidRequest("first must not exceed second", first=first, second=second)
    try:
        proof = log.consistency_proof(first, second)
        first_root, second_root = log.root(first), log.root(second)
    except MerkleError as exc:
        raise InvalidRequest(exc.message, first=first, second=second) from exc
    return ConsistencyPublic(
        first=first,
        second=second,
        first_root="0x" + first_root.hex(),
        second_root="0x" + second_root.hex(),
        proof=["0x" + h.hex() for h in proof],
    )


_EXPORT_EXAMPLE = {
    "format": "consent-ledger/access-log",
    "version": 1,
    "gateway": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    "chain_id": 31337,
    "registry": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
    "entries": [
        {
            "index": 0,
            "leaf": '{"block":22,"chain_time":1767225600,"decision":"allowed","events":57,'
            '"patient":"0x90f7...","purpose":0,"reason":"consent","record":"0x1f...",'
            '"requester":"0x15d3...","time":"2026-01-01T00:00:00.000Z","v":1}',
            "leaf_hash": "0x" + "ab" * 32,
        }
    ],
    "checkpoints": [
        {"tree_size": 1, "root_hash": "0x" + "cd" * 32, "block_number": 23, "tx_hash": "0x.."}
    ],
}


@router.get(
    "/v1/access-log/export",
    tags=["access log"],
    summary="The whole access log for an auditor (consent-ledger/access-log v1)",
    response_class=JSONResponse,
    responses={
        200: {
            "description": "The export document that `consent audit run --access-log` reads "
            "(format documented in ledger.audit.export).",
            "content": {"application/json": {"example": _EXPORT_EXAMPLE}},
        },
        **_pick(401, 503),
        403: _error_example(
            "forbidden",
            "0x15d3... may not do this: not an auditor (CONSENT_AUDITORS)",
            account="0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
            reason="not an auditor (CONSENT_AUDITORS)",
        ),
    },
)
def export_access_log(state: StateDep, principal: PrincipalDep) -> Response:
    """Every leaf in index order with the checkpoints anchored so far, for an auditor session
    (an address listed in ``CONSENT_AUDITORS``). Checkpoints are read before the leaves, so
    every exported checkpoint covers exported leaves only."""
    if principal.address not in state.auditors:
        raise Forbidden(account=principal.address, reason="not an auditor (CONSENT_AUDITORS)")
    from ledger.audit.export import ExportedCheckpoint, build_access_log_export

    log = state.access_log
    checkpoints = log.checkpoints()
    leaves = log.leaves()
    document = build_access_log_export(
        gateway=state.chain.gateway_account.address,
        leaves=leaves,
        checkpoints=[
            ExportedCheckpoint(
                tree_size=c.tree_size,
                root_hash=bytes.fromhex(c.root_hash[2:]),
                block_number=c.block_number,
                tx_hash=c.tx_hash,
            )
            for c in checkpoints
            if c.tree_size <= len(leaves)
        ],
        chain_id=state.chain_id,
        registry=state.chain.address,
    )
    body = json.dumps(document, separators=(",", ":")).encode()
    return Response(body, media_type="application/json")


# ---------------------------------------------------------------------------- health, metrics


@router.get(
    "/healthz",
    tags=["ops"],
    summary="Chain, IPFS and database status",
    responses={503: {"model": HealthPublic, "description": "something is down"}},
)
def healthz(state: StateDep) -> JSONResponse:
    details: dict[str, str] = {}
    chain_id = latest = None
    ipfs_id = None
    try:
        latest = state.chain.block_number()
        chain_id = state.chain.chain_id
        try:
            state.chain.check_chain_id()
        except ChainIdMismatch as exc:
            details["chain_id"] = exc.message
        limit = state.records.max_head_age_s
        if limit is not None:
            number, timestamp = state.chain.head_timestamp()
            age = time.time() - timestamp
            if age > limit:
                details["chain_stale"] = (
                    f"head block {number} is {age:.0f} s old (max_head_age_s {limit:g})"
                )
        with state.chain.guard():
            if not state.chain.w3.eth.get_code(state.chain.address):
                details["contract"] = f"no code at {state.chain.address}"
    except Exception as exc:  # never the node's URL: it may carry an API key
        details["chain"] = exc.message if isinstance(exc, DomainError) else type(exc).__name__
    try:
        ipfs_id = state.ipfs.id().id
    except Exception as exc:
        details["ipfs"] = getattr(exc, "message", None) or type(exc).__name__
    try:
        database = db.ping(state.engine)
    except Exception as exc:
        database = "down"
        details["database"] = type(exc).__name__
    if state.anchorer.last_error:
        details["anchoring"] = state.anchorer.last_error
    ok = not (set(details) - {"anchoring"})
    body = HealthPublic(
        status="ok" if ok else "degraded",
        chain_id=chain_id,
        latest_block=latest,
        contract=state.chain.address,
        ipfs_node_id=ipfs_id,
        database=database,
        details=details,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get(
    "/metrics", tags=["ops"], summary="Prometheus metrics", response_class=PlainTextResponse
)
def metrics(state: StateDep) -> Response:
    state.metrics.log_size.set(state.access_log.size)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
