"""``consent audit``: replay and verify the ledger, show consent at a block, export FHIR.

Mounted into the ``consent`` CLI as the ``audit`` sub-app (``ledger.cli.main``); it reads the
registry's events with the ABI shipped in the package, so it needs no compiler. Exit codes:

- 0: clean (notices allowed, e.g. a fresh unanchored tail, or a role holder outside every custody
  federation that never anchored and whose log was not given);
- 1: a violation was found (it wins over anything unverified);
- 2: could not verify: node unreachable, incomplete replay, unreadable input, an export naming an
  address that never held GATEWAY_ROLE in the audited range, a gateway that anchored or a member
  of a custody federation of the range whose log was not given, an unanchored tail older than
  ``--anchor-interval``.

``audit run`` lists the custody federation (every ``FederationSet`` of the audited range, the one
in force at its end, each member with its custody key, URL, log status and last checkpoint) in
the terminal, ``--json`` and ``--html`` reports; give each member's log with one
``--access-log`` each.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ledger.audit.export import AccessLogError, AccessLogExport, load_access_log
from ledger.audit.html_report import render_html, render_terminal, report_to_json
from ledger.audit.replay import BlockClock, ReplayError, replay
from ledger.audit.report import AuditReport
from ledger.audit.run import run_audit
from ledger.audit.state import ConsentTimeline
from ledger.audit.verify_log import DEFAULT_ANCHOR_INTERVAL_S, DEFAULT_MAX_TIME_SKEW_S
from ledger.chain.abi import interface_abi
from ledger.chain.deployment import load_deployment
from ledger.chain.logs import ProgressFn
from ledger.chain.node import ChainError
from ledger.chain.rpc import RpcClient
from ledger.cli.app import RoleApp, context_of
from ledger.paths import state_paths
from ledger.protocol.consent_types import NO_EXPIRY, ScopeKind, category_name, purposes_of
from ledger.protocol.events import EventDecoder, MalformedLog, registry_event_abi

__all__ = ["app"]

app = RoleApp(
    shared=("home",),
    handled=False,
    name="audit",
    help="Replay the ledger, prove it complete, verify access logs, rebuild consent at any block.",
    no_args_is_help=True,
)
err = Console(stderr=True)

RpcOpt = Annotated[
    str,
    typer.Option(
        "--rpc",
        "--chain",
        envvar=["CONSENT_RPC_URL", "CONSENT_CHAIN_URL"],
        help="JSON-RPC URL of an EVM node.",
    ),
]
DeploymentOpt = Annotated[
    Path | None,
    typer.Option(
        "--deployment",
        envvar="CONSENT_DEPLOYMENT_FILE",
        help="deployment.json of the registry (default: $CONSENT_HOME/deployment.json).",
    ),
]
RegistryOpt = Annotated[
    str | None,
    typer.Option(
        "--registry", help="Registry address (instead of --deployment; needs --from-block)."
    ),
]
FromBlockOpt = Annotated[
    int | None, typer.Option("--from-block", help="The registry's deploy block (with --registry).")
]
AsOpt = Annotated[
    str | None,
    typer.Option(
        "--as",
        envvar="CONSENT_AS",
        help="Sign in to the gateway as this auditor (a keystore name or, on the local chain, "
        "the dev name `auditor`) to read --access-log http(s) URLs; the gateway serves "
        "/v1/access-log/export only to addresses in its CONSENT_AUDITORS.",
    ),
]
AnchorIntervalOpt = Annotated[
    float,
    typer.Option(
        "--anchor-interval",
        min=0,
        help="Seconds (chain time) a gateway has to anchor a logged decision: an unanchored tail "
        "older than this at the audited block cannot be verified (exit 2). Default: the "
        "gateway's CONSENT_CHECKPOINT_INTERVAL_S default; set it to the gateways' setting.",
    ),
]
SkewOpt = Annotated[
    float,
    typer.Option(
        "--max-time-skew",
        min=0,
        help="Seconds a leaf's time may lie outside its block's window [ts(block), "
        "ts(block + 1)] (gateway clock against chain clock, plus a request's run).",
    ),
]
ChunkOpt = Annotated[
    int,
    typer.Option("--chunk-blocks", min=1, help="Initial eth_getLogs range (halved on refusal)."),
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def _target(
    rpc: str,
    deployment: Path | None,
    registry: str | None,
    from_block: int | None,
    home: Path | None,
) -> tuple[str, int, int | None]:
    """``(registry address, deploy block, recorded chain id)``."""
    if registry is not None:
        if from_block is None:
            raise _fail("--registry needs --from-block (the registry's deploy block)")
        return registry, from_block, None
    path = deployment if deployment is not None else state_paths(home).deployment
    try:
        recorded = load_deployment(path)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise _fail(f"cannot read the deployment file {path}: {exc}") from None
    if recorded is None:
        raise _fail(
            f"no deployment file at {path}; pass --deployment FILE or --registry/--from-block"
        )
    return recorded.address, recorded.block, recorded.chain_id


def _decoder() -> EventDecoder:
    """The registry's events, decoded with the interface ABI shipped in the package."""
    return EventDecoder(registry_event_abi(interface_abi()))


