"""Verify one gateway's exported access log against the replayed chain.

:func:`verify_access_log` runs these phases, in order, each a function of its own:

1. **The document** (:func:`document_findings`): the log names the audited chain and registry,
   every entry parses, its leaf is canonical, indices are dense (``log_malformed``,
   ``log_entries_deleted`` for gaps).
2. **Checkpoints against the chain** (:func:`checkpoint_claim_findings`,
   :func:`prove_against_anchors`):
   - the exported checkpoints are the ones anchored on-chain by that gateway, and each anchor
     was made while the gateway held ``GATEWAY_ROLE`` (``checkpoint_forged`` otherwise);
   - for each on-chain ``CheckpointAnchored`` of the gateway, the RFC 9162 root of the first
     ``treeSize`` exported leaves equals the anchored root, and each entry's inclusion proof
     (built from the leaves) verifies under the first checkpoint covering it
     (``log_entries_altered``; ``log_entries_reordered`` when swapping two entries of the window
     restores the anchored root; ``log_entries_deleted`` when fewer leaves than anchored remain);
   - consecutive anchored checkpoints are consistent (RFC 9162 consistency proof from the
     exported leaves, verified against both anchored roots): a later checkpoint that matches the
     log while an earlier one does not means the gateway rewrote history between them
     (``history_rewritten``).
3. **Block and time sequencing** (:func:`sequencing_findings`):
   - entries after the last anchored checkpoint are reported (``unanchored_entries``), and are
     ``unanchored_stale`` (unverifiable) when the earliest of their blocks is more than
     ``anchor_interval_s`` older than the audited block: the gateway anchors within its
     checkpoint interval, so such a tail could be withheld or rewritten unseen;
   - leaf blocks do not go back along the index (``entry_block_backwards``; a step back is
     accepted only when block ``N + 1`` of the later-logged leaf at ``N`` is at most
     ``max_time_skew_s`` older than the block it steps back from: requests in flight across a
     block), and a leaf's ``time`` lies in ``[ts(N) - skew, ts(N + 1) + skew]``
     (``entry_time_inconsistent``).
4. **Each decision against the consent state** (``ledger.audit.decisions.judge_entries``):
   ``read_without_consent``, ``wrong_denial``, ``decision_position_inconsistent``, judged on the
   exact ledger position the node evaluated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ledger.audit.decisions import judge_entries
from ledger.audit.export import AccessLogExport, LogEntry
from ledger.audit.report import Finding, FindingKind, LogVerification
from ledger.audit.state import ConsentTimeline
from ledger.protocol.consent_types import GATEWAY_ROLE
from ledger.protocol.events import CheckpointAnchored
from ledger.protocol.merkle import EMPTY_ROOT, MerkleTree, verify_consistency, verify_inclusion

__all__ = [
    "DEFAULT_ANCHOR_INTERVAL_S",
    "DEFAULT_MAX_TIME_SKEW_S",
    "AnchorProof",
    "checkpoint_claim_findings",
    "document_findings",
    "prove_against_anchors",
    "sequencing_findings",
    "verify_access_log",
]

_MAX_SWAP_TRIALS = 256
# The gateway anchors within ``checkpoint_interval_s`` (default 30 s) of a new entry; an entry
# left unanchored longer than this, in chain time, could have been withheld or rewritten.
DEFAULT_ANCHOR_INTERVAL_S = 30.0
# How far a leaf's ``time`` (the gateway's clock) may lie outside its block's window
# ``[ts(block), ts(block + 1)]``: clock differences plus a request's longest run after its head
# observation (chain call, IPFS fetch).
DEFAULT_MAX_TIME_SKEW_S = 60.0


def verify_access_log(
    export: AccessLogExport,
    timeline: ConsentTimeline,
    *,
    clock: Callable[[Iterable[int]], Mapping[int, int]],
    target_block: int,
    chain_id: int | None = None,
    registry: str | None = None,
    anchor_interval_s: float = DEFAULT_ANCHOR_INTERVAL_S,
    max_time_skew_s: float = DEFAULT_MAX_TIME_SKEW_S,
) -> LogVerification:
    """Check one exported log against the replayed chain (see the module docstring).

    ``clock(blocks)`` returns block timestamps (``BlockClock.timestamps``). Entries after the
    last anchored checkpoint are ``unanchored_stale`` when the first of them was decided more
    than ``anchor_interval_s`` (chain time) before ``target_block``. A leaf's ``time`` must lie
    within ``max_time_skew_s`` of its block's window ``[ts(block), ts(block + 1)]``.
    """
    entries = export.entries
    anchored = [c for c in timeline.checkpoints(export.gateway) if c.block_number <= target_block]
    findings = document_findings(export, chain_id=chain_id, registry=registry)
    findings += checkpoint_claim_findings(export, anchored, timeline)
    proof = prove_against_anchors(export, anchored)
    findings += proof.findings
    unanchored_from = anchored[-1].tree_size if anchored else 0
    times = _entry_block_times(entries, clock, target_block, tail=len(entries) > unanchored_from)
    findings += sequencing_findings(
        entries,
        times,
        target_block=target_block,
        unanchored_from=unanchored_from,
        anchor_interval_s=anchor_interval_s,
        max_time_skew_s=max_time_skew_s,
    )
    verdicts = judge_entries(
        entries,
        proof.anchored_by,
        timeline,
        times,
        target_block,
        anchored,
        findings,
        gateway=export.gateway,
    )
    return LogVerification(
        gateway=export.gateway,
        source=export.source,
        size=len(entries),
        checkpoints=anchored,
        anchored_size=proof.anchored_size,
        verdicts=verdicts,
        findings=findings,
    )


# ------------------------------------------------------------------------------ 1. the document


def document_findings(
    export: AccessLogExport, *, chain_id: int | None, registry: str | None
) -> list[Finding]:
    """The log's own claims (chain, registry), unparsable entries, and index gaps."""
    findings: list[Finding] = []
    if chain_id is not None and export.chain_id is not None and export.chain_id != chain_id:
        findings.append(
            Finding(
                FindingKind.LOG_MALFORMED,
                f"the log names chain {export.chain_id}, the node is chain {chain_id}",
                {"log_chain_id": export.chain_id, "chain_id": chain_id},
            )
        )
    if registry is not None and export.registry is not None and export.registry != registry:
        findings.append(
            Finding(
                FindingKind.LOG_MALFORMED,
                f"the log names registry {export.registry}, the audit replays {registry}",
                {"log_registry": export.registry, "registry": registry},
            )
        )
    for entry in export.entries:
        if entry.problem:
            findings.append(
                Finding(
                    FindingKind.LOG_MALFORMED,
                    f"entry {entry.index}: {entry.problem}",
                    {"index": entry.index, "problem": entry.problem},
                )
            )
    for expected, found in export.index_gaps:
        if found > expected:
            findings.append(
                Finding(
                    FindingKind.LOG_ENTRIES_DELETED,
                    f"entries {expected}..{found - 1} are missing from the log "
                    f"(index jumps from {expected - 1} to {found})",
                    {"first_missing": expected, "next_present": found},
                )
            )
        else:
            findings.append(
                Finding(
                    FindingKind.LOG_MALFORMED,
                    f"entry index {found} where {expected} was expected "
                    "(a duplicate or out of order)",
                    {"expected": expected, "found": found},
                )
            )
    return findings


