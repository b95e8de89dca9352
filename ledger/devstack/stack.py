"""``consent up``: the whole local stack in the foreground.

Starts the chain node and the IPFS node from ``hardhat_local/``, deploys the registry on first
run (reused afterwards), admits and funds the gateway's accounts, starts the gateway, waits for
``/healthz`` and then watches its children until Ctrl-C (or SIGTERM, as ``consent down`` sends),
when it stops every process it started, newest first.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from web3 import Web3
from web3.types import Wei

from ledger.chain.build import Artifact, compile_contracts
from ledger.chain.deployment import REGISTRY_CONTRACT, Deployment, ensure_deployed
from ledger.chain.node import TxSender, connect, dev_account, dev_accounts
from ledger.chain.registry import ConsentRegistry
from ledger.devstack.services import AnvilNode, IpfsNode, ServiceError, ServiceProcess, port_in_use
from ledger.paths import StatePaths
from ledger.protocol.consent_types import GATEWAY_ROLE

__all__ = ["StackConfig", "StackInfo", "ensure_kek", "run_stack", "start_stack", "wait_healthy"]


@dataclass(frozen=True)
class StackConfig:
    paths: StatePaths
    chain_port: int = 8545
    ipfs_port: int = 5001
    gateway_port: int = 8000
    state_interval_s: int = 5
    #: Extra ``CONSENT_*`` settings for the gateway process (e.g. a short checkpoint interval).
    gateway_env: dict[str, str] = field(default_factory=dict)


@dataclass
class StackInfo:
    anvil: AnvilNode
    ipfs: IpfsNode
    gateway: ServiceProcess
    deployment: Deployment
    created: bool
    gateway_url: str
    health: dict[str, Any]

    def processes(self) -> list[ServiceProcess]:
        return [self.gateway, self.ipfs.process, self.anvil.process]

    def stop(self) -> None:
        for proc in self.processes():
            proc.stop()


def ensure_kek(path: Path) -> Path:
    """The gateway's key-encryption key: 32 random bytes, hex, owner-only; made once."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    return path


#: A local gateway account is topped up to this balance when it holds less than half of it.
_LOCAL_FUNDING_WEI = 100 * 10**18


def _admit_gateway(
    w3: Web3, deployment: Deployment, artifact: Artifact, admin: TxSender, accounts: list[str]
) -> None:
    """Fund the gateway's three accounts from the admin's balance (anvil funds only its first
    ten), then give the gateway and registrar accounts GATEWAY_ROLE (once); the relayer, the
    third, needs no role."""
    for address in map(Web3.to_checksum_address, accounts):
        balance = w3.eth.get_balance(address)
        if balance < _LOCAL_FUNDING_WEI // 2:
            admin.send({"to": address, "value": Wei(_LOCAL_FUNDING_WEI - balance)})
    registry = ConsentRegistry(w3, deployment.address, abi=artifact.abi)
    for account in accounts[:2]:
        if not registry.has_role(GATEWAY_ROLE, account):
            registry.grant_role(admin.account, GATEWAY_ROLE, account)


