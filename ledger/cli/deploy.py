"""``consent deploy``: deploy the registry to a network, with the keystore account as admin.

The registry is compiled from ``contracts/`` (only deploying compiles), deployed, confirmed,
its runtime code compared with the build, and recorded in ``$CONSENT_HOME/deployment.json``,
the file the CLI and every gateway of the deployment then trust. ``--dry-run`` prices it at
the node's current fee and sends nothing.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

import typer

from ledger.cli.app import AsOpt, RoleApp, context_of
from ledger.cli.context import CliError
from ledger.cli.output import console, echo_json

__all__ = ["app"]

app = RoleApp(shared=("chain", "home", "json"))

_GWEI = Decimal(10**9)
_ETH = Decimal(10**18)


def _gwei(wei: int) -> str:
    return f"{Decimal(wei) / _GWEI:.3f} gwei"


def _eth(wei: int) -> str:
    return f"{Decimal(wei) / _ETH:.6f} ETH"


@app.command("deploy")
def deploy_command(
    cli: typer.Context,
    who: AsOpt = None,
    confirmations: Annotated[
        int,
        typer.Option(
            "--confirmations", min=1, help="Blocks (the deployment's own included) to wait for."
        ),
    ] = 1,
    timeout: Annotated[
        float,
        typer.Option("--timeout", min=1, help="Seconds to wait for the confirmations."),
    ] = 600.0,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Estimate gas and cost at the current fee; send nothing."),
    ] = False,
) -> None:
    """Deploy the consent registry with the `--as` keystore account as its admin.

    Waits for `--confirmations`, checks the deployed runtime code against the build, writes
    `$CONSENT_HOME/deployment.json` and prints the next steps. Anvil's development keys are
    refused on every chain but the local one.
    """
    from ledger.chain.build import compile_contracts
    from ledger.chain.deployment import (
        REGISTRY_CONTRACT,
        deploy_registry,
        estimate_deployment,
        load_deployment,
    )
    from ledger.chain.node import (
        ChainUnavailable,
        TxSender,
        connect,
        ensure_not_dev_address,
        ensure_not_dev_key,
    )

    ctx = context_of(cli)
    if not who:
        raise CliError("say whose key deploys (and administers) the registry: --as NAME")
    w3 = connect(ctx.chain_url)
    try:
        chain_id = int(w3.eth.chain_id)
    except Exception as exc:
        raise ChainUnavailable(ctx.chain_url, type(exc).__name__) from None
    path = ctx.paths.deployment
    recorded = load_deployment(path)
    if recorded is not None:
        raise CliError(
            f"{path} already records a registry ({recorded.address} on chain "
            f"{recorded.chain_id}); deploy into another state directory (--home) or move the "
            f"file away first"
        )
    if dry_run:  # who deploys is checked before compiling: a refusal comes at once
        admin_address = ctx.address(who, what="--as")
        ensure_not_dev_address(admin_address, chain_id)
        artifact = compile_contracts(cache_dir=ctx.paths.build_cache)[REGISTRY_CONTRACT]
        estimate = estimate_deployment(w3, artifact, admin=admin_address)
        if ctx.as_json:
            echo_json(
                {
                    "chain_id": chain_id,
                    "admin": admin_address,
                    "gas": estimate.gas,
                    "base_fee_wei": estimate.base_fee,
                    "tip_wei": estimate.tip,
                    "fee_cap_wei": estimate.fee_cap,
                    "cost_wei": estimate.cost_wei,
                    "max_cost_wei": estimate.max_cost_wei,
                }
            )
            return
        console.print(
            f"dry run: deploying {REGISTRY_CONTRACT} on chain {chain_id} with admin "
            f"{admin_address}; nothing sent",
            highlight=False,
        )
        console.print(f"  gas   {estimate.gas:,}", highlight=False)
        console.print(
            f"  cost  {_eth(estimate.cost_wei)} at {_gwei(estimate.base_fee + estimate.tip)} "
            f"(base fee {_gwei(estimate.base_fee)} + tip {_gwei(estimate.tip)}); at most "
            f"{_eth(estimate.max_cost_wei)} at the fee cap {_gwei(estimate.fee_cap)}",
            highlight=False,
        )
        return
    account = ctx.account(who)
    ensure_not_dev_key(account, chain_id)
    artifact = compile_contracts(cache_dir=ctx.paths.build_cache)[REGISTRY_CONTRACT]
    sender = TxSender(w3, account)
    deployment, sent = deploy_registry(
        w3, artifact, path=path, sender=sender, confirmations=confirmations, timeout_s=timeout
    )
    result: dict[str, Any] = {
        "chain_id": deployment.chain_id,
        "address": deployment.address,
        "block": deployment.block,
        "tx_hash": deployment.tx_hash,
        "gas_used": sent.gas_used,
        "admin": account.address,
        "confirmations": confirmations,
        "deployment_file": str(path),
    }
    if ctx.as_json:
        echo_json(result)
        return
    chain = ctx.chain_url
    lines = [
        f"deployed {REGISTRY_CONTRACT} at {deployment.address} on chain {deployment.chain_id}",
        f"  tx {deployment.tx_hash}  block {deployment.block}  gas used {sent.gas_used:,}",
        f"  {confirmations} confirmation(s); the runtime code matches the build",
        f"  admin {account.address} ({who})",
        f"wrote {path}",
        "next steps (each a transaction by the admin):",
        f"  consent admin add-gateway GATEWAY_ADDRESS --as {who} --chain {chain}",
        f"  consent admin add-gateway REGISTRAR_ADDRESS --as {who} --chain {chain}",
        f"  consent admin add-centre CENTRE_ADDRESS --as {who} --chain {chain}",
        f"  consent admin add-emergency INSTITUTION_ADDRESS --as {who} --chain {chain}",
        "then give each gateway this deployment file (deployment_file), fund its relayer, and "
        "run `consent gateway check --config FILE` before `consent gateway serve --config FILE`",
    ]
    for line in lines:
        console.print(line, highlight=False)
