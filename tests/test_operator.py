"""The operator path on a chain that is not the local one: `consent deploy`, `consent gateway
check` / `serve --config`, then a whole record's life through the CLI with keystore keys only.

Real services: an anvil of this module's own with chain id 4242 (so anvil's development keys
are refused everywhere), the session's js-ipfs node, and PostgreSQL on a schema of its own
when a server answers at 127.0.0.1:5432 (SQLite otherwise). The gateway runs as `consent
gateway serve --config FILE` in a subprocess, stopped in ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from typer.testing import CliRunner

from ledger.chain.abi import registry_abi
from ledger.chain.node import connect, dev_accounts
from ledger.chain.registry import ConsentRegistry
from ledger.cli.main import app
from ledger.devstack.services import AnvilNode, IpfsNode, ServiceProcess, free_port
from ledger.devstack.stack import wait_healthy
from ledger.paths import PROJECT_ROOT
from ledger.protocol.consent_types import DEFAULT_ADMIN_ROLE
from tests.helpers.build import share_build_cache
from tests.helpers.gateway import drop_schema, postgres_url

CHAIN_ID = 4242
PASSWORD = "operator-test-password"
runner = CliRunner()


@dataclass
class Network:
    """The 4242 chain, a state directory with a keystore, and the deployed registry."""

    anvil: AnvilNode
    home: Path
    keys: dict[str, str]  # name -> address
    hex_files: dict[str, Path]  # the gateway's three sending keys, as the gateway reads them
    deploy_output: str
    dry_run_output: str
    head_after_deploy: int = 0

    def cli_address(self, name: str) -> str:
        listed = json.loads(_ok(self.cli("key", "list", "--no-dev", "--json")))
        return next(str(row["address"]) for row in listed if row["name"] == name)

    def cli(self, *args: str, who: str | None = None, gateway: str | None = None):
        shared = ["--chain", self.anvil.url, "--home", str(self.home)]
        if gateway:
            shared += ["--gateway", gateway]
        acting = ["--as", who] if who else []
        return runner.invoke(app, [*shared, *args, *acting], env={"CONSENT_PASSWORD": PASSWORD})


def _ok(result) -> str:
    assert result.exit_code == 0, result.output + (result.stderr or "")
    return str(result.stdout)


def _set_balance(url: str, address: str, wei: int) -> None:
    r = httpx.post(
        url,
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "anvil_setBalance",
            "params": [address, hex(wei)],
        },
        timeout=5,
    )
    assert "error" not in r.json(), r.text


@contextlib.contextmanager
def _mining(url: str, every_s: float = 0.2) -> Iterator[None]:
    """Mine a block every ``every_s`` (anvil automines only on a transaction)."""
    stop = threading.Event()

    def mine() -> None:
        while not stop.wait(every_s):
            httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "evm_mine"}, timeout=5)

    thread = threading.Thread(target=mine, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def _hex_key(path: Path) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return path


def _address_of(path: Path) -> str:
    return str(Account.from_key(bytes.fromhex(path.read_text().strip())).address)


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory, contract_build: Path) -> Iterator[Network]:
    root = tmp_path_factory.mktemp("operator")
    anvil = AnvilNode(port=free_port(), log_path=root / "anvil.log", chain_id=CHAIN_ID)
    try:
        anvil.start()
        home = root / "home"
        share_build_cache(home)
        net = Network(anvil, home, {}, {}, "", "")
        for name in ("opsadmin", "centre1", "alice", "drbob", "auditor1"):
            _ok(net.cli("key", "new", name))
        secrets_dir = root / "secrets"
        secrets_dir.mkdir(mode=0o700)
        for name in ("gw1", "reg1", "relay1"):
            net.hex_files[name] = _hex_key(secrets_dir / f"{name}.hex")
            _ok(net.cli("key", "import", name, "--key-file", str(net.hex_files[name])))
        listed = json.loads(_ok(net.cli("key", "list", "--no-dev", "--json")))
        net.keys = {row["name"]: row["address"] for row in listed}
        for name in ("opsadmin", "gw1", "reg1", "relay1"):
            _set_balance(anvil.url, net.keys[name], 10**19)
        net.dry_run_output = _ok(net.cli("deploy", "--dry-run", who="opsadmin"))
        assert not (home / "deployment.json").exists()  # a dry run writes nothing
        with _mining(anvil.url):  # blocks keep coming, as on a real chain
            net.deploy_output = _ok(net.cli("deploy", "--confirmations", "3", who="opsadmin"))
        net.head_after_deploy = connect(anvil.url).eth.block_number
        for name in ("gw1", "reg1"):
            _ok(net.cli("admin", "add-gateway", name, who="opsadmin"))
        _ok(net.cli("admin", "add-centre", "centre1", who="opsadmin"))
        yield net
    finally:
        anvil.stop()


def _config(
    net: Network, directory: Path, ipfs: IpfsNode, *, database_url: str, port: int, **over: object
) -> Path:
    kek = directory / "kek.hex"
    if not kek.exists():
        _hex_key(kek)
    values: dict[str, object] = {
        "home": str(directory / "state"),
        "chain_url": net.anvil.url,
        "ipfs_url": ipfs.url,
        "database_url": database_url,
        "deployment_file": str(net.home / "deployment.json"),
        "kek_file": "kek.hex",  # relative: to the config file's directory
        "gateway_key_file": str(net.hex_files["gw1"]),
        "registrar_key_file": str(net.hex_files["reg1"]),
        "relayer_key_file": str(net.hex_files["relay1"]),
        "public_base_url": f"http://127.0.0.1:{port}",
        "auditors": net.keys["auditor1"],
        "checkpoint_every": 1,
        "checkpoint_interval_s": 1.0,
        **over,
    }
    lines = ["[gateway]"] + [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    lines += ["", "[server]", 'host = "127.0.0.1"', f"port = {port}", 'log_level = "warning"']
    path = directory / f"gateway-{secrets.token_hex(3)}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _consent(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli", *args],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _refusals(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("refused: ")]


# ------------------------------------------------------------------------------ deploy


def test_dry_run_prints_gas_and_cost(network: Network) -> None:
    out = network.dry_run_output
    assert "nothing sent" in out
    gas = int(re.search(r"gas\s+([\d,]+)", out)[1].replace(",", ""))  # type: ignore[index]
    assert 1_000_000 < gas < 30_000_000, out  # a registry, under a block's gas limit
    m = re.search(r"cost\s+([\d.]+) ETH at ([\d.]+) gwei", out)
    assert m, out
    cost, price = Decimal(m[1]), Decimal(m[2])
    assert price > 0
    assert cost == pytest.approx(gas * price / Decimal(10**9), rel=Decimal("0.001")), out
    assert Decimal(0) < cost < Decimal(1), out
    assert "at most" in out
    assert "fee cap" in out


def test_deploy_waits_checks_the_code_and_writes_the_file(network: Network) -> None:
    recorded = json.loads((network.home / "deployment.json").read_text())
    assert recorded["chain_id"] == CHAIN_ID
    assert recorded["address"] in network.deploy_output
    assert "the runtime code matches the build" in network.deploy_output
    assert "3 confirmation(s)" in network.deploy_output
    assert network.head_after_deploy >= recorded["block"] + 2  # it waited for two more blocks
    assert "consent admin add-gateway" in network.deploy_output
    assert "consent admin add-centre" in network.deploy_output
    assert "consent admin add-emergency" in network.deploy_output
    w3 = connect(network.anvil.url)
    assert bytes(w3.eth.get_code(recorded["address"]))
    registry = ConsentRegistry(w3, recorded["address"], abi=registry_abi())
    assert registry.has_role(DEFAULT_ADMIN_ROLE, network.keys["opsadmin"])
    again = network.cli("deploy", who="opsadmin")  # a second deploy never overwrites the file
    assert again.exit_code == 2
    assert "already records a registry" in again.stderr


def test_deploy_refuses_development_keys_off_the_local_chain(
    network: Network, tmp_path: Path
) -> None:
    share_build_cache(tmp_path)
    for args in (("deploy",), ("deploy", "--dry-run")):
        result = runner.invoke(
            app, [*args, "--as", "admin", "--chain", network.anvil.url, "--home", str(tmp_path)]
        )
        assert result.exit_code == 2, result.output
        assert "public development keys" in result.stderr
        assert f"chain {CHAIN_ID}" in result.stderr
    # the same key imported into the keystore under another name is refused as well
    dev_hex = tmp_path / "dev.hex"
    dev_hex.write_text(dev_accounts()[0].key.hex())
    env = {"CONSENT_PASSWORD": PASSWORD}
    common = ["--home", str(tmp_path)]
    imported = runner.invoke(
        app, ["key", "import", "mine", "--key-file", str(dev_hex), *common], env=env
    )
    assert imported.exit_code == 0, imported.output
    result = runner.invoke(
        app, ["deploy", "--as", "mine", "--chain", network.anvil.url, *common], env=env
    )
    assert result.exit_code == 2
    assert "public development keys" in result.stderr
    assert not (tmp_path / "deployment.json").exists()


# ------------------------------------------------------------------------------ refusals


def test_each_misconfiguration_is_refused_with_one_sentence(
    network: Network, ipfs_node: IpfsNode, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'refused.sqlite3'}"
    port = free_port()
    fresh_relayer = _hex_key(tmp_path / "fresh-relayer.hex")
    unadmitted = _hex_key(tmp_path / "unadmitted.hex")
    _set_balance(network.anvil.url, _address_of(unadmitted), 10**19)  # funded, but no role
    cases = {
        "wrong chain id": (
            {"chain_id": 31337},
            f"is chain {CHAIN_ID} but the deployment is on chain 31337; point chain_url",
        ),
        "unfunded relayer": (
            {"relayer_key_file": str(fresh_relayer)},
            f"the relayer account {_address_of(fresh_relayer)} holds 0.000000 ETH, less than one "
            f"transaction at the relay gas cap costs at the current fee",
        ),
        "missing role": (
            {"gateway_key_file": str(unadmitted)},
            f"the gateway account {_address_of(unadmitted)} does not hold GATEWAY_ROLE on registry",
        ),
    }
    for what, (over, sentence) in cases.items():
        config = _config(network, tmp_path, ipfs_node, database_url=db, port=port, **over)
        checked = runner.invoke(app, ["gateway", "check", "--config", str(config)])
        assert checked.exit_code == 1, (what, checked.stdout, checked.stderr)
        refusals = _refusals(checked.stderr)
        assert len(refusals) == 1, (what, checked.stderr)
        assert sentence in refusals[0], (what, refusals)
        assert refusals[0].rstrip().endswith(("start again", f"chain {CHAIN_ID}")), refusals
        if what == "wrong chain id":  # serve runs the same checks before it starts
            served = _consent("gateway", "serve", "--config", str(config))
            assert served.returncode == 1, (what, served.stdout, served.stderr)
            assert _refusals(served.stderr) == refusals
            with pytest.raises(httpx.HTTPError):  # nothing was started
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)


def test_a_misspelt_setting_is_refused(
    network: Network, ipfs_node: IpfsNode, tmp_path: Path
) -> None:
    config = _config(
        network, tmp_path, ipfs_node, database_url="sqlite://", port=free_port(), chian_url="x"
    )
    checked = runner.invoke(app, ["gateway", "check", "--config", str(config)])
    assert checked.exit_code == 2
    assert "unknown gateway settings ['chian_url']" in checked.stderr


# ------------------------------------------------------------------------------ the whole path


@pytest.fixture
def database() -> Iterator[tuple[str, str]]:
    """PostgreSQL on a schema of its own when a server answers, else SQLite."""
    try:
        url, schema = postgres_url()
    except pytest.skip.Exception:
        yield "", "sqlite"
        return
    try:
        yield url, "postgresql"
    finally:
        drop_schema(schema)


def test_serve_then_upload_grant_fetch_and_audit_with_keystore_keys(
    network: Network, ipfs_node: IpfsNode, tmp_path: Path, database: tuple[str, str]
) -> None:
    url, kind = database
    url = url or f"sqlite:///{tmp_path / 'gateway.sqlite3'}"
    port = free_port()
    config = _config(network, tmp_path, ipfs_node, database_url=url, port=port)
    checked = _consent("gateway", "check", "--config", str(config))
    assert checked.returncode == 0, checked.stderr
    assert "every start-up check passed" in checked.stdout
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    gateway = ServiceProcess(
        "gateway",
        [sys.executable, "-m", "ledger.cli", "gateway", "serve", "--config", str(config)],
        tmp_path / "gateway.log",
        env={**env, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        gateway.start()
        health = wait_healthy(gateway, base, timeout_s=30)
        assert health["chain_id"] == CHAIN_ID
        assert kind in health["database"], (kind, health)

        report = tmp_path / "lab.json"
        report.write_bytes(b'{"resourceType": "DiagnosticReport", "status": "final"}')
        upload = ["upload", str(report), "--patient", "alice", "--category", "laboratory"]
        uploaded = json.loads(_ok(network.cli(*upload, "--json", who="centre1", gateway=base)))
        record = uploaded["record_id"]
        grant = ["grant", "--to", "drbob", "--category", "laboratory", "--purpose", "treatment"]
        _ok(network.cli(*grant, "--expires", "30d", who="alice", gateway=base))
        out = tmp_path / "fetched.json"
        fetch = ["fetch", record, "--purpose", "treatment", "-o", str(out)]
        _ok(network.cli(*fetch, who="drbob", gateway=base))
        assert out.read_bytes() == report.read_bytes()
        refused = network.cli(
            "fetch", record, "--purpose", "insurance", "-o", str(tmp_path / "no.json"),
            who="centre1", gateway=base,
        )  # fmt: skip
        assert refused.exit_code == 1, refused.output
        deadline = time.monotonic() + 20
        while True:  # both decisions anchored (checkpoint_every = 1), then the audit is clean
            audit = network.cli(
                "audit", "run", "--chain", network.anvil.url,
                "--access-log", f"{base}/v1/access-log/export", who="auditor1",
            )  # fmt: skip
            if audit.exit_code == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert audit.exit_code == 0, audit.output + audit.stderr
        assert "CLEAN" in audit.stdout
        assert f"chain {CHAIN_ID}" in audit.stdout
        assert network.keys["gw1"] in audit.stdout
        assert "2 entries (1 allowed)" in audit.stdout
        metrics = httpx.get(f"{base}/metrics", timeout=5).text
        assert 'gateway_access_decisions_total{decision="allowed",reason="consent"} 1.0' in metrics
        assert "gateway_chain_up 1.0" in metrics
        balance = re.search(r'gateway_account_balance_wei\{account="relayer"\} (\S+)', metrics)
        assert balance, metrics
        assert 0 < float(balance[1]) <= 10**19  # funded with 10 ETH, minus the relay's gas
        age = re.search(r"^gateway_chain_head_age_seconds (\S+)$", metrics, re.M)
        assert age, metrics
        assert 0 <= float(age[1]) < 3600
    finally:
        gateway.stop()
    assert not gateway.alive()


def test_a_chain_node_that_does_not_answer_is_reported(
    network: Network, ipfs_node: IpfsNode, tmp_path: Path
) -> None:
    down = f"http://127.0.0.1:{free_port()}/v3/secret-api-key"
    config = _config(
        network, tmp_path, ipfs_node, database_url="sqlite://", port=free_port(), chain_url=down
    )
    checked = runner.invoke(app, ["gateway", "check", "--config", str(config)])
    assert checked.exit_code == 2
    (refusal,) = _refusals(checked.stderr)
    assert "is not answering" in refusal
    assert "secret-api-key" not in checked.stderr  # a node URL's path may hold an API key


# ------------------------------------------------------------------------------ admin transfer


def test_admin_transfer_is_two_steps_and_never_leaves_the_registry_without_admin(
    network: Network,
) -> None:
    """Last in the module: it hands the registry to a new admin key."""
    _ok(network.cli("key", "new", "opsadmin2"))
    early = network.cli("admin", "renounce-admin", "--successor", "opsadmin2", who="opsadmin")
    assert early.exit_code == 1
    assert "does not hold DEFAULT_ADMIN_ROLE yet" in early.stderr
    _ok(network.cli("admin", "add-admin", "opsadmin2", who="opsadmin"))
    _ok(network.cli("admin", "renounce-admin", "--successor", "opsadmin2", who="opsadmin"))
    w3 = connect(network.anvil.url)
    recorded = json.loads((network.home / "deployment.json").read_text())
    registry = ConsentRegistry(w3, recorded["address"], abi=registry_abi())
    assert registry.has_role(DEFAULT_ADMIN_ROLE, network.cli_address("opsadmin2"))
    assert not registry.has_role(DEFAULT_ADMIN_ROLE, network.keys["opsadmin"])
