"""``consent demo``: a guided story on the local chain, with real transactions.

The health commission admits a checkup centre; the centre uploads two checkup results (a FHIR R4
``DiagnosticReport`` with lab values and a small PDF summary); the patient grants a doctor
treatment access to the laboratory category (signed, relayed by a gateway: gasless); the
doctor fetches and decrypts; an insurer and the doctor (on the PDF) are refused; the patient
revokes and the doctor's next try is refused; the patient sees every decision with its verified
inclusion proof; the auditor replays the ledger and checks every decision against it.

When the registry lists a custody federation (``consent up`` starts 2 of 3), the story follows
it (``ledger.cli.demo_federated``): the centre splits the key on its machine, each gateway
decides alone and logs its decision, one gateway is killed mid-story while the doctor still
reads (only when the demo started the stack itself) and the auditor verifies every gateway's
log. Without a federation it tells the single-gateway story (``ledger.cli.demo_story``).

Every step states an expectation; the demo exits 0 only if all of them held. It runs against a
running stack (``--gateway`` / ``--chain``) or, with ``--fresh``, a 2-of-3 federation it starts
on free ports in a temporary directory and stops afterwards. It uses the local chain's dev
accounts, so it refuses any chain but the local one.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.panel import Panel

from ledger.chain.keys import DEV_NAMES
from ledger.chain.node import ANVIL_CHAIN_ID, dev_accounts
from ledger.cli.app import RoleApp, context_of
from ledger.cli.demo_docs import checkup_pdf, diagnostic_report
from ledger.cli.demo_federated import FederatedSteps
from ledger.cli.demo_story import DemoConfig, Steps, Story
from ledger.cli.output import console as stdout

if TYPE_CHECKING:
    from ledger.devstack.stack import Member, StackInfo

__all__ = ["DemoConfig", "app", "checkup_pdf", "diagnostic_report", "run_demo"]

app = RoleApp(shared=("gateway", "chain", "home"))


@app.command()
def demo(
    cli: typer.Context,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="Start a throw-away 2-of-3 federation on free ports in a temp dir, stop it after.",
        ),
    ] = False,
    pause: Annotated[bool, typer.Option("--pause", help="Wait for Enter between screens.")] = False,
) -> None:
    """A guided story on the local chain: admin, centre, patient, doctor, insurer, auditor —
    with real transactions. Exit 0 only if every expectation held."""
    ctx = context_of(cli)
    code = run_demo(
        DemoConfig(
            gateway_url=ctx.gateway_url,
            chain_url=ctx.chain_url,
            fresh=fresh,
            home=ctx.home,
            pause=pause,
        ),
        console=stdout,
    )
    raise typer.Exit(code)


@contextlib.contextmanager
def _fresh_stack(console: Console) -> Iterator[tuple[StackInfo, Path]]:
    """A throw-away 2-of-3 federation on free ports in a temp dir (checkpoints every second)."""
    from ledger.devstack.services import stack_ports
    from ledger.devstack.stack import StackConfig, start_stack
    from ledger.paths import state_paths

    with tempfile.TemporaryDirectory(prefix="consent-demo-", ignore_cleanup_errors=True) as tmp:
        paths = state_paths(Path(tmp) / "home")
        cache = state_paths().build_cache
        if cache.is_dir():  # reuse compiled contracts (the cache is keyed by sources + solc)
            shutil.copytree(cache, paths.build_cache, dirs_exist_ok=True)
        chain_port, ipfs_port, first = stack_ports(3)  # the gateways: consecutive ports
        config = StackConfig(
            paths=paths,
            chain_port=chain_port,
            ipfs_port=ipfs_port,
            gateway_port=first,
            gateways=3,
            threshold=2,
            gateway_env={"CONSENT_CHECKPOINT_INTERVAL_S": "1"},
        )
        console.print(
            f"[dim]starting a fresh 2-of-3 federation in {paths.home} ...[/]", highlight=False
        )
        info = start_stack(config, say=lambda s: console.print(f"[dim]  {s}[/]"))
        try:
            yield info, paths.home
        finally:
            console.print("[dim]stopping the fresh stack ...[/]")
            info.stop()


def run_demo(config: DemoConfig, *, console: Console) -> int:
    """Run the story; 0 if every expectation held, 1 if one did not, 2 if it could not run."""
    if config.fresh:
        with _fresh_stack(console) as (info, home):
            return _run(config, console, info.gateway_url, info.anvil.url, home, info.members)
    return _run(config, console, config.gateway_url, config.chain_url, config.home, [])


def _run(
    config: DemoConfig,
    console: Console,
    gateway_url: str,
    chain_url: str,
    home: Path | None,
    started: list[Member],
) -> int:
    """The story against the stack at ``gateway_url``; ``started``: the gateway processes this
    demo started (it kills and restarts one of them), empty for someone else's stack."""
    from ledger.chain.abi import interface_abi, registry_abi
    from ledger.chain.deployment import load_deployment
    from ledger.chain.node import connect
    from ledger.chain.registry import ConsentRegistry
    from ledger.client import Gateway
    from ledger.paths import state_paths
    from ledger.protocol.consent_types import CENTRE_ROLE

    accounts = dict(zip(DEV_NAMES, dev_accounts(), strict=True))
    story = Story(console, config.pause)
    paths = state_paths(home)
    with Gateway(gateway_url) as gw:
        health = gw.health()
        if health.status != "ok" or health.contract is None:
            from ledger.client import ClientError

            raise ClientError(
                f"the gateway at {gateway_url} is degraded: {health.details}",
                hint="check `consent status`",
            )
        w3 = connect(chain_url)
        chain_id = int(w3.eth.chain_id)
        if chain_id != ANVIL_CHAIN_ID or chain_id != health.chain_id:
            from ledger.client import ClientError

            raise ClientError(
                f"the demo uses the local chain's dev accounts; {chain_url} is chain {chain_id} "
                f"and the gateway's is {health.chain_id}",
                hint="run it against `consent up`, or with --fresh",
            )
        if not w3.eth.get_code(w3.to_checksum_address(health.contract)):
            from ledger.client import ClientError

            raise ClientError(
                f"the chain at {chain_url} has no registry at {health.contract}, the gateway's",
                hint="pass --chain / CONSENT_CHAIN_URL of the gateway's chain node",
            )
        deployment = load_deployment(paths.deployment)
        if deployment is None or deployment.address.lower() != health.contract.lower():
            from ledger.client import ClientError

            pinned = deployment.address if deployment is not None else "none"
            raise ClientError(
                f"the gateway at {gateway_url} names the registry {health.contract}, but the "
                f"deployment file {paths.deployment} names {pinned}; the demo trusts only its own",
                hint="pass the --home of the stack the gateway runs on, or use --fresh",
            )
        registry = ConsentRegistry(w3, deployment.address, abi=registry_abi())
        fed = registry.federation()
        mode = (
            f"{fed.threshold} of {fed.size} gateways must release a record's key"
            if fed.size
            else "single gateway (no federation: this gateway can decrypt every record)"
        )
        console.print(
            Panel.fit(
                f"gateway  {gateway_url}\nchain    {chain_url} (chain id {chain_id}, block "
                f"{w3.eth.block_number})\nregistry {registry.address}\ncustody  {mode}",
                title="Consent Ledger demo",
            ),
            highlight=False,
        )
        names = {a.address.lower(): n for n, a in accounts.items()}
        args = (story, gw, registry, accounts, names, config, chain_url, interface_abi())
        ctx: Steps
        if fed.size:
            total = 8
            ctx = FederatedSteps(*args, {m.address.lower(): m for m in started})
        else:
            total = 7
            ctx = Steps(*args)

        # 1 -------------------------------------------------------------------------------
        story.screen(
            1,
            total,
            "The health commission admits a checkup centre",
            "The registry admin grants CENTRE_ROLE: only centres may attest results.",
        )
        centre = accounts["centre"]
        if registry.has_role(CENTRE_ROLE, centre.address):
            story.say(f"centre {centre.address} already holds CENTRE_ROLE (stack reused)")
        else:
            receipt = registry.grant_role(accounts["admin"], CENTRE_ROLE, centre.address)
            story.say(
                f"admin grantRole(CENTRE_ROLE, centre)  tx {receipt.tx_hash}  "
                f"block {receipt.block_number}"
            )
        story.expect("the centre holds CENTRE_ROLE", registry.has_role(CENTRE_ROLE, centre.address))
        return ctx.rest(total)
