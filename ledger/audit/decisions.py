"""Each logged decision against the consent state it names (phase 4 of
``ledger.audit.verify_log.verify_access_log``).

- Every ``allowed`` entry had consent and every ``denied`` / ``no_consent`` entry did not
  (``read_without_consent``, ``wrong_denial``), computed from the replayed events: on the state
  after exactly ``events`` events at time ``chain_time`` when the leaf names that position (the
  node's own answer to "which state did you evaluate"), else on the state after its block at the
  block's timestamp.
- A leaf's position is consistent with its block (``decision_position_inconsistent``
  otherwise): with ``events`` = C and ``block`` = N, the C events must include every event of
  the blocks up to N and none after block N+1 (a node may evaluate "at N" a state that already
  holds block N+1's transactions), and ``ts(N) <= chain_time <= ts(N+1)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ledger.audit.export import LogEntry
from ledger.audit.report import EntryVerdict, Finding, FindingKind
from ledger.audit.state import ConsentTimeline
from ledger.protocol.access_leaf import OPERATIONAL_DENIALS, LeafDecision
from ledger.protocol.consent_types import Basis
from ledger.protocol.events import CheckpointAnchored

__all__ = ["judge_entries"]


def judge_entries(
    entries: Sequence[LogEntry],
    anchored_by: Sequence[int | None],
    timeline: ConsentTimeline,
    times: Mapping[int, int],
    target_block: int,
    anchored: Sequence[CheckpointAnchored],
    findings: list[Finding],
    *,
    gateway: str | None = None,
) -> list[EntryVerdict]:
    """Each entry's decision against the consent state it names; findings are appended to
    ``findings``, each naming ``gateway`` (the log's) in its details."""
    anchor_block = {c.tree_size: c.block_number for c in anchored}
    return [
        _judge(entry, proven_by, timeline, times, target_block, anchor_block, findings, gateway)
        for entry, proven_by in zip(entries, anchored_by, strict=True)
    ]


def _judge(
    entry: LogEntry,
    proven_by: int | None,
    timeline: ConsentTimeline,
    times: Mapping[int, int],
    target_block: int,
    anchor_block: Mapping[int, int],
    findings: list[Finding],
    gateway: str | None = None,
) -> EntryVerdict:
    d = entry.decision
    if d is None:
        return EntryVerdict(entry.index, None, proven_by, None, None, False)
    base = {
        **({"gateway": gateway} if gateway is not None else {}),
        "index": entry.index,
        "requester": d.requester,
        "patient": d.patient,
        "record": d.record,
    }
    if d.block is None:
        if d.allowed:
            findings.append(
                Finding(
                    FindingKind.READ_WITHOUT_CONSENT,
                    f"entry {entry.index}: a read was allowed without naming the block consent was "
                    "checked at",
                    {**base, "reason": d.reason},
                )
            )
            return EntryVerdict(entry.index, d, proven_by, None, None, False)
        return EntryVerdict(entry.index, d, proven_by, None, None, True)
    if proven_by is not None and d.block > anchor_block.get(proven_by, d.block):
        findings.append(
            Finding(
                FindingKind.ENTRY_BLOCK_AFTER_ANCHOR,
                f"entry {entry.index} claims a decision at block {d.block}, after the checkpoint "
                f"anchoring it (block {anchor_block[proven_by]})",
                {**base, "block": d.block, "anchor_block": anchor_block[proven_by]},
            )
        )
    if d.block > target_block:
        findings.append(
            Finding(
                FindingKind.ENTRY_AFTER_TARGET,
                f"entry {entry.index} is at block {d.block}, "
                f"after the audited block {target_block}",
                {**base, "block": d.block, "target_block": target_block},
            )
        )
        return EntryVerdict(entry.index, d, proven_by, None, None, True)
    if d.events is not None and d.events > timeline.event_count:
        findings.append(
            Finding(
                FindingKind.ENTRY_AFTER_TARGET,
                f"entry {entry.index} was decided on the state after {d.events} events; the "
                f"replay up to block {target_block} holds {timeline.event_count}",
                {
                    **base,
                    "block": d.block,
                    "events": d.events,
                    "replayed_events": timeline.event_count,
                    "target_block": target_block,
                },
            )
        )
        return EntryVerdict(entry.index, d, proven_by, None, times.get(d.block), True)
    position_ok = d.events is None or _position_consistent(entry, d, timeline, times, findings)
    if not d.allowed and d.reason in OPERATIONAL_DENIALS:
        return EntryVerdict(entry.index, d, proven_by, None, times.get(d.block), position_ok)
    timestamp = times[d.block]
    try:
        if d.events is not None and d.chain_time is not None:
            # The exact state the node evaluated, at the time it evaluated it.
            allowed, basis = timeline.access_after_events(
                d.patient, d.requester, d.record, d.purpose, d.events, d.chain_time
            )
        else:
            allowed, basis = timeline.access_at(
                d.patient, d.requester, d.record, d.purpose, d.block, timestamp
            )
    except ValueError:
        allowed, basis = False, Basis.NONE
    details = {
        **base,
        "purpose": d.purpose,
        "block": d.block,
        "block_timestamp": timestamp,
        "basis": basis,
    }
    where = f"at block {d.block}"
    if d.events is not None:
        details["events"] = d.events
        details["chain_time"] = d.chain_time
        where += f" (state after {d.events} events, chain time {d.chain_time})"
    ok = position_ok
    by = f" of gateway {gateway}" if gateway is not None else ""
    if d.allowed and not allowed:
        ok = False
        findings.append(
            Finding(
                FindingKind.READ_WITHOUT_CONSENT,
                f"entry {entry.index}{by}: {d.requester} read record 0x{d.record.hex()[:12]}… "
                f"of {d.patient} for purpose {d.purpose} {where} without consent",
                details,
            )
        )
    elif not d.allowed and allowed:
        ok = False
        findings.append(
            Finding(
                FindingKind.WRONG_DENIAL,
                f"entry {entry.index}: {d.requester} was denied record 0x{d.record.hex()[:12]}… of "
                f"{d.patient} {where} although the chain allowed it ({basis.name})",
                details,
            )
        )
    elif d.allowed and (d.reason == "owner") != (basis is Basis.OWNER):
        findings.append(
            Finding(
                FindingKind.REASON_MISMATCH,
                f"entry {entry.index}: reason {d.reason!r} but the basis was {basis.name}",
                details,
            )
        )
    elif not d.allowed and d.reason != "no_consent":
        findings.append(
            Finding(
                FindingKind.REASON_MISMATCH,
                f"entry {entry.index}: unknown denial reason {d.reason!r}",
                details,
            )
        )
    return EntryVerdict(entry.index, d, proven_by, basis, timestamp, ok)


def _position_consistent(
    entry: LogEntry,
    d: LeafDecision,
    timeline: ConsentTimeline,
    times: Mapping[int, int],
    findings: list[Finding],
) -> bool:
    """Whether a positioned leaf's (``events``, ``chain_time``) can be what a node evaluated when
    asked at ``block``; a ``decision_position_inconsistent`` finding otherwise.

    With ``block`` = N and ``events`` = C: the state holds every event of the blocks up to N and
    none past block N+1 (a node may answer "at N" from a state that already holds N+1's
    transactions, mid-mining; C may even fall inside N+1), and the call's time lies between the
    two blocks' timestamps. Both cases have been seen on anvil: block N+1's state with N's
    number and timestamp, and with N+1's."""
    if d.block is None or d.events is None or d.chain_time is None:
        return True  # not a positioned leaf
    n, count, chain_time = d.block, d.events, d.chain_time
    at_least = timeline.events_through_block(n)
    at_most = timeline.events_through_block(n + 1)
    problems: list[str] = []
    if count < at_least:
        problems.append(
            f"the state after {count} events misses {at_least - count} event(s) of blocks up to {n}"
        )
    if count > at_most:
        problems.append(
            f"the state after {count} events holds events of block "
            f"{timeline.event_position(count)[0]}, past block {n + 1}"
        )
    ts_n, ts_next = times.get(n), times.get(n + 1)
    if ts_n is not None and chain_time < ts_n:
        problems.append(f"chain time {chain_time} is before block {n}'s timestamp {ts_n}")
    if ts_next is not None and chain_time > ts_next:
        problems.append(f"chain time {chain_time} is after block {n + 1}'s timestamp {ts_next}")
    if not problems:
        return True
    findings.append(
        Finding(
            FindingKind.DECISION_POSITION_INCONSISTENT,
            f"entry {entry.index} names block {n} but a ledger position no node asked at that "
            f"block evaluates: {'; '.join(problems)}",
            {
                "index": entry.index,
                "requester": d.requester,
                "patient": d.patient,
                "record": d.record,
                "block": n,
                "events": count,
                "chain_time": chain_time,
                "events_through_block": at_least,
                "events_through_next_block": at_most,
                "block_timestamp": ts_n,
                "next_block_timestamp": ts_next,
            },
        )
    )
    return False
