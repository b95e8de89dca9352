"""Foundation: reproducible build, the hashed locks, the solc front, services, idempotent deploy,
`consent up`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ledger.chain import abi as shipped_abi
from ledger.chain import build
from ledger.chain.build import SOLC_VERSION, compile_contracts
from ledger.chain.deployment import REGISTRY_CONTRACT, DeploymentMismatch, ensure_deployed
from ledger.chain.node import DevKeyOnPublicChain, TxSender, dev_accounts, ensure_not_dev_key
from ledger.devstack.services import free_port, stack_ports
from ledger.paths import hardhat_local_dir


def _fresh_compile() -> dict[str, build.Artifact]:
    build._compile_cached.cache_clear()
    return compile_contracts()


def test_compiling_twice_gives_identical_bytecode() -> None:
    first = _fresh_compile()
    second = _fresh_compile()
    assert REGISTRY_CONTRACT in first
    assert first.keys() == second.keys()
    for name in first:
        assert first[name].bytecode == second[name].bytecode, name
        assert first[name].deployed_bytecode == second[name].deployed_bytecode, name
        assert first[name].abi == second[name].abi, name


def test_shipped_abi_matches_a_fresh_compile() -> None:
    """The ABI files in the package are exactly what the current sources compile to: a change
    to a contract's interface without ``make abi`` fails here, not in a pip-installed client."""
    fresh = _fresh_compile()
    for name in shipped_abi.SHIPPED:
        shipped = shipped_abi.load_abi(name)
        assert shipped == fresh[name].abi, f"{name}: run `make abi`"
        text = shipped_abi.render(fresh[name].abi)
        packaged = (Path(shipped_abi.__file__).parent / "abi" / f"{name}.json").read_text()
        assert packaged == text, f"{name}: shipped file is not in canonical form; run `make abi`"


