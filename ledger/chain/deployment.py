"""Deployment of the consent registry, recorded in ``$CONSENT_HOME/deployment.json``.

``ensure_deployed`` (``consent up``) is idempotent on the local chain; ``deploy_registry``
(``consent deploy``) deploys once to any network, waits for confirmations and checks the
deployed runtime code against the build before writing the file; ``estimate_deployment``
prices it (``--dry-run``) without sending anything. A new registry lists the default coarse
categories (``DEFAULT_CATEGORIES``). A second ``consent up`` reuses the recorded deployment
after checking that the chain id matches and that the code at the address is the compiled
registry (immutables masked). When the local chain was reset (no code at the address) the
registry is deployed anew.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from eth_typing import ChecksumAddress
from web3 import Web3

from ledger.chain.build import Artifact
from ledger.chain.node import (
    DEFAULT_BASE_FEE,
    ChainError,
    Sent,
    TransactionFailed,
    TxSender,
    deploy,
    eip1559_fees,
)
from ledger.protocol.consent_types import DEFAULT_CATEGORIES, category_id

__all__ = [
    "DeployEstimate",
    "Deployment",
    "DeploymentMismatch",
    "deploy_registry",
    "ensure_deployed",
    "estimate_deployment",
    "load_deployment",
    "wait_for_confirmations",
]

REGISTRY_CONTRACT = "ConsentRegistry"


class DeploymentMismatch(ChainError):
    """The recorded deployment does not match the chain or the compiled contracts."""


@dataclass(frozen=True)
class Deployment:
    chain_id: int
    address: ChecksumAddress
    block: int
    tx_hash: str
    abi_hash: str
    contract: str = REGISTRY_CONTRACT

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)


def load_deployment(path: Path) -> Deployment | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    data["address"] = Web3.to_checksum_address(data["address"])
    return Deployment(**data)


def _constructor_tx(w3: Web3, artifact: Artifact, admin: ChecksumAddress) -> dict[str, object]:
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    categories = [category_id(c) for c in DEFAULT_CATEGORIES]
    return dict(factory.constructor(admin, categories).build_transaction({"from": admin}))


@dataclass(frozen=True)
class DeployEstimate:
    """What deploying the registry would cost at the node's current fee."""

    chain_id: int
    gas: int  # the node's estimate
    base_fee: int  # wei per gas, the latest block's (DEFAULT_BASE_FEE when it names none)
    tip: int  # wei per gas, the project's fee policy (eip1559_fees)
    fee_cap: int  # wei per gas, the most the transaction offers

    @property
    def cost_wei(self) -> int:
        """At the current base fee plus the tip."""
        return self.gas * (self.base_fee + self.tip)

    @property
    def max_cost_wei(self) -> int:
        """At the fee cap (the base fee may double before the transaction is mined)."""
        return self.gas * self.fee_cap


def estimate_deployment(w3: Web3, artifact: Artifact, *, admin: ChecksumAddress) -> DeployEstimate:
    """Gas and cost of deploying ``artifact`` with ``admin``; nothing is sent."""
    chain_id = int(w3.eth.chain_id)
    tx = _constructor_tx(w3, artifact, admin)
    gas = int(w3.eth.estimate_gas({"from": admin, "data": tx["data"]}))  # type: ignore[typeddict-item]
    latest = w3.eth.get_block("latest").get("baseFeePerGas")
    base_fee = DEFAULT_BASE_FEE if latest is None else int(latest)
    fees = eip1559_fees(chain_id, base_fee)
    return DeployEstimate(
        chain_id=chain_id,
        gas=gas,
        base_fee=base_fee,
        tip=fees["maxPriorityFeePerGas"],
        fee_cap=fees["maxFeePerGas"],
    )


def wait_for_confirmations(
    w3: Web3, block: int, confirmations: int, *, timeout_s: float, poll_s: float = 0.5
) -> int:
    """Wait until ``block`` has ``confirmations`` blocks (itself included); the head's number."""
    deadline = time.monotonic() + timeout_s
    while True:
        head = int(w3.eth.block_number)
        if head - block + 1 >= confirmations:
            return head
        if time.monotonic() > deadline:
            raise ChainError(
                f"block {block} has {max(head - block + 1, 0)} of {confirmations} "
                f"confirmations after {timeout_s:g} s; the chain is not producing blocks, or "
                f"pass a longer --timeout"
            )
        time.sleep(poll_s)


