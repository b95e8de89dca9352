"""A client installed with ``pip install .`` (no dev extras) runs without node, npm or solc.

``make client-check`` runs this. It makes a fresh venv, installs the project into it without the
dev extras, and runs the read-only client commands (``consent audit run`` with the gateway's
access log, ``audit state``, ``consents``, ``key list``) from that venv against a running stack,
with only the venv's ``bin`` on PATH, from an empty directory, with a home that holds nothing
but the stack's deployment file. The stack (chain node, IPFS node, gateway) comes from the
development install, which has node: only the client is under test. Without ``--gateway`` it
starts a throw-away stack on free ports. Prints each command with its time; exits 0 only if
every one succeeded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import local_stack
from ledger.paths import PROJECT_ROOT, state_paths

TOOLCHAIN = ("node", "npm", "npx", "solc")


#: Not part of the source a ``pip install .`` builds from (copied without them, so the build
#: leaves nothing behind in the checkout).
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", ".consent", "hardhat_local", "build", "dist", "*.egg-info", "__pycache__",
    ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis",
)  # fmt: skip


def _install(work: Path) -> Path:
    """A fresh venv with the project installed, no dev extras; its ``bin`` directory."""
    source = work / "source"
    shutil.copytree(PROJECT_ROOT, source, ignore=_NOT_SOURCE)
    venv_dir = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv_dir)], check=True)
    python = venv_dir / "bin" / "python"
    started = time.monotonic()
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "."], check=True, cwd=source)
    print(f"pip install . into a fresh venv: {time.monotonic() - started:.1f} s")
    return venv_dir / "bin"


def _client_env(bin_dir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CONSENT_", "PYTHON", "VIRTUAL_ENV"))
    }
    env["PATH"] = str(bin_dir)
    found = [tool for tool in TOOLCHAIN if shutil.which(tool, path=env["PATH"])]
    if found:
        raise SystemExit(f"the client's PATH must not hold {', '.join(found)}")
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", help="Gateway URL of a running stack (default: start one).")
    parser.add_argument("--home", type=Path, help="That stack's state dir (deployment.json).")
    args = parser.parse_args()
    if args.gateway and not args.home:
        parser.error("--gateway needs --home (the stack's deployment.json is the trust anchor)")

    with tempfile.TemporaryDirectory(prefix="consent-client-check-") as tmp:
        work = Path(tmp)
        bin_dir = _install(work)
        env = _client_env(bin_dir)
        located = subprocess.run(
            [str(bin_dir / "python"), "-c", "import ledger; print(ledger.__file__)"],
            capture_output=True, text=True, check=True, env=env, cwd=work,
        ).stdout.strip()  # fmt: skip
        if not Path(located).is_relative_to(work / "venv"):
            raise SystemExit(f"the client imported ledger from {located}, not from the venv")

        with local_stack(args.gateway) as stack:
            source = args.home if args.home is not None else stack.home
            if source is None:
                raise SystemExit("no state dir for the stack; pass --home")
            home = work / "client-home"
            home.mkdir()
            shutil.copy(state_paths(source).deployment, home / "deployment.json")
            chain = ["--chain", stack.chain_url, "--home", str(home)]
            export = f"{stack.gateway_url}/v1/access-log/export"
            commands = [
                ["--help"],
                ["audit", "run", *chain, "--access-log", export, "--as", "auditor", "--json"],
                ["audit", "state", "--patient", "patient", *chain, "--json"],
                ["consents", "--as", "patient", "--gateway", stack.gateway_url, *chain, "--json"],
                ["key", "list", "--home", str(home), "--json"],
            ]
            failed = 0
            for command in commands:
                started = time.monotonic()
                proc = subprocess.run(
                    [str(bin_dir / "consent"), *command],
                    capture_output=True, text=True, env=env, cwd=work, timeout=300, check=False,
                )  # fmt: skip
                took = time.monotonic() - started
                status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
                print(f"{took:6.2f} s  consent {' '.join(command[:2])}: {status}")
                if proc.returncode != 0:
                    failed += 1
                    print(proc.stdout[-2000:] + proc.stderr[-2000:], file=sys.stderr)
    print("client check:", "passed" if not failed else f"{failed} command(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
