"""The ``consent`` command line: one command per job, for every role.

Identities: ``--as NAME`` (or ``$CONSENT_AS``) is a key in the encrypted keystore
(``$CONSENT_HOME/keys``, password from a prompt or ``$CONSENT_PASSWORD``) or, on the local chain
only, one of anvil's development accounts (``admin``, ``centre``, ``patient``, ``doctor`` ...).
Wherever an account is asked for (``--patient``, ``--to``, ``ADDRESS``) a 0x address, a keystore
name or a development name is accepted.

Exit codes: 0 success; 1 refused or a check failed (no consent, the registry said no, a
verification failed, a demo expectation did not hold); 2 could not run (bad input, wrong
password, unknown record, a service is down); 130 interrupted. Failures print one line saying
what to do next; ``consent --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import httpx
import typer
from rich.console import Console
from rich.table import Table

from ledger.devstack.services import ServiceError
from ledger.paths import StatePaths, state_paths

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from eth_typing import ChecksumAddress
    from web3 import Web3

    from ledger.chain.registry import ConsentRegistry, Receipt
    from ledger.client import Gateway, RelayResult, Session, Uploaded
    from ledger.protocol.eip712 import Domain
    from ledger.protocol.wire import HealthPublic

__all__ = ["EXIT_CODES", "Ctx", "app", "main", "parse_expiry", "parse_purposes"]

EXIT_CODES = {
    0: "success",
    1: "refused or a check failed (no consent, the registry said no, a verification failed)",
    2: "could not run (bad input, wrong password, unknown record, a service is down)",
    130: "interrupted",
}

app = typer.Typer(
    name="consent",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
key_app = typer.Typer(help="Keys: an encrypted keystore plus the local chain's dev accounts.")
admin_app = typer.Typer(help="Registry admin: admit centres, gateways and emergency services.")
guardian_app = typer.Typer(help="Patient: name or remove a guardian who may act for you.")
app.add_typer(key_app, name="key", no_args_is_help=True)
app.add_typer(admin_app, name="admin", no_args_is_help=True)
app.add_typer(guardian_app, name="guardian", no_args_is_help=True)

# Piped or captured output is not wrapped at 80 columns: record ids and hashes stay whole.
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

_DEBUG = {"on": False}

HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", help="State directory (default: $CONSENT_HOME or ./.consent)."),
]
GatewayOpt = Annotated[
    str,
    typer.Option("--gateway", envvar="CONSENT_GATEWAY_URL", help="Gateway base URL."),
]
ChainOpt = Annotated[
    str,
    typer.Option("--chain", envvar="CONSENT_CHAIN_URL", help="Chain node JSON-RPC URL."),
]
RegistryOpt = Annotated[
    str | None,
    typer.Option(
        "--registry",
        envvar="CONSENT_REGISTRY",
        help="Registry address to trust (default: $CONSENT_HOME/deployment.json; never the "
        "gateway's).",
    ),
]
AsOpt = Annotated[
    str | None,
    typer.Option(
        "--as",
        envvar="CONSENT_AS",
        help="Who acts: a keystore name or, on the local chain, a dev name (patient, doctor ...).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
DirectOpt = Annotated[
    bool,
    typer.Option(
        "--direct",
        help="Send the transaction yourself (you pay gas) instead of having the gateway relay it.",
    ),
]

DEFAULT_GATEWAY = "http://127.0.0.1:8000"
DEFAULT_CHAIN = "http://127.0.0.1:8545"


# ------------------------------------------------------------------------------------ errors


class CliError(Exception):
    """A failure the user can act on: one line, an exit code."""

    def __init__(self, message: str, *, code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _fail(message: str, *, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _describe(exc: BaseException, ctx: Ctx | None) -> tuple[str, int] | None:
    """One readable line and an exit code for a known failure (else None)."""
    from ledger.chain.keys import KeystoreError, WrongPassword
    from ledger.chain.node import ChainError, ChainUnavailable, DevKeyOnPublicChain
    from ledger.client import ClientError
    from ledger.protocol.contract_errors import ContractError, UnknownRecord

    chain_url = ctx.chain_url if ctx is not None else DEFAULT_CHAIN
    if isinstance(exc, CliError):
        return exc.message, exc.code
    if isinstance(exc, ClientError):
        return exc.line(), exc.exit_code
    if isinstance(exc, WrongPassword):
        return (
            f"wrong password for key {exc.name!r}; try again, or set CONSENT_PASSWORD to the "
            f"key's password",
            2,
        )
    if isinstance(exc, KeystoreError):
        return str(exc), 2
    if isinstance(exc, UnknownRecord):
        return (
            f"unknown record 0x{exc.record_id.hex()}: it is not registered on-chain; "
            f"check the id with `consent records`",
            2,
        )
    if isinstance(exc, ContractError):
        return f"the registry refused: {exc}; nothing changed", 1
    if isinstance(exc, DevKeyOnPublicChain):
        return f"{exc}; create a key with `consent key new NAME`", 2
    if isinstance(exc, ChainUnavailable):
        return (
            f"the chain node at {exc.url} is not answering ({exc.reason}); start it with "
            f"`consent up` or pass --chain / CONSENT_CHAIN_URL",
            2,
        )
    if isinstance(exc, ChainError):
        return f"{exc}", 2
    if isinstance(exc, ServiceError):
        return str(exc), 2
    name = type(exc).__name__
    module = type(exc).__module__
    if module.startswith(("requests", "urllib3", "web3")) and (
        "Connection" in name or "Timeout" in name or "Provider" in name
    ):
        return (
            f"the chain node at {chain_url} is not answering ({name}); start it with "
            f"`consent up` or pass --chain / CONSENT_CHAIN_URL",
            2,
        )
    return None


P = ParamSpec("P")
R = TypeVar("R")


def handled(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn known failures into one line and a documented exit code (tracebacks with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            if _DEBUG["on"]:
                raise
            described = _describe(exc, _CURRENT.get("ctx"))
            if described is None:
                described = (
                    f"unexpected {type(exc).__name__}: {exc}; rerun with `consent --debug ...` "
                    f"for the traceback",
                    2,
                )
            message, code = described
            line = message.splitlines()[0] if message else type(exc).__name__
            raise _fail(line, code=code) from None
        finally:
            ctx = _CURRENT.pop("ctx", None)
            if ctx is not None:
                ctx.close()

    return wrapper


_CURRENT: dict[str, Ctx] = {}


# ------------------------------------------------------------------------------ the context


@dataclass(frozen=True)
class Anchors:
    """What a client trusts about the ledger, from its own configuration, never a gateway's."""

    registry: ChecksumAddress
    chain_id: int | None  # None: the client's own chain node (--chain) says
    deploy_block: int | None
    source: str  # where the anchors came from, to name in errors


