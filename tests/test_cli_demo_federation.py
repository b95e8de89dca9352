"""``consent demo`` against a running 2-of-3 federation it did not start (as ``consent up``
starts it): it tells the federated story from the members the registry lists, and leaves the
stack's gateways alone (the outage step is skipped, and says so)."""

from __future__ import annotations

from tests.test_cli import invoke
from tests.test_cli_federation import Fed
from tests.test_cli_federation import fed as fed  # the module's own 2-of-3 federation


def test_demo_on_a_running_federation_tells_its_story_and_kills_no_gateway(fed: Fed) -> None:
    pids = [m.process.proc.pid for m in fed.info.members if m.process.proc is not None]
    result = invoke("demo", *fed.args())
    assert result.exit_code == 0, result.output + result.stderr
    out = result.output
    assert "all 19 expectations held" in out, out  # the 21 of --fresh but the outage's two
    assert "✗" not in out
    assert "2 of 3 gateways must release a record's key" in out
    assert "skipped: this demo did not start the stack" in out
    assert "killed gateway" not in out
    assert "the audit of the 3 logs is clean (verdict: clean)" in out
    assert all(m.process.alive() for m in fed.info.members)
    assert [m.process.proc.pid for m in fed.info.members if m.process.proc is not None] == pids