# ------------------------------------------------------------------------------ 2. checkpoints


def checkpoint_claim_findings(
    export: AccessLogExport, anchored: Sequence[CheckpointAnchored], timeline: ConsentTimeline
) -> list[Finding]:
    """The export's checkpoints are ones its gateway anchored on-chain, and every anchor was made
    while the gateway held ``GATEWAY_ROLE`` (``checkpoint_forged`` otherwise)."""
    findings: list[Finding] = []
    gateway = export.gateway
    onchain = {(c.tree_size, c.root_hash) for c in anchored}
    onchain_sizes = {c.tree_size: c for c in anchored}
    for claim in export.checkpoints:
        if (claim.tree_size, claim.root_hash) in onchain:
            continue
        real = onchain_sizes.get(claim.tree_size)
        findings.append(
            Finding(
                FindingKind.CHECKPOINT_FORGED,
                f"the log claims checkpoint (size {claim.tree_size}, "
                f"root 0x{claim.root_hash.hex()[:16]}…) "
                + (
                    f"but {gateway} anchored root 0x{real.root_hash.hex()[:16]}… at that size"
                    if real is not None
                    else f"that {gateway} never anchored on-chain"
                ),
                {
                    "tree_size": claim.tree_size,
                    "claimed_root": claim.root_hash,
                    "anchored_root": real.root_hash if real is not None else None,
                    "claimed_block": claim.block_number,
                    "claimed_tx": claim.tx_hash,
                },
            )
        )
    for cp in anchored:
        if not timeline.has_role_at(GATEWAY_ROLE, cp.gateway, cp.block_number):
            findings.append(
                Finding(
                    FindingKind.CHECKPOINT_FORGED,
                    f"checkpoint {cp.tree_size} was anchored at block {cp.block_number} by "
                    f"{cp.gateway}, which did not hold GATEWAY_ROLE then",
                    {"tree_size": cp.tree_size, "block": cp.block_number},
                )
            )
    return findings


