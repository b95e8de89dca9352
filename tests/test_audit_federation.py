"""The audit of a custody federation: three real gateways (2-of-3) on a registry of their own, the
session's anvil and IPFS node. A record is uploaded through the federation and read twice
(a doctor under consent, the patient as owner), each read releasing two shares, each release
logged by the gateway that made it. Then:

- with the three logs, the audit is clean and the JSON, terminal (``consent audit run``) and
  HTML reports list the federation: threshold, every member with its custody key, URL, log
  status and last anchored checkpoint;
- without the log of the member that released nothing and so anchored nothing, the audit cannot
  verify (exit 2) and names it as a federation member: it holds a key share of every record;
- without the log of a member that released, likewise;
- the FHIR export holds one AuditEvent per release, the releasing gateway as its custodian agent
  besides the requester, validated with ``fhir.resources``;
- after the federation changes, both sets are listed, the new one in force, and the former
  member's log is still needed;
- a member that releases its share without consent (the attack performed) is named, its log
  "violations" in the JSON and HTML federation sections, its release an AuditEvent with the
  stranger and the rogue gateway as agents.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from fhir.resources.R4B.bundle import Bundle
from rich.console import Console
from typer.testing import CliRunner
from web3 import Web3

from ledger.audit.export import load_access_log
from ledger.audit.fhir import PARTICIPANT_TYPE, audit_event_resources, export_fhir
from ledger.audit.html_report import render_html, render_terminal, report_to_json
from ledger.audit.replay import BlockClock
from ledger.audit.report import AuditReport, FindingKind
from ledger.audit.run import run_audit
from ledger.chain.abi import interface_abi
from ledger.chain.rpc import RpcClient
from ledger.cli.main import app
from ledger.client import Gateway
from ledger.federation import fetch_federated, upload_sealed
from ledger.protocol import custody
from ledger.protocol.consent_types import ScopeKind, category_id
from ledger.protocol.events import EventDecoder, registry_event_abi
from tests.helpers.audit_world import audit_time_skew
from tests.helpers.build import share_build_cache
from tests.helpers.federation import (
    Federation,
    close_federation,
    export_logs,
    release_without_consent,
    start_federation,
)
from tests.helpers.gateway import login, new_account

LAB = category_id("laboratory")
FAR = 2**40
runner = CliRunner()


@dataclass
class Audited:
    fed: Federation
    chain_url: str
    chain_id: int
    logs: list[Path]  # each member's exported log, in share order
    end_block: int  # the audited block
    skew: float
    releases: list[tuple[str, str]]  # (gateway, reader) of every share released
    home: Path

    def report(self, logs: list[Path] | None = None, *, at: int | None = None) -> AuditReport:
        rpc = RpcClient(self.chain_url, client=httpx.Client(timeout=60))
        try:
            return run_audit(
                rpc,
                registry=self.fed.registry.address,
                deploy_block=self.fed.stacks[0].settings.deployment_block(),
                decoder=EventDecoder(registry_event_abi(interface_abi())),
                access_logs=[load_access_log(p) for p in (self.logs if logs is None else logs)],
                target_block=self.end_block if at is None else at,
                max_time_skew_s=self.skew,
            )
        finally:
            rpc.close()

    def cli(self, *args: str, logs: list[Path] | None = None) -> Any:
        argv = [
            "audit", "run", "--rpc", self.chain_url, "--registry", self.fed.registry.address,
            "--from-block", str(self.fed.stacks[0].settings.deployment_block()),
            "--home", str(self.home), "--at-block", str(self.end_block),
            "--max-time-skew", str(self.skew),
        ]  # fmt: skip
        for path in self.logs if logs is None else logs:
            argv += ["--access-log", str(path)]
        return runner.invoke(app, [*argv, *args], env={"COLUMNS": "220"})


def _read(fed: Federation, reader: LocalAccount, rid: str) -> list[tuple[str, str]]:
    opened = fetch_federated(reader, rid, registry=fed.registry, purpose="treatment")
    assert opened.plaintext
    return [(r.gateway, reader.address) for r in opened.releases if r.release is not None]


@pytest.fixture(scope="module")
def audited(
    tmp_path_factory: pytest.TempPathFactory,
    anvil: Any,
    w3: Web3,
    ipfs_node: Any,
    service_dir: Path,
) -> Iterator[Audited]:
    fed = start_federation(
        home=lambda i: tmp_path_factory.mktemp(f"audit-member{i}"),
        w3=w3,
        chain_url=anvil.url,
        ipfs_url=ipfs_node.url,
        service_dir=service_dir,
        checkpoint_every=1,
    )
    try:
        patient, doctor = new_account(), new_account()
        with Gateway(fed.url(0)) as gw:
            up = upload_sealed(
                gw.login(fed.stacks[0].centre),
                b"haemoglobin 141 g/L",
                registry=fed.registry,
                patient=patient.address,
                category=LAB,
            )
        rid = up.record.record_id
        fed.registry.reset_nonces()
        w3.provider.make_request("anvil_setBalance", [patient.address, hex(10**20)])  # type: ignore[arg-type]
        fed.registry.grant(patient, doctor.address, ScopeKind.CATEGORY, LAB, 1, FAR)
        releases = _read(fed, doctor, rid) + _read(fed, patient, rid)
        out = tmp_path_factory.mktemp("federation-logs")
        logs = []
        for i, doc in enumerate(export_logs(fed, new_account())):
            path = out / f"member{i}.json"
            path.write_text(json.dumps(doc), encoding="utf-8")
            logs.append(path)
        home = tmp_path_factory.mktemp("audit-federation-home")
        share_build_cache(home)
        yield Audited(
            fed=fed,
            chain_url=anvil.url,
            chain_id=int(w3.eth.chain_id),
            logs=logs,
            end_block=int(w3.eth.block_number),
            skew=audit_time_skew(w3),
            releases=releases,
            home=home,
        )
    finally:
        close_federation(fed)


def _quiet(a: Audited) -> int:
    """The member no read asked (the first ``threshold`` members serve every read)."""
    asked = {gw for gw, _ in a.releases}
    (quiet,) = [i for i in range(3) if a.fed.address(i) not in asked]
    return quiet


def test_with_every_log_the_audit_is_clean_and_every_report_lists_the_federation(
    audited: Audited, tmp_path: Path
) -> None:
    fed = audited.fed
    report = audited.report()
    assert report.exit_code == 0, [(f.kind, f.message) for f in report.findings]
    assert report.federation is not None
    assert report.federation.threshold == 2
    assert list(report.federation.gateways) == [fed.address(i) for i in range(3)]
    # JSON: the set in force, each member with its custody key, URL and its verified log.
    doc = json.loads(json.dumps(report_to_json(report)))
    assert doc["verdict"] == "clean"
    (only,) = doc["federation"]["sets"]
    assert only == doc["federation"]["in_force"]
    assert only["threshold"] == 2
    assert only["in_force"] is True
    assert only["until_block"] is None
    members = only["members"]
    assert [m["gateway"] for m in members] == [fed.address(i) for i in range(3)]
    assert [m["url"] for m in members] == [fed.url(i) for i in range(3)]
    assert [m["custody_key"] for m in members] == [
        "0x" + custody.custody_public_key(k).hex() for k in fed.custody_keys
    ]
    assert {m["log"]["status"] for m in members} == {"verified"}
    released = Counter(gw for gw, _ in audited.releases)
    assert {m["gateway"]: m["log"]["releases"] for m in members if m["log"]["releases"]} == dict(
        released
    )
    for m in members:
        if m["gateway"] in released:
            assert m["log"]["last_checkpoint"]["tree_size"] == released[m["gateway"]]
        else:
            assert m["log"]["last_checkpoint"] is None
    assert {g["gateway"] for g in doc["gateways"] if g["federation_blocks"]} == {
        fed.address(i) for i in range(3)
    }
    # Terminal.
    console = Console(record=True, width=220)
    render_terminal(report, console)
    text = console.export_text()
    assert "CLEAN" in text
    assert "2 of 3, set at block" in text
    for i in range(3):
        assert f"member {i}" in text
        assert f"{fed.address(i)} {fed.url(i)}" in text
    assert text.count("log verified") == 3
    # HTML.
    page = render_html(report)
    section = page[page.index("<h2>Federation</h2>") :]
    for i in range(3):
        assert fed.address(i) in section
        assert fed.url(i) in section
    assert section.count("log verified") == 3
    # The command line, with the three logs given by repeating --access-log.
    html = tmp_path / "report.html"
    result = audited.cli("--json", "--html", str(html))
    assert result.exit_code == 0, result.output
    cli_doc = json.loads(result.stdout)
    assert cli_doc["federation"]["in_force"]["members"] == members
    assert "<h2>Federation</h2>" in html.read_text(encoding="utf-8")
    shown = audited.cli()
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.count("log verified") == 3
    for i in range(3):
        assert fed.address(i) in shown.stdout


def test_a_member_that_never_anchored_without_its_log_cannot_be_verified(
    audited: Audited,
) -> None:
    fed = audited.fed
    quiet = _quiet(audited)
    missing = fed.address(quiet)
    coverage = {str(g.address): g for g in audited.report().gateways}[missing]
    assert coverage.held_role  # a role holder (every member is) that never anchored
    assert coverage.checkpoints == 0
    logs = [p for i, p in enumerate(audited.logs) if i != quiet]
    report = audited.report(logs)
    assert report.exit_code == 2, [(f.kind, f.message) for f in report.findings]
    (finding,) = report.unverifiable
    assert finding.kind is FindingKind.LOG_NOT_SUPPLIED
    assert finding.details["gateway"] == missing
    assert f"federation member {missing}" in finding.message
    assert "anchored no checkpoint" in finding.message
    doc = report_to_json(report)
    status = {m["gateway"]: m["log"]["status"] for m in doc["federation"]["in_force"]["members"]}
    assert status == {
        fed.address(i): ("not_supplied" if i == quiet else "verified") for i in range(3)
    }
    result = audited.cli(logs=logs)
    assert result.exit_code == 2, result.output
    assert f"federation member {missing}" in result.stdout
    assert "log NOT supplied: could not verify" in result.stdout


def test_a_member_that_released_without_its_log_cannot_be_verified(audited: Audited) -> None:
    releaser = next(i for i in range(3) if i != _quiet(audited))
    missing = audited.fed.address(releaser)
    report = audited.report([p for i, p in enumerate(audited.logs) if i != releaser])
    assert report.exit_code == 2
    (finding,) = report.unverifiable
    assert finding.kind is FindingKind.LOG_NOT_SUPPLIED
    assert finding.message.startswith(f"federation member {missing}")
    assert "key-share releases cannot be verified" in finding.message
    assert finding.details["checkpoints"] >= 1


def test_the_fhir_export_has_an_audit_event_per_release_naming_the_gateway(
    audited: Audited, tmp_path: Path
) -> None:
    report = audited.report()
    chain = audited.chain_id
    events = audit_event_resources(report.logs, report.timeline, chain_id=chain)
    bodies: list[dict[str, Any]] = [e.model_dump(mode="json", exclude_none=True) for e in events]
    allowed = [b for b in bodies if b["outcome"] == "0"]
    assert len(allowed) == len(audited.releases) == 4

    def account(ref: dict[str, Any]) -> str:
        value: str = ref["identifier"]["value"]
        assert value.startswith(f"eip155:{chain}:")
        return value.removeprefix(f"eip155:{chain}:")

    seen: list[tuple[str, str]] = []
    for body in allowed:
        (custodian,) = [
            a
            for a in body["agent"]
            if {"system": PARTICIPANT_TYPE, "code": "custodian", "display": "Custodian"}
            in a.get("type", {}).get("coding", [])
        ]
        (requester,) = [a for a in body["agent"] if a["requestor"]]
        assert custodian["requestor"] is False
        assert custodian["who"]["identifier"] == body["source"]["observer"]["identifier"]
        assert "custody federation member" in custodian["who"]["display"]
        seen.append((account(custodian["who"]), account(requester["who"])))
    assert Counter(seen) == Counter(audited.releases)
    rpc = RpcClient(audited.chain_url, client=httpx.Client(timeout=60))
    try:
        written = export_fhir(report, tmp_path, block_times=BlockClock(rpc).timestamps)
    finally:
        rpc.close()
    bundle = Bundle.model_validate_json(written.bundle.read_text(encoding="utf-8"))
    entries = [e["resource"] for e in bundle.model_dump(mode="json", exclude_none=True)["entry"]]
    on_disk = [r for r in entries if r["resourceType"] == "AuditEvent"]
    assert len(on_disk) == written.audit_events == len(events)
    # The grant expires at 2**40 s, past year 9999: exported as an open-ended consent.
    (consent,) = [r for r in entries if r["resourceType"] == "Consent"]
    assert consent["status"] == "active"
    assert "end" not in consent["provision"]["period"]


def test_after_the_federation_changes_both_sets_are_listed_and_the_former_member_is_needed(
    audited: Audited,
) -> None:
    fed = audited.fed
    quiet = _quiet(audited)
    stay = [m for i, m in enumerate(fed.members()) if i != quiet]
    fed.registry.reset_nonces()
    fed.registry.set_federation(fed.stacks[0].admin, 2, stay)
    head = int(fed.registry.w3.eth.block_number)
    report = audited.report(at=head)
    assert report.exit_code == 0, [(f.kind, f.message) for f in report.findings]
    first, second = report.federations
    assert report.federation == second
    assert len(second.gateways) == 2
    doc = report_to_json(report)["federation"]
    assert [s["in_force"] for s in doc["sets"]] == [False, True]
    assert doc["sets"][0]["until_block"] == second.block_number
    assert doc["in_force"]["block_number"] == second.block_number
    former = fed.address(quiet)
    dropped = audited.report([p for i, p in enumerate(audited.logs) if i != quiet], at=head)
    assert dropped.exit_code == 2
    (finding,) = dropped.unverifiable
    assert finding.details["gateway"] == former
    assert finding.details["federation_blocks"] == [first.block_number]


def test_a_member_that_releases_without_consent_is_named_with_violations_in_every_report(
    audited: Audited, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A rogue member releases its share to a stranger: its log shows it, the audit names it."""
    fed = audited.fed
    current = list(fed.registry.federation().members)
    rogue_at = next(i for i in range(3) if fed.address(i) == str(current[-1].gateway))
    rogue = fed.stacks[rogue_at]
    patient, stranger = new_account(), new_account()
    with Gateway(fed.url(rogue_at)) as gw:
        up = upload_sealed(
            gw.login(rogue.centre),
            b"a result nobody consented to share",
            registry=fed.registry,
            patient=patient.address,
            category=LAB,
        )
    records = rogue.state.records
    monkeypatch.setattr(records, "_decide", release_without_consent(records))
    r = rogue.client.get(
        f"/v1/custody/records/{up.record.record_id}/share",
        params={"purpose": "treatment"},
        headers=login(rogue, stranger),
    )
    assert r.status_code == 200, r.text
    monkeypatch.undo()
    logs = []
    for i, doc in enumerate(export_logs(fed, new_account())):
        path = tmp_path / f"member{i}.json"
        path.write_text(json.dumps(doc), encoding="utf-8")
        logs.append(path)
    report = audited.report(logs, at=int(fed.registry.w3.eth.block_number))
    assert report.exit_code == 1
    offenders = {f.details.get("gateway") for f in report.violations}
    assert offenders == {rogue.gateway_account.address}
    in_force = report_to_json(report)["federation"]["in_force"]
    status = {m["gateway"]: m["log"]["status"] for m in in_force["members"]}
    assert status == {str(m.gateway): "verified" for m in current} | {
        rogue.gateway_account.address: "violations"
    }
    section = render_html(report).split("<h2>Federation</h2>", 1)[1]
    assert section.count("VIOLATIONS in its log") == len(report.federations)  # in every set
    (event,) = [
        e.model_dump(mode="json", exclude_none=True)
        for e in audit_event_resources(report.logs, report.timeline, chain_id=audited.chain_id)
        if e.outcome == "0" and stranger.address in e.model_dump_json()
    ]
    assert [a["who"]["identifier"]["value"] for a in event["agent"]] == [
        f"eip155:{audited.chain_id}:{stranger.address}",
        f"eip155:{audited.chain_id}:{rogue.gateway_account.address}",
    ]
