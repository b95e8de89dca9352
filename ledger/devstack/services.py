"""The local services: an anvil chain node and a js-ipfs node, both from ``hardhat_local/``.

Each service is a child process started on 127.0.0.1, waited on until it answers, and stopped
with SIGTERM (then SIGKILL after a grace period). anvil keeps its state in a file (``--state``):
SIGTERM/SIGINT dump it, and ``--state-interval`` dumps it periodically so a SIGKILL loses at
most that interval. The IPFS repository is initialised once and its config rewritten on every
start so the node is offline, local-only and listening where we say.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from ledger.chain.node import ANVIL_CHAIN_ID, ChainError
from ledger.chain.rpc import RpcClient
from ledger.paths import hardhat_local_dir

__all__ = [
    "AnvilNode",
    "IpfsNode",
    "ServiceError",
    "ServiceProcess",
    "free_port",
    "port_in_use",
    "require_node_tooling",
]


class ServiceError(Exception):
    """A local service could not be started or died."""


def free_port(*, avoid: Container[int] = ()) -> int:
    """A TCP port on 127.0.0.1 that is free right now (and not in ``avoid``: ports chosen for
    services not started yet)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in avoid:
            return port
    raise ServiceError("no free port found")


def free_ports(n: int) -> int:
    """The first of ``n`` consecutive TCP ports on 127.0.0.1 that are free right now (a local
    federation's gateways listen on consecutive ports)."""
    for _ in range(100):
        base = free_port()
        if base + n < 65_536 and not any(port_in_use(base + i) for i in range(1, n)):
            return base
    raise ServiceError(f"no {n} consecutive free ports found")


def stack_ports(gateways: int = 1) -> tuple[int, int, int]:
    """``(chain, ipfs, first gateway)`` ports for a local stack, free now and all distinct: the
    gateways get ``gateways`` consecutive ports from the third, and neither the chain's nor the
    IPFS port falls among them (none is bound until its service starts)."""
    first = free_ports(gateways)
    taken = range(first, first + gateways)
    chain = free_port(avoid=taken)
    return chain, free_port(avoid=[*taken, chain]), first


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def require_node_tooling() -> None:
    """A clear error when node/npm or the installed hardhat_local packages are missing."""
    if shutil.which("node") is None:
        raise ServiceError("node is not on PATH: install Node.js 20 (and npm), then run `make up`")
    if not (hardhat_local_dir() / "node_modules").is_dir():
        raise ServiceError(
            "hardhat_local/node_modules is missing: run `npm ci --prefix hardhat_local` "
            "(`make up` does it for you)"
        )


@dataclass
class ServiceProcess:
    """A child process with a log file; stopped by its own PID only."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._close_log()  # a restart after kill(): the log of the previous run
        self._log = self.log_path.open("ab")
        env = {**os.environ, **self.env}
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, not the child
            )
        except OSError as exc:
            raise ServiceError(f"{self.name}: cannot start {self.argv[0]}: {exc}") from exc

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise ServiceError(
                f"{self.name} exited with code {self.proc.returncode}; see {self.log_path}"
            )

    def stop(self, *, grace_s: float = 15.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._close_log()

    def kill(self) -> None:
        """SIGKILL, for fault-injection tests."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _wait_until(
    check: ServiceProcess, probe: Callable[[], object], *, timeout_s: float, what: str
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        check.check_alive()
        with contextlib.suppress(httpx.HTTPError, OSError):
            if probe():
                return
        time.sleep(0.1)
    raise ServiceError(
        f"{what} did not become ready in {timeout_s:.0f} s; log tail:\n{check.tail()}"
    )