@dataclass(frozen=True)
class AnchorProof:
    """What the on-chain anchors prove of the exported leaves."""

    anchored_size: int  # leaves proven by a matching on-chain checkpoint (a prefix)
    anchored_by: list[int | None]  # per entry: the tree size of the checkpoint proving it
    findings: list[Finding]


def prove_against_anchors(
    export: AccessLogExport, anchored: Sequence[CheckpointAnchored]
) -> AnchorProof:
    """The exported leaves' roots at every anchored size, the consistency between anchors where
    a root does not match, and every entry's inclusion under the first checkpoint covering it."""
    findings: list[Finding] = []
    gateway = export.gateway
    entries = export.entries
    leaves = [e.leaf_hash for e in entries]
    tree = MerkleTree(leaves)
    n = len(entries)

    # Roots of the exported leaves at each anchored size.
    matches: list[bool] = []
    for cp in anchored:
        matches.append(cp.tree_size <= n and _root(tree, cp.tree_size) == cp.root_hash)
    anchored_size = 0
    for cp, ok in zip(anchored, matches, strict=True):
        if not ok:
            break
        anchored_size = cp.tree_size
    if anchored and anchored[-1].tree_size > n:
        last = anchored[-1]
        findings.append(
            Finding(
                FindingKind.LOG_ENTRIES_DELETED,
                f"{gateway} anchored {last.tree_size} entries (block {last.block_number}) "
                f"but the log has only {n}",
                {"anchored_size": last.tree_size, "log_size": n, "block": last.block_number},
            )
        )
    mismatch = _first_mismatch(gateway, entries, tree, anchored, matches)
    if mismatch is not None:
        findings.append(mismatch)
    return AnchorProof(anchored_size, _inclusion(leaves, tree, anchored, matches), findings)


def _first_mismatch(
    gateway: str,
    entries: Sequence[LogEntry],
    tree: MerkleTree,
    anchored: Sequence[CheckpointAnchored],
    matches: Sequence[bool],
) -> Finding | None:
    """What the first anchored root the leaves do not reproduce says: ``history_rewritten``
    when a later anchor matches, else ``log_entries_reordered`` when swapping two entries back
    restores it, else ``log_entries_altered`` (nothing when the log is merely shorter than the
    last anchor: ``log_entries_deleted`` says so)."""
    first_bad = next((i for i, ok in enumerate(matches) if not ok), None)
    if first_bad is None:
        return None
    n = len(entries)
    cp = anchored[first_bad]
    lo = anchored[first_bad - 1].tree_size if first_bad else 0
    later_ok = [anchored[j] for j in range(first_bad + 1, len(anchored)) if matches[j]]
    if later_ok:
        newer = later_ok[0]
        proof = tree.consistency_proof(cp.tree_size, newer.tree_size)
        consistent = verify_consistency(
            old_size=cp.tree_size,
            new_size=newer.tree_size,
            old_root=cp.root_hash,
            new_root=newer.root_hash,
            proof=proof,
        )
        return Finding(
            FindingKind.HISTORY_REWRITTEN,
            f"{gateway} rewrote its log between checkpoints: the tree it anchored at "
            f"size {newer.tree_size} (block {newer.block_number}) does not extend the one "
            f"anchored at size {cp.tree_size} (block {cp.block_number}); entries in "
            f"[{lo}, {cp.tree_size}) were changed after being anchored",
            {
                "old_size": cp.tree_size,
                "old_block": cp.block_number,
                "new_size": newer.tree_size,
                "new_block": newer.block_number,
                "window": [lo, cp.tree_size],
                "consistency_proof_verifies": consistent,
            },
        )
    if cp.tree_size > n:
        return None
    leaves = [e.leaf_hash for e in entries]
    swap = _find_swap(leaves, entries, lo, cp.tree_size, cp.root_hash)
    if swap is not None:
        a, b = swap
        return Finding(
            FindingKind.LOG_ENTRIES_REORDERED,
            f"entries {a} and {b} were swapped after checkpoint {cp.tree_size} "
            f"(block {cp.block_number}) anchored them: swapping them back restores "
            "the anchored root",
            {"indices": [a, b], "checkpoint": cp.tree_size, "block": cp.block_number},
        )
    if anchored[-1].tree_size > n:
        return None
    return Finding(
        FindingKind.LOG_ENTRIES_ALTERED,
        f"the log's first {cp.tree_size} entries do not hash to the root "
        f"0x{cp.root_hash.hex()[:16]}… that {gateway} anchored at block "
        f"{cp.block_number}: an entry in [{lo}, {cp.tree_size}) was changed, "
        "inserted or removed after anchoring",
        {
            "window": [lo, cp.tree_size],
            "checkpoint": cp.tree_size,
            "block": cp.block_number,
            "anchored_root": cp.root_hash,
            "log_root": _root(tree, cp.tree_size),
        },
    )


