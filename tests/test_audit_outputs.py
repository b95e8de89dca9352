"""Reports (terminal, JSON, HTML), FHIR export and the ``consent audit`` commands."""

from __future__ import annotations

import json
import re

import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.consent import Consent
from rich.console import Console
from typer.testing import CliRunner

from ledger.audit.fhir import audit_event_resources, consent_resources, export_fhir
from ledger.audit.html_report import render_html, render_terminal, report_to_json
from ledger.audit.replay import BlockClock
from ledger.audit.run import run_audit
from ledger.cli.audit import app
from tests.helpers.audit_world import increase_time, self_named_export
from tests.helpers.build import share_build_cache


@pytest.fixture
def report(world):
    return run_audit(
        world.rpc(), registry=world.address, deploy_block=world.deploy_block,
        decoder=world.decoder(), access_logs=[world.export()], target_block=world.end_block,
    )  # fmt: skip


def tampered_report(world):
    leaves = list(world.leaves)
    leaves[7], leaves[8] = leaves[8], leaves[7]
    return run_audit(
        world.rpc(), registry=world.address, deploy_block=world.deploy_block,
        decoder=world.decoder(), access_logs=[world.export(leaves)], target_block=world.end_block,
    )  # fmt: skip


def test_json_report_is_complete_and_serialisable(report) -> None:
    doc = json.loads(json.dumps(report_to_json(report)))
    assert doc["verdict"] == "clean"
    assert doc["exit_code"] == 0
    assert doc["replay"]["complete"] is True
    assert doc["replay"]["computed_digest"] == doc["replay"]["onchain_digest"]
    (log,) = doc["access_logs"]
    assert len(log["entries"]) == 13
    assert [c["tree_size"] for c in log["checkpoints"]] == [6, 11]
    assert doc["findings"][0]["kind"] == "unanchored_entries"


def test_terminal_report_names_the_verdict_and_findings(world) -> None:
    console = Console(record=True, width=140)
    render_terminal(tampered_report(world), console)
    text = console.export_text()
    assert "VIOLATIONS FOUND" in text
    assert "log_entries_reordered" in text


def test_html_report_is_self_contained_with_a_timeline_per_patient(world, report) -> None:
    page = render_html(report)
    assert page.startswith("<!doctype html>")
    assert page.count("<svg") == 1  # one patient
    # No external assets: nothing fetched by src= / href= / url(), only the SVG namespace.
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", page)
    assert "url(" not in page
    assert "<script" not in page
    assert "revoked all records" in page  # the insurer's revoke, as a tooltip
    assert "break-glass opened" in page
    assert "entry 8: allowed" in page
    bad = render_html(tampered_report(world))
    assert "violations" in bad
    assert "log_entries_reordered" in bad


def test_fhir_consents_and_audit_events_validate(world, report) -> None:
    clock = BlockClock(world.rpc())
    consents = consent_resources(
        report.timeline, chain_id=31337, at_block=world.end_block, block_times=clock.timestamps
    )
    assert len(consents) == 3
    by_status = {
        c.provision.actor[0].reference.identifier.value.split(":")[-1]: c.status for c in consents
    }
    a = world.actors
    assert by_status == {
        a.doctor.address: "active",
        a.researcher.address: "inactive",
        a.insurer.address: "inactive",
    }
    for consent in consents:
        again = Consent.model_validate_json(consent.model_dump_json())
        assert again.provision.type == "permit"
        assert (
            again.provision.purpose[0].system
            == "http://terminology.hl7.org/CodeSystem/v3-ActReason"
        )
    codes = {c.provision.purpose[0].code for c in consents}
    assert codes == {"TREAT", "HRESCH", "COVERAGE"}
    events = audit_event_resources(report.logs, report.timeline, chain_id=31337)
    assert len(events) == 13
    ids = {c.id for c in consents}
    with_policy = [e for e in events if e.agent[0].policy]
    assert {p for e in with_policy for p in e.agent[0].policy} <= {f"Consent/{i}" for i in ids}
    assert len(with_policy) == 4  # record, category, all, and the unanchored record read
    assert {e.outcome for e in events} == {"0", "4"}