def _check_chain(client: RpcClient, recorded: int | None) -> int:
    try:
        chain_id = client.chain_id()
    except ChainError as exc:
        raise _fail(str(exc)) from None
    if recorded is not None and recorded != chain_id:
        raise _fail(f"the deployment is on chain {recorded} but {client.url} is chain {chain_id}")
    return chain_id


class _Bar:
    """A rich progress bar fed by replay's ``progress(blocks_done, blocks_total, logs)``."""

    def __init__(self, enabled: bool) -> None:
        self.progress = Progress(
            TextColumn("[bold]replaying"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("blocks · {task.fields[logs]:,} events"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=not enabled,
        )
        self.task = self.progress.add_task("replay", total=None, logs=0)

    def __call__(self, done: int, total: int, logs: int) -> None:
        self.progress.update(self.task, completed=done, total=total, logs=logs)

    def __enter__(self) -> ProgressFn:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)


def _load_logs(
    sources: list[str],
    *,
    as_name: str | None,
    rpc: str,
    home: Path | None,
    registry: str | None = None,
) -> list[AccessLogExport]:
    """Each source: a file, or an http(s) URL read with a SIWE session as ``as_name`` if given."""
    from urllib.parse import urlsplit

    exports: list[AccessLogExport] = []
    sessions: dict[str, str] = {}
    for source in sources:
        http: httpx.Client | None = None
        try:
            if as_name and source.startswith(("http://", "https://")):
                parts = urlsplit(source)
                origin = f"{parts.scheme}://{parts.netloc}"
                if origin not in sessions:
                    sessions[origin] = _login(
                        origin, as_name, rpc=rpc, home=home, registry=registry
                    )
                http = httpx.Client(
                    timeout=120.0, headers={"Authorization": f"Bearer {sessions[origin]}"}
                )
            exports.append(load_access_log(source, client=http))
        except AccessLogError as exc:
            hint = (
                "" if as_name or "401" not in str(exc) else " (an auditor session is needed: --as)"
            )
            raise _fail(f"{exc}{hint}") from None
        finally:
            if http is not None:
                http.close()
    return exports


def _login(
    origin: str, as_name: str, *, rpc: str, home: Path | None, registry: str | None = None
) -> str:
    """A session token; the gateway must name the audited registry (the CLI's pinning rule)."""
    from ledger.cli.context import CliError, Ctx
    from ledger.client import ClientError

    ctx = Ctx(home=home, gateway_url=origin, chain_url=rpc, registry_address=registry)
    try:
        return ctx.session(ctx.account(as_name)).token
    except ClientError as exc:
        raise _fail(f"cannot sign in to {origin} as {as_name}: {exc.line()}") from None
    except CliError as exc:
        raise _fail(f"cannot sign in to {origin} as {as_name}: {exc.message}", exc.code) from None
    finally:
        ctx.close()


def _audit(
    *,
    rpc: str,
    deployment: Path | None,
    registry: str | None,
    from_block: int | None,
    home: Path | None,
    access_log: list[str],
    confirmations: int,
    target_block: int | None,
    chunk_blocks: int,
    show_progress: bool,
    as_name: str | None = None,
    anchor_interval_s: float = DEFAULT_ANCHOR_INTERVAL_S,
    max_time_skew_s: float = DEFAULT_MAX_TIME_SKEW_S,
) -> tuple[AuditReport, RpcClient]:
    address, deploy_block, recorded_chain = _target(rpc, deployment, registry, from_block, home)
    decoder = _decoder()
    exports = _load_logs(access_log, as_name=as_name, rpc=rpc, home=home, registry=address)
    client = RpcClient(rpc, client=httpx.Client(timeout=120.0))
    _check_chain(client, recorded_chain)
    with _Bar(show_progress) as progress:
        report = run_audit(
            client,
            registry=address,
            deploy_block=deploy_block,
            decoder=decoder,
            access_logs=exports,
            confirmations=confirmations,
            target_block=target_block,
            chunk_blocks=chunk_blocks,
            progress=progress,
            anchor_interval_s=anchor_interval_s,
            max_time_skew_s=max_time_skew_s,
        )
    return report, client


@app.command("run", shared=("home", "json"))
def run(
    cli: typer.Context,
    rpc: RpcOpt = "http://127.0.0.1:8545",
    deployment: DeploymentOpt = None,
    registry: RegistryOpt = None,
    from_block: FromBlockOpt = None,
    access_log: Annotated[
        list[str] | None,
        typer.Option(
            "--access-log",
            help="A gateway's exported access log: a file or an http(s) URL, e.g. "
            "http://127.0.0.1:8000/v1/access-log/export with --as auditor (repeatable).",
        ),
    ] = None,
    as_name: AsOpt = None,
    confirmations: Annotated[
        int, typer.Option("--confirmations", min=0, help="Audit up to head - N blocks.")
    ] = 0,
    target_block: Annotated[
        int | None, typer.Option("--at-block", help="Audit up to this block instead.")
    ] = None,
    chunk_blocks: ChunkOpt = 10_000,
    anchor_interval_s: AnchorIntervalOpt = DEFAULT_ANCHOR_INTERVAL_S,
    max_time_skew_s: SkewOpt = DEFAULT_MAX_TIME_SKEW_S,
    html_path: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report here.")
    ] = None,
) -> None:
    """Replay every event, prove completeness against the on-chain digest, verify access logs.

    Every gateway that held GATEWAY_ROLE, anchored or is a custody federation member is listed
    with whether its log was given, and the federation with each member's log status.
    Exit code 0 when clean, 1 on violations, 2 when something could not be verified (among it:
    a log naming an address that never held GATEWAY_ROLE, a missing log of a gateway that
    anchored or of a federation member, an unanchored tail older than --anchor-interval).
    """
    home, as_json = context_of(cli).home, context_of(cli).as_json
    report, client = _audit(
        rpc=rpc,
        deployment=deployment,
        registry=registry,
        from_block=from_block,
        home=home,
        access_log=access_log or [],
        confirmations=confirmations,
        target_block=target_block,
        chunk_blocks=chunk_blocks,
        show_progress=not as_json and sys.stderr.isatty(),
        as_name=as_name,
        anchor_interval_s=anchor_interval_s,
        max_time_skew_s=max_time_skew_s,
    )
    try:
        if html_path is not None:
            html_path.write_text(render_html(report), encoding="utf-8")
        if as_json:
            typer.echo(json.dumps(report_to_json(report), indent=2))
        else:
            render_terminal(report, Console())
            if html_path is not None:
                Console().print(f"HTML report: {html_path}")
    finally:
        client.close()
    raise typer.Exit(report.exit_code)


