"""Idempotent deployment of the consent registry, recorded in ``$CONSENT_HOME/deployment.json``.

A new registry lists the default coarse categories (``DEFAULT_CATEGORIES``). A second
``consent up`` reuses the recorded deployment after checking that the chain id
matches and that the code at the address is the compiled registry (immutables masked). When
the local chain was reset (no code at the address) the registry is deployed anew.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from eth_typing import ChecksumAddress
from web3 import Web3

from ledger.chain.build import Artifact
from ledger.chain.node import ChainError, TransactionFailed, TxSender, deploy
from ledger.protocol.consent_types import DEFAULT_CATEGORIES, category_id

__all__ = ["Deployment", "DeploymentMismatch", "ensure_deployed", "load_deployment"]

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
