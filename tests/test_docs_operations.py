"""docs/operations.md says what the code does: its settings reference is every setting the
gateway (and `consent gateway serve`) reads, with its default, and nothing else; its metrics
are the ones /metrics exports; the example config and the systemd unit are the shipped ones."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic.fields import FieldInfo

from gateway.metrics import Metrics
from gateway.settings import CONFIG_FILE_ENV, Settings
from ledger.cli.operator import SERVER_SETTINGS, server_options
from ledger.paths import PROJECT_ROOT

DOCS = PROJECT_ROOT / "docs"
OPERATIONS = (DOCS / "operations.md").read_text(encoding="utf-8")
ROW = re.compile(r"^\| `([a-z_]+)` \| `(CONSENT_[A-Z_]+)` \| (.+?) \| (.*) \|$")


def _section(title: str) -> str:
    return OPERATIONS.split(title, 1)[1].split("\n## ", 1)[0]


def _table_after(marker: str) -> dict[str, tuple[str, str]]:
    """``key -> (variable, default)`` of the first table after ``marker``."""
    text = OPERATIONS.split(marker, 1)[1].lstrip("\n")
    rows: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        if not line.startswith("|"):
            if rows:
                break
            continue
        m = ROW.match(line)
        if m:
            assert m[1] not in rows, f"{m[1]} listed twice"
            rows[m[1]] = (m[2], m[3])
    return rows


def _render(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value}`"


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "`$CONSENT_HOME`, else `./.consent`"
    return _render(field.default)


def test_the_gateway_settings_reference_is_every_setting_with_its_default() -> None:
    documented = _table_after("`[gateway]`:")
    fields = Settings.model_fields
    assert set(documented) == set(fields), (
        f"in docs but not in gateway/settings.py: {sorted(set(documented) - set(fields))}; "
        f"in gateway/settings.py but not in docs: {sorted(set(fields) - set(documented))}"
    )
    for name, (variable, default) in documented.items():
        assert variable == f"CONSENT_{name.upper()}", name
        assert default == _default(fields[name]), (name, default, _default(fields[name]))


def test_every_gateway_setting_is_read_by_the_code() -> None:
    sources = {
        path: path.read_text(encoding="utf-8") for path in (PROJECT_ROOT / "gateway").rglob("*.py")
    }
    for name in Settings.model_fields:
        read = re.compile(rf"\b(settings|self)\.{name}\b")
        readers = [p.name for p, text in sources.items() if read.search(text)]
        assert readers, f"setting {name} is declared but never read"


def test_the_server_settings_reference_is_what_serve_reads() -> None:
    documented = _table_after("`[server]` (also")
    assert list(documented) == [s.key for s in SERVER_SETTINGS]
    source = (PROJECT_ROOT / "ledger" / "cli" / "operator.py").read_text(encoding="utf-8")
    for setting in SERVER_SETTINGS:
        variable, default = documented[setting.key]
        assert variable == setting.env
        assert default == _render(setting.default)
        assert f'options["{setting.key}"]' in source, f"{setting.key} is never read"


def _exported_names() -> set[str]:
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("",)}
    return {
        family.name + suffix
        for family in Metrics().registry.collect()
        for suffix in suffixes[family.type]
    }


def test_the_documented_metrics_are_the_exported_ones() -> None:
    monitoring = _section("## Monitoring")
    table = set(re.findall(r"^\| `(gateway_[a-z_]+)` \|", monitoring, re.M))
    exported = _exported_names()
    assert table == exported, (sorted(table - exported), sorted(exported - table))
    named_anywhere = set(re.findall(r"\bgateway_[a-z_]+", OPERATIONS)) - set(Settings.model_fields)
    assert named_anywhere <= exported, sorted(named_anywhere - exported)


def test_the_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    path = DOCS / "gateway.example.toml"
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    assert set(data) == {"gateway", "server"}
    assert set(data["gateway"]) <= set(Settings.model_fields)
    # its secret files live on the gateway host: stand in for them with the environment,
    # which overrides the file
    for name, value in {
        "KEK": "9f" + "".join(f"{i:02x}" for i in range(31)),
        "GATEWAY_KEY": "".join(f"{i + 1:02x}" for i in range(32)),
        "REGISTRAR_KEY": "".join(f"{i + 40:02x}" for i in range(32)),
        "RELAYER_KEY": "".join(f"{i + 80:02x}" for i in range(32)),
    }.items():
        monkeypatch.setenv(f"CONSENT_{name}", value)
    monkeypatch.setenv(CONFIG_FILE_ENV, str(path))
    monkeypatch.delenv("CONSENT_HOME", raising=False)
    settings = Settings()
    assert settings.siwe_domain == "gateway.health-commission.example"
    assert settings.siwe_uri == "https://gateway.health-commission.example"
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert settings.max_head_age_s == 10
    options = server_options(path, environ={})
    assert options["forwarded_allow_ips"] == "127.0.0.1"
    assert options["workers"] == 2
    assert server_options(path, environ={"CONSENT_SERVER_PORT": "9000"})["port"] == 9000


def test_the_runbook_covers_what_an_operator_needs() -> None:
    for heading in (
        "## Production architecture",
        "## Checklist",
        "## Backups",
        "## Monitoring",
        "## Keys",
        "## Upgrades",
        "## Incidents",
        "## systemd",
    ):
        assert f"\n{heading}\n" in OPERATIONS, heading
    unit = (DOCS / "consent-gateway.service").read_text(encoding="utf-8")
    assert unit in OPERATIONS  # the unit shown is the unit shipped
    assert "consent gateway serve --config" in unit


def test_a_config_file_value_is_overridden_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kek = tmp_path / "kek.hex"
    kek.write_text("ab" + "".join(f"{i:02x}" for i in range(31)))
    kek.chmod(0o600)
    config = tmp_path / "gateway.toml"
    config.write_text(
        "[gateway]\n"
        'kek_file = "kek.hex"\n'
        'registry_address = "0x5FbDB2315678afecb367f032d93F642f64180aa3"\n'
        "relay_gas_cap = 300000\n"
        "checkpoint_every = 4\n"
        + "".join(
            f'{n}_key = "{"".join(f"{i + k:02x}" for i in range(32))}"\n'
            for n, k in (("gateway", 1), ("registrar", 50), ("relayer", 100))
        )
    )
    monkeypatch.setenv(CONFIG_FILE_ENV, str(config))
    monkeypatch.setenv("CONSENT_CHECKPOINT_EVERY", "7")
    settings = Settings()
    assert settings.kek_file == kek  # relative to the file's directory
    assert settings.relay_gas_cap == 300000  # from the file
    assert settings.checkpoint_every == 7  # the environment wins