def _scope_text(kind: ScopeKind, scope_id: bytes) -> str:
    if kind is ScopeKind.RECORD:
        return f"record 0x{scope_id.hex()}"
    if kind is ScopeKind.CATEGORY:
        try:
            return f"category {category_name(scope_id)}"
        except UnicodeDecodeError:
            return f"category 0x{scope_id.hex()}"
    return "all records"


def _purpose_names(mask: int) -> list[str]:
    return [getattr(p, "name", str(p)).lower() for p in sorted(purposes_of(mask), key=int)]


def _patient_address(text: str, *, home: Path | None, chain_id: int | None) -> str:
    """A 0x address, a keystore name, or (on the local chain) a dev account name."""
    from ledger.chain.keys import Keystore, KeystoreError, resolve_address
    from ledger.chain.node import ANVIL_CHAIN_ID
    from ledger.paths import state_paths

    try:
        return resolve_address(
            text, keystore=Keystore(state_paths(home).keys), chain_id=chain_id or ANVIL_CHAIN_ID
        )
    except KeystoreError as exc:
        raise _fail(str(exc)) from None


@app.command("state", shared=("home", "json"))
def state(
    cli: typer.Context,
    patient: Annotated[
        str,
        typer.Option(
            "--patient", help="The patient: a 0x address, a keystore name or a local dev name."
        ),
    ],
    at_block: Annotated[
        int | None,
        typer.Option("--at-block", help="Block to rebuild the state at (default: head)."),
    ] = None,
    rpc: RpcOpt = "http://127.0.0.1:8545",
    deployment: DeploymentOpt = None,
    registry: RegistryOpt = None,
    from_block: FromBlockOpt = None,
    chunk_blocks: ChunkOpt = 10_000,
) -> None:
    """Every consent in force for a patient at a block (grantee, scope, purposes, expiry, basis),
    with guardian, open break-glass windows and records — rebuilt from replayed events."""
    home, as_json = context_of(cli).home, context_of(cli).as_json

    address, deploy_block, recorded_chain = _target(rpc, deployment, registry, from_block, home)
    who = _patient_address(patient, home=home, chain_id=recorded_chain)
    decoder = _decoder()
    client = RpcClient(rpc, client=httpx.Client(timeout=120.0))
    try:
        _check_chain(client, recorded_chain)
        try:
            result = replay(
                client,
                address=address,
                from_block=deploy_block,
                decoder=decoder,
                target_block=at_block,
                chunk_blocks=chunk_blocks,
            )
        except (ChainError, MalformedLog) as exc:
            raise _fail(f"could not replay: {exc}") from None
        if not result.complete and not result.repaired:
            raise _fail(
                "the replay is incomplete (the digest does not match); run `consent audit run`"
            )
        timestamp = BlockClock(client).timestamp(result.target_block)
    except ReplayError as exc:
        raise _fail(str(exc)) from None
    finally:
        client.close()
    snapshot = ConsentTimeline(result.events).state_at(
        who, block_number=result.target_block, timestamp=timestamp
    )
    rows: list[dict[str, Any]] = []
    basis_of = {ScopeKind.RECORD: "Record", ScopeKind.CATEGORY: "Category", ScopeKind.ALL: "All"}
    for g in snapshot.grants:
        rows.append(
            {
                "grantee": g.grantee,
                "scope": _scope_text(g.scope_kind, g.scope_id),
                "purposes": _purpose_names(g.purposes),
                "expires_at": None if g.expires_at >= NO_EXPIRY else g.expires_at,
                "basis": basis_of[g.scope_kind],
                "granted_at_block": g.block_number,
            }
        )
    if snapshot.guardian is not None:
        rows.append(
            {
                "grantee": snapshot.guardian,
                "scope": "all records",
                "purposes": ["all"],
                "expires_at": None,
                "basis": "Guardian",
                "granted_at_block": None,
            }
        )
    for w in snapshot.break_glass:
        rows.append(
            {
                "grantee": w.institution,
                "scope": "all records",
                "purposes": ["treatment", "emergency"],
                "expires_at": w.until,
                "basis": "Emergency",
                "granted_at_block": w.block_number,
            }
        )
    if as_json:
        doc = {
            "patient": who,
            "block": result.target_block,
            "timestamp": timestamp,
            "in_force": rows,
            "lapsed": [
                {
                    "grantee": g.grantee,
                    "scope": _scope_text(g.scope_kind, g.scope_id),
                    "purposes": _purpose_names(g.purposes),
                    "expired_at": g.expires_at,
                }
                for g in snapshot.expired
            ],
            "records": [
                {
                    "record": "0x" + r.record_id.hex(),
                    "category": _safe_category(r.category),
                    "centre": r.centre,
                    "block": r.block_number,
                }
                for r in snapshot.records
            ],
        }
        typer.echo(json.dumps(doc, indent=2))
        return
    out = Console()
    table = Table(title=f"Consent of {who} at block {result.target_block}")
    for column in ("grantee", "scope", "purposes", "expires", "basis"):
        table.add_column(column)
    from ledger.audit.html_timeline import format_time as _iso

    for row in rows:
        table.add_row(
            row["grantee"],
            row["scope"],
            ",".join(row["purposes"]),
            "never" if row["expires_at"] is None else _iso(row["expires_at"]),
            row["basis"],
        )
    out.print(table)
    if not rows:
        out.print("no consent in force")
    if snapshot.expired:
        out.print(f"{len(snapshot.expired)} lapsed grant(s) still stored (not in force)")
    if snapshot.guardian_ended:
        n = len(snapshot.guardian_ended)
        out.print(f"{n} guardian grant(s) ended with their guardian's removal (not in force)")
    out.print(f"{len(snapshot.records)} record(s) registered")