def test_export_fhir_writes_valid_files_and_a_bundle(world, report, tmp_path) -> None:
    written = export_fhir(report, tmp_path, block_times=BlockClock(world.rpc()).timestamps)
    assert (written.consents, written.audit_events) == (3, 13)
    for path in (tmp_path / "Consent").glob("*.json"):
        Consent.model_validate_json(path.read_text())
    for path in (tmp_path / "AuditEvent").glob("*.json"):
        AuditEvent.model_validate_json(path.read_text())
    bundle = Bundle.model_validate_json(written.bundle.read_text())
    assert len(bundle.entry) == 16


# ------------------------------------------------------------------------------ CLI

runner = CliRunner()


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One state directory for the CLI tests, on the session's contract build cache."""
    home = tmp_path_factory.mktemp("audit-home")
    share_build_cache(home)
    return home


def cli(world, home, *args: str):
    base = [
        "--rpc",
        world.url,
        "--registry",
        world.address,
        "--from-block",
        str(world.deploy_block),
        "--home",
        str(home),
    ]
    return runner.invoke(app, [args[0], *base, *args[1:]])


def test_cli_run_clean_exits_zero_with_json(world, tmp_path, home) -> None:
    log = tmp_path / "log.json"
    log.write_text(json.dumps(world.export_doc()))
    result = cli(
        world,
        home,
        "run",
        "--access-log",
        str(log),
        "--at-block",
        str(world.end_block),
        "--json",
        "--html",
        str(tmp_path / "r.html"),
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["verdict"] == "clean"
    assert (tmp_path / "r.html").read_text().startswith("<!doctype html>")


def test_cli_run_on_a_tampered_log_exits_one(world, tmp_path, home) -> None:
    leaves = list(world.leaves)
    leaves[1] = leaves[0]
    log = tmp_path / "log.json"
    log.write_text(json.dumps(world.export_doc(leaves)))
    result = cli(world, home, "run", "--access-log", str(log), "--at-block", str(world.end_block))
    assert result.exit_code == 1
    assert "VIOLATIONS FOUND" in result.output


def test_cli_run_without_a_node_exits_two(home) -> None:
    result = runner.invoke(
        app,
        [
            "run",
            "--rpc",
            "http://127.0.0.1:9",
            "--registry",
            "0x" + "11" * 20,
            "--from-block",
            "0",
            "--home",
            str(home),
        ],
    )
    assert result.exit_code == 2


def test_cli_run_with_missing_deployment_file_exits_two(tmp_path) -> None:
    result = runner.invoke(app, ["run", "--deployment", str(tmp_path / "nope.json")])
    assert result.exit_code == 2


def test_cli_state_at_a_past_block(world, tmp_path, home) -> None:
    block = world.checkpoints[0].block_number
    result = cli(
        world,
        home,
        "state",
        "--patient",
        world.actors.patient.address,
        "--at-block",
        str(block),
        "--json",
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    a = world.actors
    assert {(r["grantee"], r["basis"]) for r in doc["in_force"]} == {
        (a.doctor.address, "Record"),
        (a.researcher.address, "Category"),
        (a.insurer.address, "All"),
    }  # fmt: skip
    later = cli(
        world, home, "state", "--patient", a.patient.address, "--at-block", str(world.end_block)
    )
    assert later.exit_code == 0, later.output
    assert "Guardian" in later.output
    assert "Record" in later.output


def test_cli_export_fhir(world, tmp_path, home) -> None:
    log = tmp_path / "log.json"
    log.write_text(json.dumps(world.export_doc()))
    out = tmp_path / "fhir"
    result = cli(world, home, "export", "--fhir", str(out), "--access-log", str(log))
    assert result.exit_code == 0, result.output
    assert (out / "bundle.json").is_file()
    assert len(list((out / "Consent").glob("*.json"))) == 3


@pytest.mark.parametrize("command", ["run", "state", "export"])
def test_every_audit_command_has_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert len(result.output) > 200


def test_consent_audit_run_on_a_self_named_export_with_entries_dropped_exits_non_zero(
    world, tmp_path, home
) -> None:
    """The reproduced attack, through the ``consent`` command line."""
    from ledger.cli.main import app as consent_app

    log = tmp_path / "self-named.json"
    log.write_text(
        json.dumps(self_named_export(world, name=world.actors.stranger.address).to_document())
    )
    args = [
        "audit", "run", "--rpc", world.url, "--registry", world.address,
        "--from-block", str(world.deploy_block), "--home", str(home),
        "--access-log", str(log), "--at-block", str(world.end_block), "--json",
    ]  # fmt: skip
    result = runner.invoke(consent_app, args)
    assert result.exit_code == 2, result.output
    doc = json.loads(result.output)
    assert doc["verdict"] == "unverified"
    assert {"log_not_a_gateway", "log_not_supplied"} <= {f["kind"] for f in doc["findings"]}
    assert doc["gateways"] == [
        {
            "gateway": world.actors.gateway.address,
            "held_role": [{"granted_at": doc["gateways"][0]["held_role"][0]["granted_at"],
                           "revoked_at": None}],
            "checkpoints": 2,
            "last_checkpoint": {"tree_size": 11, "block_number": world.checkpoints[1].block_number},
            "log_supplied": False,
            "sources": [],
            "federation_blocks": [],
        }
    ]  # fmt: skip
    # The terminal report names the missing log.
    text = runner.invoke(consent_app, args[:-1])
    assert text.exit_code == 2
    assert "log NOT supplied" in text.output


def test_cli_run_without_the_logs_of_a_gateway_that_anchored_exits_two(world, home) -> None:
    result = cli(world, home, "run", "--at-block", str(world.end_block))
    assert result.exit_code == 2, result.output
    assert "log_not_supplied" in result.output


def test_cli_run_with_a_stale_unanchored_tail_exits_two(world, chain, tmp_path, home) -> None:
    log = tmp_path / "log.json"
    log.write_text(json.dumps(world.export_doc()))
    increase_time(chain, 120)
    stale = cli(world, home, "run", "--access-log", str(log), "--json")
    assert stale.exit_code == 2, stale.output
    assert "unanchored_stale" in {f["kind"] for f in json.loads(stale.output)["findings"]}
    relaxed = cli(world, home, "run", "--access-log", str(log), "--anchor-interval", "600")
    assert relaxed.exit_code == 0, relaxed.output


def test_html_timeline_ends_each_grant_where_the_consent_state_does(anvil, chain, request) -> None:
    """A grant's bar ends where the replayed consent state ends it: a replacing grant, a
    revoke, or for a guardian's grant the removal of its guardian."""
    from ledger.chain.rpc import RpcClient
    from ledger.protocol.consent_types import ALL_SCOPE_ID, ScopeKind
    from ledger.protocol.events import EventDecoder, registry_event_abi
    from tests.helpers.registry import deploy_env, register

    env = deploy_env(chain, anvil.accounts)
    reg = env.client(chain)
    a = env.actors
    p = a.patient.address
    register(reg, env, p)
    reg.grant(a.patient, a.doctor.address, ScopeKind.ALL, ALL_SCOPE_ID, 1, 2**40)
    reg.set_guardian(a.patient, a.guardian.address)
    reg.grant_for(a.guardian, p, a.stranger.address, ScopeKind.ALL, ALL_SCOPE_ID, 1, 2**40)
    removed = reg.remove_guardian(a.patient)
    replaced = reg.grant(a.patient, a.doctor.address, ScopeKind.ALL, ALL_SCOPE_ID, 3, 2**40)
    revoked = reg.revoke(a.patient, a.doctor.address, ScopeKind.ALL, ALL_SCOPE_ID)
    rpc = RpcClient(anvil.url)
    request.addfinalizer(rpc.close)
    report = run_audit(
        rpc, registry=env.address, deploy_block=env.deploy_block,
        decoder=EventDecoder(registry_event_abi(env.abi)), target_block=chain.eth.block_number,
    )  # fmt: skip
    bars = re.findall(r"<rect [^>]*><title>([^<]*)</title></rect>", render_html(report))
    grants = sorted(t.rsplit("; ", 1)[1] for t in bars if t.startswith("all records"))
    assert grants == sorted(
        [
            f"ended with its guardian at block {removed.block_number}",
            f"replaced at block {replaced.block_number}",
            f"revoked at block {revoked.block_number}",
        ]
    )
