"""The audit: replay the ledger, prove it complete, verify every gateway's access log against it.

:func:`run_audit` does, in order:

1. **Replay and completeness** (``ledger.audit.replay``): every registry log from the deploy
   block to ``head - confirmations``, checked against the on-chain event digest; divergences are
   named (``event_missing`` / ``event_extra`` / ``event_altered`` / ``event_reordered``).
2. **Consent state** (``ledger.audit.state``): the events folded into a timeline that answers
   ``accessBasis`` at any block.
3. **Which logs** (:func:`gateway_coverage`): every account that held ``GATEWAY_ROLE`` at some
   block of the audited range (replayed ``RoleGranted`` / ``RoleRevoked``) or anchored a
   checkpoint in it, or was a member of a custody federation set in it (``FederationSet``), is
   listed (``ledger.audit.report.GatewayCoverage``). An export whose ``gateway`` is none of the
   role holders is ``log_not_a_gateway``; a gateway that anchored, or a federation member, with
   no export given is ``log_not_supplied`` (both unverifiable: an export's own ``gateway`` field
   is a claim, the chain says which logs exist; a member holds a key share of every record
   registered under its federation and releases it after its own decision, so its log is needed
   even if it anchored nothing). A role holder outside every federation that anchored nothing
   and has no export is only listed.
4. **Access log**, for each exported log given (``ledger.audit.export`` reads it):
   ``ledger.audit.verify_log.verify_access_log``.

The result is an ``ledger.audit.report.AuditReport``, rendered by ``ledger.audit.html_report``
and ``ledger.audit.fhir``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address

from ledger.audit.export import AccessLogExport
from ledger.audit.replay import (
    BlockClock,
    DigestMismatchKind,
    DigestProblem,
    ReplayResult,
    gc_paused,
    replay,
)
from ledger.audit.report import AuditReport, Finding, FindingKind, GatewayCoverage, LogVerification
from ledger.audit.state import ConsentTimeline
from ledger.audit.verify_log import (
    DEFAULT_ANCHOR_INTERVAL_S,
    DEFAULT_MAX_TIME_SKEW_S,
    verify_access_log,
)
from ledger.chain.logs import ProgressFn
from ledger.chain.node import ChainError
from ledger.chain.rpc import RpcClient
from ledger.protocol.consent_types import GATEWAY_ROLE
from ledger.protocol.events import (
    EventDecoder,
    FederationSet,
    MalformedLog,
    RoleGranted,
    RoleRevoked,
)

__all__ = ["gateway_coverage", "run_audit"]


def gateway_coverage(
    events: Iterable[Any],
    timeline: ConsentTimeline,
    target_block: int,
    exports: Sequence[AccessLogExport],
) -> list[GatewayCoverage]:
    """Every gateway of the audited range (see :class:`GatewayCoverage`), in address order."""
    periods: dict[ChecksumAddress, list[tuple[int, int | None]]] = {}
    listed: dict[ChecksumAddress, list[int]] = {}
    for event in events:
        if event.block_number > target_block:
            break
        if isinstance(event, FederationSet):
            for member in event.gateways:
                listed.setdefault(member, []).append(event.block_number)
            continue
        if not isinstance(event, RoleGranted | RoleRevoked) or event.role != GATEWAY_ROLE:
            continue
        spans = periods.setdefault(event.account, [])
        if isinstance(event, RoleGranted):
            if not spans or spans[-1][1] is not None:
                spans.append((event.block_number, None))
        elif spans and spans[-1][1] is None:
            spans[-1] = (spans[-1][0], event.block_number)
    anchored = {
        gw: [c for c in timeline.checkpoints(gw) if c.block_number <= target_block]
        for gw in timeline.gateways()
    }
    sources: dict[str, list[str]] = {}
    for export in exports:
        sources.setdefault(export.gateway, []).append(export.source or "(unnamed)")
    addresses = (
        {a for a, spans in periods.items() if spans}
        | {a for a, c in anchored.items() if c}
        | set(listed)
    )
    return [
        GatewayCoverage(
            address=a,
            role_blocks=tuple(periods.get(a, [])),
            checkpoints=len(anchored.get(a, [])),
            last_checkpoint=anchored[a][-1] if anchored.get(a) else None,
            sources=tuple(sources.get(a, [])),
            federation_blocks=tuple(listed.get(a, [])),
        )
        for a in sorted(addresses, key=str.lower)
    ]


def _coverage_findings(
    coverage: Sequence[GatewayCoverage], exports: Sequence[AccessLogExport], target_block: int
) -> list[Finding]:
    """An export must name a gateway of the audited range; every gateway that anchored, and
    every member of a federation of the range, must have its log supplied. (A role holder
    outside every federation that anchored nothing and whose log is absent is only listed:
    nothing on-chain says it logged a decision.)"""
    findings: list[Finding] = []
    holders = {g.address for g in coverage if g.held_role}
    for export in exports:
        if export.gateway not in holders:
            findings.append(
                Finding(
                    FindingKind.LOG_NOT_A_GATEWAY,
                    f"{export.source or 'a log'} names {export.gateway} as its gateway, but that "
                    f"address never held GATEWAY_ROLE up to block {target_block}: nothing on-chain "
                    "vouches for this log",
                    {"gateway": export.gateway, "source": export.source},
                )
            )
    for g in coverage:
        if g.supplied or (g.last_checkpoint is None and not g.federation_member):
            continue
        who = f"gateway {g.address}"
        details: dict[str, Any] = {"gateway": g.address, "checkpoints": g.checkpoints}
        if g.federation_member:
            blocks = ", ".join(str(b) for b in g.federation_blocks)
            plural = "s" if len(g.federation_blocks) > 1 else ""
            who = (
                f"federation member {g.address} (listed by the FederationSet at "
                f"block{plural} {blocks})"
            )
            details["federation_blocks"] = list(g.federation_blocks)
        cp = g.last_checkpoint
        if cp is not None:
            details.update(anchored_size=cp.tree_size, block=cp.block_number)
            anchored = (
                f"anchored {g.checkpoints} checkpoint(s) (the last of {cp.tree_size} entries "
                f"at block {cp.block_number})"
            )
        else:
            anchored = "anchored no checkpoint (it holds a key share of the federation's records)"
        findings.append(
            Finding(
                FindingKind.LOG_NOT_SUPPLIED,
                f"{who} {anchored} but its log was not supplied: its decisions "
                + ("and key-share releases " if g.federation_member else "")
                + "cannot be verified",
                details,
            )
        )
    return findings


_PROBLEM_KIND = {
    DigestMismatchKind.MISSING: FindingKind.EVENT_MISSING,
    DigestMismatchKind.EXTRA: FindingKind.EVENT_EXTRA,
    DigestMismatchKind.ALTERED: FindingKind.EVENT_ALTERED,
    DigestMismatchKind.REORDERED: FindingKind.EVENT_REORDERED,
    DigestMismatchKind.UNLOCATED: FindingKind.DIGEST_MISMATCH,
}


def _problem_finding(problem: DigestProblem) -> Finding:
    details: dict[str, Any] = dict(problem.details)
    for key in ("block_number", "log_index", "tx_hash", "event"):
        value = getattr(problem, key)
        if value is not None:
            details[key] = value
    return Finding(_PROBLEM_KIND[problem.kind], problem.message, details)


def run_audit(
    rpc: RpcClient,
    *,
    registry: str,
    deploy_block: int,
    decoder: EventDecoder,
    access_logs: Sequence[AccessLogExport] = (),
    confirmations: int = 0,
    target_block: int | None = None,
    chunk_blocks: int = 10_000,
    progress: ProgressFn | None = None,
    clock: BlockClock | None = None,
    timed_blocks: int = 5_000,
    anchor_interval_s: float = DEFAULT_ANCHOR_INTERVAL_S,
    max_time_skew_s: float = DEFAULT_MAX_TIME_SKEW_S,
) -> AuditReport:
    """Replay, prove complete, fold, list the gateways, and verify every access log given.

    Every gateway that held ``GATEWAY_ROLE`` or anchored in the audited range is listed
    (:attr:`AuditReport.gateways`); an export naming any other address is ``log_not_a_gateway``,
    a gateway that anchored without its log supplied is ``log_not_supplied`` (both: could not
    verify). ``anchor_interval_s`` and ``max_time_skew_s``: see :func:`verify_access_log`.

    Block timestamps are fetched for the entries' blocks and for up to ``timed_blocks`` blocks
    holding patient events (evenly sampled beyond that), for the report's timelines."""
    started = time.time()
    t0 = time.perf_counter()
    address = to_checksum_address(registry)
    findings: list[Finding] = []
    clock = clock if clock is not None else BlockClock(rpc)
    try:
        result = replay(
            rpc,
            address=address,
            from_block=deploy_block,
            decoder=decoder,
            target_block=target_block,
            confirmations=confirmations,
            chunk_blocks=chunk_blocks,
            progress=progress,
        )
    except MalformedLog as exc:
        findings.append(
            Finding(
                FindingKind.MALFORMED_EVENT,
                f"a log of the registry is not a registry event: {exc}",
                {"block_number": exc.block_number, "log_index": exc.log_index},
            )
        )
        return _bare_report(address, deploy_block, findings, started, t0)
    except ChainError as exc:
        findings.append(
            Finding(FindingKind.REPLAY_FAILED, f"could not replay the ledger: {exc}", {})
        )
        return _bare_report(address, deploy_block, findings, started, t0)
    findings.extend(_problem_finding(p) for p in result.problems)
    if result.computed != result.onchain:
        findings.append(
            Finding(
                FindingKind.DIGEST_MISMATCH,
                f"the replayed events fold to {result.computed.count} events / "
                f"0x{result.computed.head.hex()} but the registry reports {result.onchain.count} / "
                f"0x{result.onchain.head.hex()} at block {result.target_block}",
                {"computed": result.computed.as_dict(), "onchain": result.onchain.as_dict()},
            )
        )
    with gc_paused():
        timeline = ConsentTimeline(result.events)
    coverage = gateway_coverage(result.events, timeline, result.target_block, access_logs)
    findings.extend(_coverage_findings(coverage, access_logs, result.target_block))
    verifications: list[LogVerification] = []
    for export in access_logs:
        try:
            verification = verify_access_log(
                export,
                timeline,
                clock=clock.timestamps,
                target_block=result.target_block,
                chain_id=result.chain_id,
                registry=address,
                anchor_interval_s=anchor_interval_s,
                max_time_skew_s=max_time_skew_s,
            )
        except ChainError as exc:
            findings.append(
                Finding(FindingKind.LOG_UNAVAILABLE, f"could not verify {export.source}: {exc}", {})
            )
            continue
        verifications.append(verification)
        findings.extend(verification.findings)
    block_times = {
        v.decision.block: v.block_timestamp
        for lv in verifications
        for v in lv.verdicts
        if v.decision is not None and v.decision.block is not None and v.block_timestamp is not None
    }
    block_times.update(_event_block_times(result, timeline, clock, limit=timed_blocks))
    return AuditReport(
        chain_id=result.chain_id,
        registry=address,
        deploy_block=deploy_block,
        target_block=result.target_block,
        replay=result,
        timeline=timeline,
        logs=verifications,
        findings=findings,
        block_times=block_times,
        started_at=started,
        seconds=time.perf_counter() - t0,
        gateways=coverage,
        federations=[f for f in timeline.federations() if f.block_number <= result.target_block],
    )


def _event_block_times(
    result: ReplayResult, timeline: ConsentTimeline, clock: BlockClock, *, limit: int
) -> Mapping[int, int]:
    blocks = sorted(
        {e.block_number for p in timeline.patients() for e in timeline.patient_events(p)}
        | {result.from_block, result.target_block}
    )
    if len(blocks) > limit > 0:
        step = len(blocks) / limit
        blocks = sorted({blocks[int(i * step)] for i in range(limit)} | {blocks[-1]})
    try:
        return clock.timestamps(blocks)
    except ChainError:
        return {}


def _bare_report(
    address: ChecksumAddress, deploy_block: int, findings: list[Finding], started: float, t0: float
) -> AuditReport:
    return AuditReport(
        chain_id=None,
        registry=address,
        deploy_block=deploy_block,
        target_block=None,
        replay=None,
        timeline=ConsentTimeline(),
        logs=[],
        findings=findings,
        block_times={},
        started_at=started,
        seconds=time.perf_counter() - t0,
    )
