"""The access log: checkpoints, a patient's entries with proofs, consistency proofs, the
auditor's export (``/v1/access-log``)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from gateway.api.deps import GatewayState, PrincipalDep, StateDep
from gateway.api.responses import error_example, pick
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
    responses=pick(404, 503),
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
    responses=pick(401, 403, 503),
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
    responses=pick(422, 503),
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
        **pick(401, 503),
        403: error_example(
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
