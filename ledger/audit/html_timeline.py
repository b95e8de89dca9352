"""The per-patient SVG timeline of the HTML audit report, and the text formats the report uses.

One lane per counterpart (grantee, guardian, emergency institution) with consent episodes as
bars, as ``ConsentTimeline.all_grants`` folds them (until revoked, replaced, lapsed, or for a
guardian's grant the end of its guardianship), revokes as crosses, break-glass windows, and every
logged read as a dot (green allowed, grey denied, red when the decision disagrees with the
chain). Hovering shows the details (SVG ``<title>``).
"""

from __future__ import annotations

import bisect
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from ledger.audit.report import EntryVerdict
from ledger.audit.state import ConsentTimeline, GrantInForce
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

__all__ = [
    "COLOURS",
    "Scale",
    "escape",
    "format_time",
    "hex_text",
    "patient_scale",
    "patient_svg",
    "short_address",
]


def hex_text(value: bytes, n: int | None = None) -> str:
    """``0x`` hex of ``value``, cut after ``n`` digits (with an ellipsis) when given."""
    text = "0x" + value.hex()
    return text if n is None else text[: n + 2] + "…"


def short_address(address: str) -> str:
    """``0x1234…abcd``."""
    return f"{address[:6]}…{address[-4:]}"


def _purposes(mask: int) -> str:
    names = []
    for p in sorted(purposes_of(mask), key=int):
        names.append(p.name.lower() if isinstance(p, Purpose) else str(p))
    return ",".join(names)


def _scope(kind: ScopeKind, scope_id: bytes) -> str:
    if kind is ScopeKind.RECORD:
        return f"record {hex_text(scope_id, 8)}"
    if kind is ScopeKind.CATEGORY:
        try:
            return f"category {category_name(scope_id)}"
        except UnicodeDecodeError:
            return f"category {hex_text(scope_id, 8)}"
    return "all records"


def format_time(ts: float | None) -> str:
    """A UTC time as ``YYYY-MM-DD HH:MM:SS UTC``; ``never`` for no expiry, ``?`` when unknown."""
    if ts is None:
        return "?"
    if ts >= NO_EXPIRY:
        return "never"
    try:
        return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return str(int(ts))


@dataclass
class _Lane:
    actor: str
    label: str
    items: list[str]


class Scale:
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
        """The (spread) time of ``block``: known, interpolated between known neighbours, or the
        first / last known time outside them."""
        known = self.known
        if not known:
            return float(block)
        lo = bisect.bisect_left(known, block, key=lambda bt: bt[0])
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


def patient_scale(
    patient: str,
    timeline: ConsentTimeline,
    reads: Sequence[EntryVerdict],
    times: Mapping[int, int],
    whole: Scale,
    end_block: int,
) -> Scale:
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
    return Scale(window, whole.x0, whole.x1)


