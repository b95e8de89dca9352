"""Render an :class:`ledger.audit.report.AuditReport`: terminal summary, JSON, self-contained HTML.

The HTML report has no external assets (inline CSS, inline SVG): a verdict banner, the replay's
proof of completeness, every finding, and per patient a timeline — one lane per counterpart
(grantee, guardian, emergency institution) with consent episodes as bars (until revoked,
replaced or lapsed), revokes as crosses, break-glass windows, and every logged read as a dot
(green allowed, grey denied, red when the decision disagrees with the chain). Hovering shows
the details (SVG ``<title>``).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from ledger.audit.report import AuditReport, EntryVerdict, GatewayCoverage, Severity
from ledger.audit.state import ConsentTimeline
from ledger.protocol.consent_types import NO_EXPIRY, Purpose, ScopeKind, category_name, purposes_of
from ledger.protocol.events import (
    BreakGlassClosed,
    BreakGlassOpened,
    ConsentGranted,
    ConsentRevoked,
    GuardianRemoved,
    GuardianSet,
    RecordRegistered,
    RegistryEvent,
)

__all__ = ["render_html", "render_terminal", "report_to_json"]

_SEVERITY_STYLE = {
    Severity.VIOLATION: "bold red",
    Severity.UNVERIFIABLE: "bold yellow",
    Severity.NOTICE: "cyan",
}
_VERDICT_STYLE = {0: "bold green", 1: "bold red", 2: "bold yellow"}
_VERDICT_TEXT = {
    0: "CLEAN: the ledger is complete and every logged decision matches the chain",
    1: "VIOLATIONS FOUND",
    2: "COULD NOT VERIFY",
}


def _hex(value: bytes, n: int | None = None) -> str:
    text = "0x" + value.hex()
    return text if n is None else text[: n + 2] + "…"


def _short(address: str) -> str:
    return f"{address[:6]}…{address[-4:]}"


def _purposes(mask: int) -> str:
    names = []
    for p in sorted(purposes_of(mask), key=int):
        names.append(p.name.lower() if isinstance(p, Purpose) else str(p))
    return ",".join(names)


def _scope(kind: ScopeKind, scope_id: bytes) -> str:
    if kind is ScopeKind.RECORD:
        return f"record {_hex(scope_id, 8)}"
    if kind is ScopeKind.CATEGORY:
        try:
            return f"category {category_name(scope_id)}"
        except UnicodeDecodeError:
            return f"category {_hex(scope_id, 8)}"
    return "all records"


def _iso(ts: float | None) -> str:
    if ts is None:
        return "?"
    if ts >= NO_EXPIRY:
        return "never"
    try:
        return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return str(int(ts))


# ------------------------------------------------------------------------------ JSON


def _entry_json(v: EntryVerdict) -> dict[str, Any]:
    d = v.decision
    return {
        "index": v.index,
        "requester": d.requester if d else None,
        "patient": d.patient if d else None,
        "record": _hex(d.record) if d else None,
        "purpose": d.purpose if d else None,
        "decision": ("allowed" if d.allowed else "denied") if d else None,
        "reason": d.reason if d else None,
        "block": d.block if d else None,
        "events": d.events if d else None,
        "chain_time": d.chain_time if d else None,
        "time": d.time if d else None,
        "block_timestamp": v.block_timestamp,
        "chain_basis": v.basis.name if v.basis is not None else None,
        "anchored_by_checkpoint": v.anchored_by,
        "consistent": v.consistent,
    }


def _gateway_json(g: GatewayCoverage) -> dict[str, Any]:
    cp = g.last_checkpoint
    return {
        "gateway": g.address,
        "held_role": [{"granted_at": a, "revoked_at": b} for a, b in g.role_blocks],
        "checkpoints": g.checkpoints,
        "last_checkpoint": None
        if cp is None
        else {"tree_size": cp.tree_size, "block_number": cp.block_number},
        "log_supplied": g.supplied,
        "sources": list(g.sources),
    }


def _gateway_text(g: GatewayCoverage) -> str:
    spans = ", ".join(
        f"from block {a}" if b is None else f"blocks {a}–{b}" for a, b in g.role_blocks
    )
    cp = g.last_checkpoint
    parts = [f"role {spans}" if spans else "never held the role"]
    parts.append(
        "no checkpoint"
        if cp is None
        else f"{g.checkpoints} checkpoint(s), last {cp.tree_size} entries at block "
        f"{cp.block_number}"
    )
    if g.supplied:
        parts.append("log supplied")
    else:
        parts.append("[red]log NOT supplied[/]" if cp is not None else "log not supplied")
    return f"{g.address}: " + "; ".join(parts)


def report_to_json(report: AuditReport, *, entries: bool = True) -> dict[str, Any]:
    """A JSON-able dict of the report (``--json``)."""
    replay = report.replay
    counts: dict[str, int] = {s.value: 0 for s in Severity}
    for finding in report.findings:
        counts[finding.severity.value] += 1
    out: dict[str, Any] = {
        "verdict": report.verdict,
        "exit_code": report.exit_code,
        "chain_id": report.chain_id,
        "registry": report.registry,
        "deploy_block": report.deploy_block,
        "target_block": report.target_block,
        "started_at": _iso(report.started_at),
        "seconds": round(report.seconds, 3),
        "counts": counts,
        "findings": [f.as_dict() for f in report.findings],
        "replay": None,
        "gateways": [_gateway_json(g) for g in report.gateways],
        "access_logs": [],
    }
    if replay is not None:
        out["replay"] = {
            "events": len(replay.events),
            "complete": replay.complete,
            "repaired": replay.repaired,
            "computed_digest": replay.computed.as_dict(),
            "onchain_digest": replay.onchain.as_dict(),
            "target_block": replay.target_block,
            "target_hash": replay.target_hash,
            "head_block": replay.head_block,
            "requests": replay.requests,
            "halvings": replay.halvings,
            "removed_logs_dropped": replay.removed_dropped,
            "seconds": round(replay.seconds, 3),
        }
    for log in report.logs:
        item: dict[str, Any] = {
            "gateway": log.gateway,
            "source": log.source,
            "size": log.size,
            "anchored_size": log.anchored_size,
            "checkpoints": [
                {
                    "tree_size": c.tree_size,
                    "root_hash": _hex(c.root_hash),
                    "block_number": c.block_number,
                    "tx_hash": c.tx_hash,
                }
                for c in log.checkpoints
            ],
        }
        if entries:
            item["entries"] = [_entry_json(v) for v in log.verdicts]
        out["access_logs"].append(item)
    return out


# ------------------------------------------------------------------------------ terminal


def render_terminal(report: AuditReport, console: Console, *, max_findings: int = 50) -> None:
    """A rich summary: verdict, replay proof, access logs, findings."""
    code = report.exit_code
    console.print(Panel(_VERDICT_TEXT[code], style=_VERDICT_STYLE[code], expand=False))
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("registry", f"{report.registry} (chain {report.chain_id})")
    replay = report.replay
    if replay is not None:
        facts.add_row(
            "blocks", f"{replay.from_block} … {replay.target_block} (head {replay.head_block})"
        )
        proof = "[green]complete[/]" if replay.complete else "[red]incomplete[/]"
        if replay.repaired:
            proof = "[yellow]repaired from receipts (the node's eth_getLogs was wrong)[/]"
        facts.add_row("events", f"{len(replay.events)} replayed — {proof}")
        facts.add_row(
            "digest",
            f"replayed {_hex(replay.computed.head)} / {replay.computed.count}\n"
            f"on-chain {_hex(replay.onchain.head)} / {replay.onchain.count}",
        )
        facts.add_row(
            "fetch",
            f"{replay.requests} eth_getLogs, {replay.halvings} halvings, "
            f"{replay.removed_dropped} removed logs dropped, {replay.seconds:.2f} s",
        )
    for g in report.gateways:
        facts.add_row("gateway", _gateway_text(g))
    for log in report.logs:
        allowed = sum(1 for v in log.verdicts if v.decision and v.decision.allowed)
        facts.add_row(
            "access log",
            f"{log.gateway}: {log.size} entries ({allowed} allowed), {len(log.checkpoints)} "
            f"checkpoints, {log.anchored_size} anchored",
        )
    facts.add_row("took", f"{report.seconds:.2f} s")
    console.print(facts)
    if report.findings:
        table = Table(title="Findings", show_lines=False)
        table.add_column("severity")
        table.add_column("kind")
        table.add_column("message", overflow="fold")
        for finding in report.findings[:max_findings]:
            style = _SEVERITY_STYLE[finding.severity]
            table.add_row(
                f"[{style}]{finding.severity.value}[/]", finding.kind.value, finding.message
            )
        console.print(table)
        if len(report.findings) > max_findings:
            console.print(f"… and {len(report.findings) - max_findings} more (see --json)")


# ------------------------------------------------------------------------------ HTML


@dataclass
class _Lane:
    actor: str
    label: str
    items: list[str]


class _Scale:
    """Maps timestamps to x; blocks without a known time are interpolated.

    Block timestamps have one-second resolution and a local chain mines many blocks in the same
    second, so blocks that share a second are spread evenly across it: events stay in block
    order on the axis instead of piling up on one x.
    """

    def __init__(self, times: Mapping[int, int], x0: float, x1: float) -> None:
        self.known = self._spread(sorted(times.items()))
        self.t0 = min((t for _, t in self.known), default=0)
        self.t1 = max((t for _, t in self.known), default=1)
        if self.t1 <= self.t0:
            self.t1 = self.t0 + 1
        self.x0, self.x1 = x0, x1

    @staticmethod
    def _spread(known: list[tuple[int, int]]) -> list[tuple[int, float]]:
        out: list[tuple[int, float]] = []
        i = 0
        while i < len(known):
            j = i
            while j < len(known) and known[j][1] == known[i][1]:
                j += 1
            run = j - i
            out.extend((known[i + k][0], known[i][1] + k / run) for k in range(run))
            i = j
        return out

    def block_at(self, ts: float) -> int | None:
        """The known block whose (spread) time is nearest ``ts``."""
        if not self.known:
            return None
        return min(self.known, key=lambda bt: abs(bt[1] - ts))[0]

    def block_time(self, block: int) -> float:
        known = self.known
        if not known:
            return float(block)
        lo, hi = 0, len(known)
        while lo < hi:
            mid = (lo + hi) // 2
            if known[mid][0] < block:
                lo = mid + 1
            else:
                hi = mid
        if lo < len(known) and known[lo][0] == block:
            return float(known[lo][1])
        if lo == 0:
            return float(known[0][1])
        if lo == len(known):
            return float(known[-1][1])
        (b0, t0), (b1, t1) = known[lo - 1], known[lo]
        return t0 + (t1 - t0) * (block - b0) / (b1 - b0)

    def x(self, ts: float) -> float:
        ts = min(max(ts, self.t0), self.t1)
        return self.x0 + (self.x1 - self.x0) * (ts - self.t0) / (self.t1 - self.t0)

    def xb(self, block: int) -> float:
        return self.x(self.block_time(block))


def _patient_scale(
    patient: str,
    timeline: ConsentTimeline,
    reads: Sequence[EntryVerdict],
    times: Mapping[int, int],
    whole: _Scale,
    end_block: int,
) -> _Scale:
    """A scale spanning this patient's own activity (first event or read to the audited head),
    so a patient whose history is minutes long is not squeezed against the edge of a ledger
    that is days old. Falls back to the whole ledger's scale."""
    blocks = [e.block_number for e in timeline.patient_events(patient)]
    blocks += [v.decision.block for v in reads if v.decision is not None and v.decision.block]
    if not blocks:
        return whole
    first = min(blocks)
    last = max(max(blocks), end_block)
    window = {b: t for b, t in times.items() if first <= b <= last}
    window.setdefault(first, int(whole.block_time(first)))
    window.setdefault(last, int(whole.block_time(last)))
    return _Scale(window, whole.x0, whole.x1)


