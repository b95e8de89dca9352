"""``consent up``: the whole local stack in the foreground.

Starts the chain node and the IPFS node from ``hardhat_local/``, deploys the registry on first
run (reused afterwards), admits and funds each gateway's accounts, starts the gateways, waits
for their ``/healthz`` and then watches its children until Ctrl-C (or SIGTERM, as ``consent
down`` sends), when it stops every process it started, newest first.

Federation: ``gateways`` processes on consecutive ports from ``gateway_port``, each with its own
database, access log, accounts and custody key (``gateway-<i>-custody.key`` in the state
directory), sharing the chain and IPFS node; with ``threshold`` > 0 the admin sets the registry's
federation to them (t of n) unless it is that already. ``threshold`` 0 keeps the single-gateway
mode without a federation: the gateway wraps each record's key under its own key-encryption key.
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
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.types import Wei

from ledger.chain.build import compile_contracts
from ledger.chain.deployment import REGISTRY_CONTRACT, Deployment, ensure_deployed
from ledger.chain.node import TxSender, connect, dev_account, dev_accounts
from ledger.chain.registry import ConsentRegistry, FederationMember
from ledger.devstack.services import AnvilNode, IpfsNode, ServiceError, ServiceProcess, port_in_use
from ledger.paths import StatePaths
from ledger.protocol.consent_types import GATEWAY_ROLE

__all__ = [
    "Member",
    "StackConfig",
    "StackInfo",
    "ensure_custody_key",
    "ensure_kek",
    "member_accounts",
    "run_stack",
    "start_stack",
    "wait_healthy",
]


@dataclass(frozen=True)
class StackConfig:
    paths: StatePaths
    chain_port: int = 8545
    ipfs_port: int = 5001
    gateway_port: int = 8000
    #: How many gateway processes, and how many of them release a record (0: no federation).
    gateways: int = 1
    threshold: int = 0
    state_interval_s: int = 5
    #: Extra ``CONSENT_*`` settings for the gateway process (e.g. a short checkpoint interval).
    gateway_env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Member:
    """One gateway process of the local stack."""

    process: ServiceProcess
    url: str
    address: str  # its gateway account (its identity on-chain)
    custody_key: bytes | None  # its custody public key (None: no federation)
    health: dict[str, Any]


@dataclass
class StackInfo:
    anvil: AnvilNode
    ipfs: IpfsNode
    gateway: ServiceProcess
    deployment: Deployment
    created: bool
    gateway_url: str
    health: dict[str, Any]
    members: list[Member] = field(default_factory=list)
    threshold: int = 0

    def processes(self) -> list[ServiceProcess]:
        return [*(m.process for m in reversed(self.members)), self.ipfs.process, self.anvil.process]

    def stop(self) -> None:
        """Stop every process, newest first; one that fails to stop does not keep the others
        running (the first failure is raised once all were asked)."""
        failure: BaseException | None = None
        for proc in self.processes():
            try:
                proc.stop()
            except BaseException as exc:  # re-raised below, once every process was asked
                failure = failure or exc
        if failure is not None:
            raise failure


def ensure_kek(path: Path) -> Path:
    """The gateway's key-encryption key: 32 random bytes, hex, owner-only; made once."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    return path


def ensure_custody_key(path: Path) -> bytes:
    """A gateway's custody private key (secp256k1), hex, owner-only; made once. Its public key."""
    from ledger.protocol.custody import custody_public_key, new_custody_key

    if not path.is_file():
        private, _public = new_custody_key()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(private.hex() + "\n")
    return custody_public_key(bytes.fromhex(path.read_text().strip()))


def member_accounts(index: int) -> tuple[LocalAccount, LocalAccount, LocalAccount]:
    """``(gateway, registrar, relayer)`` of local gateway ``index``: dev 1, 10, 11 for the first
    (as before federations), then three further keys of the public mnemonic per gateway."""
    if index == 0:
        return dev_accounts()[1], dev_account(10), dev_account(11)
    base = 12 + 3 * (index - 1)
    return dev_account(base), dev_account(base + 1), dev_account(base + 2)


def _set_federation(
    registry: ConsentRegistry, admin: TxSender, threshold: int, members: list[FederationMember]
) -> bool:
    """Make the registry's federation exactly ``members`` at ``threshold``; whether it changed."""
    current = registry.federation()
    if current.threshold == threshold and list(current.members) == members:
        return False
    registry.set_federation(admin.account, threshold, members)
    return True


#: A local gateway account is topped up to this balance when it holds less than half of it.
_LOCAL_FUNDING_WEI = 100 * 10**18


def _admit_gateway(registry: ConsentRegistry, admin: TxSender, accounts: list[str]) -> None:
    """Fund the gateway's three accounts from the admin's balance (anvil funds only its first
    ten), then give the gateway and registrar accounts GATEWAY_ROLE (once); the relayer, the
    third, needs no role. ``registry`` sends through ``admin`` (one nonce sequence)."""
    w3 = registry.w3
    for address in map(Web3.to_checksum_address, accounts):
        balance = w3.eth.get_balance(address)
        if balance < _LOCAL_FUNDING_WEI // 2:
            admin.send({"to": address, "value": Wei(_LOCAL_FUNDING_WEI - balance)})
    for account in accounts[:2]:
        if not registry.has_role(GATEWAY_ROLE, account):
            registry.grant_role(admin.account, GATEWAY_ROLE, account)


