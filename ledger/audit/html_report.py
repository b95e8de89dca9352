"""Render an :class:`ledger.audit.report.AuditReport`: terminal summary, JSON, self-contained HTML.

The HTML report has no external assets (inline CSS, inline SVG): a verdict banner, the replay's
proof of completeness, every finding, the gateways and their logs, the custody federation
(``ledger.audit.federation``), and per patient a timeline (``ledger.audit.html_timeline``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from ledger.audit.federation import federation_html, federation_json, federation_rows
from ledger.audit.html_timeline import (
    COLOURS,
    Scale,
    escape,
    format_time,
    hex_text,
    patient_scale,
    patient_svg,
)
from ledger.audit.report import AuditReport, EntryVerdict, GatewayCoverage, Severity
from ledger.protocol.consent_types import ScopeKind

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


# ------------------------------------------------------------------------------ JSON


def _entry_json(v: EntryVerdict) -> dict[str, Any]:
    d = v.decision
    return {
        "index": v.index,
        "requester": d.requester if d else None,
        "patient": d.patient if d else None,
        "record": hex_text(d.record) if d else None,
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
        "federation_blocks": list(g.federation_blocks),
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
    if g.federation_member:
        parts.append("federation member")
    if g.supplied:
        parts.append("log supplied")
    else:
        needed = cp is not None or g.federation_member
        parts.append("[red]log NOT supplied[/]" if needed else "log not supplied")
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
        "started_at": format_time(report.started_at),
        "seconds": round(report.seconds, 3),
        "counts": counts,
        "findings": [f.as_dict() for f in report.findings],
        "replay": None,
        "gateways": [_gateway_json(g) for g in report.gateways],
        "federation": federation_json(report),
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
                    "root_hash": hex_text(c.root_hash),
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
            f"replayed {hex_text(replay.computed.head)} / {replay.computed.count}\n"
            f"on-chain {hex_text(replay.onchain.head)} / {replay.onchain.count}",
        )
        facts.add_row(
            "fetch",
            f"{replay.requests} eth_getLogs, {replay.halvings} halvings, "
            f"{replay.removed_dropped} removed logs dropped, {replay.seconds:.2f} s",
        )
    for g in report.gateways:
        facts.add_row("gateway", _gateway_text(g))
    for label, text in federation_rows(report):
        facts.add_row(label, text)
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
.ok{color:#1e7e34;font-weight:600}
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
        f"<div class='muted'>registry <code>{escape(report.registry)}</code> "
        f"on chain {escape(report.chain_id)}, "
        f"audited {escape(format_time(report.started_at))} in {report.seconds:.2f} s</div>",
        f"<div class='banner {report.verdict}'>{escape(_VERDICT_TEXT[code])}</div>",
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
        + "".join(f"<div class='card'><b>{escape(v)}</b>{escape(k)}</div>" for k, v in cards)
        + "</div>"
    )
    if replay is not None:
        out.append("<h2>Completeness</h2><table>")
        out.append(
            f"<tr><th>replayed digest</th><td><code>{hex_text(replay.computed.head)}</code> / "
            f"{replay.computed.count} events</td></tr>"
        )
        out.append(
            "<tr><th>on-chain eventDigest()</th>"
            f"<td><code>{hex_text(replay.onchain.head)}</code> / "
            f"{replay.onchain.count} events at block {replay.target_block} "
            f"<code>{escape(replay.target_hash)}</code></td></tr>"
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
                f"<td>{escape(f.message)}</td></tr>"
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
                f"<tr><td><code>{escape(g.address)}</code></td><td>blocks {escape(spans)}</td><td>"
                + (
                    "none"
                    if cp is None
                    else f"{g.checkpoints}, last {cp.tree_size} entries at block {cp.block_number}"
                )
                + "</td><td>"
                + (escape(", ".join(g.sources)) if g.supplied else "<b>not supplied</b>")
                + "</td></tr>"
            )
        out.append("</table>")
    out.append(federation_html(report))
    for lg in report.logs:
        out.append(
            f"<h2>Access log of gateway <code>{escape(lg.gateway)}</code></h2>"
            f"<p>{lg.size} entries, "
            f"{lg.anchored_size} proven under on-chain checkpoints "
            + ", ".join(f"{c.tree_size} (block {c.block_number})" for c in lg.checkpoints)
            + "</p>"
        )
    end_block = report.target_block if report.target_block is not None else 0
    scale = Scale(times, 170, 950)
    reads_by_patient: dict[str, list[EntryVerdict]] = {}
    for lg in report.logs:
        for v in lg.verdicts:
            if v.decision is not None:
                reads_by_patient.setdefault(v.decision.patient, []).append(v)
    patients = sorted(set(report.timeline.patients()) | set(reads_by_patient), key=str.lower)
    if patients:
        out.append("<h2>Timelines</h2><div class='legend'>")
        for label, colour in (
            ("record consent", COLOURS[ScopeKind.RECORD]),
            ("category consent", COLOURS[ScopeKind.CATEGORY]),
            ("all-records consent", COLOURS[ScopeKind.ALL]),
            ("guardian", COLOURS["guardian"]),
            ("break-glass", COLOURS["breakglass"]),
            ("revoke", COLOURS["revoke"]),
            ("read allowed", COLOURS["allowed"]),
            ("read denied", COLOURS["denied"]),
            ("decision disagrees with chain", COLOURS["bad"]),
        ):
            out.append(f"<span><i style='background:{colour}'></i>{escape(label)}</span>")
        out.append("</div>")
    for patient in patients:
        reads = reads_by_patient.get(patient, [])
        bad = sum(1 for v in reads if not v.consistent)
        out.append(
            f"<h3>Patient <code>{escape(patient)}</code> <span class='muted'>— {len(reads)} reads"
            + (f", <b style='color:#b71c1c'>{bad} disagree with the chain</b>" if bad else "")
            + "</span></h3>"
        )
        out.append(
            patient_svg(
                patient,
                report.timeline,
                reads,
                patient_scale(patient, report.timeline, reads, times, scale, end_block),
                end_block,
            )
        )
    out.append(
        "<p class='muted'>Generated by <code>consent audit run --html</code>. "
        "Hover over bars and dots for details.</p>"
    )
    out.append("</main></body></html>")
    return "\n".join(out)
