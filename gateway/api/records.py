"""Record upload, listing and the consent-checked fetch (``/v1/records``)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from contextlib import aclosing
from typing import Annotated, Any

from fastapi import (
    APIRouter,
    File,
    Form,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
    UploadFile,
)
from fastapi.routing import APIRoute
from pydantic import WithJsonSchema
from starlette.formparsers import MultiPartException, MultiPartParser

from gateway.api.deps import PrincipalDep, StateDep
from gateway.api.responses import (
    CATEGORY_SCHEMA,
    INT64,
    INT64_MAX,
    PURPOSE_SCHEMA,
    UNIX_SECONDS,
    check_unix_seconds,
    contract,
    errors,
)
from gateway.errors import (
    PayloadTooLarge,
)
from gateway.services.fetch import parse_purpose
from ledger.protocol.envelope import Envelope
from ledger.protocol.wire import (
    ADDRESS_PATTERN,
    BYTES32_PATTERN,
    SIGNATURE_65_PATTERN,
    RecordPublic,
    RecordsPublic,
)

__all__ = ["InMemoryUploadRoute", "router", "upload_errors"]


class InMemoryUploadRoute(APIRoute):
    """A route whose multipart body keeps its files in memory up to this app's limit
    (``app.state.upload_spool_bytes``, set by ``create_app``): a file spooled to a temporary
    file on disk would be plaintext at rest. The limit belongs to the app, not to the process:
    the parser is this request's, with its own ``spool_max_size``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            content_type = request.headers.get("content-type", "")
            if content_type.lower().startswith("multipart/form-data"):
                try:
                    async with aclosing(request.stream()) as stream:
                        parser = MultiPartParser(request.headers, stream)
                        parser.spool_max_size = int(request.app.state.upload_spool_bytes)
                        form = await parser.parse()
                except MultiPartException as exc:  # as Starlette answers it
                    raise HTTPException(status_code=400, detail=exc.message) from exc
                # The route's own form() call then returns this form (Starlette caches it).
                request._form = form
            return await handler(request)

        return handle


router = APIRouter(route_class=InMemoryUploadRoute)

#: The registry's refusals of a registration, as an upload answers them.
REGISTRATION_REFUSALS = (
    "NotACentre",
    "ZeroPatient",
    "RecordExists",
    "InvalidCid",
    "CategoryNotListed",
    "ZeroCategory",
)


def upload_errors(*contract_errors: str) -> dict[int | str, Any]:
    """The documented error answers of an upload (both modes), with the registry's refusals
    of a registration and ``contract_errors`` besides."""
    return errors(
        400,
        401,
        403,
        409,
        413,
        422,
        502,
        503,
        extra=(
            "payload_too_large",
            "attestation_invalid",
            "ipfs_error",
            "ipfs_api_error",
            "ipfs_protocol_error",
            "ipfs_unavailable",
            *contract(*REGISTRATION_REFUSALS, *contract_errors),
        ),
    )

_DIGEST_PATTERN = r"^0[xX][0-9a-fA-F]{64}$"
_FETCH = "fetch_record_v1_records__record_id__get"
#: OpenAPI links: what a client does next with an answer (schemathesis follows them).
UPLOADED_LINKS: dict[str, Any] = {
    "FetchUploadedRecord": {
        "operationId": _FETCH,
        "parameters": {"record_id": "$response.body#/record_id", "purpose": "treatment"},
        "description": "fetch the record just uploaded",
    },
    "ListRecords": {"operationId": "list_records_v1_records_get", "description": "list it"},
}
FETCH_FIRST_LINK: dict[str, Any] = {
    "operationId": _FETCH,
    "parameters": {"record_id": "$response.body#/records/0/record_id", "purpose": "treatment"},
    "description": "fetch the first record listed",
}
_RELAY_LINK: dict[str, Any] = {
    "operationId": "relay_consent_v1_consents_post",
    "description": "grant someone consent to this record (a patient signs the grant)",
}