def start_stack(config: StackConfig, *, say: Callable[[str], None] = print) -> StackInfo:
    """Start everything; on any failure stop what was started and raise ``ServiceError``."""
    paths = config.paths.ensure()
    for port, what in (
        (config.chain_port, "chain node"),
        (config.ipfs_port, "IPFS API"),
        (config.gateway_port, "gateway"),
    ):
        if port_in_use(port):
            raise ServiceError(
                f"port {port} ({what}) is already in use: stop what holds it or pick another port"
            )
    started: list[Any] = []
    try:
        say(f"starting chain node on 127.0.0.1:{config.chain_port} (state {paths.chain_state})")
        anvil = AnvilNode(
            port=config.chain_port,
            log_path=paths.logs / "anvil.log",
            state_file=paths.chain_state,
            state_interval_s=config.state_interval_s,
        ).start()
        started.append(anvil)
        say(f"starting IPFS node on 127.0.0.1:{config.ipfs_port} (repo {paths.ipfs_repo})")
        ipfs = IpfsNode(
            repo=paths.ipfs_repo, api_port=config.ipfs_port, log_path=paths.logs / "ipfs.log"
        ).start()
        started.append(ipfs)

        w3 = connect(anvil.url)
        # Three gateway accounts, so that draining one cannot stop the others: the gateway
        # account anchors (its address names the gateway), the registrar registers records,
        # the relayer pays for relayed consents.
        admin_account, gateway_account = dev_accounts()[0], dev_accounts()[1]
        registrar_account, relayer_account = dev_account(10), dev_account(11)
        admin = TxSender(w3, admin_account)
        artifact = compile_contracts(cache_dir=paths.build_cache)[REGISTRY_CONTRACT]
        deployment, created = ensure_deployed(
            w3, artifact, path=paths.deployment, sender=admin, admin=admin_account.address
        )
        say(
            ("deployed" if created else "reusing")
            + f" {REGISTRY_CONTRACT} at {deployment.address} (block {deployment.block})"
        )
        _admit_gateway(
            w3,
            deployment,
            artifact,
            admin,
            [a.address for a in (gateway_account, registrar_account, relayer_account)],
        )

        kek = ensure_kek(paths.kek)
        env = {
            "CONSENT_HOME": str(paths.home),
            "CONSENT_CHAIN_URL": anvil.url,
            "CONSENT_IPFS_URL": ipfs.url,
            "CONSENT_DATABASE_URL": f"sqlite:///{paths.database}",
            "CONSENT_DEPLOYMENT_FILE": str(paths.deployment),
            "CONSENT_KEK_FILE": str(kek),
            "CONSENT_GATEWAY_KEY": gateway_account.key.hex(),
            "CONSENT_REGISTRAR_KEY": registrar_account.key.hex(),
            "CONSENT_RELAYER_KEY": relayer_account.key.hex(),
            "CONSENT_SIWE_DOMAIN": f"127.0.0.1:{config.gateway_port}",
            "CONSENT_SIWE_URI": f"http://127.0.0.1:{config.gateway_port}",
            # the local chain's dev account named `auditor` may export the whole access log
            "CONSENT_AUDITORS": dev_accounts()[9].address,
            **config.gateway_env,
        }
        gateway = ServiceProcess(
            "gateway",
            [
                sys.executable, "-m", "uvicorn", "gateway.app:create_app", "--factory",
                "--host", "127.0.0.1", "--port", str(config.gateway_port),
                "--log-level", "warning",
            ],
            paths.logs / "gateway.log",
            env=env,
        )  # fmt: skip
        say(f"starting gateway on 127.0.0.1:{config.gateway_port}")
        gateway.start()
        started.append(gateway)
        url = f"http://127.0.0.1:{config.gateway_port}"
        health = wait_healthy(gateway, url)
        return StackInfo(anvil, ipfs, gateway, deployment, created, url, health)
    except BaseException:
        for item in reversed(started):
            with contextlib.suppress(Exception):
                item.stop()
        raise


def wait_healthy(gateway: ServiceProcess, url: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """The gateway's ``/healthz`` body once it answers 200; ``ServiceError`` (with the log's
    tail) when the process dies or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        gateway.check_alive()
        try:
            r = httpx.get(f"{url}/healthz", timeout=2.0)
            if r.status_code == 200:
                body: dict[str, Any] = r.json()
                return body
            last = r.text
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise ServiceError(f"gateway not healthy after {timeout_s:.0f} s: {last}\n{gateway.tail()}")


def run_stack(config: StackConfig, *, say: Callable[[str], None] = print) -> int:
    """Start the stack, then block until SIGINT/SIGTERM or a child dies. Returns an exit code."""
    pid_file = config.paths.home / "stack.pid"
    stop_requested = False

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        info = start_stack(config, say=say)
    except BaseException:
        for s, h in previous.items():
            signal.signal(s, h)
        raise
    pid_file.write_text(f"{os.getpid()}\n")
    code = 0
    try:
        say_ready(info, config, say)
        while not stop_requested:
            for proc in info.processes():
                if not proc.alive():
                    say(f"error: {proc.name} exited unexpectedly; see {proc.log_path}")
                    code = 1
                    stop_requested = True
            time.sleep(0.2)
        say("stopping gateway, IPFS node and chain node ...")
    finally:
        info.stop()
        pid_file.unlink(missing_ok=True)
        for s, h in previous.items():
            signal.signal(s, h)
    say("stopped.")
    return code


def say_ready(info: StackInfo, config: StackConfig, say: Callable[[str], None]) -> None:
    h = info.health
    say("")
    say("Consent Ledger is up:")
    say(f"  gateway      {info.gateway_url}  (OpenAPI: {info.gateway_url}/docs)")
    say(f"  chain        {info.anvil.url}  chain id {h.get('chain_id')}")
    say(f"  block        {h.get('latest_block')}")
    say(f"  registry     {info.deployment.address}  (deployed at block {info.deployment.block})")
    say(f"  IPFS API     {info.ipfs.url}  node {h.get('ipfs_node_id')}")
    say(f"  database     {h.get('database')}")
    say(f"  state        {config.paths.home}  (logs in {config.paths.logs})")
    say("Press Ctrl-C to stop everything.")