@dataclass
class Ctx:
    """What a command talks to: the state dir, the gateway, the chain, the registry, keys.

    Everything is made on first use, so a command touches only what it needs. Trust anchors
    (registry address, chain id, deploy block) come from ``--registry`` / ``$CONSENT_REGISTRY``
    (with ``$CONSENT_CHAIN_ID`` / ``$CONSENT_DEPLOY_BLOCK``) or ``$CONSENT_HOME/deployment.json``;
    a gateway whose ``/healthz`` names another registry or chain is refused.
    """

    home: Path | None = None
    gateway_url: str = DEFAULT_GATEWAY
    chain_url: str = field(
        default_factory=lambda: os.environ.get("CONSENT_CHAIN_URL", DEFAULT_CHAIN)
    )
    registry_address: str | None = None
    _gateway: Gateway | None = None
    _health: HealthPublic | None = None
    _anchors: Anchors | None = None
    _w3: Web3 | None = None
    _registry: ConsentRegistry | None = None
    _sessions: dict[str, Session] = field(default_factory=dict)
    _accounts: dict[str, LocalAccount] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _CURRENT["ctx"] = self

    def close(self) -> None:
        if self._gateway is not None:
            self._gateway.close()

    @property
    def paths(self) -> StatePaths:
        return state_paths(self.home)

    # -- trust anchors -----------------------------------------------------------------------

    def anchors(self) -> Anchors:
        """The pinned registry, chain id and deploy block (see the class docstring)."""
        if self._anchors is None:
            self._anchors = self._load_anchors()
        return self._anchors

    def _load_anchors(self) -> Anchors:
        from eth_utils.address import to_checksum_address

        from ledger.chain.deployment import load_deployment

        path = self.paths.deployment
        try:
            deployment = load_deployment(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CliError(
                f"cannot read the deployment file {path} ({type(exc).__name__}); fix or remove "
                f"it, or pass --registry / CONSENT_REGISTRY"
            ) from None
        explicit = (self.registry_address or os.environ.get("CONSENT_REGISTRY") or "").strip()
        if explicit:
            if not re.fullmatch(r"0x[0-9a-fA-F]{40}", explicit):
                raise CliError(f"--registry {explicit!r} is not an address (0x + 40 hex digits)")
            address = to_checksum_address(explicit)
            if deployment is not None and deployment.address == address:
                return Anchors(address, deployment.chain_id, deployment.block, str(path))
            return Anchors(
                address,
                _env_int("CONSENT_CHAIN_ID"),
                _env_int("CONSENT_DEPLOY_BLOCK"),
                "--registry / CONSENT_REGISTRY",
            )
        if deployment is not None:
            return Anchors(deployment.address, deployment.chain_id, deployment.block, str(path))
        raise CliError(
            f"cannot tell which registry to trust: pass --registry ADDRESS (or set "
            f"CONSENT_REGISTRY), or keep the deployment file at {path}; a gateway's word is "
            f"not taken for it"
        )

    def _pinned_chain_id(self) -> int | None:
        try:
            return self.anchors().chain_id
        except CliError:
            return _env_int("CONSENT_CHAIN_ID")

    # -- services ----------------------------------------------------------------------------

    def gateway(self) -> Gateway:
        """The gateway, once its ``/healthz`` agrees with the pinned registry and chain id."""
        from ledger.client import Gateway

        if self._gateway is None:
            gateway = Gateway(self.gateway_url)
            try:
                self._check_gateway(gateway)
            except BaseException:
                gateway.close()
                raise
            self._gateway = gateway
        return self._gateway

    def _check_gateway(self, gateway: Gateway) -> None:
        health = gateway.health()
        anchors = self.anchors()
        if health.contract is not None and health.contract.lower() != anchors.registry.lower():
            raise CliError(
                f"the gateway at {self.gateway_url} names the registry {health.contract}, but "
                f"this client trusts {anchors.registry} (from {anchors.source}); refusing to use "
                f"that gateway, nothing was signed or written",
                code=1,
            )
        if health.chain_id is not None and int(health.chain_id) != self.chain_id():
            raise CliError(
                f"the gateway at {self.gateway_url} names chain {health.chain_id}, but this "
                f"client's chain is {self.chain_id()}; refusing to use that gateway, nothing was "
                f"signed or written",
                code=1,
            )
        self._health = health

    def health(self) -> HealthPublic:
        if self._health is None:
            self._health = self.gateway().health()
        return self._health

    def w3(self) -> Web3:
        """The client's own chain node (``--chain``), checked against the pinned chain id."""
        from ledger.chain.node import ChainUnavailable, connect

        if self._w3 is None:
            w3 = connect(self.chain_url)
            try:
                node_chain = int(w3.eth.chain_id)
            except Exception as exc:
                raise ChainUnavailable(self.chain_url, type(exc).__name__) from None
            pinned = self._pinned_chain_id()
            if pinned is not None and node_chain != pinned:
                raise CliError(
                    f"the chain node at {self.chain_url} is chain {node_chain}, but this client "
                    f"is pinned to chain {pinned}; pass the --chain / CONSENT_CHAIN_URL of "
                    f"chain {pinned}"
                )
            self._w3 = w3
        return self._w3

    def chain_id(self) -> int:
        """The pinned chain id, else the client's own chain node's (never the gateway's)."""
        pinned = self._pinned_chain_id()
        if pinned is not None:
            return pinned
        return int(self.w3().eth.chain_id)

    def registry(self) -> ConsentRegistry:
        """The pinned registry on the client's own chain node."""
        from ledger.chain.build import compile_contracts
        from ledger.chain.registry import REGISTRY_CONTRACT, ConsentRegistry

        if self._registry is None:
            anchors = self.anchors()
            w3 = self.w3()
            if not bytes(w3.eth.get_code(anchors.registry)):
                raise CliError(
                    f"there is no contract at {anchors.registry} (the registry from "
                    f"{anchors.source}) on the chain at {self.chain_url}; check --chain and "
                    f"--registry"
                )
            abi = compile_contracts(cache_dir=self.paths.build_cache)[REGISTRY_CONTRACT].abi
            self._registry = ConsentRegistry(w3, anchors.registry, abi=abi)
        return self._registry

    def domain(self) -> Domain:
        return self.registry().domain

    # -- identities --------------------------------------------------------------------------

    def keystore(self) -> Any:
        from ledger.chain.keys import Keystore

        return Keystore(self.paths.keys)

    def account(self, name: str | None) -> LocalAccount:
        """The acting identity (unlocks a keystore key with the password)."""
        from ledger.chain.keys import DEV_NAMES, dev_account

        if not name:
            raise CliError("say who acts with --as NAME (or CONSENT_AS); see `consent key list`")
        if name in self._accounts:
            return self._accounts[name]
        keystore = self.keystore()
        if name in DEV_NAMES:
            account = dev_account(name, chain_id=self.chain_id())
        elif _is_key_name(name) and keystore.has(name):
            account = keystore.unlock(name, _password(f"Password for key {name!r}"))
        else:
            raise CliError(
                f"no identity named {name!r}: not in the keystore ({self.paths.keys}) and not a "
                f"dev account ({', '.join(DEV_NAMES)}); create it with `consent key new {name}`"
            )
        self._accounts[name] = account
        return account

    def address(self, who: str, *, what: str = "account") -> ChecksumAddress:
        """An address from a 0x address, a keystore name or a dev name (no unlocking)."""
        from eth_utils.address import to_checksum_address

        from ledger.chain.keys import KeystoreError, resolve_address

        try:
            found = resolve_address(who, keystore=self.keystore(), chain_id=self.chain_id())
        except KeystoreError as exc:
            raise CliError(f"{what} {exc}") from None
        return to_checksum_address(found)

    def session(self, account: LocalAccount) -> Session:
        if account.address not in self._sessions:
            self._sessions[account.address] = self.gateway().login(
                account, chain_id=self.chain_id()
            )
        return self._sessions[account.address]

    def names(self) -> dict[str, str]:
        """Lower-case address -> a name to show (dev names and keystore names)."""
        from ledger.chain.keys import DEV_NAMES
        from ledger.chain.node import dev_accounts

        out = {a.address.lower(): n for n, a in zip(DEV_NAMES, dev_accounts(), strict=True)}
        try:
            for identity in self.keystore().list():
                out[identity.address.lower()] = identity.name
        except (OSError, ValueError, KeyError):
            pass
        return out


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    if not value.isascii() or not value.isdigit():
        raise CliError(f"${name} must be a whole number, not {value!r}")
    return int(value)


def _is_key_name(text: str) -> bool:
    return re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,63}", text) is not None


def _password(prompt: str, *, confirm: bool = False) -> str:
    env = os.environ.get("CONSENT_PASSWORD")
    if env is not None:
        return env
    value: str = typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
    return value


# ------------------------------------------------------------------------------------ parsing

