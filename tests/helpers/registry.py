"""Shared set-up for the registry tests: one deployment per test module, actors, time travel.

Used by ``test_contracts.py``, ``test_contracts_stateful.py`` and the audit tests. The
deployment is made once per module outside any snapshot; each test then runs inside the
``chain`` fixture's ``evm_snapshot`` / ``evm_revert``, with a fresh ``ConsentRegistry`` client
(its locally tracked nonces must not outlive a revert).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils.crypto import keccak
from web3 import Web3
from web3.logs import DISCARD

from ledger.chain.build import compile_contracts
from ledger.chain.registry import ConsentRegistry, Receipt
from ledger.protocol import eip712
from ledger.protocol.consent_types import (
    CENTRE_ROLE,
    EMERGENCY_ROLE,
    GATEWAY_ROLE,
    RecordId,
    category_id,
)
from tests.helpers.build import session_build_cache

CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


@dataclass(frozen=True)
class Actors:
    admin: LocalAccount
    gateway: LocalAccount
    centre: LocalAccount
    emergency: LocalAccount
    patient: LocalAccount
    doctor: LocalAccount
    relayer: LocalAccount
    guardian: LocalAccount
    stranger: LocalAccount
    patient2: LocalAccount

    @classmethod
    def of(cls, accounts: list[LocalAccount]) -> Actors:
        return cls(*accounts[:10])


@dataclass(frozen=True)
class RegistryEnv:
    address: ChecksumAddress
    abi: list[dict[str, Any]]
    deploy_block: int
    actors: Actors

    def client(self, w3: Web3) -> ConsentRegistry:
        return ConsentRegistry(w3, self.address, abi=self.abi)


def deploy_env(w3: Web3, accounts: list[LocalAccount]) -> RegistryEnv:
    """A registry with a gateway, a centre and an emergency institution admitted."""
    actors = Actors.of(accounts)
    artifact = compile_contracts(cache_dir=session_build_cache())["ConsentRegistry"]
    registry, receipt = ConsentRegistry.deploy(
        w3, admin=actors.admin.address, sender=actors.admin, artifact=artifact
    )
    registry.grant_role(actors.admin, GATEWAY_ROLE, actors.gateway.address)
    registry.grant_role(actors.admin, CENTRE_ROLE, actors.centre.address)
    registry.grant_role(actors.admin, EMERGENCY_ROLE, actors.emergency.address)
    return RegistryEnv(registry.address, artifact.abi, receipt.block_number, actors)


def latest_timestamp(w3: Web3) -> int:
    return int(w3.eth.get_block("latest")["timestamp"])


def increase_time(w3: Web3, seconds: int) -> int:
    """Move the chain's clock forward and mine a block; the new latest timestamp."""
    w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    return latest_timestamp(w3)


def mine_at(w3: Web3, timestamp: int) -> None:
    """Mine an empty block with exactly ``timestamp``."""
    w3.provider.make_request("evm_mine", [timestamp])  # type: ignore[arg-type]


def attestation_for(
    w3: Web3, patient: str, category: str = "laboratory", content: bytes | None = None
) -> eip712.RecordAttestation:
    digest = hashlib.sha256(content if content is not None else os.urandom(64)).digest()
    return eip712.RecordAttestation(
        patient=Web3.to_checksum_address(patient),
        category=category_id(category),
        content_digest=digest,
        issued_at=latest_timestamp(w3),
    )


def register(
    registry: ConsentRegistry, env: RegistryEnv, patient: str, category: str = "laboratory"
) -> RecordId:
    """Register a fresh record of ``patient`` (signed by the centre, sent by the gateway)."""
    attestation = attestation_for(registry.w3, patient, category)
    signature = eip712.sign(env.actors.centre, registry.domain, attestation)
    return registry.register_record(env.actors.gateway, attestation, signature, CID).record_id


def events(registry: ConsentRegistry, receipt: Receipt, name: str) -> list[dict[str, Any]]:
    """The decoded arguments of every ``name`` event in the receipt."""
    event = registry.contract.events[name]()
    return [dict(log["args"]) for log in event.process_receipt(receipt.raw, errors=DISCARD)]


def recompute_digest(logs: list[Any]) -> tuple[bytes, int]:
    """The event digest from raw logs, as IConsentRegistry documents it.

    head' = bytes24(keccak256(head || topic0 || ... || topicN || data)), where head is the
    24-byte previous head (abi.encodePacked of a bytes24 is its 24 bytes); count' = count + 1.
    """
    head = bytes(24)
    ordered = sorted(logs, key=lambda log: (log["blockNumber"], log["logIndex"]))
    for log in ordered:
        payload = head + b"".join(bytes(t) for t in log["topics"]) + bytes(log["data"])
        head = keccak(payload)[:24]
    return head, len(ordered)