class AnvilNode:
    """anvil on 127.0.0.1:``port``, persisting to ``state_file`` when given."""

    def __init__(
        self,
        *,
        port: int,
        log_path: Path,
        state_file: Path | None = None,
        state_interval_s: int = 5,
        chain_id: int = ANVIL_CHAIN_ID,
        block_time_s: float | None = None,
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.chain_id = chain_id
        binary = hardhat_local_dir() / "node_modules" / ".bin" / "anvil"
        argv = [
            str(binary),
            "--host", "127.0.0.1",
            "--port", str(port),
            "--chain-id", str(chain_id),
            "--silent",
        ]  # fmt: skip
        if state_file is not None:
            state_file.parent.mkdir(parents=True, exist_ok=True)
            argv += ["--state", str(state_file), "--state-interval", str(state_interval_s)]
        if block_time_s is not None:
            argv += ["--block-time", str(block_time_s)]
        self.process = ServiceProcess("anvil", argv, log_path)

    def start(self, *, timeout_s: float = 30.0) -> AnvilNode:
        if port_in_use(self.port):
            raise ServiceError(f"port {self.port} is already in use (chain node)")
        self.process.start()
        _wait_until(self.process, self._ready, timeout_s=timeout_s, what="anvil")
        return self

    def _ready(self) -> bool:
        rpc = RpcClient(self.url, timeout_s=1.0)
        try:
            return rpc.chain_id() == self.chain_id
        except ChainError:
            return False
        finally:
            rpc.close()

    def stop(self) -> None:
        self.process.stop()


class IpfsNode:
    """js-ipfs (Kubo RPC API) on 127.0.0.1:``api_port``, offline, repo at ``repo``."""

    def __init__(self, *, repo: Path, api_port: int, log_path: Path) -> None:
        self.repo = repo
        self.api_port = api_port
        self.url = f"http://127.0.0.1:{api_port}"
        self._bin = hardhat_local_dir() / "node_modules" / ".bin" / "jsipfs"
        self.env = {"IPFS_PATH": str(repo)}
        self.process = ServiceProcess(
            "ipfs",
            [str(self._bin), "daemon", "--offline", "--enable-preload=false"],
            log_path,
            env=self.env,
        )

    def init(self) -> None:
        """Initialise the repository once; rewrite its config for a local, offline node."""
        config_path = self.repo / "config"
        if not config_path.is_file():
            self.repo.mkdir(parents=True, exist_ok=True)
            result = subprocess.run(
                [str(self._bin), "init", "--empty-repo"],
                env={**os.environ, **self.env},
                capture_output=True,
                timeout=120,
                check=False,
            )
            if result.returncode != 0:
                raise ServiceError(f"ipfs init failed: {result.stderr.decode(errors='replace')}")
        config = json.loads(config_path.read_text())
        config["Addresses"] = {
            "API": f"/ip4/127.0.0.1/tcp/{self.api_port}",
            "Swarm": ["/ip4/127.0.0.1/tcp/0"],
            "Gateway": [],
            "RPC": "",  # an empty list crashes the daemon
            "Delegates": [],
        }
        config["Bootstrap"] = []
        config["Discovery"] = {
            "MDNS": {"Enabled": False, "Interval": 10},
            "webRTCStar": {"Enabled": False},
        }
        config_path.write_text(json.dumps(config, indent=2))
        (self.repo / "api").unlink(
            missing_ok=True
        )  # a stale api file makes the CLI talk to a dead node
        # A SIGKILLed daemon leaves its repo lock behind; we are the only user of this repo.
        lock = self.repo / "repo.lock"
        with contextlib.suppress(OSError):
            if lock.is_dir():
                shutil.rmtree(lock)
            else:
                lock.unlink(missing_ok=True)
        return

    def start(self, *, timeout_s: float = 60.0) -> IpfsNode:
        if port_in_use(self.api_port):
            raise ServiceError(f"port {self.api_port} is already in use (IPFS API)")
        self.init()
        self.process.start()
        _wait_until(self.process, self._ready, timeout_s=timeout_s, what="IPFS node")
        return self

    def _ready(self) -> bool:
        r = httpx.post(f"{self.url}/api/v0/id", timeout=2.0)
        return r.status_code == 200

    def stop(self) -> None:
        self.process.stop()

    def kill(self) -> None:
        self.process.kill()