def _inclusion(
    leaves: Sequence[bytes],
    tree: MerkleTree,
    anchored: Sequence[CheckpointAnchored],
    matches: Sequence[bool],
) -> list[int | None]:
    """Per entry, the tree size of the first checkpoint covering it under which its inclusion
    proof verifies (only under roots that match), or ``None``."""
    n = len(leaves)
    anchored_by: list[int | None] = [None] * n
    good = [cp for cp, ok in zip(anchored, matches, strict=True) if ok]
    start = 0
    for cp in good:
        for i in range(start, min(cp.tree_size, n)):
            proof = tree.inclusion_proof(i, cp.tree_size)
            if verify_inclusion(
                leaf_hash=leaves[i], index=i, tree_size=cp.tree_size, proof=proof, root=cp.root_hash
            ):
                anchored_by[i] = cp.tree_size
        start = max(start, cp.tree_size)
    return anchored_by


def _root(tree: MerkleTree, size: int) -> bytes:
    return EMPTY_ROOT if size == 0 else tree.root(size)


def _find_swap(
    leaves: Sequence[bytes], entries: Sequence[LogEntry], lo: int, size: int, root: bytes
) -> tuple[int, int] | None:
    """Two entries in ``[lo, size)`` whose swap makes the first ``size`` leaves hash to ``root``.

    Tries the pairs whose times are out of order first, then adjacent pairs (bounded)."""
    times = [e.decision.timestamp if e.decision else None for e in entries]
    candidates: list[tuple[int, int]] = []
    for a in range(lo, size):
        for b in range(a + 1, size):
            ta, tb = times[a], times[b]
            if ta is not None and tb is not None and ta > tb:
                candidates.append((a, b))
                if len(candidates) >= _MAX_SWAP_TRIALS:
                    break
        if len(candidates) >= _MAX_SWAP_TRIALS:
            break
    candidates += [(a, a + 1) for a in range(lo, size - 1)][:_MAX_SWAP_TRIALS]
    seen: set[tuple[int, int]] = set()
    for a, b in candidates:
        if (a, b) in seen:
            continue
        seen.add((a, b))
        trial = list(leaves[:size])
        trial[a], trial[b] = trial[b], trial[a]
        if MerkleTree(trial).root() == root:
            return a, b
    return None


# ------------------------------------------------------------------------------ 3. sequencing


def _entry_block_times(
    entries: Sequence[LogEntry],
    clock: Callable[[Iterable[int]], Mapping[int, int]],
    target_block: int,
    *,
    tail: bool,
) -> dict[int, int]:
    """Timestamps of each leaf's block and the next one (its time window), and of the target
    block when there is an unanchored ``tail``; blocks past the target are not fetched."""
    blocks = {e.decision.block for e in entries if e.decision and e.decision.block is not None}
    blocks |= {b + 1 for b in blocks}
    if tail:
        blocks.add(target_block)
    in_range = [b for b in blocks if b <= target_block]
    return dict(clock(in_range)) if in_range else {}


def sequencing_findings(
    entries: Sequence[LogEntry],
    times: Mapping[int, int],
    *,
    target_block: int,
    unanchored_from: int,
    anchor_interval_s: float,
    max_time_skew_s: float,
) -> list[Finding]:
    """The unanchored tail from index ``unanchored_from`` (a notice, or stale), then blocks that
    go backwards and leaf times that do not fit their blocks."""
    findings: list[Finding] = []
    n = len(entries)
    if n > unanchored_from:
        findings.append(
            _unanchored(
                entries[unanchored_from:],
                unanchored_from,
                n,
                times,
                target_block,
                anchor_interval_s,
            )
        )
    findings.extend(_order_and_time(entries, times, target_block, max_time_skew_s))
    return findings


