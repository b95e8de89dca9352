"""Record upload, listing and the consent-checked fetch (``/v1/records``)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from contextlib import aclosing
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, Response, UploadFile
from fastapi.routing import APIRoute
from starlette.formparsers import MultiPartException, MultiPartParser

from gateway.api.deps import PrincipalDep, StateDep
from gateway.api.responses import pick
from gateway.errors import (
    PayloadTooLarge,
)
from gateway.services.fetch import parse_purpose
from ledger.protocol.envelope import Envelope
from ledger.protocol.wire import (
    RecordPublic,
    RecordsPublic,
)

__all__ = ["InMemoryUploadRoute", "router"]


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


@router.post(
    "/v1/records",
    tags=["records"],
    summary="Upload an attested checkup result (centre)",
    status_code=201,
    responses={
        200: {"description": "The same attestation was uploaded before; the existing record."},
        **pick(400, 401, 403, 409, 413, 422, 502, 503),
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
    responses=pick(401, 503),
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
    responses=pick(401, 403, 404, 422, 502, 503),
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