def test_the_client_imports_without_the_compiler() -> None:
    """Talking to a deployed registry needs no py-solc-x: the registry client, the deployment
    record and the ``consent`` entry point import with it blocked, and only compiling says why
    it cannot run."""
    script = (
        "import sys\n"
        "sys.modules['solcx'] = None  # any import of py-solc-x now raises ImportError\n"
        "import ledger.chain.abi, ledger.chain.build, ledger.chain.deployment\n"
        "import ledger.chain.registry, ledger.cli.main\n"
        "from ledger.chain.build import BuildError, solc_binary\n"
        "assert ledger.chain.abi.registry_abi()\n"
        "try:\n"
        "    solc_binary()\n"
        "except BuildError as exc:\n"
        "    assert 'py-solc-x' in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('solc_binary() ran without py-solc-x')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_build_cache_is_keyed_by_sources(tmp_path: Path) -> None:
    compiled = compile_contracts(cache_dir=tmp_path)
    cached = list(tmp_path.glob("*.json"))
    assert len(cached) == 1
    build._compile_cached.cache_clear()
    again = compile_contracts(cache_dir=tmp_path)
    assert again[REGISTRY_CONTRACT].bytecode == compiled[REGISTRY_CONTRACT].bytecode
    assert list(tmp_path.glob("*.json")) == cached


ROOT = Path(__file__).resolve().parents[1]


def _locked(name: str) -> dict[str, list[tuple[str, list[str]]]]:
    """A lock file's pins: package -> [(version, hashes)] (more than one only under markers)."""
    entries = (ROOT / name).read_text(encoding="utf-8").replace("\\\n", " ").splitlines()
    pins: dict[str, list[tuple[str, list[str]]]] = {}
    for entry in entries:
        if not entry.strip() or entry.lstrip().startswith("#"):
            continue
        words = entry.split()
        requirement = Requirement(entry.split(" --hash")[0])
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{name}: {entry[:60]} is not pinned"
        hashes = [w.removeprefix("--hash=") for w in words if w.startswith("--hash=sha256:")]
        pins.setdefault(canonicalize_name(requirement.name), []).append((spec.version, hashes))
    return pins


def test_the_locks_pin_and_hash_every_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runtime = [Requirement(r) for r in project["dependencies"]]
    dev = [Requirement(r) for r in project["optional-dependencies"]["dev"]]
    slither = [
        Requirement(line)
        for line in (ROOT / "requirements-slither.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    dev_lock, runtime_lock = _locked("requirements-dev.lock"), _locked("requirements.lock")
    for lock, wanted in ((dev_lock, runtime + dev + slither), (runtime_lock, runtime)):
        for requirement in wanted:
            pins = lock.get(canonicalize_name(requirement.name))
            assert pins, f"{requirement.name} is not in the lock: run `make lock`"
            for version, _ in pins:
                assert requirement.specifier.contains(version, prereleases=True), (
                    f"{requirement.name} {version} does not satisfy {requirement}: run `make lock`"
                )
    for lock in (dev_lock, runtime_lock):
        for name, pins in lock.items():
            assert all(hashes for _, hashes in pins), f"{name} has no hash"
    # a client installed from requirements.lock runs what the tests ran
    for name, pins in runtime_lock.items():
        assert [v for v, _ in pins] == [v for v, _ in dev_lock[name]], name
    assert "pytest" not in runtime_lock
    assert "slither-analyzer" not in runtime_lock


def test_solc_front_answers_version_like_native_solc() -> None:
    out = subprocess.run(
        [str(hardhat_local_dir() / "bin" / "solc"), "--version"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert f"Version: {SOLC_VERSION}+commit." in out


def test_solc_front_writes_large_output_whole() -> None:
    """A result far above a pipe's 64 KiB must arrive complete and parse as JSON."""
    sources = {
        f"U{i}.sol": {
            "content": f"pragma solidity {SOLC_VERSION}; contract U{i} "
            + "{ "
            + " ".join(
                f"function f{j}() external pure returns (uint) {{ return {j}; }}" for j in range(40)
            )
            + " }"
        }
        for i in range(12)
    }
    request = {
        "language": "Solidity",
        "sources": sources,
        "settings": {"outputSelection": {"*": {"*": ["abi", "evm.bytecode.object"]}}},
    }
    proc = subprocess.run(
        [str(hardhat_local_dir() / "bin" / "solc"), "--standard-json"],
        input=json.dumps(request), capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert len(proc.stdout) > 64 * 1024  # above what a truncating exit would deliver
    output = json.loads(proc.stdout)
    assert len(output["contracts"]) == 12


def test_solc_front_rejects_unknown_arguments() -> None:
    proc = subprocess.run(
        [str(hardhat_local_dir() / "bin" / "solc"), "--bin", "x.sol"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "unsupported argument" in proc.stderr


def test_dev_keys_are_refused_off_the_local_chain() -> None:
    ensure_not_dev_key(dev_accounts()[0], 31337)
    with pytest.raises(DevKeyOnPublicChain) as info:
        ensure_not_dev_key(dev_accounts()[3], 1)
    assert info.value.chain_id == 1
    ensure_not_dev_key(Account.create(), 1)  # any other key is fine


def test_deployment_is_reused_and_checked(chain, tmp_path: Path) -> None:
    artifact = compile_contracts()[REGISTRY_CONTRACT]
    admin = dev_accounts()[0]
    sender = TxSender(chain, admin)
    path = tmp_path / "deployment.json"
    first, created = ensure_deployed(chain, artifact, path=path, sender=sender, admin=admin.address)
    assert created
    second, created_again = ensure_deployed(
        chain, artifact, path=path, sender=sender, admin=admin.address
    )
    assert not created_again
    assert second == first
    assert json.loads(path.read_text())["address"] == first.address
    record = json.loads(path.read_text())
    record["abi_hash"] = "0" * 64
    path.write_text(json.dumps(record))
    with pytest.raises(DeploymentMismatch, match="contracts changed"):
        ensure_deployed(chain, artifact, path=path, sender=sender, admin=admin.address)


def _wait_health(url: str, proc: subprocess.Popen[str], timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            r = httpx.get(f"{url}/healthz", timeout=2)
            if r.status_code == 200:
                return r.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("gateway never became healthy")


def _children_of(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


@pytest.mark.slow
def test_consent_up_survives_restart_and_stops_every_child(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ports = list(stack_ports(3))
    argv = [
        sys.executable, "-m", "ledger.cli", "up", "--home", str(home),
        "--chain-port", str(ports[0]), "--ipfs-port", str(ports[1]),
        "--gateway-port", str(ports[2]),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{ports[2]}"
    env = {**os.environ, "COLUMNS": "200"}
    seen: list[dict] = []
    for _ in range(2):
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        try:
            health = _wait_health(url, proc)
            children = _children_of(proc.pid)
            assert len(children) == 5, children  # chain, IPFS and the 2-of-3 federation
            seen.append(health)
            proc.send_signal(signal.SIGINT)
            output, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0, output
            assert "stopped." in output
            for child in children:
                assert not Path(f"/proc/{child}").exists() or _is_zombie(child), child
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert seen[1]["contract"] == seen[0]["contract"]
    assert seen[1]["latest_block"] >= seen[0]["latest_block"]
    deployment = json.loads((home / "deployment.json").read_text())
    assert deployment["address"] == seen[0]["contract"]


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_consent_up_refuses_a_port_in_use(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "ledger.cli", "up", "--home", str(tmp_path),
             "--chain-port", str(busy), "--ipfs-port", str(free_port()),
             "--gateway-port", str(free_port())],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 2
    assert f"port {busy}" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