def deploy_registry(
    w3: Web3,
    artifact: Artifact,
    *,
    path: Path,
    sender: TxSender,
    confirmations: int = 1,
    timeout_s: float = 600.0,
) -> tuple[Deployment, Sent]:
    """Deploy a new registry with the sender as admin, wait for ``confirmations``, check the
    runtime code against the build, then write ``path``. Refuses when ``path`` exists."""
    recorded = load_deployment(path)
    if recorded is not None:
        raise DeploymentMismatch(
            f"{path} already records a registry ({recorded.address} on chain "
            f"{recorded.chain_id}); deploy into another state directory (--home) or move the "
            f"file away first"
        )
    categories = [category_id(c) for c in DEFAULT_CATEGORIES]
    sent = deploy(
        w3,
        abi=artifact.abi,
        bytecode=artifact.bytecode,
        args=[sender.address, categories],
        sender=sender,
    )
    address = sent.receipt["contractAddress"]
    if address is None:
        raise TransactionFailed(sent.tx_hash, "no contract address in the receipt")
    wait_for_confirmations(w3, sent.block_number, confirmations, timeout_s=timeout_s)
    receipt = w3.eth.get_transaction_receipt(sent.receipt["transactionHash"])
    if receipt["blockHash"] != sent.receipt["blockHash"]:
        raise DeploymentMismatch(
            f"the deployment {sent.tx_hash} moved to another block while waiting for "
            f"confirmations (a reorganisation); check the chain and deploy again"
        )
    checksum = Web3.to_checksum_address(address)
    if not artifact.runtime_matches(bytes(w3.eth.get_code(checksum))):
        raise DeploymentMismatch(
            f"the runtime code at {checksum} is not the built {artifact.name}; nothing was "
            f"recorded: check which node you deployed through"
        )
    created = Deployment(
        chain_id=int(w3.eth.chain_id),
        address=checksum,
        block=sent.block_number,
        tx_hash=sent.tx_hash,
        abi_hash=artifact.abi_hash,
    )
    created.save(path)
    return created, sent


def ensure_deployed(
    w3: Web3,
    artifact: Artifact,
    *,
    path: Path,
    sender: TxSender,
    admin: ChecksumAddress,
) -> tuple[Deployment, bool]:
    """The recorded deployment if it is live and current, else a fresh one. ``(d, created)``."""
    chain_id = w3.eth.chain_id
    recorded = load_deployment(path)
    if recorded is not None:
        if recorded.chain_id != chain_id:
            raise DeploymentMismatch(
                f"{path} records chain {recorded.chain_id} but the node is chain {chain_id}"
            )
        code = bytes(w3.eth.get_code(recorded.address))
        if code and recorded.abi_hash == artifact.abi_hash and artifact.runtime_matches(code):
            return recorded, False
        if code and recorded.abi_hash != artifact.abi_hash:
            raise DeploymentMismatch(
                f"the contracts changed since {recorded.address} was deployed; reset the local "
                f"ledger (`consent down --reset`) to deploy the new version"
            )
        if code:
            raise DeploymentMismatch(f"the code at {recorded.address} is not the compiled registry")
    categories = [category_id(c) for c in DEFAULT_CATEGORIES]
    sent = deploy(
        w3, abi=artifact.abi, bytecode=artifact.bytecode, args=[admin, categories], sender=sender
    )
    address = sent.receipt["contractAddress"]
    if address is None:
        raise TransactionFailed(sent.tx_hash, "no contract address in the receipt")
    created = Deployment(
        chain_id=chain_id,
        address=Web3.to_checksum_address(address),
        block=sent.block_number,
        tx_hash=sent.tx_hash,
        abi_hash=artifact.abi_hash,
    )
    created.save(path)
    return created, True