_COLOURS = {
    ScopeKind.RECORD: "#2f80ed",
    ScopeKind.CATEGORY: "#27ae60",
    ScopeKind.ALL: "#9b51e0",
    "guardian": "#8e6c3a",
    "breakglass": "#f2994a",
    "revoke": "#eb5757",
    "allowed": "#219653",
    "denied": "#9aa0a6",
    "bad": "#d32f2f",
    "record": "#555",
}


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _patient_svg(
    patient: str,
    timeline: ConsentTimeline,
    reads: Sequence[EntryVerdict],
    scale: _Scale,
    end_block: int,
) -> str:
    lanes: dict[str, _Lane] = {}

    def lane(actor: str, label: str) -> _Lane:
        if actor not in lanes:
            lanes[actor] = _Lane(actor, label, [])
        return lanes[actor]

    end_time = scale.block_time(end_block)
    events = timeline.patient_events(patient)
    records = lane("records", "records")
    open_grants: dict[tuple[str, ScopeKind, bytes], ConsentGranted] = {}
    open_bg: dict[str, BreakGlassOpened] = {}
    guardian_since: tuple[str, RegistryEvent] | None = None
    bars: list[tuple[str, float, float, str, str]] = []  # lane actor, t0, t1, colour, title

    def close_grant(g: ConsentGranted, t_end: float, how: str) -> None:
        t_start = scale.block_time(g.block_number)
        stop = min(t_end, float(g.expires_at))
        lapsed = " (lapsed)" if g.expires_at <= t_end else ""
        title = (
            f"{_scope(g.scope_kind, g.scope_id)} — {_purposes(g.purposes)}\n"
            f"granted block {g.block_number} ({_iso(t_start)}) by {_short(g.actor)}\n"
            f"expires {_iso(g.expires_at)}{lapsed}; {how}"
        )
        bars.append((g.grantee, t_start, max(stop, t_start), _COLOURS[g.scope_kind], title))

    for event in events:
        t = scale.block_time(event.block_number)
        if isinstance(event, RecordRegistered):
            x = scale.x(t)
            records.items.append(
                f'<path d="M{x:.1f},-6 L{x + 5:.1f},0 L{x:.1f},6 L{x - 5:.1f},0 Z" '
                f'fill="{_COLOURS["record"]}">'
                f"<title>record {_hex(event.record_id, 10)} ({_e(_category(event.category))}) "
                f"registered block {event.block_number} by centre {_short(event.centre)}"
                "</title></path>"
            )
        elif isinstance(event, ConsentGranted):
            lane(event.grantee, _short(event.grantee))
            key = (event.grantee, event.scope_kind, event.scope_id)
            if key in open_grants:
                close_grant(open_grants[key], t, f"replaced at block {event.block_number}")
            open_grants[key] = event
        elif isinstance(event, ConsentRevoked):
            target = lane(event.grantee, _short(event.grantee))
            key = (event.grantee, event.scope_kind, event.scope_id)
            if key in open_grants:
                close_grant(open_grants.pop(key), t, f"revoked at block {event.block_number}")
            x = scale.x(t)
            target.items.append(
                f'<g stroke="{_COLOURS["revoke"]}" stroke-width="2.5">'
                f'<line x1="{x - 5:.1f}" y1="-5" '
                f'x2="{x + 5:.1f}" y2="5"/><line x1="{x - 5:.1f}" y1="5" x2="{x + 5:.1f}" y2="-5"/>'
                f"<title>revoked {_e(_scope(event.scope_kind, event.scope_id))} at block "
                f"{event.block_number} by {_short(event.actor)}</title></g>"
            )
        elif isinstance(event, GuardianSet):
            if guardian_since is not None:
                bars.append(_guardian_bar(guardian_since, t, scale))
            lane(event.guardian, f"{_short(event.guardian)} (guardian)")
            guardian_since = (event.guardian, event)
        elif isinstance(event, GuardianRemoved):
            if guardian_since is not None:
                bars.append(_guardian_bar(guardian_since, t, scale))
            guardian_since = None
            # every grant this guardian made ends with its guardianship (IConsentRegistry)
            for open_key, g in list(open_grants.items()):
                if g.actor == event.guardian:
                    how = f"ended with its guardian at block {event.block_number}"
                    close_grant(open_grants.pop(open_key), t, how)
        elif isinstance(event, BreakGlassOpened):
            lane(event.institution, f"{_short(event.institution)} (emergency)")
            open_bg[event.institution] = event
        elif isinstance(event, BreakGlassClosed):
            opened = open_bg.pop(event.institution, None)
            if opened is not None:
                bars.append(_bg_bar(opened, t, scale, f"closed at block {event.block_number}"))
    for g in open_grants.values():
        close_grant(g, end_time, "in force at the audited block" if g.expires_at > end_time else "")
    for opened in open_bg.values():
        bars.append(_bg_bar(opened, end_time, scale, ""))
    if guardian_since is not None:
        bars.append(_guardian_bar(guardian_since, end_time, scale))

    for actor, t0, t1, colour, title in bars:
        target = lanes.setdefault(actor, _Lane(actor, _short(actor), []))
        x0, x1 = scale.x(t0), scale.x(t1)
        target.items.insert(
            0,
            f'<rect x="{x0:.1f}" y="-7" width="{max(x1 - x0, 2):.1f}" height="14" rx="3" '
            f'fill="{colour}" fill-opacity="0.55"><title>{_e(title)}</title></rect>',
        )
    for v in reads:
        d = v.decision
        if d is None or d.block is None:
            continue
        target = lane(
            d.requester, _short(d.requester) + (" (patient)" if d.requester == patient else "")
        )
        t = scale.block_time(d.block)  # on the block axis, like the events of that block
        colour = (
            _COLOURS["bad"] if not v.consistent else _COLOURS["allowed" if d.allowed else "denied"]
        )
        radius = 6 if not v.consistent else 4
        basis = v.basis.name.lower() if v.basis is not None else "not checked"
        anchored = f"anchored by checkpoint {v.anchored_by}" if v.anchored_by else "not anchored"
        target.items.append(
            f'<circle cx="{scale.x(t):.1f}" cy="0" r="{radius}" fill="{colour}" stroke="#fff">'
            f"<title>entry {v.index}: {'allowed' if d.allowed else 'denied'} ({_e(d.reason)}) "
            f"record {_hex(d.record, 8)} purpose {d.purpose} at block {d.block}; chain basis "
            f"{basis}; {anchored}{'' if v.consistent else ' — DISAGREES WITH THE CHAIN'}"
            "</title></circle>"
        )

    ordered = [records] + [lanes[k] for k in lanes if k != "records"]
    width, left, lane_h, top = 960, 170, 30, 30
    height = top + lane_h * len(ordered) + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
        f'role="img" aria-label="timeline of {_e(patient)}">'
    ]
    for i, ln in enumerate(ordered):
        y = top + lane_h * i + lane_h / 2
        shade = "#f6f8fa" if i % 2 == 0 else "#ffffff"
        parts.append(
            f'<rect x="0" y="{y - lane_h / 2:.1f}" width="{width}" height="{lane_h}" '
            f'fill="{shade}"/>'
        )
        parts.append(
            f'<text x="8" y="{y + 4:.1f}" font-size="12" fill="#333">{_e(ln.label)}'
            f"<title>{_e(ln.actor)}</title></text>"
        )
        parts.append(f'<g transform="translate(0,{y:.1f})">{"".join(ln.items)}</g>')
    axis_y = top + lane_h * len(ordered) + 4
    parts.append(f'<line x1="{left}" y1="{axis_y}" x2="{width - 10}" y2="{axis_y}" stroke="#999"/>')
    for k in range(5):
        ts = scale.t0 + (scale.t1 - scale.t0) * k / 4
        x = scale.x(ts)
        parts.append(
            f'<line x1="{x:.1f}" y1="{axis_y}" x2="{x:.1f}" y2="{axis_y + 5}" stroke="#999"/>'
        )
        anchor = "start" if k == 0 else ("end" if k == 4 else "middle")
        parts.append(
            f'<text x="{x:.1f}" y="{axis_y + 18}" font-size="10" fill="#666" '
            f'text-anchor="{anchor}">'
            f"{_e(_tick_label(scale, ts))}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _tick_label(scale: _Scale, ts: float) -> str:
    block = scale.block_at(ts)
    when = _iso(ts)[5:19]
    return when if block is None else f"block {block} · {when}"


def _category(category: bytes) -> str:
    try:
        return category_name(category)
    except UnicodeDecodeError:
        return _hex(category, 8)


def _guardian_bar(
    since: tuple[str, RegistryEvent], t_end: float, scale: _Scale
) -> tuple[str, float, float, str, str]:
    guardian, event = since
    t0 = scale.block_time(event.block_number)
    return (guardian, t0, t_end, _COLOURS["guardian"], f"guardian since block {event.block_number}")


def _bg_bar(
    opened: BreakGlassOpened, t_end: float, scale: _Scale, how: str
) -> tuple[str, float, float, str, str]:
    t0 = scale.block_time(opened.block_number)
    stop = min(t_end, float(opened.until))
    title = (
        f"break-glass opened block {opened.block_number}, until {_iso(opened.until)} {how}".strip()
    )
    return (opened.institution, t0, max(stop, t0), _COLOURS["breakglass"], title)


_CSS = """
body{font:14px/1.45 -apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;
color:#1f2328;background:#fff}
main{max-width:1000px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}
 h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #eee;padding-bottom:4px}
.banner{padding:14px 18px;border-radius:8px;font-weight:600;font-size:16px;margin:16px 0}
.clean{background:#e6f4ea;color:#1e7e34}
.violations{background:#fdecea;color:#b71c1c}
.unverified{background:#fff4e5;color:#8a5300}
.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{border:1px solid #e5e7eb;border-radius:8px;padding:10px 14px;min-width:140px}
.card b{display:block;font-size:20px}
table{border-collapse:collapse;width:100%;font-size:13px}
td,th{border-bottom:1px solid #eee;padding:5px 6px;text-align:left;vertical-align:top}
.sev-violation{color:#b71c1c;font-weight:600}
.sev-unverifiable{color:#8a5300;font-weight:600}
.sev-notice{color:#0b6b8a}
code{font:12px ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
.legend span{display:inline-block;margin-right:14px;font-size:12px}
.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:4px;
vertical-align:-1px}
.muted{color:#6a737d}
"""


def render_html(report: AuditReport, *, block_times: Mapping[int, int] | None = None) -> str:
    """A self-contained HTML report (no external assets)."""
    times = dict(report.block_times)
    if block_times:
        times.update(block_times)
    replay = report.replay
    code = report.exit_code
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>Consent Ledger audit — {report.verdict}</title><style>{_CSS}</style>",
        "</head><body><main>",
        "<h1>Consent Ledger audit</h1>",
        f"<div class='muted'>registry <code>{_e(report.registry)}</code> "
        f"on chain {_e(report.chain_id)}, "
        f"audited {_e(_iso(report.started_at))} in {report.seconds:.2f} s</div>",
        f"<div class='banner {report.verdict}'>{_e(_VERDICT_TEXT[code])}</div>",
    ]
    counts = {s: sum(1 for f in report.findings if f.severity is s) for s in Severity}
    cards = []
    if replay is not None:
        cards.append(("events replayed", f"{len(replay.events):,}"))
        cards.append(("blocks", f"{replay.from_block:,}–{replay.target_block:,}"))
        cards.append(
            (
                "ledger complete",
                "yes" if replay.complete else ("repaired" if replay.repaired else "NO"),
            )
        )
    cards.append(("reads checked", f"{sum(len(lg.verdicts) for lg in report.logs):,}"))
    cards.append(("violations", str(counts[Severity.VIOLATION])))
    cards.append(("unverifiable", str(counts[Severity.UNVERIFIABLE])))
    out.append(
        "<div class='cards'>"
        + "".join(f"<div class='card'><b>{_e(v)}</b>{_e(k)}</div>" for k, v in cards)
        + "</div>"
    )
    if replay is not None:
        out.append("<h2>Completeness</h2><table>")
        out.append(
            f"<tr><th>replayed digest</th><td><code>{_hex(replay.computed.head)}</code> / "
            f"{replay.computed.count} events</td></tr>"
        )
        out.append(
            f"<tr><th>on-chain eventDigest()</th><td><code>{_hex(replay.onchain.head)}</code> / "
            f"{replay.onchain.count} events at block {replay.target_block} "
            f"<code>{_e(replay.target_hash)}</code></td></tr>"
        )
        out.append(
            f"<tr><th>fetch</th><td>{replay.requests} eth_getLogs requests, "
            f"{replay.halvings} range halvings, {replay.removed_dropped} removed logs dropped, "
            f"{replay.seconds:.2f} s</td></tr></table>"
        )
    out.append("<h2>Findings</h2>")
    if report.findings:
        out.append("<table><tr><th>severity</th><th>kind</th><th>finding</th></tr>")
        for f in report.findings:
            out.append(
                f"<tr><td class='sev-{f.severity.value}'>{f.severity.value}</td>"
                f"<td><code>{f.kind.value}</code></td>"
                f"<td>{_e(f.message)}</td></tr>"
            )
        out.append("</table>")
    else:
        out.append("<p>None.</p>")
    if report.gateways:
        out.append(
            "<h2>Gateways</h2><table><tr><th>gateway</th><th>GATEWAY_ROLE</th>"
            "<th>checkpoints</th><th>log</th></tr>"
        )
        for g in report.gateways:
            cp = g.last_checkpoint
            spans = (
                ", ".join(f"{a}–{'' if b is None else b}" for a, b in g.role_blocks) or "never held"
            )
            out.append(
                f"<tr><td><code>{_e(g.address)}</code></td><td>blocks {_e(spans)}</td><td>"
                + (
                    "none"
                    if cp is None
                    else f"{g.checkpoints}, last {cp.tree_size} entries at block {cp.block_number}"
                )
                + "</td><td>"
                + (_e(", ".join(g.sources)) if g.supplied else "<b>not supplied</b>")
                + "</td></tr>"
            )
        out.append("</table>")
    for lg in report.logs:
        out.append(
            f"<h2>Access log of gateway <code>{_e(lg.gateway)}</code></h2><p>{lg.size} entries, "
            f"{lg.anchored_size} proven under on-chain checkpoints "
            + ", ".join(f"{c.tree_size} (block {c.block_number})" for c in lg.checkpoints)
            + "</p>"
        )
    end_block = report.target_block if report.target_block is not None else 0
    scale = _Scale(times, 170, 950)
    reads_by_patient: dict[str, list[EntryVerdict]] = {}
    for lg in report.logs:
        for v in lg.verdicts:
            if v.decision is not None:
                reads_by_patient.setdefault(v.decision.patient, []).append(v)
    patients = sorted(set(report.timeline.patients()) | set(reads_by_patient), key=str.lower)
    if patients:
        out.append("<h2>Timelines</h2><div class='legend'>")
        for label, colour in (
            ("record consent", _COLOURS[ScopeKind.RECORD]),
            ("category consent", _COLOURS[ScopeKind.CATEGORY]),
            ("all-records consent", _COLOURS[ScopeKind.ALL]),
            ("guardian", _COLOURS["guardian"]),
            ("break-glass", _COLOURS["breakglass"]),
            ("revoke", _COLOURS["revoke"]),
            ("read allowed", _COLOURS["allowed"]),
            ("read denied", _COLOURS["denied"]),
            ("decision disagrees with chain", _COLOURS["bad"]),
        ):
            out.append(f"<span><i style='background:{colour}'></i>{_e(label)}</span>")
        out.append("</div>")
    for patient in patients:
        reads = reads_by_patient.get(patient, [])
        bad = sum(1 for v in reads if not v.consistent)
        out.append(
            f"<h3>Patient <code>{_e(patient)}</code> <span class='muted'>— {len(reads)} reads"
            + (f", <b style='color:#b71c1c'>{bad} disagree with the chain</b>" if bad else "")
            + "</span></h3>"
        )
        out.append(
            _patient_svg(
                patient,
                report.timeline,
                reads,
                _patient_scale(patient, report.timeline, reads, times, scale, end_block),
                end_block,
            )
        )
    out.append(
        "<p class='muted'>Generated by <code>consent audit run --html</code>. "
        "Hover over bars and dots for details.</p>"
    )
    out.append("</main></body></html>")
    return "\n".join(out)