_DURATION = re.compile(r"^(\d+)\s*([smhdwy])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def parse_expiry(text: str, *, now: int | None = None) -> int:
    """UNIX seconds for ``30d`` / ``12h`` / ``never`` / ``2026-12-31`` (ISO date or time)."""
    from ledger.protocol.consent_types import NO_EXPIRY

    now = int(time.time()) if now is None else now
    value = text.strip().lower()
    if value in ("never", "none", "forever"):
        return NO_EXPIRY
    m = _DURATION.match(value)
    if m:
        return now + int(m[1]) * _UNITS[m[2]]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CliError(
            f"cannot read expiry {text!r}: use 30d, 12h, 2w, 1y, never or a date like 2026-12-31"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def parse_purposes(values: list[str]) -> list[int]:
    """Purpose ids from names (treatment, research, ...) or numbers."""
    from ledger.protocol.consent_types import Purpose

    ids: list[int] = []
    for raw in values:
        for part in raw.split(","):
            name = part.strip()
            if not name:
                continue
            if name.isdigit() and 0 <= int(name) <= 31:
                ids.append(int(name))
                continue
            try:
                ids.append(int(Purpose[name.upper().replace("-", "_")]))
            except KeyError:
                known = ", ".join(p.name.lower() for p in Purpose)
                raise CliError(f"unknown purpose {name!r}; use one of {known}") from None
    if not ids:
        raise CliError("name at least one purpose with --purpose (treatment, research, ...)")
    return sorted(set(ids))


def _purpose_name(pid: int) -> str:
    from ledger.protocol.consent_types import Purpose

    return Purpose(pid).name.lower() if pid in Purpose._value2member_map_ else str(pid)


def _record_id(text: str) -> str:
    value = text.strip().lower()
    if not re.fullmatch(r"0x[0-9a-f]{64}", value):
        raise CliError(f"{text!r} is not a record id (0x + 64 hex digits); see `consent records`")
    return value


def _category(text: str) -> bytes:
    from ledger.protocol.consent_types import category_id

    try:
        return category_id(text.strip())
    except (ValueError, UnicodeEncodeError):
        raise CliError(f"category {text!r} must be 1..32 ASCII characters") from None


def _scope(
    ctx: Ctx, record: str | None, category: str | None, everything: bool
) -> tuple[Any, bytes, str]:
    from ledger.protocol.consent_types import ALL_SCOPE_ID, ScopeKind

    chosen = [x for x in (record, category) if x is not None] + (["all"] if everything else [])
    if len(chosen) != 1:
        raise CliError("name exactly one scope: --record ID, --category NAME or --all")
    if record is not None:
        rid = _record_id(record)
        return ScopeKind.RECORD, bytes.fromhex(rid[2:]), f"record {rid}"
    if category is not None:
        return ScopeKind.CATEGORY, _category(category), f"category {category.strip()}"
    return ScopeKind.ALL, ALL_SCOPE_ID, "all records"


def _scope_text(kind: str, scope_id: str) -> str:
    if kind == "record":
        return f"record {scope_id}"
    if kind == "category":
        name = bytes.fromhex(scope_id[2:]).rstrip(b"\0").decode(errors="replace")
        return f"category {name}"
    return "all records"


def _when(ts: int | float | None) -> str:
    from ledger.protocol.consent_types import NO_EXPIRY

    if ts is None:
        return "-"
    if int(ts) >= NO_EXPIRY:
        return "never"
    return datetime.fromtimestamp(float(ts), tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _short(value: str, keep: int = 10) -> str:
    return value if len(value) <= 2 * keep + 1 else f"{value[:keep]}…{value[-6:]}"


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=False, default=str))


def _who(names: dict[str, str], address: str) -> str:
    name = names.get(address.lower())
    return f"{name} ({_short(address, 6)})" if name else address


# ----------------------------------------------------------------------------- global options


@app.callback()
def _main(
    debug: Annotated[
        bool,
        typer.Option("--debug", envvar="CONSENT_DEBUG", help="Show tracebacks on errors."),
    ] = False,
) -> None:
    """Consent Ledger: patient-controlled access to checkup results.

    Exit codes: 0 ok; 1 refused or a check failed; 2 could not run (bad input, wrong password,
    unknown record, a service down); 130 interrupted.
    """
    _DEBUG["on"] = debug


# ------------------------------------------------------------------------------------- stack


@app.command()
def up(
    home: HomeOpt = None,
    chain_port: Annotated[int, typer.Option(help="Chain node port.")] = 8545,
    ipfs_port: Annotated[int, typer.Option(help="IPFS API port.")] = 5001,
    gateway_port: Annotated[int, typer.Option(help="Gateway port.")] = 8000,
) -> None:
    """Start the chain node, the IPFS node and the gateway; stay in the foreground."""
    from ledger.devstack.stack import StackConfig, run_stack

    config = StackConfig(
        paths=state_paths(home),
        chain_port=chain_port,
        ipfs_port=ipfs_port,
        gateway_port=gateway_port,
    )
    try:
        code = run_stack(config, say=console.print)
    except ServiceError as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    raise typer.Exit(code)


@app.command()
def status(
    gateway: GatewayOpt = DEFAULT_GATEWAY,
    as_json: JsonOpt = False,
) -> None:
    """Show the gateway's health: chain, registry, IPFS node and database."""
    try:
        r = httpx.get(f"{gateway.rstrip('/')}/healthz", timeout=5.0)
        body = r.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise _fail(
            f"gateway at {gateway} is not answering ({type(exc).__name__}); start it with "
            f"`make up` / `consent up`, or pass --gateway"
        ) from None
    if as_json:
        _echo_json(body)
    else:
        for key, value in body.items():
            console.print(f"{key:>18}  {value}", highlight=False)
    if r.status_code != 200:
        raise typer.Exit(1)


@app.command()
def down(
    home: HomeOpt = None,
    reset: Annotated[
        bool,
        typer.Option(
            "--reset",
            help="Also delete the local ledger (chain, IPFS, database, deployment); the "
            "keystore (keys/) is kept.",
        ),
    ] = False,
    delete_keys: Annotated[
        bool,
        typer.Option(
            "--delete-keys",
            help="With --reset: delete the keystore too (asks on a terminal; --yes otherwise). "
            "A patient whose key is gone can never revoke again.",
        ),
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", help="Do not ask before deleting the keystore.")
    ] = False,
) -> None:
    """Stop a running `consent up` (by the PID it recorded); with --reset, delete local state
    but keep the keystore (keys/) unless --delete-keys is given."""
    paths = state_paths(home)
    if delete_keys and not reset:
        raise _fail("--delete-keys only goes with --reset; nothing was stopped or deleted")
    if delete_keys and not yes and paths.keys.is_dir() and any(paths.keys.iterdir()):
        if not sys.stdin.isatty():
            raise _fail(
                f"refusing to delete the keystore {paths.keys} without a terminal to confirm "
                f"on; pass --yes to delete it, or drop --delete-keys to keep it"
            )
        count = sum(1 for _ in paths.keys.iterdir())
        if not typer.confirm(
            f"Delete the keystore {paths.keys} ({count} files)? Whoever loses a key can never "
            f"revoke with it again",
            default=False,
        ):
            raise _fail("kept everything; nothing was stopped or deleted", code=1)
    pid_file = paths.home / "stack.pid"
    if pid_file.is_file():
        pid = int(pid_file.read_text().strip())
        try:
            os.kill(pid, signal.SIGTERM)
            console.print(f"sent SIGTERM to consent up (pid {pid}); waiting for it to stop ...")
            for _ in range(300):
                time.sleep(0.1)
                os.kill(pid, 0)
        except ProcessLookupError:
            console.print("stopped.")
        pid_file.unlink(missing_ok=True)
    else:
        console.print("no running stack recorded.")
    if reset:
        kept = _reset_home(paths, keep_keys=not delete_keys)
        if kept:
            console.print(f"deleted {paths.home} except the keystore {kept}", highlight=False)
        else:
            console.print(f"deleted {paths.home}", highlight=False)


def _reset_home(paths: StatePaths, *, keep_keys: bool) -> Path | None:
    """Delete ``paths.home``; with ``keep_keys`` everything but ``keys/``. The kept dir or None."""
    if not paths.home.is_dir():
        return None
    if not keep_keys or not paths.keys.is_dir():
        shutil.rmtree(paths.home)
        return None
    for entry in paths.home.iterdir():
        if entry == paths.keys:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return paths.keys


# -------------------------------------------------------------------------------------- keys


@key_app.command("new")
@handled
def key_new(
    name: Annotated[str, typer.Argument(help="Name of the new key (lower-case).")],
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a new key, encrypted with a password (prompt or $CONSENT_PASSWORD)."""
    ctx = Ctx(home=home)
    password = _password(f"Password for the new key {name!r}", confirm=True)
    identity = ctx.keystore().create(name, password)
    if as_json:
        _echo_json({"name": identity.name, "address": identity.address})
        return
    console.print(f"created key [bold]{identity.name}[/]  {identity.address}", highlight=False)
    console.print(f"stored encrypted in {ctx.paths.keys / (name + '.json')}", highlight=False)


@key_app.command("import")
@handled
def key_import(
    name: Annotated[str, typer.Argument(help="Name to store the key under.")],
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--key-file",
            help="A file holding the hex private key, or an Ethereum keyfile (JSON; "
            "its password is asked for). Default: prompt for the hex key.",
        ),
    ] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import an existing private key into the keystore, encrypted with a new password."""
    from eth_account import Account

    ctx = Ctx(home=home)
    if key_file is None:
        text = typer.prompt("Private key (hex)", hide_input=True)
        secret = _hex_key(text)
    else:
        try:
            raw = key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CliError(f"cannot read {key_file}: {exc.strerror}") from None
        if raw.startswith("{"):
            try:
                keyfile = json.loads(raw)
                secret = bytes(
                    Account.decrypt(keyfile, typer.prompt("Keyfile password", hide_input=True))
                )
            except ValueError:
                raise CliError(
                    f"cannot decrypt {key_file}: wrong password or not a keyfile"
                ) from None
        else:
            secret = _hex_key(raw)
    identity = ctx.keystore().create(
        name, _password(f"Password for key {name!r}", confirm=True), private_key=secret
    )
    if as_json:
        _echo_json({"name": identity.name, "address": identity.address})
        return
    console.print(f"imported key [bold]{identity.name}[/]  {identity.address}", highlight=False)


def _hex_key(text: str) -> bytes:
    body = text.strip()
    body = body[2:] if body[:2] in ("0x", "0X") else body
    try:
        raw = bytes.fromhex(body)
    except ValueError:
        raise CliError("the private key is not hex") from None
    if len(raw) != 32:
        raise CliError(f"a private key is 32 bytes (64 hex digits), not {len(raw)}")
    return raw


@key_app.command("list")
@handled
def key_list(
    home: HomeOpt = None,
    as_json: JsonOpt = False,
    dev: Annotated[
        bool, typer.Option("--dev/--no-dev", help="Also list the local chain's dev accounts.")
    ] = True,
) -> None:
    """List the keystore's keys (and the dev accounts usable on the local chain only)."""
    from ledger.chain.keys import DEV_NAMES
    from ledger.chain.node import dev_accounts

    ctx = Ctx(home=home)
    rows = [
        {"name": i.name, "address": i.address, "source": "keystore"} for i in ctx.keystore().list()
    ]
    if dev:
        rows += [
            {"name": n, "address": a.address, "source": "dev (local chain only)"}
            for n, a in zip(DEV_NAMES, dev_accounts(), strict=True)
        ]
    if as_json:
        _echo_json(rows)
        return
    table = Table(title=f"identities ({ctx.paths.keys})", title_justify="left")
    for col in ("name", "address", "source"):
        table.add_column(col, no_wrap=col == "address")
    for row in rows:
        table.add_row(row["name"], row["address"], row["source"])
    console.print(table)


# ------------------------------------------------------------------------------------- admin


def _admin_role(role_name: str, *, grant: bool) -> Callable[..., None]:
    def command(
        address: Annotated[str, typer.Argument(help="0x address, keystore name or dev name.")],
        who: AsOpt = "admin",
        chain: ChainOpt = DEFAULT_CHAIN,
        gateway: GatewayOpt = DEFAULT_GATEWAY,
        registry: RegistryOpt = None,
        home: HomeOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        from ledger.chain import registry as reg

        ctx = Ctx(home=home, gateway_url=gateway, chain_url=chain, registry_address=registry)
        role = getattr(reg, role_name)
        target = ctx.address(address)
        admin = ctx.account(who)
        contract = ctx.registry()
        label = role_name.removesuffix("_ROLE").lower()
        holds = contract.has_role(role, target)
        if holds == grant:
            result = {"address": target, "role": role_name, "changed": False}
            if as_json:
                _echo_json(result)
            else:
                state = "already holds" if grant else "does not hold"
                console.print(f"{target} {state} {role_name}; nothing to do", highlight=False)
            return
        receipt = (contract.grant_role if grant else contract.revoke_role)(admin, role, target)
        if as_json:
            _echo_json(
                {
                    "address": target,
                    "role": role_name,
                    "changed": True,
                    "tx_hash": receipt.tx_hash,
                    "block_number": receipt.block_number,
                }
            )
            return
        verb = "admitted" if grant else "removed"
        console.print(
            f"{verb} {target} as {label}  tx {receipt.tx_hash}  block {receipt.block_number}",
            highlight=False,
        )

    return command


admin_app.command(
    "add-centre", help="Admit a checkup centre (grants CENTRE_ROLE; a chain tx by the admin)."
)(handled(_admin_role("CENTRE_ROLE", grant=True)))
admin_app.command("remove-centre", help="Remove a checkup centre (revokes CENTRE_ROLE).")(
    handled(_admin_role("CENTRE_ROLE", grant=False))
)
admin_app.command(
    "add-gateway",
    help="Admit a gateway account (GATEWAY_ROLE: registers records, anchors checkpoints).",
)(handled(_admin_role("GATEWAY_ROLE", grant=True)))
admin_app.command(
    "add-emergency", help="Admit an emergency institution (EMERGENCY_ROLE: break-glass)."
)(handled(_admin_role("EMERGENCY_ROLE", grant=True)))


@admin_app.command(
    "add-category",
    help="List a record category (coarse: a kind of document, never a condition or a test).",
)
@handled
def admin_add_category(
    name: Annotated[str, typer.Argument(help="Category name, 1..32 ASCII characters.")],
    who: AsOpt = "admin",
    chain: ChainOpt = DEFAULT_CHAIN,
    gateway: GatewayOpt = DEFAULT_GATEWAY,
    registry: RegistryOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    ctx = Ctx(home=home, gateway_url=gateway, chain_url=chain, registry_address=registry)
    category = _category(name)
    admin = ctx.account(who)
    contract = ctx.registry()
    result: dict[str, Any] = {"category": name.strip(), "changed": False}
    if not contract.is_category(category):
        receipt = contract.add_category(admin, category)
        result.update(changed=True, tx_hash=receipt.tx_hash, block_number=receipt.block_number)
    if as_json:
        _echo_json(result)
    elif result["changed"]:
        console.print(
            f"listed category {result['category']}  tx {result['tx_hash']}  "
            f"block {result['block_number']}",
            highlight=False,
        )
    else:
        console.print(f"category {result['category']} is already listed; nothing to do")


# ------------------------------------------------------------------------------------ centre


def _progress() -> Any:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )


_BIG = 1024 * 1024


@app.command()
@handled
def upload(
    file: Annotated[Path, typer.Argument(help="The result to upload (any format).")],
    patient: Annotated[str, typer.Option("--patient", help="Patient: address or name.")],
    category: Annotated[
        str, typer.Option("--category", help="Category, e.g. laboratory, imaging, summary.")
    ],
    who: AsOpt = None,
    issued_at: Annotated[
        int | None, typer.Option("--issued-at", help="UNIX seconds attested (default: now).")
    ] = None,
    gateway: GatewayOpt = DEFAULT_GATEWAY,
    chain: ChainOpt = DEFAULT_CHAIN,
    registry: RegistryOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Centre: attest a result for a patient (EIP-712) and upload it, encrypted, to the gateway."""
    from ledger.client import read_file

    ctx = Ctx(home=home, gateway_url=gateway, chain_url=chain, registry_address=registry)
    data = read_file(file)
    centre = ctx.account(who)
    target = ctx.address(patient, what="patient")
    session = ctx.session(centre)
    domain = ctx.domain()
    if len(data) >= _BIG and not as_json:
        with _progress() as progress:
            task = progress.add_task(f"uploading {file.name}", total=len(data))
            result = session.upload(
                data,
                domain=domain,
                patient=target,
                category=_category(category),
                filename=file.name,
                issued_at=issued_at,
                progress=_upload_progress(progress, task, file.name),
            )
    else:
        result = session.upload(
            data,
            domain=domain,
            patient=target,
            category=_category(category),
            filename=file.name,
            issued_at=issued_at,
        )
    _confirm_record(ctx, result, patient=target, centre=centre.address)
    rec = result.record
    if as_json:
        _echo_json({**rec.model_dump(), "created": result.created})
        return
    console.print(
        f"{'uploaded' if result.created else 'already uploaded'} {file.name} "
        f"({len(data):,} bytes) for {_who(ctx.names(), rec.patient)}",
        highlight=False,
    )
    console.print(f"  record  {rec.record_id}", highlight=False)
    console.print(f"  cid     {rec.cid}", highlight=False)
    console.print(f"  tx      {rec.tx_hash}  block {rec.block_number}", highlight=False)


@app.command("upload-dir")
@handled
def upload_dir(
    directory: Annotated[Path, typer.Argument(help="Directory holding the files.")],
    manifest: Annotated[
        Path,
        typer.Option(
            "--manifest",
            help="CSV with a header: file,patient,category[,issued_at] (file relative to DIR).",
        ),
    ],
    who: AsOpt = None,
    gateway: GatewayOpt = DEFAULT_GATEWAY,
    chain: ChainOpt = DEFAULT_CHAIN,
    registry: RegistryOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Centre: upload every file a manifest lists, with one progress bar and a summary.

    Every path must name a regular file inside DIR once symlinks are resolved: an absolute
    path, a `..` part or a symlink leading out of DIR is refused, and when any row is refused
    nothing is uploaded."""
    from ledger.client import ClientError

    rows = _read_manifest(manifest)
    jobs = _confine_manifest(directory, manifest, rows)  # every row, before anything is sent
    ctx = Ctx(home=home, gateway_url=gateway, chain_url=chain, registry_address=registry)
    centre = ctx.account(who)
    session = ctx.session(centre)
    domain = ctx.domain()
    results: list[dict[str, Any]] = []
    total = sum(job.size for job in jobs)
    with _progress() as progress:
        task = progress.add_task(f"uploading {len(jobs)} files", total=total, visible=not as_json)
        base = 0
        for job in jobs:
            row, size = job.row, job.size
            entry: dict[str, Any] = {"file": row["file"]}
            try:
                issued = row.get("issued_at") or None
                data = job.read()
                target = ctx.address(row["patient"], what="patient")
                result = session.upload(
                    data,
                    domain=domain,
                    patient=target,
                    category=_category(row["category"]),
                    filename=PurePath(row["file"]).name,
                    issued_at=int(issued) if issued else None,
                    progress=_offset_progress(progress, task, base),
                )
                _confirm_record(ctx, result, patient=target, centre=centre.address)
                entry |= {
                    "status": "uploaded" if result.created else "existing",
                    "record_id": result.record.record_id,
                    "cid": result.record.cid,
                    "tx_hash": result.record.tx_hash,
                }
            except (ClientError, CliError, ValueError) as exc:
                text = exc.line() if isinstance(exc, ClientError) else str(exc)
                entry |= {"status": "failed", "error": text}
            results.append(entry)
            base += size
            progress.update(task, completed=base)
    failed = [r for r in results if r["status"] == "failed"]
    if as_json:
        _echo_json(
            {"results": results, "uploaded": len(results) - len(failed), "failed": len(failed)}
        )
    else:
        table = Table(title="upload summary", title_justify="left")
        for col in ("file", "status", "record / error"):
            table.add_column(col, overflow="fold")
        for r in results:
            table.add_row(r["file"], r["status"], r.get("record_id") or r.get("error", ""))
        console.print(table)
        console.print(
            f"{len(results) - len(failed)} uploaded, {len(failed)} failed, {total:,} bytes",
            highlight=False,
        )
    if failed:
        raise typer.Exit(1)


def _confirm_record(ctx: Ctx, result: Uploaded, *, patient: str, centre: str) -> None:
    """The chain (pinned registry) holds the uploaded record for this patient, centre and the
    salted content digest this client attested."""
    from ledger.protocol.contract_errors import UnknownRecord

    record_id = result.record.record_id
    try:
        onchain = ctx.registry().record_of(bytes.fromhex(_record_id(record_id)[2:]))
    except UnknownRecord:
        onchain = None
    if (
        onchain is None
        or onchain.content_digest != result.content_digest
        or onchain.patient.lower() != patient.lower()
        or onchain.centre.lower() != centre.lower()
    ):
        raise CliError(
            f"the gateway's answer does not hold up: the registry holds no record {record_id} "
            f"of this file for this patient from this centre; upload it again, through another "
            f"gateway if this one keeps answering so",
            code=1,
        )


def _upload_progress(progress: Any, task: Any, name: str) -> Callable[[int, int], None]:
    def update(done: int, total: int) -> None:
        progress.update(task, completed=done)
        if done >= total:
            progress.update(task, description=f"{name}: gateway encrypting, pinning, registering")

    return update


def _offset_progress(progress: Any, task: Any, base: int) -> Callable[[int, int], None]:
    def update(done: int, total: int) -> None:
        progress.update(task, completed=base + done)

    return update


def _read_manifest(path: Path) -> list[tuple[int, dict[str, str]]]:
    """``(line number, row)`` for every data row of the manifest."""
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"file", "patient", "category"} - set(reader.fieldnames or [])
            if missing:
                raise CliError(
                    f"{path}: the header must name file, patient, category "
                    f"(missing {', '.join(sorted(missing))})"
                )
            for r in reader:
                rows.append((reader.line_num, {k: (v or "").strip() for k, v in r.items() if k}))
    except OSError as exc:
        raise CliError(f"cannot read the manifest {path}: {exc.strerror}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read the manifest {path}: {exc}") from None
    if not rows:
        raise CliError(f"{path} lists no files")
    return rows


@dataclass(frozen=True)
class _Job:
    """A manifest row whose file was found inside DIR (``path`` has no symlink left)."""

    line: int
    row: dict[str, str]
    path: Path
    size: int
    identity: tuple[int, int]  # (st_dev, st_ino) when checked

    def read(self) -> bytes:
        """The file's bytes, refusing it if it was swapped since it was checked."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            raise CliError(f"cannot read {self.row['file']}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if (st.st_dev, st.st_ino) != self.identity:
                raise CliError(f"{self.row['file']} changed since it was checked; not uploaded")
            return f.read()


def _confine_manifest(
    directory: Path, manifest: Path, rows: list[tuple[int, dict[str, str]]]
) -> list[_Job]:
    """Every row's file, confined to ``directory``; one error naming every refused row."""
    try:
        root = directory.resolve(strict=True)
    except OSError:
        raise CliError(f"{directory} is not a directory; nothing was uploaded") from None
    if not root.is_dir():
        raise CliError(f"{directory} is not a directory; nothing was uploaded")
    jobs: list[_Job] = []
    refused: list[str] = []
    for line, row in rows:
        name = row["file"]
        reason = _outside(root, name)
        if reason is None:
            path = (root / name).resolve()
            st = path.stat()
            jobs.append(_Job(line, row, path, st.st_size, (st.st_dev, st.st_ino)))
        else:
            refused.append(f"line {line} {name!r} {reason}")
    if refused:
        raise CliError(
            f"{manifest}: refused {len(refused)} of {len(rows)} rows, nothing was uploaded: "
            + "; ".join(refused)
        )
    return jobs


def _outside(root: Path, name: str) -> str | None:
    """Why ``name`` does not name a regular file inside ``root`` (None: it does)."""
    if not name:
        return "names no file"
    relative = PurePath(name)
    if relative.is_absolute() or name.startswith(("/", "\\")):
        return "is an absolute path (paths are relative to DIR)"
    if ".." in relative.parts:
        return "has a '..' part (paths stay inside DIR)"
    try:
        resolved = (root / relative).resolve(strict=True)
    except (OSError, RuntimeError):
        return f"is not a file in {root}"
    if not resolved.is_relative_to(root):
        return f"leads out of {root} through a symlink"
    if not resolved.is_file():
        return f"is not a regular file in {root}"
    return None


# ----------------------------------------------------------------------------------- patient


@app.command()
@handled
def records(
    who: AsOpt = None,
    gateway: GatewayOpt = DEFAULT_GATEWAY,
    chain: ChainOpt = DEFAULT_CHAIN,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Patient: my records (a centre sees its uploads)."""
    ctx = Ctx(home=home, gateway_url=gateway, chain_url=chain)
    account = ctx.account(who)
    found = ctx.session(account).records()
    if as_json:
        _echo_json([r.model_dump() for r in found])
        return
    names = ctx.names()
    table = Table(title=f"records of {_who(names, account.address)}", title_justify="left")
    table.add_column("record id", overflow="fold", min_width=20)
    table.add_column("category")
    table.add_column("issued")
    table.add_column("centre")
    table.add_column("block", justify="right")
    for r in found:
        table.add_row(
            r.record_id,
            r.category,
            _when(r.issued_at),
            names.get(r.centre.lower(), _short(r.centre, 6)),
            str(r.block_number),
        )
    console.print(table)
    if not found:
        console.print("no records yet.")


def _signer_and_patient(
    ctx: Ctx, who: str | None, patient: str | None
) -> tuple[LocalAccount, ChecksumAddress]:
    signer = ctx.account(who)
    target = ctx.address(patient, what="patient") if patient else signer.address
    return signer, target


@app.command()
@handled
def grant(
    to: Annotated[str, typer.Option("--to", help="Grantee: address, keystore or dev name.")],
    purpose: Annotated[
        list[str],
        typer.Option(
            "--purpose", help="treatment, research, insurance, public_health, emergency (repeat)."
        ),
    ],
    record: Annotated[str | None, typer.Option("--record", help="One record id.")] = None,
    category: Annotated[str | None, typer.Option("--category", help="One category.")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Every record of the patient.")] = False,
    expires: Annotated[
        str, typer.Option("--expires", help="30d, 12h, 2w, 1y, never or a date.")
    ] = "30d",
    who: AsOpt = None,
    patient: Annotated[
        str | None,
        typer.Option("--patient", help="As guardian: the patient you act for (default: you)."),
    ] = None,
    direct: DirectOpt = False,
    gateway: GatewayOpt = DEFAULT_GATEWAY,
    chain: ChainOpt = DEFAULT_CHAIN,
    registry: RegistryOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Patient: grant consent (EIP-712 signed, relayed by the gateway: you pay no gas; with
    --direct you send it yourself). Exit 0 only once the chain shows the grant."""
    from ledger.protocol.consent_types import purposes_mask
    from ledger.protocol.eip712 import GrantRequest

    ctx = Ctx(home=home, gateway_url=gateway, chain_url=chain, registry_address=registry)
    kind, scope_id, scope_text = _scope(ctx, record, category, everything)
    ids = parse_purposes(purpose)
    expires_at = parse_expiry(expires)
    signer, target = _signer_and_patient(ctx, who, patient)
    grantee = ctx.address(to, what="grantee")
    contract = ctx.registry()
    mask = purposes_mask(ids)
    if direct:
        if target == signer.address:
            receipt = contract.grant(signer, grantee, kind, scope_id, mask, expires_at)
        else:
            receipt = contract.grant_for(signer, target, grantee, kind, scope_id, mask, expires_at)
        result = _direct_result("grant", receipt)
    else:
        deadline = int(time.time()) + 3600
        request = GrantRequest(
            patient=target,
            grantee=grantee,
            scope_kind=kind,
            scope_id=scope_id,
            purposes=mask,
            expires_at=expires_at,
            signer=signer.address,
            nonce=contract.nonce_of(signer.address),
            deadline=deadline,
        )
        result = ctx.session(signer).relay(request, domain=contract.domain, signer=signer)
        receipt_problem = _receipt_problem(ctx, result, "grant")
        terms = contract.consent_of(target, grantee, kind, scope_id)
        shown = terms.purposes == mask and terms.expires_at == expires_at
        if receipt_problem or not shown:
            state = (
                "the chain shows the grant in force"
                if shown
                else "the chain does not show the grant, so the grantee holds no new consent"
            )
            problem = receipt_problem or "its receipt is on the chain"
            raise CliError(
                f"the gateway's answer does not hold up: {problem}, and {state}; the gateway "
                f"may still hold your signed grant and send it until {_when(deadline)}: void it "
                f"with `consent nonce burn`, check `consent consents`, or grant directly, "
                f"paying gas, with `consent grant --direct`",
                code=1,
            )
    purposes_text = ", ".join(_purpose_name(i) for i in ids)
    if as_json:
        _echo_json(
            {
                **result.model_dump(),
                "patient": target,
                "grantee": grantee,
                "scope": scope_text,
                "purposes": ids,
                "expires_at": expires_at,
                "confirmed_on_chain": True,
            }
        )
        return
    names = ctx.names()
    console.print(
        f"granted {_who(names, grantee)} {purposes_text} access to {scope_text} "
        f"until {_when(expires_at)}",
        highlight=False,
    )
    how = "sent by you (you paid the gas)" if direct else "relayed by the gateway (gasless)"
    console.print(
        f"  signed by {_who(names, signer.address)}, {how}  "
        f"tx {result.tx_hash}  block {result.block_number}; confirmed on-chain",
        highlight=False,
    )


@app.command()
@handled
def revoke(
    to: Annotated[str, typer.Option("--to", help="Grantee: address, keystore or dev name.")],
    record: Annotated[str | None, typer.Option("--record", help="One record id.")] = None,
    category: Annotated[str | None, typer.Option("--category", help="One category.")] = None,
    everything: Annotated[bool, typer.Option("--all", help="The all-records grant.")] = False,
    who: AsOpt = None,
    patient: Annotated[
        str | None,
        typer.Option("--patient", help="As guardian: the patient you act for (default: you)."),
    ] = None,
    direct: DirectOpt = False,
    gateway: GatewayOpt = DEFAULT_GATEWAY,
    chain: ChainOpt = DEFAULT_CHAIN,
    registry: RegistryOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Patient: revoke a consent (signed, relayed; with --direct you send it yourself, paying
    gas). Exit 0 only once the chain shows no consent left; the grantee's next request is
    denied."""
    from ledger.protocol.eip712 import RevokeRequest

    ctx = Ctx(home=home, gateway_url=gateway, chain_url=chain, registry_address=registry)
    kind, scope_id, scope_text = _scope(ctx, record, category, everything)
    signer, target = _signer_and_patient(ctx, who, patient)
    grantee = ctx.address(to, what="grantee")
    contract = ctx.registry()
    if direct:
        if target == signer.address:
            receipt = contract.revoke(signer, grantee, kind, scope_id)
        else:
            receipt = contract.revoke_for(signer, target, grantee, kind, scope_id)
        result = _direct_result("revoke", receipt)
        if contract.consent_of(target, grantee, kind, scope_id).exists:
            raise CliError(
                f"the revoke was mined (tx {receipt.tx_hash}) but the chain still shows a "
                f"consent for {grantee}; check `consent consents`",
                code=1,
            )
    else:
        request = RevokeRequest(
            patient=target,
            grantee=grantee,
            scope_kind=kind,
            scope_id=scope_id,
            signer=signer.address,
            nonce=contract.nonce_of(signer.address),
            deadline=int(time.time()) + 3600,
        )
        result = ctx.session(signer).relay(request, domain=contract.domain, signer=signer)
        receipt_problem = _receipt_problem(ctx, result, "revoke")
        still = contract.consent_of(target, grantee, kind, scope_id).exists
        if still:
            problem = receipt_problem or "the consent is still stored"
            raise CliError(
                f"the chain does not show the revoke ({problem}): "
                f"{_who(ctx.names(), grantee)} may still read {scope_text}; revoke "
                f"directly, paying gas: `consent revoke --direct --to {to} "
                f"{_scope_flag(record, category)}`",
                code=1,
            )
        if receipt_problem:
            raise CliError(
                f"the gateway's answer does not hold up: {receipt_problem}, though the chain "
                f"shows no consent left for {grantee}; do not rely on that gateway",
                code=1,
            )
    if as_json:
        _echo_json(
            {
                **result.model_dump(),
                "patient": target,
                "grantee": grantee,
                "scope": scope_text,
                "confirmed_on_chain": True,
            }
        )
        return
    names = ctx.names()
    console.print(
        f"revoked {_who(names, grantee)}'s access to {scope_text}  "
        f"tx {result.tx_hash}  block {result.block_number}; confirmed on-chain",
        highlight=False,
    )


def _scope_flag(record: str | None, category: str | None) -> str:
    if record is not None:
        return f"--record {record.strip()}"
    if category is not None:
        return f"--category {category.strip()}"
    return "--all"


def _direct_result(action: str, receipt: Receipt) -> RelayResult:
    from ledger.client import RelayResult

    return RelayResult.model_validate(
        {
            "action": action,
            "tx_hash": receipt.tx_hash,
            "block_number": receipt.block_number,
            "gas_used": receipt.gas_used,
        }
    )


_CONFIRM_WAIT_S = 30.0


def _receipt_problem(ctx: Ctx, result: RelayResult, action: str) -> str | None:
    """What is wrong with a relay's receipt as the client's own chain node sees it (None: ok).

    Waits (bounded) for the node to reach the receipt's block, then the transaction must be
    there, successful and sent to the pinned registry."""
    from web3.exceptions import TransactionNotFound

    if result.action != action:
        return f"the gateway answered for a {result.action}, not a {action}"
    w3 = ctx.w3()
    tx_hash = result.tx_hash
    if not re.fullmatch(r"0x[0-9a-fA-F]{64}", tx_hash):
        return f"the receipt's tx hash {tx_hash!r} is not a transaction hash"
    deadline = time.monotonic() + _CONFIRM_WAIT_S
    while True:
        try:
            receipt = w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        except TransactionNotFound:
            receipt = None
        if receipt is not None:
            break
        if w3.eth.block_number >= result.block_number or time.monotonic() >= deadline:
            return f"its receipt (tx {tx_hash}) is not on the chain at {ctx.chain_url}"
        time.sleep(0.2)
    to = receipt.get("to")
    if int(receipt.get("status", 0)) != 1:
        return f"its transaction {tx_hash} reverted"
    if to is None or str(to).lower() != ctx.anchors().registry.lower():
        return f"its transaction {tx_hash} was not sent to the registry"
    return None


@app.command()
@handled
def consents(
    who: AsOpt = None,
    gateway: GatewayOpt = DEFAULT_GATEWAY,
    chain: ChainOpt = DEFAULT_CHAIN,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Consents I granted (as patient) and consents granted to me, as they stand on-chain."""
    ctx = Ctx(home=home, gateway_url=gateway, chain_url=chain)
    account = ctx.account(who)
    answer = ctx.session(account).consents()
    openings = _break_glass_openings(ctx, account.address)
    if as_json:
        _echo_json({**answer.model_dump(), "break_glass": openings})
        return
    names = ctx.names()
    for title, rows, other in (
        ("granted by me", answer.granted, "grantee"),
        ("granted to me", answer.received, "patient"),
    ):
        table = Table(title=f"{title} (block {answer.block_number})", title_justify="left")
        for col in (other, "scope", "purposes", "expires", "active"):
            table.add_column(col, overflow="fold")
        for c in rows:
            scope = _scope_text(c.scope_kind, c.scope_id)
            table.add_row(
                _who(names, c.grantee if other == "grantee" else c.patient),
                scope,
                ", ".join(c.purpose_names),
                _when(c.expires_at),
                "yes" if c.active else "no (expired)",
            )
        if rows:
            console.print(table)
        else:
            console.print(f"{title}: none", highlight=False)
    _print_break_glass(ctx, openings)


@guardian_app.command("set")
@handled
def guardian_set(
    guardian: Annotated[str, typer.Argument(help="Guardian: address, keystore or dev name.")],
    who: AsOpt = None,
    chain: ChainOpt = DEFAULT_CHAIN,
    gateway: GatewayOpt = DEFAULT_GATEWAY,
    registry: RegistryOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Name a guardian who may grant, revoke and read for you (a chain tx you pay for)."""
    ctx = Ctx(home=home, gateway_url=gateway, chain_url=chain, registry_address=registry)
    patient = ctx.account(who)
    target = ctx.address(guardian, what="guardian")
    receipt = ctx.registry().set_guardian(patient, target)
    _print_receipt(ctx, receipt, f"{_who(ctx.names(), target)} is now your guardian", as_json)


@guardian_app.command("remove")
@handled
def guardian_remove(
    who: AsOpt = None,
    chain: ChainOpt = DEFAULT_CHAIN,
    gateway: GatewayOpt = DEFAULT_GATEWAY,
    registry: RegistryOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove your guardian (a chain tx you pay for)."""
    ctx = Ctx(home=home, gateway_url=gateway, chain_url=chain, registry_address=registry)
    patient = ctx.account(who)
    receipt = ctx.registry().remove_guardian(patient)
    _print_receipt(ctx, receipt, "your guardian was removed", as_json)


def _print_receipt(ctx: Ctx, receipt: Receipt, text: str, as_json: bool) -> None:
    if as_json:
        _echo_json({"tx_hash": receipt.tx_hash, "block_number": receipt.block_number})
        return
    console.print(f"{text}  tx {receipt.tx_hash}  block {receipt.block_number}", highlight=False)


# ------------------------------------------------ signing nonces; break-glass seen by the patient

nonce_app = typer.Typer(help="Signer: cancel a signed grant or revoke nobody has submitted yet.")
app.add_typer(nonce_app, name="nonce", no_args_is_help=True)


@nonce_app.command("burn")
@handled
def nonce_burn(
    who: AsOpt = None,
    chain: ChainOpt = DEFAULT_CHAIN,
    gateway: GatewayOpt = DEFAULT_GATEWAY,
    registry: RegistryOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Give up my next signing nonce (a chain tx you pay for): a grant or revoke I signed with
    it, held back by a relayer, can then never be submitted. Run once per such request."""
    ctx = Ctx(home=home, gateway_url=gateway, chain_url=chain, registry_address=registry)
    signer = ctx.account(who)
    contract = ctx.registry()
    nonce = contract.nonce_of(signer.address)
    receipt = contract.burn_nonce(signer, nonce)
    if as_json:
        _echo_json(
            {
                "signer": signer.address,
                "burned_nonce": nonce,
                "next_nonce": nonce + 1,
                "tx_hash": receipt.tx_hash,
                "block_number": receipt.block_number,
            }
        )
        return
    console.print(
        f"burned nonce {nonce}: a request signed with it can no longer be submitted; the next "
        f"signature uses nonce {nonce + 1}  tx {receipt.tx_hash}  block {receipt.block_number}",
        highlight=False,
    )


def _break_glass_openings(ctx: Ctx, patient: str) -> list[dict[str, Any]]:
    """Every break-glass opening for ``patient``, read from the registry's logs on the chain
    (institution, reason hash, window, and the close if it was closed early)."""
    from ledger.chain.deployment import load_deployment

    contract = ctx.registry()
    deployment = load_deployment(ctx.paths.deployment)
    from_block = (
        deployment.block
        if deployment is not None and deployment.address.lower() == contract.address.lower()
        else 0
    )
    return [
        {
            "institution": o.institution,
            "reason_hash": "0x" + o.reason_hash.hex(),
            "opened_at": o.opened_at,
            "until": o.until,
            "closed_at": o.closed_at,
            "closed_by": o.closed_by,
            "reopens_at": o.reopens_at,
            "block_number": o.block_number,
        }
        for o in contract.break_glass_openings(patient, from_block=from_block)
    ]


def _print_break_glass(ctx: Ctx, openings: list[dict[str, Any]]) -> None:
    if not openings:
        console.print("break-glass openings of my records: none", highlight=False)
        return
    names = ctx.names()
    table = Table(title="break-glass openings of my records", title_justify="left")
    for col in ("institution", "reason hash", "opened (UTC)", "until", "closed", "block"):
        whole = col == "reason hash"  # a hash stays whole, so it can be searched for
        table.add_column(col, overflow="fold", no_wrap=whole, min_width=66 if whole else None)
    for o in openings:
        closed = "-"
        if o["closed_at"] is not None:
            closed = (
                f"{_when(o['closed_at'])} by {_who(names, o['closed_by'])}; "
                f"no reopening before {_when(o['reopens_at'])}"
            )
        table.add_row(
            _who(names, o["institution"]),
            o["reason_hash"],
            _when(o["opened_at"]),
            _when(o["until"]),
            closed,
            str(o["block_number"]),
        )
    console.print(table)


@app.command("who-read")
@handled
def who_read(
    who: AsOpt = None,
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            help="Seconds to wait for a checkpoint to cover every entry (0: do not wait).",
        ),
    ] = 0.0,
    gateway: GatewayOpt = DEFAULT_GATEWAY,
    chain: ChainOpt = DEFAULT_CHAIN,
    registry: RegistryOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Patient: who read (or was refused) my records, each entry's inclusion proof verified
    locally against the checkpoint the gateway anchored on-chain. Exit 0 only when every entry
    is verified; 1 when a proof fails; 2 "could not verify" when no checkpoint anchored on-chain
    (as the chain's checkpointOf says) covers them."""
    ctx = Ctx(home=home, gateway_url=gateway, chain_url=chain, registry_address=registry)
    account = ctx.account(who)
    session = ctx.session(account)
    contract = ctx.registry()
    deadline = time.monotonic() + wait
    result = session.who_read(contract)
    while any(e.included is None for e in result.entries) and time.monotonic() < deadline:
        time.sleep(0.5)
        result = session.who_read(contract)
    pending = [e for e in result.entries if e.included is None]
    bad = [e for e in result.entries if e.included is not None and not e.verified]
    openings = _break_glass_openings(ctx, account.address)
    if as_json:
        _echo_json(
            {
                "break_glass": openings,
                "checkpoint": result.checkpoint.model_dump() if result.checkpoint else None,
                "anchored": result.anchored,
                "anchor": result.anchor_reason,
                "log_size": result.log_size,
                "entries": [
                    {
                        "index": e.index,
                        **dict(e.entry),
                        "leaf_ok": e.leaf_ok,
                        "inclusion": {True: "verified", False: "FAILED", None: "pending"}[
                            e.included
                        ],
                    }
                    for e in result.entries
                ],
            }
        )
    else:
        print_who_read(ctx, result)
        _print_break_glass(ctx, openings)
    if result.checkpoint is None:
        raise _fail(
            "could not verify: the gateway gave no checkpoint anchored on-chain; try again "
            "with --wait 60",
            code=2,
        )
    if not result.anchored:
        raise _fail(f"could not verify: {result.anchor_reason}", code=2)
    if bad:
        raise _fail(
            f"{len(bad)} entries failed verification (leaf or inclusion proof): the gateway's "
            f"log does not match what it anchored; report it to its operator",
            code=1,
        )
    if pending:
        raise _fail(
            f"could not verify {len(pending)} of {len(result.entries)} entries: no checkpoint "
            f"anchored on-chain covers them yet; try again with --wait 60",
            code=2,
        )


def print_who_read(ctx: Ctx, result: Any) -> None:
    names = ctx.names()
    table = Table(title="reads of my records", title_justify="left")
    for col in ("#", "time (UTC)", "requester", "record", "purpose", "decision", "block", "proof"):
        table.add_column(col, overflow="fold", no_wrap=col in ("#", "block"))
    for e in result.entries:
        d = e.entry
        decision = str(d.get("decision"))
        reason = str(d.get("reason"))
        style = "green" if decision == "allowed" else "red"
        proof = {True: "[green]✓ verified[/]", False: "[red]✗ FAILED[/]", None: "… pending"}[
            e.included if e.leaf_ok else False
        ]
        table.add_row(
            str(e.index),
            str(d.get("time", ""))[:19].replace("T", " "),
            names.get(str(d.get("requester", "")).lower(), _short(str(d.get("requester")), 6)),
            _short(str(d.get("record", ""))),
            _purpose_name(int(d.get("purpose", 0))),
            f"[{style}]{decision}[/] ({reason})",
            str(d.get("block")),
            proof,
        )
    console.print(table)
    cp = result.checkpoint
    if cp is None:
        console.print("no checkpoint anchored yet: entries are pending (try --wait 60)")
        return
    mark = "[green]✓[/]" if result.anchored else "[red]✗[/]"
    console.print(
        f"checkpoint: tree size {cp.tree_size}, root {_short(cp.root_hash)}, anchored in tx "
        f"{_short(cp.tx_hash)} (block {cp.block_number}) by {_who(names, cp.gateway)}",
        highlight=False,
    )
    console.print(f"{mark} {result.anchor_reason}", highlight=False)


# ----------------------------------------------------------------------------------- grantee


@app.command()
@handled
def fetch(
    record_id: Annotated[str, typer.Argument(help="The record id (0x + 64 hex).")],
    purpose: Annotated[str, typer.Option("--purpose", help="Why you read it (treatment ...).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the result.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    who: AsOpt = None,
    gateway: GatewayOpt = DEFAULT_GATEWAY,
    chain: ChainOpt = DEFAULT_CHAIN,
    registry: RegistryOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Grantee: fetch a record, open its envelope with your key and check its digest against
    the chain; nothing is written unless every check passes."""
    rid = _record_id(record_id)
    pid = parse_purposes([purpose])
    if len(pid) != 1:
        raise CliError("a fetch names exactly one purpose")
    if output.exists() and not force:
        raise CliError(f"{output} exists; pass --force to overwrite it")
    ctx = Ctx(home=home, gateway_url=gateway, chain_url=chain, registry_address=registry)
    account = ctx.account(who)
    onchain = ctx.registry().record_of(bytes.fromhex(rid[2:]))
    opened = ctx.session(account).open_record(
        rid, _purpose_name(pid[0]), expected_digest=onchain.content_digest
    )
    _write_atomically(output, opened.plaintext)
    env = opened.envelope
    if as_json:
        _echo_json(
            {
                "record_id": env.record_id,
                "patient": env.patient,
                "cid": env.cid,
                "content_digest": env.content_digest,
                "block_number": env.block_number,
                "bytes": len(opened.plaintext),
                "output": str(output),
            }
        )
        return
    console.print(
        f"fetched {_short(rid)} for {_purpose_name(pid[0])}: consent checked at block "
        f"{env.block_number}; sha256 matches the on-chain digest {_short(env.content_digest)}",
        highlight=False,
    )
    console.print(f"wrote {len(opened.plaintext):,} bytes to {output}", highlight=False)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -------------------------------------------------------------------------------------- demo


@app.command()
@handled
def demo(
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh", help="Start a throw-away stack on free ports in a temp dir, stop it after."
        ),
    ] = False,
    gateway: GatewayOpt = DEFAULT_GATEWAY,
    chain: ChainOpt = DEFAULT_CHAIN,
    home: HomeOpt = None,
    pause: Annotated[bool, typer.Option("--pause", help="Wait for Enter between screens.")] = False,
) -> None:
    """A guided story on the local chain: admin, centre, patient, doctor, insurer, auditor —
    with real transactions. Exit 0 only if every expectation held."""
    from ledger.cli.demo import DemoConfig, run_demo

    code = run_demo(
        DemoConfig(
            gateway_url=gateway,
            chain_url=chain,
            fresh=fresh,
            home=home,
            pause=pause,
        ),
        console=console,
    )
    raise typer.Exit(code)


# ---------------------------------------------------------------------------- sub-app mounts


def _mount_optional() -> None:
    """Sub-apps that live in their own modules."""
    try:
        from ledger.cli.audit import app as audit_app  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return
    app.add_typer(audit_app, name="audit")


_mount_optional()


def command_names() -> Iterator[tuple[str, ...]]:
    """Every command path (``("key", "new")``, ``("fetch",)`` ...), for docs and tests."""
    import typer.main

    def walk(group: Any, prefix: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        for name, cmd in sorted(group.commands.items()):
            path = (*prefix, name)
            if hasattr(cmd, "commands"):
                yield from walk(cmd, path)
            else:
                yield path

    yield from walk(typer.main.get_command(app), ())


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