COLOURS = {
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


def escape(text: object) -> str:
    """``text`` escaped for HTML text and attribute values."""
    return html.escape(str(text), quote=True)


def patient_svg(
    patient: str,
    timeline: ConsentTimeline,
    reads: Sequence[EntryVerdict],
    scale: Scale,
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
    open_bg: dict[str, BreakGlassOpened] = {}
    guardian_since: tuple[str, RegistryEvent] | None = None
    bars: list[tuple[str, float, float, str, str]] = []  # lane actor, t0, t1, colour, title
    for event in events:
        t = scale.block_time(event.block_number)
        if isinstance(event, RecordRegistered):
            x = scale.x(t)
            records.items.append(
                f'<path d="M{x:.1f},-6 L{x + 5:.1f},0 L{x:.1f},6 L{x - 5:.1f},0 Z" '
                f'fill="{COLOURS["record"]}">'
                f"<title>record {hex_text(event.record_id, 10)} "
                f"({escape(_category(event.category))}) "
                f"registered block {event.block_number} by centre {short_address(event.centre)}"
                "</title></path>"
            )
        elif isinstance(event, ConsentGranted):
            lane(event.grantee, short_address(event.grantee))
        elif isinstance(event, ConsentRevoked):
            target = lane(event.grantee, short_address(event.grantee))
            x = scale.x(t)
            target.items.append(
                f'<g stroke="{COLOURS["revoke"]}" stroke-width="2.5">'
                f'<line x1="{x - 5:.1f}" y1="-5" '
                f'x2="{x + 5:.1f}" y2="5"/><line x1="{x - 5:.1f}" y1="5" x2="{x + 5:.1f}" y2="-5"/>'
                f"<title>revoked {escape(_scope(event.scope_kind, event.scope_id))} at block "
                f"{event.block_number} by {short_address(event.actor)}</title></g>"
            )
        elif isinstance(event, GuardianSet):
            if guardian_since is not None:
                bars.append(_guardian_bar(guardian_since, t, scale))
            lane(event.guardian, f"{short_address(event.guardian)} (guardian)")
            guardian_since = (event.guardian, event)
        elif isinstance(event, GuardianRemoved):
            if guardian_since is not None:
                bars.append(_guardian_bar(guardian_since, t, scale))
            guardian_since = None
        elif isinstance(event, BreakGlassOpened):
            lane(event.institution, f"{short_address(event.institution)} (emergency)")
            open_bg[event.institution] = event
        elif isinstance(event, BreakGlassClosed):
            opened = open_bg.pop(event.institution, None)
            if opened is not None:
                bars.append(_bg_bar(opened, t, scale, f"closed at block {event.block_number}"))
    # Consent episodes as the timeline folds them: until replaced, revoked, or (a guardian's
    # grant) the end of its guardianship; lapsed at expiry.
    for grant, ended in sorted(
        timeline.all_grants(patient), key=lambda ge: (ge[0].block_number, ge[0].log_index)
    ):
        if ended is None:
            how = "in force at the audited block" if grant.expires_at > end_time else ""
            bars.append(_grant_bar(grant, end_time, how, scale))
        else:
            how = _ending(timeline.ending_event(grant), ended[0])
            bars.append(_grant_bar(grant, scale.block_time(ended[0]), how, scale))
    for opened in open_bg.values():
        bars.append(_bg_bar(opened, end_time, scale, ""))
    if guardian_since is not None:
        bars.append(_guardian_bar(guardian_since, end_time, scale))

    for actor, t0, t1, colour, title in bars:
        target = lanes.setdefault(actor, _Lane(actor, short_address(actor), []))
        x0, x1 = scale.x(t0), scale.x(t1)
        target.items.insert(
            0,
            f'<rect x="{x0:.1f}" y="-7" width="{max(x1 - x0, 2):.1f}" height="14" rx="3" '
            f'fill="{colour}" fill-opacity="0.55"><title>{escape(title)}</title></rect>',
        )
    for v in reads:
        d = v.decision
        if d is None or d.block is None:
            continue
        target = lane(
            d.requester,
            short_address(d.requester) + (" (patient)" if d.requester == patient else ""),
        )
        t = scale.block_time(d.block)  # on the block axis, like the events of that block
        colour = (
            COLOURS["bad"] if not v.consistent else COLOURS["allowed" if d.allowed else "denied"]
        )
        radius = 6 if not v.consistent else 4
        basis = v.basis.name.lower() if v.basis is not None else "not checked"
        anchored = f"anchored by checkpoint {v.anchored_by}" if v.anchored_by else "not anchored"
        target.items.append(
            f'<circle cx="{scale.x(t):.1f}" cy="0" r="{radius}" fill="{colour}" stroke="#fff">'
            f"<title>entry {v.index}: {'allowed' if d.allowed else 'denied'} ({escape(d.reason)}) "
            f"record {hex_text(d.record, 8)} purpose {d.purpose} at block {d.block}; chain basis "
            f"{basis}; {anchored}{'' if v.consistent else ' — DISAGREES WITH THE CHAIN'}"
            "</title></circle>"
        )

    ordered = [records] + [lanes[k] for k in lanes if k != "records"]
    width, left, lane_h, top = 960, 170, 30, 30
    height = top + lane_h * len(ordered) + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
        f'role="img" aria-label="timeline of {escape(patient)}">'
    ]
    for i, ln in enumerate(ordered):
        y = top + lane_h * i + lane_h / 2
        shade = "#f6f8fa" if i % 2 == 0 else "#ffffff"
        parts.append(
            f'<rect x="0" y="{y - lane_h / 2:.1f}" width="{width}" height="{lane_h}" '
            f'fill="{shade}"/>'
        )
        parts.append(
            f'<text x="8" y="{y + 4:.1f}" font-size="12" fill="#333">{escape(ln.label)}'
            f"<title>{escape(ln.actor)}</title></text>"
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
            f"{escape(_tick_label(scale, ts))}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _tick_label(scale: Scale, ts: float) -> str:
    block = scale.block_at(ts)
    when = format_time(ts)[5:19]
    return when if block is None else f"block {block} · {when}"


def _category(category: bytes) -> str:
    try:
        return category_name(category)
    except UnicodeDecodeError:
        return hex_text(category, 8)


def _grant_bar(
    g: GrantInForce, t_end: float, how: str, scale: Scale
) -> tuple[str, float, float, str, str]:
    t_start = scale.block_time(g.block_number)
    stop = min(t_end, float(g.expires_at))
    lapsed = " (lapsed)" if g.expires_at <= t_end else ""
    title = (
        f"{_scope(g.scope_kind, g.scope_id)} — {_purposes(g.purposes)}\n"
        f"granted block {g.block_number} ({format_time(t_start)}) by {short_address(g.actor)}\n"
        f"expires {format_time(g.expires_at)}{lapsed}; {how}"
    )
    return (g.grantee, t_start, max(stop, t_start), COLOURS[g.scope_kind], title)


def _ending(event: RegistryEvent | None, block: int) -> str:
    """How a grant ended, from the event that ended it (``ConsentTimeline.ending_event``)."""
    if isinstance(event, ConsentRevoked):
        return f"revoked at block {block}"
    if isinstance(event, ConsentGranted):
        return f"replaced at block {block}"
    return f"ended with its guardian at block {block}"


def _guardian_bar(
    since: tuple[str, RegistryEvent], t_end: float, scale: Scale
) -> tuple[str, float, float, str, str]:
    guardian, event = since
    t0 = scale.block_time(event.block_number)
    return (guardian, t0, t_end, COLOURS["guardian"], f"guardian since block {event.block_number}")


def _bg_bar(
    opened: BreakGlassOpened, t_end: float, scale: Scale, how: str
) -> tuple[str, float, float, str, str]:
    t0 = scale.block_time(opened.block_number)
    stop = min(t_end, float(opened.until))
    until = format_time(opened.until)
    title = f"break-glass opened block {opened.block_number}, until {until} {how}".strip()
    return (opened.institution, t0, max(stop, t0), COLOURS["breakglass"], title)