def _unanchored(
    tail: Sequence[LogEntry],
    first: int,
    size: int,
    times: Mapping[int, int],
    target_block: int,
    interval_s: float,
) -> Finding:
    """``unanchored_entries`` (a notice) for a tail younger than the anchoring interval, else
    ``unanchored_stale``: the gateway should have anchored it by the audited block.

    The tail's age is the audited block's timestamp minus the earliest block timestamp among
    its entries (their leaf times when none names a block in range)."""
    count = size - first
    what = f"{count} entr{'y' if count == 1 else 'ies'} after the last anchored checkpoint"
    known = [
        times[e.decision.block]
        for e in tail
        if e.decision is not None and e.decision.block is not None and e.decision.block in times
    ]
    if not known:
        known = [int(t) for e in tail if e.decision and (t := e.decision.timestamp) is not None]
    now = times.get(target_block)
    age = None if not known or now is None else now - min(known)
    details: dict[str, Any] = {"from": first, "to": size}
    if age is None or age <= interval_s:
        return Finding(
            FindingKind.UNANCHORED_ENTRIES,
            f"{what} (size {first}) are not yet provable",
            details,
        )
    return Finding(
        FindingKind.UNANCHORED_STALE,
        f"{what} (size {first}) were decided {age} s before block {target_block}, longer than "
        f"the anchoring interval ({interval_s:g} s): nothing proves they are the gateway's whole "
        "log, or unchanged",
        {**details, "age_s": age, "anchor_interval_s": interval_s, "target_block": target_block},
    )


def _order_and_time(
    entries: Sequence[LogEntry], times: Mapping[int, int], target_block: int, skew_s: float
) -> list[Finding]:
    """Blocks do not go backwards along the index (``entry_block_backwards``); a leaf's ``time``
    lies in ``[ts(block) - skew, ts(block + 1) + skew]`` (``entry_time_inconsistent``; no upper
    bound while ``block + 1`` is past the audited block). Leaves without a block are skipped.

    Requests in flight overlap: one that observed head N can append after one that observed
    N + 1. So a leaf naming block N after a leaf naming M > N is a finding only when block N + 1
    is more than ``skew`` older than block M: no request runs that long after its head was
    superseded (the same bound as a leaf's time). A step back from a block past the audited one
    is not judged (``entry_after_target`` already says that part cannot be verified)."""
    findings: list[Finding] = []
    latest: tuple[int, int] | None = None  # (block, index) of the highest block so far
    for entry in entries:
        d = entry.decision
        if d is None or d.block is None:
            continue
        base = {"index": entry.index, "requester": d.requester, "patient": d.patient}
        if latest is not None and d.block < latest[0] <= target_block:
            ts_next, ts_latest = times.get(d.block + 1), times.get(latest[0])
            lag = None if ts_next is None or ts_latest is None else ts_latest - ts_next
            if lag is None or lag > skew_s:
                findings.append(
                    Finding(
                        FindingKind.ENTRY_BLOCK_BACKWARDS,
                        f"entry {entry.index} names block {d.block}, before block {latest[0]} of "
                        f"entry {latest[1]}"
                        + ("" if lag is None else f", whose state was {lag} s newer")
                        + ": the log's blocks go backwards (a decision backdated to an earlier "
                        "ledger state)",
                        {
                            **base,
                            "block": d.block,
                            "previous_block": latest[0],
                            "previous_index": latest[1],
                            "lag_s": lag,
                            "max_skew_s": skew_s,
                        },
                    )
                )
        elif latest is None or d.block >= latest[0]:
            latest = (d.block, entry.index)
        if d.block > target_block:
            continue  # entry_after_target says so
        stamp = d.timestamp
        if stamp is None:
            findings.append(
                Finding(
                    FindingKind.LOG_MALFORMED,
                    f"entry {entry.index}: time {d.time!r} is not an RFC 3339 time",
                    {**base, "time": d.time},
                )
            )
            continue
        lo = times.get(d.block)
        hi = times.get(d.block + 1)
        if lo is None:
            continue
        problem = None
        if stamp < lo - skew_s:
            problem = f"{lo - stamp:.0f} s before block {d.block}'s timestamp {lo}"
        elif hi is not None and stamp > hi + skew_s:
            problem = f"{stamp - hi:.0f} s after block {d.block + 1}'s timestamp {hi}"
        if problem is not None:
            findings.append(
                Finding(
                    FindingKind.ENTRY_TIME_INCONSISTENT,
                    f"entry {entry.index} is dated {d.time}, {problem} (allowed skew "
                    f"{skew_s:g} s): its time does not fit the block it names",
                    {
                        **base,
                        "block": d.block,
                        "time": d.time,
                        "block_timestamp": lo,
                        "next_block_timestamp": hi,
                        "max_skew_s": skew_s,
                    },
                )
            )
    return findings
