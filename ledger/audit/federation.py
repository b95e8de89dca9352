"""The custody federation in the audit: every ``FederationSet`` of the audited range, the one in
force at its end, and how each member's access log fared.

Under a federation a record's key is split t-of-n among the members; each member releases its
share after its own consent decision, logs that decision in its own access log and anchors the
log under its own address. So every member of a set of the range is a gateway whose log the
audit needs (``ledger.audit.run``: a member's log not supplied is ``log_not_supplied`` even if
it anchored nothing), and the reports list every set and every member with its log's status:

- ``verified``: its log was supplied and verified, nothing wrong and nothing unverifiable in it
  (notices allowed);
- ``violations``: something in its log or its decisions is a violation;
- ``unverified``: its log was supplied but part of it could not be verified;
- ``not_supplied``: no log of this member was given (could not verify).

Rendered here for the three reports (``ledger.audit.html_report`` calls these).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from eth_typing import ChecksumAddress
from rich.markup import escape as rich_escape

from ledger.audit.html_timeline import escape, hex_text
from ledger.audit.report import AuditReport, Finding, Severity
from ledger.protocol.events import CheckpointAnchored, FederationSet

__all__ = [
    "LogStatus",
    "MemberLog",
    "federation_html",
    "federation_json",
    "federation_rows",
    "member_log",
    "member_of",
]


class LogStatus(StrEnum):
    VERIFIED = "verified"
    VIOLATIONS = "violations"
    UNVERIFIED = "unverified"
    NOT_SUPPLIED = "not_supplied"


_STATUS_TEXT = {
    LogStatus.VERIFIED: "log verified",
    LogStatus.VIOLATIONS: "VIOLATIONS in its log",
    LogStatus.UNVERIFIED: "log could not be verified",
    LogStatus.NOT_SUPPLIED: "log NOT supplied: could not verify",
}
_STATUS_STYLE = {
    LogStatus.VERIFIED: "green",
    LogStatus.VIOLATIONS: "bold red",
    LogStatus.UNVERIFIED: "bold yellow",
    LogStatus.NOT_SUPPLIED: "bold yellow",
}
_STATUS_CLASS = {
    LogStatus.VERIFIED: "ok",
    LogStatus.VIOLATIONS: "sev-violation",
    LogStatus.UNVERIFIED: "sev-unverifiable",
    LogStatus.NOT_SUPPLIED: "sev-unverifiable",
}


@dataclass(frozen=True)
class MemberLog:
    """What the audit established about one gateway's access log."""

    gateway: ChecksumAddress
    status: LogStatus
    sources: tuple[str, ...]  # the supplied logs naming it
    checkpoints: int  # anchored up to the audited block
    last_checkpoint: CheckpointAnchored | None
    entries: int  # entries of its supplied log(s)
    releases: int  # allowed entries among them: shares (or records) it released
    findings: tuple[Finding, ...]  # the findings about it

    @property
    def text(self) -> str:
        return _STATUS_TEXT[self.status]


def member_log(report: AuditReport, gateway: ChecksumAddress) -> MemberLog:
    """The status of ``gateway``'s log in ``report`` (see the module docstring)."""
    coverage = next((g for g in report.gateways if g.address == gateway), None)
    logs = [lg for lg in report.logs if lg.gateway == gateway]
    findings: list[Finding] = [f for lg in logs for f in lg.findings]
    seen = {id(f) for f in findings}
    findings += [
        f for f in report.findings if f.details.get("gateway") == gateway and id(f) not in seen
    ]
    sources = coverage.sources if coverage is not None else tuple(lg.source for lg in logs)
    severities = {f.severity for f in findings}
    if Severity.VIOLATION in severities:
        status = LogStatus.VIOLATIONS
    elif not sources:
        status = LogStatus.NOT_SUPPLIED
    elif Severity.UNVERIFIABLE in severities or not logs:
        status = LogStatus.UNVERIFIED  # (no verification: the log could not be read)
    else:
        status = LogStatus.VERIFIED
    return MemberLog(
        gateway=gateway,
        status=status,
        sources=tuple(sources),
        checkpoints=coverage.checkpoints if coverage is not None else 0,
        last_checkpoint=coverage.last_checkpoint if coverage is not None else None,
        entries=sum(lg.size for lg in logs),
        releases=sum(
            1 for lg in logs for v in lg.verdicts if v.decision is not None and v.decision.allowed
        ),
        findings=tuple(findings),
    )


def member_of(
    federations: Sequence[FederationSet], gateway: str, block: int
) -> tuple[FederationSet, int] | None:
    """The set in force at ``block`` and ``gateway``'s share index in it, if it is a member."""
    current = None
    for fed in federations:
        if fed.block_number > block:
            break
        current = fed
    members = [str(g) for g in current.gateways] if current is not None else []
    if current is None or gateway not in members:
        return None
    return current, members.index(gateway)


def _until(report: AuditReport, i: int) -> int | None:
    later = report.federations[i + 1 :]
    return later[0].block_number if later else None


