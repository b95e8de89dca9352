"""README "What the chain reveals" lists every event field of the compiled registry, only those."""

from __future__ import annotations

import re
from pathlib import Path

from ledger.chain.build import compile_contracts
from tests.helpers.build import session_build_cache

README = Path(__file__).resolve().parents[1] / "README.md"
NO_FIELDS = "(no fields)"


def _inventory() -> dict[str, dict[str, bool]]:
    """``{event: {field: indexed}}`` from the section's event table."""
    text = README.read_text(encoding="utf-8")
    assert "\n## What the chain reveals\n" in text, "README has no 'What the chain reveals' section"
    section = text.split("\n## What the chain reveals\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, dict[str, bool]] = {}
    in_table = False
    for line in section.splitlines():
        if line.startswith("| event | field |"):
            in_table = True
            continue
        if not in_table or line.startswith("|---"):
            continue
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == 4, f"an inventory row needs 4 cells: {line}"
        event, field, who, why = cells
        assert who, f"{event}.{field}: who sees it?"
        assert why, f"{event}.{field}: why must it be there?"
        fields = rows.setdefault(event, {})
        if field == NO_FIELDS:
            continue
        m = re.fullmatch(r"`(\w+)`( \(indexed\))?", field)
        assert m, f"field cell must be `name` or `name` (indexed): {field!r}"
        assert m[1] not in fields, f"{event}.{m[1]} listed twice"
        fields[m[1]] = bool(m[2])
    assert rows, "the inventory table is empty"
    return rows


def _abi_events() -> dict[str, dict[str, bool]]:
    abi = compile_contracts(cache_dir=session_build_cache())["ConsentRegistry"].abi
    return {
        str(e["name"]): {str(i["name"]): bool(i["indexed"]) for i in e["inputs"]}
        for e in abi
        if e.get("type") == "event"
    }


def test_every_event_field_of_the_abi_is_in_the_inventory() -> None:
    listed, abi = _inventory(), _abi_events()
    missing = sorted(
        f"{event}.{field}"
        for event, fields in abi.items()
        for field in fields
        if field not in listed.get(event, {})
    )
    assert not missing, f"on-chain event fields the README inventory does not list: {missing}"
    unlisted_events = sorted(set(abi) - set(listed))
    assert not unlisted_events, f"events missing from the inventory: {unlisted_events}"


def test_the_inventory_lists_nothing_the_abi_lacks_and_marks_indexed_topics() -> None:
    listed, abi = _inventory(), _abi_events()
    stale = sorted(
        f"{event}.{field}"
        for event, fields in listed.items()
        for field in fields
        if field not in abi.get(event, {})
    )
    assert not stale, f"the inventory lists fields the contract no longer has: {stale}"
    assert set(listed) == set(abi)
    wrong = sorted(
        f"{event}.{field}"
        for event, fields in listed.items()
        for field, indexed in fields.items()
        if abi[event][field] != indexed
    )
    assert not wrong, f"(indexed) marks that disagree with the ABI: {wrong}"
