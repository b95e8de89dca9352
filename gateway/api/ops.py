"""Operations: ``/healthz`` and ``/metrics``."""

from __future__ import annotations

import time

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api.deps import GatewayState, StateDep
from gateway.errors import (
    ChainIdMismatch,
)
from gateway.storage import engine as db
from ledger.protocol.errors import DomainError
from ledger.protocol.wire import (
    HealthPublic,
)

__all__ = ["router"]

router = APIRouter()


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
    decisions = state.records.decisions
    index = decisions.index if decisions is not None else None
    if index is not None and index.refused is not None:
        # a node caught dropping, inventing or reordering a log: every decision fails closed
        details["consent_index"] = f"refused to serve: {index.refused}"
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
    _scrape_chain(state)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _scrape_chain(state: GatewayState) -> None:
    """The chain head's age and the sending accounts' balances, read for this scrape."""
    chain = state.chain
    try:
        with chain.guard():
            number, timestamp = chain.head_timestamp()
            balances = {
                name: int(chain.w3.eth.get_balance(account.address))
                for name, account in (
                    ("gateway", chain.gateway_account),
                    ("registrar", chain.registrar),
                    ("relayer", chain.relayer),
                )
            }
    except Exception:  # the chain node is down: the gauges keep their last values
        state.metrics.chain_up.set(0)
        return
    state.metrics.chain_up.set(1)
    state.metrics.head_block.set(number)
    state.metrics.head_age.set(max(time.time() - timestamp, 0.0))
    for name, wei in balances.items():
        state.metrics.account_balance.labels(name).set(wei)