def _safe_category(category: bytes) -> str:
    try:
        return category_name(category)
    except UnicodeDecodeError:
        return "0x" + category.hex()


@app.command("export")
def export(
    cli: typer.Context,
    fhir: Annotated[Path, typer.Option("--fhir", help="Directory to write FHIR R4 resources to.")],
    rpc: RpcOpt = "http://127.0.0.1:8545",
    deployment: DeploymentOpt = None,
    registry: RegistryOpt = None,
    from_block: FromBlockOpt = None,
    access_log: Annotated[
        list[str] | None,
        typer.Option(
            "--access-log", help="Access logs whose reads become AuditEvents (repeatable)."
        ),
    ] = None,
    as_name: AsOpt = None,
    confirmations: Annotated[int, typer.Option("--confirmations", min=0)] = 0,
    chunk_blocks: ChunkOpt = 10_000,
) -> None:
    """Export consents as FHIR ``Consent`` and logged reads as ``AuditEvent`` (validated): one
    AuditEvent per entry of each gateway's log, so one per key-share release under a federation,
    the gateway as its custodian agent."""
    from ledger.audit.fhir import export_fhir

    home = context_of(cli).home

    report, client = _audit(
        rpc=rpc,
        deployment=deployment,
        registry=registry,
        from_block=from_block,
        home=home,
        access_log=access_log or [],
        confirmations=confirmations,
        target_block=None,
        chunk_blocks=chunk_blocks,
        show_progress=sys.stderr.isatty(),
        as_name=as_name,
    )
    try:
        if report.replay is None:
            raise _fail(
                "could not replay the ledger: " + "; ".join(f.message for f in report.findings)
            )
        written = export_fhir(report, fhir, block_times=BlockClock(client).timestamps)
    except ChainError as exc:
        raise _fail(str(exc)) from None
    finally:
        client.close()
    Console().print(
        f"wrote {written.consents} Consent and {written.audit_events} AuditEvent resources "
        f"to {written.directory} (bundle: {written.bundle})"
    )
    if report.exit_code:
        err.print(f"[yellow]note:[/] the audit itself is {report.verdict}; run `consent audit run`")
