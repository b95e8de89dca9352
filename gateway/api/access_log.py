"""The access log: checkpoints, a patient's entries with proofs, consistency proofs, the
auditor's export (``/v1/access-log``)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from gateway.api.deps import GatewayState, PrincipalDep, StateDep
from gateway.api.responses import INT64, INT64_MAX, errors
from gateway.errors import (
    Forbidden,
    InvalidRequest,
    NotFound,
)
from ledger.protocol.merkle import MerkleError
from ledger.protocol.wire import (
    AccessLogEntryPublic,
    AccessLogPage,
    CheckpointPublic,
    ConsistencyPublic,
)

__all__ = ["router"]

router = APIRouter()


def _checkpoint_public(state: GatewayState) -> CheckpointPublic | None:
    latest = state.access_log.latest_checkpoint()
    if latest is None:
        return None
    return CheckpointPublic(**latest.model_dump())


@router.get(
    "/v1/access-log/checkpoint",
    tags=["access log"],
    summary="The latest checkpoint anchored on-chain",
    responses=errors(404, 503),
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
    responses=errors(401, 403, 422, 503),
)
def access_log_entries(
    state: StateDep,
    principal: PrincipalDep,
    patient: Annotated[
        str | None,
        Query(
            description="must be the caller's address, in any letter case (the default); "
            "another address is answered 403 forbidden",
            json_schema_extra={"pattern": r"^0x[0-9a-fA-F]{40}$"},
        ),
    ] = None,
    after: Annotated[
        int,
        Query(
            ge=-1,
            le=INT64_MAX,
            json_schema_extra=INT64,
            description="only entries with a larger index",
        ),
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
    responses=errors(422, 503),
)
def consistency(
    state: StateDep,
    first: Annotated[
        int, Query(ge=0, le=INT64_MAX, json_schema_extra=INT64, description="a tree size")
    ],
    second: Annotated[
        int | None,
        Query(
            ge=0,
            le=INT64_MAX,
            json_schema_extra=INT64,
            description="a tree size, at least first and at most the log's size (default: "
            "the latest checkpoint's, or the log's size before the first checkpoint)",
        ),
    ] = None,
) -> ConsistencyPublic:
    """The RFC 9162 consistency proof from the tree of the first ``first`` leaves to the tree
    of the first ``second``, with both roots.

    Rules the schema cannot express: ``first`` must not exceed ``second``, and ``second`` must
    not exceed the log's size (422 ``invalid_request`` otherwise)."""
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
        **errors(401, 403, 503),
    },
)
def export_access_log(state: StateDep, principal: PrincipalDep) -> Response:
    """Every leaf in index order with the checkpoints anchored so far, for an auditor session
    (an address listed in ``CONSENT_AUDITORS``). Checkpoints are read before the leaves, so
    every exported checkpoint covers exported leaves only. Another signed-in account is
    answered 403 ``forbidden``."""
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