@router.post(
    "/v1/records",
    tags=["records"],
    summary="Upload an attested checkup result (centre)",
    status_code=201,
    responses={
        200: {
            "description": "The same attestation was uploaded before; the existing record.",
            "links": UPLOADED_LINKS,
        },
        201: {"links": UPLOADED_LINKS},
        **upload_errors(),
    },
)
def upload_record(
    state: StateDep,
    principal: PrincipalDep,
    response: Response,
    file: Annotated[UploadFile, File(description="The result (any format); plaintext")],
    patient: Annotated[
        str,
        Form(
            min_length=42,
            description="the patient's 0x address (surrounding whitespace ignored)",
            examples=["0x90F79bf6EB2c4f870365E785982E1f101E93b906"],
            json_schema_extra={"pattern": ADDRESS_PATTERN},
        ),
    ],
    category: Annotated[
        str,
        Form(
            min_length=1,
            description="a category the registry lists: its name (the defaults are named) or "
            "its bytes32 id, 0x hex",
            json_schema_extra=CATEGORY_SCHEMA,
        ),
    ],
    issued_at: Annotated[
        int,
        Form(json_schema_extra=UNIX_SECONDS, description="UNIX seconds, as attested"),
    ],
    signature: Annotated[
        str,
        Form(
            min_length=130,
            description="The centre's EIP-712 RecordAttestation signature, 65 bytes hex",
            json_schema_extra={"pattern": SIGNATURE_65_PATTERN},
        ),
    ],
    salt: Annotated[
        str,
        Form(
            pattern=BYTES32_PATTERN,
            description="The 32-byte salt of the attested digest sha256(salt || file), 0x hex;"
            " kept only inside the encrypted record",
        ),
    ],
    content_digest: Annotated[
        str | None,
        # Optional means left out: a multipart field has no null.
        WithJsonSchema({"type": "string", "pattern": _DIGEST_PATTERN}),
        Form(
            pattern=_DIGEST_PATTERN,
            description="sha256(salt || file), 0x hex (optional cross-check)",
        ),
    ] = None,
) -> RecordPublic:
    """The signed-in centre's attested result: encrypted, pinned on IPFS and registered
    on-chain, all or nothing. Retrying the same attestation answers 200 with the same record.

    Rules across fields, checked by the gateway and the registry (422 unless said otherwise):
    ``signature`` must be the signed-in centre's EIP-712 ``RecordAttestation`` of exactly
    (patient, category, ``sha256(salt || file)``, issued_at) with a low s
    (``attestation_invalid``); ``content_digest``, when given, must equal
    ``sha256(salt || file)`` (``invalid_request``); the category must be listed by the
    registry (``contract_category_not_listed``); the caller must hold the centre role (403
    ``contract_not_a_centre``)."""
    check_unix_seconds(issued_at)
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
    responses={
        200: {"links": {"FetchFirstRecord": FETCH_FIRST_LINK}},
        **errors(401, 422, 503),
    },
)
def list_records(
    state: StateDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=INT64_MAX, json_schema_extra=INT64)] = 0,
) -> RecordsPublic:
    return RecordsPublic(
        records=state.records.list_for(principal.address, limit=limit, offset=offset)
    )


@router.get(
    "/v1/records/{record_id}",
    tags=["records"],
    summary="Fetch a record (consent checked on-chain)",
    response_model=Envelope,
    responses={
        200: {"links": {"GrantConsent": _RELAY_LINK}},
        **errors(
            401,
            403,
            404,
            409,
            422,
            502,
            503,
            extra=(
                "consent_denied",
                "record_not_found",
                "blob_tampered",
                "digest_mismatch",
                "ipfs_error",
                "ipfs_not_found",
                "ipfs_api_error",
                "ipfs_protocol_error",
                "chain_stale",
                "ipfs_unavailable",
            ),
        ),
    },
)
def fetch_record(
    state: StateDep,
    principal: PrincipalDep,
    record_id: Annotated[str, Path(pattern=BYTES32_PATTERN, examples=["0x" + "1f" * 32])],
    purpose: Annotated[
        str,
        Query(
            description="purpose name (treatment, research, insurance, public_health, "
            "emergency; matched case-insensitively, '-' for '_') or id 0..31",
            examples=["treatment"],
            json_schema_extra=PURPOSE_SCHEMA,
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
