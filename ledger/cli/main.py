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

This module only assembles the app: the root callback (the shared options, ``ledger.cli.app``)
and every role's commands, mounted explicitly from their modules (``stack``, ``keys``,
``admin``, ``records``, ``consents``, ``fetch``, ``demo``, ``audit``, and the operator's
``deploy`` and ``gateway``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from ledger.cli import admin, audit, consents, demo, deploy, fetch, keys, operator, records, stack
from ledger.cli.app import context_of, with_shared_options
from ledger.cli.context import Ctx
from ledger.cli.parsing import parse_expiry, parse_purposes

__all__ = ["EXIT_CODES", "Ctx", "app", "command_names", "main", "parse_expiry", "parse_purposes"]

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


@app.callback()
@with_shared_options
def _main(
    cli: typer.Context,
    debug: Annotated[
        bool,
        typer.Option("--debug", envvar="CONSENT_DEBUG", help="Show tracebacks on errors."),
    ] = False,
) -> None:
    """Consent Ledger: patient-controlled access to checkup results.

    Exit codes: 0 ok; 1 refused or a check failed; 2 could not run (bad input, wrong password,
    unknown record, a service down); 130 interrupted.
    """
    context_of(cli).debug = debug


app.add_typer(stack.app)
app.add_typer(records.app)
app.add_typer(consents.app)
app.add_typer(fetch.app)
app.add_typer(demo.app)
app.add_typer(keys.app, name="key", no_args_is_help=True)
app.add_typer(admin.app, name="admin", no_args_is_help=True)
app.add_typer(consents.guardian_app, name="guardian", no_args_is_help=True)
app.add_typer(consents.nonce_app, name="nonce", no_args_is_help=True)
app.add_typer(audit.app, name="audit")
app.add_typer(deploy.app)
app.add_typer(operator.app, name="gateway", no_args_is_help=True)


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
