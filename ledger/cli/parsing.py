"""What the user types, read strictly: expiries, purposes, record ids, categories, scopes.

Each refuses bad input with a :class:`~ledger.cli.context.CliError` naming what to type instead.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ledger.cli.context import CliError

if TYPE_CHECKING:
    from ledger.protocol.consent_types import ScopeKind

__all__ = [
    "parse_category",
    "parse_expiry",
    "parse_purposes",
    "parse_record_id",
    "parse_scope",
]

_DURATION = re.compile(r"^(\d+)\s*([smhdwy])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def parse_expiry(text: str, *, now: int | None = None) -> int:
    """UNIX seconds for ``30d`` / ``12h`` / ``never`` / ``2026-12-31`` (ISO date or time)."""
    from ledger.protocol.consent_types import NO_EXPIRY

    now = int(time.time()) if now is None else now
    value = text.strip().lower()
    if value in ("never", "none", "forever"):
        return NO_EXPIRY
    m = _DURATION.match(value)
    if m:
        return now + int(m[1]) * _UNITS[m[2]]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CliError(
            f"cannot read expiry {text!r}: use 30d, 12h, 2w, 1y, never or a date like 2026-12-31"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def parse_purposes(values: list[str]) -> list[int]:
    """Purpose ids from names (treatment, research, ...) or numbers."""
    from ledger.protocol.consent_types import Purpose

    ids: list[int] = []
    for raw in values:
        for part in raw.split(","):
            name = part.strip()
            if not name:
                continue
            if name.isdigit() and 0 <= int(name) <= 31:
                ids.append(int(name))
                continue
            try:
                ids.append(int(Purpose[name.upper().replace("-", "_")]))
            except KeyError:
                known = ", ".join(p.name.lower() for p in Purpose)
                raise CliError(f"unknown purpose {name!r}; use one of {known}") from None
    if not ids:
        raise CliError("name at least one purpose with --purpose (treatment, research, ...)")
    return sorted(set(ids))


def parse_record_id(text: str) -> str:
    value = text.strip().lower()
    if not re.fullmatch(r"0x[0-9a-f]{64}", value):
        raise CliError(f"{text!r} is not a record id (0x + 64 hex digits); see `consent records`")
    return value


def parse_category(text: str) -> bytes:
    from ledger.protocol.consent_types import category_id

    try:
        return category_id(text.strip())
    except (ValueError, UnicodeEncodeError):
        raise CliError(f"category {text!r} must be 1..32 ASCII characters") from None


def parse_scope(
    record: str | None, category: str | None, everything: bool
) -> tuple[ScopeKind, bytes, str]:
    from ledger.protocol.consent_types import ALL_SCOPE_ID, ScopeKind

    chosen = [x for x in (record, category) if x is not None] + (["all"] if everything else [])
    if len(chosen) != 1:
        raise CliError("name exactly one scope: --record ID, --category NAME or --all")
    if record is not None:
        rid = parse_record_id(record)
        return ScopeKind.RECORD, bytes.fromhex(rid[2:]), f"record {rid}"
    if category is not None:
        return ScopeKind.CATEGORY, parse_category(category), f"category {category.strip()}"
    return ScopeKind.ALL, ALL_SCOPE_ID, "all records"
