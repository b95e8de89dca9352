"""The CLI against a local 2-of-3 federation started as ``consent up`` starts it: three gateway
processes, each with its own database, accounts and custody key. Upload splits on the centre's
side; ``fetch`` gathers two shares; one gateway killed, the read still works; two killed, it
fails closed with exit code 5 and no file; ``status --json`` lists every member; the audit
verifies all three logs.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ledger.devstack.services import stack_ports
from ledger.devstack.stack import StackConfig, StackInfo, start_stack, wait_healthy
from ledger.paths import state_paths
from tests.helpers.build import share_build_cache
from tests.test_cli import invoke


@dataclass
class Fed:
    info: StackInfo
    home: Path

    def args(self, gateway: str | None = None) -> list[str]:
        return [
            "--gateway", gateway or self.info.gateway_url,
            "--chain", self.info.anvil.url,
            "--home", str(self.home),
        ]  # fmt: skip


@pytest.fixture(scope="module")
def fed() -> Iterator[Fed]:
    with tempfile.TemporaryDirectory(prefix="consent-fed-", ignore_cleanup_errors=True) as tmp:
        paths = state_paths(Path(tmp) / "home")
        share_build_cache(paths.home)
        chain_port, ipfs_port, first = stack_ports(3)
        config = StackConfig(
            paths=paths,
            chain_port=chain_port,
            ipfs_port=ipfs_port,
            gateway_port=first,
            gateways=3,
            threshold=2,
            gateway_env={"CONSENT_CHECKPOINT_INTERVAL_S": "1", "CONSENT_CHECKPOINT_EVERY": "1"},
        )
        info = start_stack(config, say=lambda s: None)
        try:
            yield Fed(info, paths.home)
        finally:
            info.stop()


def _run(fed: Fed, *args: str, who: str | None = None, via: str | None = None):  # type: ignore[no-untyped-def]
    extra = ["--as", who] if who else []
    return invoke(*args, *extra, *fed.args(via))


def test_status_lists_every_member_of_the_federation(fed: Fed) -> None:
    result = _run(fed, "status", "--json")
    assert result.exit_code == 0, result.output + result.stderr
    body = json.loads(result.stdout)["federation"]
    assert body["threshold"] == 2
    members = body["members"]
    assert [m["url"] for m in members] == [m.url for m in fed.info.members]
    assert [m["gateway"] for m in members] == [m.address for m in fed.info.members]
    assert all(m["health"] == "ok" for m in members)
    assert len({m["custody_key"] for m in members}) == 3


def test_upload_split_fetch_from_two_and_fail_closed_when_two_are_down(
    fed: Fed, tmp_path: Path
) -> None:
    assert _run(fed, "admin", "add-centre", "centre").exit_code == 0
    source = tmp_path / "result.txt"
    source.write_bytes(b"HbA1c 5.4 %, fasting glucose 5.0 mmol/L")
    up = _run(
        fed, "upload", str(source), "--patient", "patient", "--category", "laboratory", "--json",
        who="centre",
    )  # fmt: skip
    assert up.exit_code == 0, up.output + up.stderr
    record_id = json.loads(up.stdout)["record_id"]

    out = tmp_path / "read.txt"
    denied = _run(fed, "fetch", record_id, "--purpose", "treatment", "-o", str(out), who="doctor")
    assert denied.exit_code == 1, denied.output + denied.stderr
    assert "no consent" in denied.stderr
    assert not out.exists()

    granted = _run(
        fed, "grant", "--to", "doctor", "--record", record_id, "--purpose", "treatment",
        "--expires", "30d", who="patient",
    )  # fmt: skip
    assert granted.exit_code == 0, granted.output + granted.stderr
    read = _run(
        fed, "fetch", record_id, "--purpose", "treatment", "-o", str(out), "--json", who="doctor"
    )
    assert read.exit_code == 0, read.output + read.stderr
    assert out.read_bytes() == source.read_bytes()
    assert len(json.loads(read.stdout)["released_by"]) == 2

    first, second, third = fed.info.members
    first.process.kill()
    try:
        again = tmp_path / "again.txt"
        one_down = _run(
            fed, "fetch", record_id, "--purpose", "treatment", "-o", str(again), "--json",
            who="doctor", via=second.url,
        )  # fmt: skip
        assert one_down.exit_code == 0, one_down.output + one_down.stderr
        assert again.read_bytes() == source.read_bytes()
        assert {r["gateway"] for r in json.loads(one_down.stdout)["released_by"]} == {
            second.address,
            third.address,
        }
        second.process.kill()
        try:
            lost = tmp_path / "lost.txt"
            two_down = _run(
                fed, "fetch", record_id, "--purpose", "treatment", "-o", str(lost),
                who="doctor", via=third.url,
            )  # fmt: skip
            assert two_down.exit_code == 5, two_down.output + two_down.stderr
            assert not lost.exists()
        finally:
            second.process.start()
            wait_healthy(second.process, second.url)
    finally:
        first.process.start()
        wait_healthy(first.process, first.url)

    # Restarted members serve again, and the auditor verifies all three logs.
    assert (
        _run(
            fed,
            "fetch",
            record_id,
            "--purpose",
            "treatment",
            "-o",
            str(out),
            "--force",
            who="doctor",
        ).exit_code
        == 0
    )
    audit_args = ["audit", "run", "--as", "auditor", "--json"]
    for m in fed.info.members:
        audit_args += ["--access-log", f"{m.url}/v1/access-log/export"]
    audited = invoke(*audit_args, "--chain", fed.info.anvil.url, "--home", str(fed.home))
    assert audited.stdout, audited.output + audited.stderr
    report = json.loads(audited.stdout)
    assert audited.exit_code == 0, [f["kind"] for f in report.get("findings", [])]


def test_who_read_verifies_every_members_log(fed: Fed) -> None:
    """After the doctor's reads above, the patient sees each gateway's own decisions, each
    entry proven against the checkpoint that gateway anchored on-chain."""
    result = _run(fed, "who-read", "--wait", "30", "--json", who="patient")
    assert result.exit_code == 0, result.output + result.stderr
    logs = json.loads(result.stdout)["gateways"]
    assert [log["gateway"] for log in logs] == [m.address for m in fed.info.members]
    released_by = {
        log["gateway"]
        for log in logs
        for e in log["entries"]
        if e["decision"] == "allowed" and e["inclusion"] == "verified"
    }
    assert len(released_by) >= 2  # the doctor's shares came from at least two gateways
    denials = [e for log in logs for e in log["entries"] if e["decision"] == "denied"]
    assert denials  # the doctor's first, refused read: every gateway asked logged it


def test_admin_sets_the_federation_from_the_gateways_own_custody_keys(fed: Fed) -> None:
    urls = [m.url for m in fed.info.members]
    same = _run(fed, "admin", "set-federation", *urls, "--threshold", "2", "--json", who="admin")
    assert same.exit_code == 0, same.output + same.stderr
    assert json.loads(same.stdout)["changed"] is False
    changed = _run(fed, "admin", "set-federation", *urls, "--threshold", "3", "--json", who="admin")
    assert changed.exit_code == 0, changed.output + changed.stderr
    body = json.loads(changed.stdout)
    assert body["changed"] is True
    assert body["threshold"] == 3
    assert [m["custody_key"] for m in body["members"]] == [
        "0x" + (m.custody_key or b"").hex() for m in fed.info.members
    ]
    status = json.loads(_run(fed, "status", "--json").stdout)["federation"]
    assert status["threshold"] == 3
    back = _run(fed, "admin", "set-federation", *urls, "--threshold", "2", who="admin")
    assert back.exit_code == 0, back.output + back.stderr
    bad = _run(fed, "admin", "set-federation", *urls, "--threshold", "4", who="admin")
    assert bad.exit_code != 0
    assert "--threshold must be 1 to 3" in bad.stderr
