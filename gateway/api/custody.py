"""Threshold custody (``/v1/custody``): this gateway's custody identity, the centre-encrypted
upload, a record's public bytes, and the consent-checked release of this gateway's share."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Query, Response, UploadFile

from gateway.api.deps import PrincipalDep, StateDep
from gateway.api.records import InMemoryUploadRoute, upload_errors
from gateway.api.responses import (
    CATEGORY_SCHEMA,
    PURPOSE_SCHEMA,
    UNIX_SECONDS,
    check_unix_seconds,
    errors,
)
from gateway.errors import PayloadTooLarge
from gateway.services.custody import CIPHERTEXT_OVERHEAD, MAX_MANIFEST_BYTES
from gateway.services.fetch import parse_purpose
from ledger.protocol.wire import (
    ADDRESS_PATTERN,
    BYTES32_PATTERN,
    SIGNATURE_65_PATTERN,
    CustodyBundlePublic,
    CustodyInfoPublic,
    RecordPublic,
    ShareRelease,
)

__all__ = ["router"]

router = APIRouter(route_class=InMemoryUploadRoute)

_RECORD_ID = Path(pattern=BYTES32_PATTERN, examples=["0x" + "1f" * 32])
_RELEASE_ERRORS = (
    "consent_denied",
    "record_not_found",
    "blob_tampered",
    "ipfs_error",
    "ipfs_not_found",
    "ipfs_api_error",
    "ipfs_protocol_error",
    "chain_stale",
    "ipfs_unavailable",
)


@router.get(
    "/v1/custody",
    tags=["custody"],
    summary="This gateway's custody identity and the federation in force",
    responses=errors(503),
)
def custody_info(state: StateDep) -> CustodyInfoPublic:
    """The gateway's account, its custody public key (what the registry's federation must list
    for it) and the federation the registry lists now. Clients take the federation from the
    chain itself, never from this answer."""
    return state.records.custody_info()


@router.post(
    "/v1/custody/records",
    tags=["custody"],
    summary="Upload a record the centre encrypted and split (threshold custody)",
    status_code=201,
    responses={
        200: {"description": "The same attestation was uploaded before; the existing record."},
        **upload_errors("CustodySetNotCurrent"),
    },
)
def upload_sealed_record(
    state: StateDep,
    principal: PrincipalDep,
    response: Response,
    ciphertext: Annotated[UploadFile, File(description="The record blob the centre encrypted")],
    manifest: Annotated[UploadFile, File(description="The custody manifest (canonical JSON)")],
    patient: Annotated[
        str, Form(min_length=42, max_length=42, json_schema_extra={"pattern": ADDRESS_PATTERN})
    ],
    category: Annotated[str, Form(min_length=1, json_schema_extra=CATEGORY_SCHEMA)],
    issued_at: Annotated[int, Form(json_schema_extra=UNIX_SECONDS, description="as attested")],
    content_digest: Annotated[str, Form(pattern=BYTES32_PATTERN, description="as attested")],
    signature: Annotated[
        str,
        Form(
            min_length=130,
            description="The centre's EIP-712 RecordAttestation signature (with the custody set "
            "and share commitments of the manifest), 65 bytes hex",
            json_schema_extra={"pattern": SIGNATURE_65_PATTERN},
        ),
    ],
) -> RecordPublic:
    """The gateway never sees plaintext or the whole key: it checks that the manifest is of the
    federation in force and names this ciphertext, that the signed-in centre attested it (custody
    set and share commitments included), then pins both and registers the manifest's CID, all
    or nothing. Retrying the same attestation answers 200 with the same record.

    Rules across fields (422 unless said otherwise): ``manifest`` must be a custody manifest in
    canonical JSON (``ledger.protocol.custody``) whose custody set is the registry's
    ``federation()`` in force, none set being ``invalid_request``; ``ciphertext`` must be the
    blob it names (CID, size, sha256); ``signature`` must be the signed-in centre's EIP-712
    ``RecordAttestation`` of (patient, category, content_digest, issued_at, the manifest's
    custody set and share commitments) with a low s (``attestation_invalid``); the caller must
    hold the centre role (403)."""
    check_unix_seconds(issued_at)
    limit = state.records.max_upload_bytes + CIPHERTEXT_OVERHEAD
    blob = ciphertext.file.read(limit + 1)
    if len(blob) > limit:
        raise PayloadTooLarge(limit=limit)
    raw = manifest.file.read(MAX_MANIFEST_BYTES + 1)
    record, created = state.records.upload_sealed(
        principal,
        ciphertext=blob,
        manifest=raw,
        patient=patient,
        category=category,
        issued_at=issued_at,
        content_digest=content_digest,
        signature=signature,
    )
    if not created:
        response.status_code = 200
    return record


@router.get(
    "/v1/custody/records/{record_id}",
    tags=["custody"],
    summary="A threshold-custody record's manifest and ciphertext",
    responses=errors(401, 404, 409, 422, 502, 503, extra=_RELEASE_ERRORS[1:]),
)
def custody_bundle(
    state: StateDep,
    principal: PrincipalDep,
    record_id: Annotated[str, _RECORD_ID],
) -> CustodyBundlePublic:
    """Public bytes (both are on IPFS): they open nothing without ``threshold`` shares. The
    client checks the manifest against the record id it read from the chain."""
    return state.records.custody_bundle(principal, record_id)


@router.get(
    "/v1/custody/records/{record_id}/share",
    tags=["custody"],
    summary="This gateway's share of a record's key (consent checked on-chain)",
    responses=errors(401, 403, 404, 409, 422, 502, 503, extra=_RELEASE_ERRORS),
)
def release_share(
    state: StateDep,
    principal: PrincipalDep,
    record_id: Annotated[str, _RECORD_ID],
    purpose: Annotated[
        str, Query(description="purpose name or id 0..31", json_schema_extra=PURPOSE_SCHEMA)
    ],
) -> ShareRelease:
    """If the chain says the caller holds consent for ``purpose`` at ``block_number``, this
    gateway's share re-sealed to the caller's key (from its SIWE signature). Every decision is
    appended to this gateway's access log before the answer."""
    return state.records.release_share(principal, record_id, parse_purpose(purpose))
