"""What every ``consent`` command shares, declared once: the shared options, the context object
and the one-line failures.

The shared options (``--gateway``, ``--chain``, ``--registry``, ``--home``, ``--json``) are
declared here only. The root callback takes them before a command's name
(``consent --home X grant ...``) and puts a :class:`~ledger.cli.context.Ctx` in
``typer.Context.obj``. Every command of a :class:`RoleApp` takes them after its name as well
(``consent grant ... --home X``, as the README writes it): the role app adds them to the
command's signature and moves their values into that same ``Ctx``; a value given after the name
wins over one given before it. A role app names which of them its commands take (``key``
commands take no ``--gateway``), so no command offers an option it would ignore.

Known failures become one line and a documented exit code (:func:`describe`); ``--debug``
(``$CONSENT_DEBUG``) shows the traceback instead.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ledger.cli.context import DEFAULT_CHAIN, DEFAULT_GATEWAY, CliError, Ctx
from ledger.cli.output import fail

__all__ = [
    "CLIENT",
    "SHARED",
    "AsOpt",
    "DirectOpt",
    "RoleApp",
    "context_of",
    "describe",
    "with_shared_options",
]

F = TypeVar("F", bound=Callable[..., Any])

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
HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", help="State directory (default: $CONSENT_HOME or ./.consent)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

AsOpt = Annotated[
    str | None,
    typer.Option(
        "--as",
        envvar="CONSENT_AS",
        help="Who acts: a keystore name or, on the local chain, a dev name (patient, doctor ...).",
    ),
]
DirectOpt = Annotated[
    bool,
    typer.Option(
        "--direct",
        help="Send the transaction yourself (you pay gas) instead of having the gateway relay it.",
    ),
]


@dataclass(frozen=True)
class _Shared:
    attribute: str  # the Ctx attribute the option sets
    annotation: Any
    default: Any


#: The shared options by name, in the order a command's help lists them.
SHARED: dict[str, _Shared] = {
    "gateway": _Shared("gateway_url", GatewayOpt, DEFAULT_GATEWAY),
    "chain": _Shared("chain_url", ChainOpt, DEFAULT_CHAIN),
    "registry": _Shared("registry_address", RegistryOpt, None),
    "home": _Shared("home", HomeOpt, None),
    "json": _Shared("as_json", JsonOpt, False),
}
#: What a command that talks to the gateway and the chain takes: all of them.
CLIENT = tuple(SHARED)

_PREFIX = "shared_"  # the options' parameter names, kept apart from a command's own
_CLI = "shared_cli"  # the typer.Context parameter added when a command takes none


def context_of(cli: typer.Context) -> Ctx:
    """The invocation's :class:`Ctx` (made by the root callback, or by a role app run alone)."""
    state = cli.find_object(Ctx)
    if state is None:
        raise CliError("no consent context: run the command through `consent`")
    return state


def _from_command_line(cli: typer.Context, name: str) -> bool:
    source = cli.get_parameter_source(_PREFIX + name)
    return source is not None and source.name == "COMMANDLINE"


def _with_options(
    fn: Callable[..., Any],
    names: Sequence[str],
    on_call: Callable[[typer.Context, dict[str, Any], Callable[[], Any]], Any],
) -> Callable[..., Any]:
    """``fn`` with the shared options ``names`` added to its signature (so typer parses them);
    ``on_call(cli, values, call)`` gets their values and runs ``fn`` through ``call()``."""
    signature = inspect.signature(fn, eval_str=True)
    params = list(signature.parameters.values())
    context_name = next((p.name for p in params if p.annotation is typer.Context), None)
    added = [
        inspect.Parameter(
            _PREFIX + name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=SHARED[name].annotation,
            default=SHARED[name].default,
        )
        for name in names
    ]
    if context_name is None:
        added.append(
            inspect.Parameter(_CLI, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
        )

    def wrapper(**kwargs: Any) -> Any:
        cli: typer.Context = kwargs.pop(context_name or _CLI)
        if context_name is not None:
            kwargs[context_name] = cli
        values = {name: kwargs.pop(_PREFIX + name) for name in names}
        return on_call(cli, values, lambda: fn(**kwargs))

    for attribute in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(wrapper, attribute, getattr(fn, attribute))
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*params, *added]
    )
    wrapper.__annotations__ = {p.name: p.annotation for p in [*params, *added]}
    return wrapper


def _open_root(cli: typer.Context, values: dict[str, Any], call: Callable[[], Any]) -> Any:
    given = frozenset(name for name in values if _from_command_line(cli, name))
    state = Ctx(given=given, **{SHARED[name].attribute: v for name, v in values.items()})
    cli.obj = state
    cli.call_on_close(state.close)
    return call()


def with_shared_options(fn: F) -> F:
    """The root callback ``fn`` taking every shared option; it runs with the new ``Ctx`` in
    ``typer.Context.obj``."""
    wrapped: F = _with_options(fn, CLIENT, _open_root)  # type: ignore[assignment]
    return wrapped


def _run_command(
    cli: typer.Context,
    values: dict[str, Any],
    call: Callable[[], Any],
    *,
    handled: bool,
) -> Any:
    state = cli.find_object(Ctx)
    if state is None:  # a role app run on its own (the tests run `audit` so)
        state = Ctx()
        cli.obj = state
        cli.call_on_close(state.close)
    for name, value in values.items():
        if name not in state.given or _from_command_line(cli, name):
            setattr(state, SHARED[name].attribute, value)
    if not handled:
        return call()
    try:
        return call()
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:
        if state.debug:
            raise
        described = describe(exc, chain_url=state.chain_url)
        if described is None:
            described = (
                f"unexpected {type(exc).__name__}: {exc}; rerun with `consent --debug ...` "
                f"for the traceback",
                2,
            )
        message, code = described
        line = message.splitlines()[0] if message else type(exc).__name__
        raise fail(line, code=code) from None


class RoleApp(typer.Typer):
    """The commands of one role. Each takes the shared options ``shared`` (a command may name
    others); with ``handled``, known failures become one line and an exit code."""

    def __init__(
        self, *, shared: Sequence[str] = CLIENT, handled: bool = True, **kwargs: Any
    ) -> None:
        kwargs.setdefault("pretty_exceptions_enable", False)
        super().__init__(**kwargs)
        unknown = set(shared) - set(SHARED)
        if unknown:
            raise ValueError(f"no shared options {sorted(unknown)}")
        self.shared = tuple(shared)
        self.handled = handled

    def command(
        self, name: str | None = None, *, shared: Sequence[str] | None = None, **kwargs: Any
    ) -> Callable[[F], F]:
        register = super().command(name, **kwargs)
        names = self.shared if shared is None else tuple(shared)
        on_call = partial(_run_command, handled=self.handled)

        def decorator(fn: F) -> F:
            register(_with_options(fn, names, on_call))
            return fn

        return decorator


def describe(exc: BaseException, *, chain_url: str = DEFAULT_CHAIN) -> tuple[str, int] | None:
    """One readable line and an exit code for a known failure (else None)."""
    from ledger.chain.keys import KeystoreError, WrongPassword
    from ledger.chain.node import ChainError, ChainUnavailable, DevKeyOnPublicChain
    from ledger.client import ClientError
    from ledger.devstack.services import ServiceError
    from ledger.protocol.contract_errors import ContractError, UnknownRecord

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
