"""How the CLI prints: the two consoles, one-line failures, and the small formatters."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

import typer
from rich.console import Console

__all__ = [
    "console",
    "echo_json",
    "err",
    "fail",
    "named",
    "purpose_name",
    "scope_text",
    "short",
    "when",
]

# Piped or captured output is not wrapped at 80 columns: record ids and hashes stay whole.
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def fail(message: str, *, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr; the exit to raise with ``code``."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def purpose_name(pid: int) -> str:
    from ledger.protocol.consent_types import Purpose

    return Purpose(pid).name.lower() if pid in Purpose._value2member_map_ else str(pid)


def scope_text(kind: str, scope_id: str) -> str:
    if kind == "record":
        return f"record {scope_id}"
    if kind == "category":
        name = bytes.fromhex(scope_id[2:]).rstrip(b"\0").decode(errors="replace")
        return f"category {name}"
    return "all records"


def when(ts: int | float | None) -> str:
    from ledger.protocol.consent_types import NO_EXPIRY

    if ts is None:
        return "-"
    if int(ts) >= NO_EXPIRY:
        return "never"
    return datetime.fromtimestamp(float(ts), tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def short(value: str, keep: int = 10) -> str:
    return value if len(value) <= 2 * keep + 1 else f"{value[:keep]}…{value[-6:]}"


def echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=False, default=str))


def named(names: dict[str, str], address: str) -> str:
    name = names.get(address.lower())
    return f"{name} ({short(address, 6)})" if name else address