def _checkpoint_json(cp: CheckpointAnchored | None) -> dict[str, Any] | None:
    if cp is None:
        return None
    return {
        "tree_size": cp.tree_size,
        "root_hash": hex_text(cp.root_hash),
        "block_number": cp.block_number,
        "tx_hash": cp.tx_hash,
    }


def _set_json(report: AuditReport, i: int, logs: dict[str, MemberLog]) -> dict[str, Any]:
    fed = report.federations[i]
    return {
        "block_number": fed.block_number,
        "log_index": fed.log_index,
        "tx_hash": fed.tx_hash,
        "threshold": fed.threshold,
        "size": len(fed.gateways),
        "custody_set": hex_text(fed.custody_set),
        "in_force": i == len(report.federations) - 1,
        "until_block": _until(report, i),
        "members": [
            {
                "index": n,
                "gateway": gw,
                "custody_key": hex_text(key),
                "url": url,
                "log": {
                    "status": logs[gw].status.value,
                    "supplied": bool(logs[gw].sources),
                    "sources": list(logs[gw].sources),
                    "entries": logs[gw].entries,
                    "releases": logs[gw].releases,
                    "checkpoints": logs[gw].checkpoints,
                    "last_checkpoint": _checkpoint_json(logs[gw].last_checkpoint),
                    "findings": [f.kind.value for f in logs[gw].findings],
                },
            }
            for n, (gw, key, url) in enumerate(
                zip(fed.gateways, fed.custody_keys, fed.urls, strict=True)
            )
        ],
    }


def _member_logs(report: AuditReport) -> dict[str, MemberLog]:
    return {gw: member_log(report, gw) for fed in report.federations for gw in fed.gateways}


def federation_json(report: AuditReport) -> dict[str, Any]:
    """``{"sets": [...every FederationSet of the range...], "in_force": the last or None}``;
    each set with its members (share index, gateway, custody key, URL, and its log's status)."""
    logs = _member_logs(report)
    sets = [_set_json(report, i, logs) for i in range(len(report.federations))]
    return {"sets": sets, "in_force": sets[-1] if sets else None}


def _set_title(report: AuditReport, i: int) -> str:
    fed = report.federations[i]
    if not fed.gateways:
        what = f"dissolved at block {fed.block_number} (no custody federation)"
    else:
        what = (
            f"{fed.threshold} of {len(fed.gateways)}, set at block {fed.block_number}, "
            f"custody set {hex_text(fed.custody_set)}"
        )
    until = _until(report, i)
    return what + (" — in force at the audited block" if until is None else f", until {until}")


def _checkpoint_text(m: MemberLog) -> str:
    cp = m.last_checkpoint
    if cp is None:
        return "no checkpoint anchored"
    return f"{m.checkpoints} checkpoint(s), last {cp.tree_size} entries at block {cp.block_number}"


def federation_rows(report: AuditReport) -> list[tuple[str, str]]:
    """Rows (label, rich text) for the terminal report: each set, then each of its members."""
    logs = _member_logs(report)
    rows: list[tuple[str, str]] = []
    for i, fed in enumerate(report.federations):
        rows.append(("federation", _set_title(report, i)))
        for n, (gw, key, url) in enumerate(
            zip(fed.gateways, fed.custody_keys, fed.urls, strict=True)
        ):
            m = logs[gw]
            style = _STATUS_STYLE[m.status]
            supplied = f"{m.entries} entries ({m.releases} released); " if m.sources else ""
            rows.append(
                (
                    f"  member {n}",
                    f"{gw} {rich_escape(url)} key {hex_text(key, 10)}: "
                    f"[{style}]{m.text}[/]; {supplied}{_checkpoint_text(m)}",
                )
            )
    return rows


def federation_html(report: AuditReport) -> str:
    """The HTML report's "Federation" section (empty when no set is in the range)."""
    if not report.federations:
        return ""
    logs = _member_logs(report)
    out = ["<h2>Federation</h2>"]
    for i, fed in enumerate(report.federations):
        out.append(f"<p><b>{escape(_set_title(report, i))}</b></p>")
        if not fed.gateways:
            continue
        out.append(
            "<table><tr><th>share</th><th>gateway</th><th>custody key</th><th>URL</th>"
            "<th>log</th><th>last anchored checkpoint</th></tr>"
        )
        for n, (gw, key, url) in enumerate(
            zip(fed.gateways, fed.custody_keys, fed.urls, strict=True)
        ):
            m = logs[gw]
            supplied = (
                f"<br><span class='muted'>{m.entries} entries, {m.releases} released; "
                f"{escape(', '.join(m.sources))}</span>"
                if m.sources
                else ""
            )
            out.append(
                f"<tr><td>{n}</td><td><code>{escape(gw)}</code></td>"
                f"<td><code>{escape(hex_text(key))}</code></td><td>{escape(url)}</td>"
                f"<td class='{_STATUS_CLASS[m.status]}'>{escape(m.text)}{supplied}</td>"
                f"<td>{escape(_checkpoint_text(m))}</td></tr>"
            )
        out.append("</table>")
    return "\n".join(out)