def start_stack(config: StackConfig, *, say: Callable[[str], None] = print) -> StackInfo:
    """Start everything; on any failure stop what was started and raise ``ServiceError``."""
    paths = config.paths.ensure()
    if not 1 <= config.gateways <= 16 or not 0 <= config.threshold <= config.gateways:
        raise ServiceError(
            f"a local federation has 1 to 16 gateways and a threshold of 1 to their number (or 0 "
            f"for no federation); got {config.gateways} gateways, threshold {config.threshold}"
        )
    for port, what in (
        (config.chain_port, "chain node"),
        (config.ipfs_port, "IPFS API"),
        *((config.gateway_port + i, f"gateway {i}") for i in range(config.gateways)),
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
        admin_account = dev_accounts()[0]
        admin = TxSender(w3, admin_account)
        artifact = compile_contracts(cache_dir=paths.build_cache)[REGISTRY_CONTRACT]
        deployment, created = ensure_deployed(
            w3, artifact, path=paths.deployment, sender=admin, admin=admin_account.address
        )
        say(
            ("deployed" if created else "reusing")
            + f" {REGISTRY_CONTRACT} at {deployment.address} (block {deployment.block})"
        )
        # Three accounts per gateway, so that draining one cannot stop the others: the gateway
        # account anchors (its address names the gateway), the registrar registers records,
        # the relayer pays for relayed consents.
        accounts = [member_accounts(i) for i in range(config.gateways)]
        registry = ConsentRegistry(w3, deployment.address, abi=artifact.abi)
        registry.install_sender(admin)
        for gateway_account, registrar_account, relayer_account in accounts:
            _admit_gateway(
                registry,
                admin,
                [a.address for a in (gateway_account, registrar_account, relayer_account)],
            )
        federated = config.threshold > 0
        custody_keys = [
            ensure_custody_key(paths.home / f"gateway-{i}-custody.key") if federated else None
            for i in range(config.gateways)
        ]
        urls = [f"http://127.0.0.1:{config.gateway_port + i}" for i in range(config.gateways)]
        if federated:
            wanted = [
                FederationMember(acc[0].address, key, url)
                for acc, key, url in zip(accounts, custody_keys, urls, strict=True)
                if key is not None
            ]
            if _set_federation(registry, admin, config.threshold, wanted):
                say(f"set the custody federation: {config.threshold} of {config.gateways}")
        kek = ensure_kek(paths.kek)
        members: list[Member] = []
        for i, (gateway_account, registrar_account, relayer_account) in enumerate(accounts):
            port = config.gateway_port + i
            database = paths.database if i == 0 else paths.home / f"gateway-{i}.sqlite3"
            env = {
                "CONSENT_HOME": str(paths.home),
                "CONSENT_CHAIN_URL": anvil.url,
                "CONSENT_IPFS_URL": ipfs.url,
                "CONSENT_DATABASE_URL": f"sqlite:///{database}",
                "CONSENT_DEPLOYMENT_FILE": str(paths.deployment),
                "CONSENT_KEK_FILE": str(kek),
                "CONSENT_GATEWAY_KEY": gateway_account.key.hex(),
                "CONSENT_REGISTRAR_KEY": registrar_account.key.hex(),
                "CONSENT_RELAYER_KEY": relayer_account.key.hex(),
                "CONSENT_SIWE_DOMAIN": f"127.0.0.1:{port}",
                "CONSENT_SIWE_URI": f"http://127.0.0.1:{port}",
                # the local chain's dev account named `auditor` may export the whole access log
                "CONSENT_AUDITORS": dev_accounts()[9].address,
                **config.gateway_env,
            }
            if federated:
                env["CONSENT_CUSTODY_KEY_FILE"] = str(paths.home / f"gateway-{i}-custody.key")
            name = "gateway" if i == 0 else f"gateway-{i}"
            log_name = "gateway.log" if i == 0 else f"gateway-{i}.log"
            process = ServiceProcess(
                name,
                [
                    sys.executable, "-m", "uvicorn", "gateway.app:create_app", "--factory",
                    "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                ],
                paths.logs / log_name,
                env=env,
            )  # fmt: skip
            say(f"starting {name} on 127.0.0.1:{port}")
            process.start()
            started.append(process)
            members.append(Member(process, urls[i], gateway_account.address, custody_keys[i], {}))
        members = [
            Member(m.process, m.url, m.address, m.custody_key, wait_healthy(m.process, m.url))
            for m in members
        ]
        first = members[0]
        return StackInfo(
            anvil,
            ipfs,
            first.process,
            deployment,
            created,
            first.url,
            first.health,
            members,
            config.threshold,
        )
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
        say("stopping the gateways, IPFS node and chain node ...")
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
    if info.threshold:
        say(
            f"  federation   {info.threshold} of {len(info.members)} gateways must release a "
            f"record's key"
            + ("" if len(info.members) > 1 else " (one gateway: it alone can decrypt)")
        )
        for m in info.members:
            say(f"    {m.url}  {m.address}  custody key 0x{(m.custody_key or b'').hex()[:16]}…")
    say(f"  chain        {info.anvil.url}  chain id {h.get('chain_id')}")
    say(f"  block        {h.get('latest_block')}")
    say(f"  registry     {info.deployment.address}  (deployed at block {info.deployment.block})")
    say(f"  IPFS API     {info.ipfs.url}  node {h.get('ipfs_node_id')}")
    say(f"  database     {h.get('database')}")
    say(f"  state        {config.paths.home}  (logs in {config.paths.logs})")
    say("Press Ctrl-C to stop everything.")
