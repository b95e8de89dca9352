"""``consent gateway``: run one gateway (or one replica) against external services.

The settings come from a TOML file (``--config FILE``): its ``[gateway]`` table holds the
gateway's settings (``CONSENT_*`` variables override them, or stand in for the file), its
``[server]`` table how the process listens (``SERVER_SETTINGS``). The gateway is a separate
program: these commands start it as ``python -m gateway.preflight`` (the start-up checks)
and ``python -m uvicorn gateway.app:create_app --factory`` with the settings in their
environment, so the client never imports it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from ledger.cli.app import RoleApp
from ledger.cli.context import CliError
from ledger.config_file import ConfigFileError, read_config_file

__all__ = ["SERVER_SETTINGS", "ServerSetting", "app", "server_options"]

app = RoleApp(
    shared=(),
    help="Run a gateway against your chain node, IPFS and database (`serve`, `check`).",
)

#: The variable naming the config file for the gateway process (``gateway.settings``).
CONFIG_FILE_ENV = "CONSENT_CONFIG_FILE"


@dataclass(frozen=True)
class ServerSetting:
    """One key of the ``[server]`` table (or ``CONSENT_SERVER_<KEY>``)."""

    key: str
    default: Any
    kind: type
    help: str

    @property
    def env(self) -> str:
        return f"CONSENT_SERVER_{self.key.upper()}"


#: How ``consent gateway serve`` runs the gateway process (uvicorn's options).
SERVER_SETTINGS: tuple[ServerSetting, ...] = (
    ServerSetting("host", "127.0.0.1", str, "address to listen on"),
    ServerSetting("port", 8000, int, "port to listen on"),
    ServerSetting(
        "workers", 1, int, "worker processes (more than 1 needs PostgreSQL, never SQLite)"
    ),
    ServerSetting(
        "forwarded_allow_ips",
        "",
        str,
        "the reverse proxies (comma-separated IPs) whose X-Forwarded-For / -Proto are "
        "believed; empty: proxy headers are ignored",
    ),
    ServerSetting("log_level", "info", str, "uvicorn's log level"),
)
_BY_KEY = {s.key: s for s in SERVER_SETTINGS}

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML settings file: [gateway] (every CONSENT_* setting, lower-case) and [server]; "
        "environment variables override it. See docs/operations.md.",
    ),
]


def _read_config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = read_config_file(path)
    except ConfigFileError as exc:
        raise CliError(str(exc)) from None
    unknown = sorted(set(data) - {"gateway", "server"})
    if unknown:
        raise CliError(
            f"the config file {path} has unknown tables or keys {unknown}; it holds a "
            f"[gateway] and a [server] table (docs/operations.md)"
        )
    return data


def server_options(path: Path | None, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The ``[server]`` settings: defaults, then the file, then ``CONSENT_SERVER_*``."""
    env = os.environ if environ is None else environ
    table = _read_config(path).get("server", {})
    if not isinstance(table, dict):
        raise CliError(f"[server] in {path} must be a table")
    unknown = sorted(set(table) - set(_BY_KEY))
    if unknown:
        raise CliError(
            f"the config file {path} names unknown server settings {unknown}; known: "
            f"{', '.join(_BY_KEY)}"
        )
    values: dict[str, Any] = {}
    for setting in SERVER_SETTINGS:
        raw: Any = env.get(setting.env, table.get(setting.key, setting.default))
        try:
            value = setting.kind(raw)
        except (TypeError, ValueError):
            raise CliError(
                f"server setting {setting.key} ({setting.env}) must be "
                f"{'a whole number' if setting.kind is int else 'text'}, not {raw!r}"
            ) from None
        if setting.kind is int and (isinstance(raw, bool) or value < 1):
            raise CliError(f"server setting {setting.key} must be a positive whole number")
        values[setting.key] = value
    return values


def _gateway_env(path: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if path is not None:
        _read_config(path)  # fail here, in one line, on a file that cannot be read
        env[CONFIG_FILE_ENV] = str(path.resolve())
    return env


def _preflight(env: dict[str, str]) -> int:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.preflight"], env=env, check=False, text=True,
        capture_output=True,
    )  # fmt: skip
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done.returncode


@app.command("check")
def gateway_check(config: ConfigOpt = None) -> None:
    """Run the gateway's start-up checks (chain id, roles, funded accounts) and exit.

    Exit 0: the gateway would start; 1: a check refused (each says what to do); 2: the
    settings cannot be read or the chain node does not answer.
    """
    server_options(config)
    code = _preflight(_gateway_env(config))
    if code:
        raise typer.Exit(code)


@app.command("serve")
def gateway_serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option("--host", help="Overrides [server] host.")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Overrides [server] port.")] = None,
) -> None:
    """Check, then run the gateway in the foreground (this process becomes the server).

    Refuses to start, with the check's sentence, when a start-up check fails (see
    `consent gateway check`).
    """
    options = server_options(config)
    if host is not None:
        options["host"] = host
    if port is not None:
        options["port"] = port
    env = _gateway_env(config)
    code = _preflight(env)
    if code:
        raise typer.Exit(code)
    argv = [
        sys.executable, "-m", "uvicorn", "gateway.app:create_app", "--factory",
        "--host", options["host"], "--port", str(options["port"]),
        "--workers", str(options["workers"]), "--log-level", options["log_level"],
    ]  # fmt: skip
    if options["forwarded_allow_ips"]:
        argv += ["--proxy-headers", "--forwarded-allow-ips", options["forwarded_allow_ips"]]
    else:
        argv += ["--no-proxy-headers"]
    sys.stdout.flush()
    sys.stderr.flush()
    # this process becomes the server, so a service manager's signals reach uvicorn itself
    os.execve(sys.executable, argv, env)  # noqa: S606 (a fixed argv, no shell)
