"""The ``consent`` CLI: documented, helpful, honest about failures, and the demo holds.

Real services: a session stack (anvil + js-ipfs + gateway via ``ledger.devstack.stack.start_stack``
on free ports in a temp dir, checkpoints anchored every second), stopped in ``finally``; and
``consent demo --fresh``, which starts and stops its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from typer.testing import CliRunner

from ledger.chain.keys import Keystore
from ledger.chain.node import dev_accounts
from ledger.cli.demo import checkup_pdf, diagnostic_report
from ledger.cli.main import app, command_names, parse_expiry, parse_purposes
from ledger.devstack.services import free_port, stack_ports
from ledger.devstack.stack import StackConfig, StackInfo, start_stack
from ledger.paths import PROJECT_ROOT, state_paths
from ledger.protocol.consent_types import NO_EXPIRY, category_id
from tests.helpers.build import share_build_cache

runner = CliRunner()
PATIENT = dev_accounts()[3]


def invoke(*args: str, env: dict[str, str] | None = None, input: str | None = None):
    return runner.invoke(app, list(args), env=env, input=input)


# ------------------------------------------------------------------------------ docs and help


def _readme_commands() -> set[tuple[str, ...]]:
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Commands", 1)[1].split("\n## ", 1)[0]
    found: set[tuple[str, ...]] = set()
    for line in section.splitlines():
        m = re.match(r"^\|\s*`consent ([^`]*)`", line)
        if not m:
            continue
        words: list[str] = []
        for token in m[1].split():
            if not re.fullmatch(r"[a-z][a-z-]*", token):
                break
            words.append(token)
        found.add(tuple(words))
    return found


def test_every_command_is_in_the_readme_and_has_help() -> None:
    documented = _readme_commands()
    commands = set(command_names())
    assert commands, "no commands found"
    missing = sorted(" ".join(c) for c in commands - documented)
    assert not missing, f"commands missing from README.md's Commands table: {missing}"
    stale = sorted(" ".join(c) for c in documented - commands)
    assert not stale, f"README.md documents commands that do not exist: {stale}"
    for path in sorted(commands):
        result = invoke(*path, "--help")
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output, path
        assert "--help" in result.output, path


def test_the_cli_loads_no_server_code() -> None:
    """The gateway runs as a subprocess of `consent up`: the CLI imports neither it nor uvicorn."""
    probe = (
        "import sys, ledger.cli.main\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('gateway', 'uvicorn', 'fastapi', 'starlette', 'sqlmodel')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert proc.stdout.strip() == "[]", proc.stdout


def test_top_level_help_lists_the_exit_codes() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "Exit codes" in result.output


# ------------------------------------------------------------------------------------ parsing


def test_expiry_parses_durations_dates_and_never() -> None:
    assert parse_expiry("30d", now=1000) == 1000 + 30 * 86400
    assert parse_expiry("12h", now=0) == 12 * 3600
    assert parse_expiry("never") == NO_EXPIRY
    assert parse_expiry("2030-01-01") == 1893456000


def test_purposes_parse_names_numbers_and_lists() -> None:
    assert parse_purposes(["treatment", "research,3"]) == [0, 1, 3]


def test_unknown_purpose_is_one_line_exit_2(tmp_path: Path) -> None:
    result = invoke(
        "grant", "--to", "doctor", "--all", "--purpose", "tretment", "--as", "patient",
        "--home", str(tmp_path),
    )  # fmt: skip
    assert result.exit_code == 2
    assert "unknown purpose 'tretment'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output + result.stderr


# ----------------------------------------------------------------------------------- demo data


def test_demo_report_is_valid_fhir_with_loinc_codes() -> None:
    from fhir.resources.diagnosticreport import DiagnosticReport

    raw = diagnostic_report(patient=PATIENT.address, issued_at=1_770_000_000)
    report = DiagnosticReport.model_validate_json(raw)
    codes = {c.code.coding[0].code for c in report.contained if hasattr(c, "valueQuantity")}
    assert {"2093-3", "2085-9", "13457-7", "2571-8", "718-7"} <= codes
    assert PATIENT.address.lower() in raw.decode()


def test_demo_pdf_is_well_formed() -> None:
    pdf = checkup_pdf(["Title", "line (with parens)"])
    assert pdf.startswith(b"%PDF-1.4")
    assert pdf.rstrip().endswith(b"%%EOF")
    xref = int(pdf.rsplit(b"startxref\n", 1)[1].split(b"\n")[0])
    assert pdf[xref:].startswith(b"xref")
    offsets = re.findall(rb"(\d{10}) 00000 n ", pdf)
    for number, offset in enumerate(offsets, start=1):
        assert pdf[int(offset) :].startswith(b"%d 0 obj" % number)


# ------------------------------------------------------------------------------------- keys


def test_keys_round_trip(tmp_path: Path) -> None:
    env = {"CONSENT_PASSWORD": "correct horse battery staple"}
    home = str(tmp_path)
    created = invoke("key", "new", "clinic", "--home", home, "--json", env=env)
    assert created.exit_code == 0, created.output
    address = json.loads(created.stdout)["address"]

    secret = Account.create()
    key_file = tmp_path / "secret.hex"
    key_file.write_text(secret.key.hex())
    imported = invoke(
        "key", "import", "lab-2", "--key-file", str(key_file), "--home", home, "--json", env=env
    )
    assert imported.exit_code == 0, imported.output
    assert json.loads(imported.stdout)["address"] == secret.address

    listed = invoke("key", "list", "--home", home, "--json", "--no-dev")
    assert listed.exit_code == 0
    assert {(r["name"], r["address"].lower()) for r in json.loads(listed.stdout)} == {
        ("clinic", address.lower()),
        ("lab-2", secret.address.lower()),
    }
    keys = Keystore(state_paths(tmp_path).keys)
    assert keys.unlock("lab-2", env["CONSENT_PASSWORD"]).key == secret.key
    assert keys.unlock("clinic", env["CONSENT_PASSWORD"]).address == address
    assert (os.stat(state_paths(tmp_path).keys / "clinic.json").st_mode & 0o777) == 0o600

    again = invoke("key", "new", "clinic", "--home", home, env=env)
    assert again.exit_code == 2
    assert "already exists" in again.stderr


def test_wrong_password_is_one_line_exit_2(tmp_path: Path) -> None:
    home = str(tmp_path)
    assert (
        invoke("key", "new", "clinic", "--home", home, env={"CONSENT_PASSWORD": "pw-1"}).exit_code
        == 0
    )
    result = invoke("records", "--as", "clinic", "--home", home, env={"CONSENT_PASSWORD": "pw-2"})
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "wrong password for key 'clinic'" in lines[0]
    assert "Traceback" not in result.output + result.stderr


def test_gateway_down_is_one_line_exit_2(tmp_path: Path) -> None:
    gateway = f"http://127.0.0.1:{free_port()}"
    result = invoke(
        "records", "--as", "patient", "--gateway", gateway, "--home", str(tmp_path),
        env={"CONSENT_CHAIN_URL": f"http://127.0.0.1:{free_port()}"},
    )  # fmt: skip
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "not answering" in lines[0]
    assert "consent up" in lines[0]


# ------------------------------------------------------------------------------ down --reset


def _local_state(tmp_path: Path) -> Path:
    env = {"CONSENT_PASSWORD": "pw"}
    assert invoke("key", "new", "alice", "--home", str(tmp_path), env=env).exit_code == 0
    paths = state_paths(tmp_path)
    (paths.home / "chain").mkdir(exist_ok=True)
    (paths.home / "chain" / "state.json").write_text("{}")
    paths.deployment.write_text("{}")
    paths.database.write_bytes(b"")
    return paths.keys / "alice.json"


def test_down_reset_without_a_terminal_keeps_the_keystore(tmp_path: Path) -> None:
    key = _local_state(tmp_path)
    before = key.read_bytes()
    result = invoke("down", "--reset", "--home", str(tmp_path))
    assert result.exit_code == 0, result.output + result.stderr
    assert key.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys"]
    assert "except the keystore" in result.stdout


def test_down_reset_delete_keys_without_a_terminal_needs_yes(tmp_path: Path) -> None:
    key = _local_state(tmp_path)
    refused = invoke("down", "--reset", "--delete-keys", "--home", str(tmp_path))
    assert refused.exit_code == 2
    assert "--yes" in refused.stderr
    assert key.is_file()
    assert state_paths(tmp_path).deployment.is_file()  # nothing at all was deleted
    deleted = invoke("down", "--reset", "--delete-keys", "--yes", "--home", str(tmp_path))
    assert deleted.exit_code == 0, deleted.output + deleted.stderr
    assert not tmp_path.exists()


def test_delete_keys_without_reset_is_refused(tmp_path: Path) -> None:
    key = _local_state(tmp_path)
    result = invoke("down", "--delete-keys", "--yes", "--home", str(tmp_path))
    assert result.exit_code == 2
    assert key.is_file()


# ----------------------------------------------------------------------------- the real stack


@dataclass
class Stack:
    info: StackInfo
    home: Path

    @property
    def args(self) -> list[str]:
        return [
            "--gateway", self.info.gateway_url,
            "--chain", self.info.anvil.url,
            "--home", str(self.home),
        ]  # fmt: skip


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="consent-cli-", ignore_cleanup_errors=True) as tmp:
        paths = state_paths(Path(tmp) / "home")
        share_build_cache(paths.home)
        ports = stack_ports()
        config = StackConfig(
            paths=paths,
            chain_port=ports[0],
            ipfs_port=ports[1],
            gateway_port=ports[2],
            gateway_env={"CONSENT_CHECKPOINT_INTERVAL_S": "1"},
        )
        info = start_stack(config, say=lambda s: None)
        try:
            yield Stack(info, paths.home)
        finally:
            info.stop()


def _run(stack: Stack, *args: str, who: str | None = None) -> object:
    extra = ["--as", who] if who else []
    return invoke(*args, *extra, *stack.args)


def _upload(stack: Stack, tmp_path: Path, content: bytes, category: str) -> tuple[str, Path]:
    admitted = _run(stack, "admin", "add-centre", "centre")
    assert admitted.exit_code == 0, admitted.output + admitted.stderr
    source = tmp_path / f"{category}.json"
    source.write_bytes(content)
    result = _run(
        stack, "upload", str(source), "--patient", "patient", "--category", category, "--json",
        who="centre",
    )  # fmt: skip
    assert result.exit_code == 0, result.output + result.stderr
    body = json.loads(result.stdout)
    assert body["created"] is True
    assert body["cid"].startswith("bafk")
    return body["record_id"], source


def test_grant_fetch_revoke_who_read_through_the_cli(stack: Stack, tmp_path: Path) -> None:
    content = diagnostic_report(patient=PATIENT.address, issued_at=1_770_000_001)
    record_id, source = _upload(stack, tmp_path, content, "laboratory")

    listed = _run(stack, "records", "--json", who="patient")
    assert listed.exit_code == 0, listed.output + listed.stderr
    assert record_id in {r["record_id"] for r in json.loads(listed.stdout)}

    out = tmp_path / "read.json"
    denied = _run(stack, "fetch", record_id, "--purpose", "treatment", "-o", str(out), who="doctor")
    assert denied.exit_code == 1
    assert "holds no consent" in denied.stderr
    assert not out.exists()

    granted = _run(
        stack, "grant", "--to", "doctor", "--record", record_id, "--purpose", "treatment",
        "--expires", "30d", "--json", who="patient",
    )  # fmt: skip
    assert granted.exit_code == 0, granted.output + granted.stderr
    assert json.loads(granted.stdout)["status"] == "mined"

    received = json.loads(_run(stack, "consents", "--json", who="doctor").stdout)["received"]
    assert any(c["scope_id"] == record_id and c["active"] for c in received)

    fetched = _run(
        stack, "fetch", record_id, "--purpose", "treatment", "-o", str(out), who="doctor"
    )
    assert fetched.exit_code == 0, fetched.output + fetched.stderr
    assert out.read_bytes() == source.read_bytes()

    revoked = _run(stack, "revoke", "--to", "doctor", "--record", record_id, who="patient")
    assert revoked.exit_code == 0, revoked.output + revoked.stderr
    out.unlink()
    again = _run(stack, "fetch", record_id, "--purpose", "treatment", "-o", str(out), who="doctor")
    assert again.exit_code == 1
    assert not out.exists()

    who_read = _run(stack, "who-read", "--json", "--wait", "60", who="patient")
    assert who_read.exit_code == 0, who_read.output + who_read.stderr
    body = json.loads(who_read.stdout)
    about = [e for e in body["entries"] if e["record"] == record_id]
    assert [e["decision"] for e in about] == ["denied", "allowed", "denied"]
    assert all(e["inclusion"] == "verified" and e["leaf_ok"] for e in body["entries"])
    assert body["anchored"] is True


def test_unknown_record_is_one_line_exit_2(stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "x"
    result = _run(
        stack, "fetch", "0x" + "ab" * 32, "--purpose", "treatment", "-o", str(out), who="doctor"
    )
    assert result.exit_code == 2
    assert "unknown record" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_admin_add_category_lists_it_once_and_uploads_under_it_then_succeed(
    stack: Stack, tmp_path: Path
) -> None:
    content = json.dumps({"dental": "panoramic"}).encode()
    assert _run(stack, "admin", "add-centre", "centre").exit_code == 0
    source = tmp_path / "dental.json"
    source.write_bytes(content)
    refused = _run(
        stack, "upload", str(source), "--patient", "patient", "--category", "dental", "--json",
        who="centre",
    )  # fmt: skip
    assert refused.exit_code == 1, refused.output + refused.stderr
    assert "CategoryNotListed" in refused.output + refused.stderr
    added = _run(stack, "admin", "add-category", "dental", "--json", who="admin")
    assert added.exit_code == 0, added.output + added.stderr
    body = json.loads(added.stdout)
    assert body["changed"] is True
    assert body["tx_hash"].startswith("0x")
    assert _registry(stack).is_category(category_id("dental"))
    again = _run(stack, "admin", "add-category", "dental", "--json", who="admin")
    assert again.exit_code == 0
    assert json.loads(again.stdout)["changed"] is False
    record_id, _ = _upload(stack, tmp_path, content, "dental")
    assert record_id.startswith("0x")


def test_upload_dir_uploads_a_manifest_and_reports_failures(stack: Stack, tmp_path: Path) -> None:
    assert _run(stack, "admin", "add-centre", "centre").exit_code == 0
    files = tmp_path / "batch"
    files.mkdir()
    (files / "a.json").write_text('{"n": 1}')
    (files / "b.pdf").write_bytes(checkup_pdf(["batch"]))
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "file,patient,category\na.json,patient,laboratory\nb.pdf,patient,checkup\n"
        "a.json,nobody-known,laboratory\n"
    )
    result = _run(
        stack, "upload-dir", str(files), "--manifest", str(manifest), "--json", who="centre"
    )
    assert result.exit_code == 1, result.output + result.stderr
    body = json.loads(result.stdout)
    assert body["uploaded"] == 2
    assert body["failed"] == 1
    assert [r["status"] for r in body["results"]][2] == "failed"
    registry = _registry(stack)
    centre = dev_accounts()[2]
    for row in body["results"][:2]:  # the chain holds both, for this patient from this centre
        onchain = registry.record_of(bytes.fromhex(row["record_id"][2:]))
        assert (onchain.patient, onchain.centre) == (PATIENT.address, centre.address), row


def _registry(stack: Stack):
    from ledger.chain.abi import registry_abi
    from ledger.chain.node import connect
    from ledger.chain.registry import ConsentRegistry

    w3 = connect(stack.info.anvil.url)
    return ConsentRegistry(w3, stack.info.deployment.address, abi=registry_abi())


def _records_registered_since(stack: Stack, block: int) -> list[object]:
    from ledger.chain.node import connect
    from ledger.chain.registry import ConsentRegistry

    w3 = connect(stack.info.anvil.url)
    registry = ConsentRegistry(w3, stack.info.deployment.address)
    logs = registry.contract.events.RecordRegistered().get_logs(from_block=block)
    return [log for log in logs if log["blockNumber"] > block]


@pytest.mark.parametrize("hostile", ["../outside.key", "/etc/hostname", "link.json"])
def test_upload_dir_refuses_a_path_outside_dir_and_uploads_nothing(
    stack: Stack, tmp_path: Path, hostile: str
) -> None:
    from ledger.chain.node import connect

    assert _run(stack, "admin", "add-centre", "centre").exit_code == 0
    secret = tmp_path / "outside.key"
    secret.write_text("0x" + "11" * 32)
    files = tmp_path / "batch"
    files.mkdir()
    (files / "a.json").write_text(f'{{"batch": "{hostile}"}}')
    (files / "link.json").symlink_to(secret)
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        f"file,patient,category\na.json,patient,laboratory\n{hostile},patient,laboratory\n"
    )
    before = _run(stack, "records", "--json", who="centre")
    assert before.exit_code == 0, before.output + before.stderr
    head = connect(stack.info.anvil.url).eth.block_number
    result = _run(
        stack, "upload-dir", str(files), "--manifest", str(manifest), "--json", who="centre"
    )
    assert result.exit_code == 2, result.output + result.stderr
    assert f"line 3 {hostile!r}" in result.stderr
    assert "nothing was uploaded" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert _records_registered_since(stack, head) == []
    after = _run(stack, "records", "--json", who="centre")
    assert json.loads(after.stdout) == json.loads(before.stdout)


def test_upload_dir_names_every_refused_row(stack: Stack, tmp_path: Path) -> None:
    files = tmp_path / "batch"
    files.mkdir()
    (files / "inside").mkdir()
    (files / "inside" / "ok.json").write_text("{}")
    (files / "up").symlink_to(tmp_path)
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "file,patient,category\ninside/ok.json,patient,x\n../m.csv,patient,x\n"
        "/etc/hostname,patient,x\nup/m.csv,patient,x\ninside,patient,x\n"
    )
    result = _run(stack, "upload-dir", str(files), "--manifest", str(manifest), who="centre")
    assert result.exit_code == 2, result.output + result.stderr
    for line, name in ((3, "../m.csv"), (4, "/etc/hostname"), (5, "up/m.csv"), (6, "inside")):
        assert f"line {line} {name!r}" in result.stderr
    assert "'inside/ok.json'" not in result.stderr
    assert "refused 4 of 5 rows" in result.stderr


# ------------------------------------------------------------------------------------- demo


def _demo_held(result: Any) -> int:
    assert result.exit_code == 0, result.output + result.stderr
    output = str(result.output)
    held = re.search(r"all (\d+) expectations held", output)
    assert held is not None, output
    assert "✗" not in output  # no expectation failed, no proof failed
    assert re.search(r"tx 0x[0-9a-f]{64}", output)
    return int(held[1])


def test_demo_exits_0_on_a_fresh_federation() -> None:
    result = invoke("demo", "--fresh")
    # one per step of the federated story (8 screens, the outage included): none was skipped
    assert _demo_held(result) == 21, result.output
    out = result.output
    assert "2 of 3 gateways must release a record's key" in out
    assert "custody set (from the chain) 0x" in out
    assert "killed gateway 0" in out
    assert "restarted gateway 0" in out
    assert len(re.findall(r"released share \d \(consent checked at block \d+\)", out)) == 6
    assert "the audit of the 3 logs is clean (verdict: clean)" in out
    assert "skipped" not in out


def test_demo_tells_the_single_gateway_story_on_a_running_stack(stack: Stack) -> None:
    # the session stack has no federation: the demo keeps the single-gateway story (7 screens)
    result: Any = _run(stack, "demo")
    assert _demo_held(result) == 16, result.output
    assert "single gateway (no federation" in result.output
    assert "released share" not in result.output


def test_the_patient_sees_every_break_glass_opening(stack: Stack, tmp_path: Path) -> None:
    from ledger.chain.keys import DEV_NAMES
    from ledger.chain.node import connect
    from ledger.chain.registry import ConsentRegistry

    content = diagnostic_report(patient=PATIENT.address, issued_at=1_770_000_002)
    record_id, _ = _upload(stack, tmp_path, content, "laboratory")
    denied = _run(stack, "fetch", record_id, "--purpose", "treatment", "-o",
                  str(tmp_path / "x"), who="doctor")  # fmt: skip
    assert denied.exit_code == 1  # a logged decision, so who-read has a checkpoint to show
    for name in ("emergency", "researcher"):
        admitted = _run(stack, "admin", "add-emergency", name)
        assert admitted.exit_code == 0, admitted.output + admitted.stderr
    accounts = dict(zip(DEV_NAMES, dev_accounts(), strict=True))
    reg = ConsentRegistry(connect(stack.info.anvil.url), stack.info.deployment.address)
    closed_reason = hashlib.sha256(b"found unconscious, ward 3").digest()
    open_reason = hashlib.sha256(b"cardiac arrest in the street").digest()
    first = reg.open_break_glass(accounts["emergency"], PATIENT.address, 3600, closed_reason)
    reg.close_break_glass(PATIENT, PATIENT.address, accounts["emergency"].address)
    second = reg.open_break_glass(accounts["researcher"], PATIENT.address, 600, open_reason)

    def check(openings: list[dict]) -> None:
        mine = {o["reason_hash"]: o for o in openings}
        closed, still_open = mine["0x" + closed_reason.hex()], mine["0x" + open_reason.hex()]
        assert closed["institution"] == accounts["emergency"].address
        assert closed["block_number"] == first.block_number
        assert closed["until"] == closed["opened_at"] + 3600
        assert closed["closed_by"] == PATIENT.address
        assert closed["reopens_at"] == closed["closed_at"] + 7 * 24 * 3600
        assert still_open["institution"] == accounts["researcher"].address
        assert still_open["block_number"] == second.block_number
        assert still_open["until"] == still_open["opened_at"] + 600
        assert still_open["closed_at"] is None

    consents = _run(stack, "consents", "--json", who="patient")
    assert consents.exit_code == 0, consents.output + consents.stderr
    check(json.loads(consents.stdout)["break_glass"])
    table = _run(stack, "consents", who="patient")
    assert "break-glass openings of my records" in table.stdout
    assert "0x" + open_reason.hex() in table.stdout
    who_read = _run(stack, "who-read", "--json", "--wait", "60", who="patient")
    assert who_read.exit_code == 0, who_read.output + who_read.stderr
    check(json.loads(who_read.stdout)["break_glass"])
    printed = _run(stack, "who-read", who="patient")
    assert "0x" + closed_reason.hex() in printed.stdout


def test_nonce_burn_voids_a_signed_request_held_back(stack: Stack) -> None:
    from ledger.chain.node import connect
    from ledger.chain.registry import ConsentRegistry
    from ledger.protocol import eip712
    from ledger.protocol.consent_types import ALL_SCOPE_ID, ScopeKind
    from ledger.protocol.contract_errors import InvalidAccountNonce

    reg = ConsentRegistry(connect(stack.info.anvil.url), stack.info.deployment.address)
    doctor, relayer = dev_accounts()[4], dev_accounts()[5]
    held = eip712.GrantRequest(
        patient=PATIENT.address, grantee=doctor.address, scope_kind=ScopeKind.ALL,
        scope_id=ALL_SCOPE_ID, purposes=1, expires_at=NO_EXPIRY, signer=PATIENT.address,
        nonce=reg.nonce_of(PATIENT.address), deadline=2**40,
    )  # fmt: skip
    signature = eip712.sign(PATIENT, reg.domain, held)
    burned = _run(stack, "nonce", "burn", "--json", who="patient")
    assert burned.exit_code == 0, burned.output + burned.stderr
    body = json.loads(burned.stdout)
    assert (body["burned_nonce"], body["next_nonce"]) == (held.nonce, held.nonce + 1)
    with pytest.raises(InvalidAccountNonce):
        reg.grant_by_sig(relayer, held, signature)
    terms = reg.consent_of(PATIENT.address, doctor.address, ScopeKind.ALL, ALL_SCOPE_ID)
    assert terms.purposes == 0


# ----------------------------------------------------------------- a client without node or solc

_NO_SOLC = '''"""Put first on PYTHONPATH by tests/test_cli.py: solcx cannot even be imported."""
import sys


class _NoSolcx:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "solcx" or name.startswith("solcx."):
            raise ModuleNotFoundError(f"{name} is blocked: the client must not compile")
        return None


sys.meta_path.insert(0, _NoSolcx())
'''


def _without_solc(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``python ARGV`` with no node, npm or solc on PATH and solcx impossible to import."""
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(_NO_SOLC)
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env |= {"PATH": str(empty_bin), "PYTHONPATH": f"{hook}{os.pathsep}{PROJECT_ROOT}"}
    return subprocess.run(
        [sys.executable, *argv],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip


def _consent_without_solc(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _without_solc(tmp_path, "-m", "ledger.cli", *args)


def test_the_guard_refuses_compiling_and_has_no_node_on_path(tmp_path: Path) -> None:
    """The guard of the test below holds, so that test cannot pass by accident."""
    script = tmp_path / "check.py"
    script.write_text(
        "import shutil, sys\n"
        "assert [t for t in ('node', 'npm', 'solc') if shutil.which(t)] == []\n"
        "from ledger.chain.build import BuildError, compile_contracts\n"
        "try:\n"
        "    import solcx\n"
        "except ModuleNotFoundError as exc:\n"
        "    assert 'must not compile' in str(exc)\n"
        "else:\n"
        "    sys.exit(5)\n"
        "try:\n"
        "    compile_contracts()\n"
        "except BuildError as exc:\n"
        "    sys.exit(0 if 'must not compile' in str(exc) else 3)\n"
        "sys.exit(4)\n"
    )
    proc = _without_solc(tmp_path, str(script))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_non_stack_commands_run_without_node_or_solc(stack: Stack, tmp_path: Path) -> None:
    """`consent audit run`, `consents` and `key list` against the session stack, from a home
    holding only the deployment file (no compile cache), with solc refused: a command that
    compiled Solidity at run time fails here."""
    home = tmp_path / "client-home"
    home.mkdir()
    (home / "deployment.json").write_bytes(state_paths(stack.home).deployment.read_bytes())
    chain = ["--chain", stack.info.anvil.url]
    export = f"{stack.info.gateway_url}/v1/access-log/export"
    audited = _consent_without_solc(
        tmp_path, "audit", "run", "--home", str(home), *chain, "--access-log", export,
        "--as", "auditor", "--json",
    )  # fmt: skip
    assert audited.returncode == 0, audited.stdout + audited.stderr
    report = json.loads(audited.stdout)
    assert report["verdict"] == "clean", report
    consents = _consent_without_solc(
        tmp_path, "consents", "--as", "patient", "--json", "--home", str(home), *chain,
        "--gateway", stack.info.gateway_url,
    )  # fmt: skip
    assert consents.returncode == 0, consents.stdout + consents.stderr
    assert "break_glass" in json.loads(consents.stdout)
    keys = _consent_without_solc(tmp_path, "key", "list", "--json", "--home", str(home))
    assert keys.returncode == 0, keys.stdout + keys.stderr
    assert PATIENT.address in {k["address"] for k in json.loads(keys.stdout)}
