"""A custody federation of real in-process gateways on one registry, for tests.

:func:`start_federation` deploys a registry of its own (the audit demands the log of every
gateway of a registry), starts ``n`` gateway apps (``tests.helpers.gateway.build_stack``), each
with its own database, accounts and custody key, and has the admin set the registry's
federation to them, ``threshold`` of ``n``. :func:`export_logs` fetches every member's access
log as an auditor would (``/v1/access-log/export`` with a SIWE session), after anchoring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import coincurve
import httpx
from eth_account.signers.local import LocalAccount
from web3 import Web3

from ledger.chain.registry import ConsentRegistry, FederationMember
from ledger.protocol import custody
from tests.helpers.gateway import (
    Stack,
    build_stack,
    close_stack,
    deploy_registry,
    funded_account,
    login,
)


@dataclass
class Federation:
    registry: ConsentRegistry
    stacks: list[Stack]
    custody_keys: list[bytes]  # the members' custody private keys, in share order
    threshold: int

    def url(self, i: int) -> str:
        return str(self.stacks[i].client.base_url)

    def address(self, i: int) -> str:
        return str(self.stacks[i].gateway_account.address)

    def members(self) -> list[FederationMember]:
        return [
            FederationMember(
                s.gateway_account.address, custody.custody_public_key(k), str(s.client.base_url)
            )
            for s, k in zip(self.stacks, self.custody_keys, strict=True)
        ]


def start_federation(
    *,
    home: Callable[[int], Path],
    w3: Web3,
    chain_url: str,
    ipfs_url: str,
    service_dir: Path,
    n: int = 3,
    threshold: int = 2,
    **options: Any,
) -> Federation:
    """``n`` gateways (member ``i`` in ``home(i)``) on a fresh registry, federated ``threshold``
    of ``n``; ``options`` go to ``build_stack``. Close with :func:`close_federation`."""
    registry, deployment = deploy_registry(w3, cache_dir=service_dir / "build")
    stacks: list[Stack] = []
    keys: list[bytes] = []
    try:
        for i in range(n):
            key = coincurve.PrivateKey().secret
            keys.append(key)
            stacks.append(
                build_stack(
                    home=home(i),
                    w3=w3,
                    chain_url=chain_url,
                    ipfs_url=ipfs_url,
                    registry=registry,
                    deployment=deployment,
                    relayer=funded_account(w3),
                    custody_key=key.hex(),
                    **options,
                )
            )
        fed = Federation(registry, stacks, keys, threshold)
        registry.reset_nonces()
        registry.set_federation(stacks[0].admin, threshold, fed.members())
    except BaseException:
        for s in stacks:
            close_stack(s)
        raise
    return fed


def close_federation(fed: Federation) -> None:
    for s in fed.stacks:
        close_stack(s)


def export_logs(fed: Federation, auditor: LocalAccount) -> list[dict[str, Any]]:
    """Every member's exported access log (a JSON document), each anchored first."""
    documents = []
    for stack in fed.stacks:
        stack.state.auditors = frozenset({auditor.address})
        stack.state.anchorer.anchor_now()
        with httpx.Client(headers=login(stack, auditor), timeout=60) as http:
            r = http.get(f"{stack.client.base_url}/v1/access-log/export")
            r.raise_for_status()
            documents.append(r.json())
    return documents


def release_without_consent(records: Any) -> Callable[..., Any]:
    """A rogue member's decision: the real one, except that a refusal is turned into an allow
    (logged as one). Install with ``monkeypatch.setattr(records, "_decide", ...)``."""
    from gateway.services.fetch import _DecisionLog

    real_decide = records._decide

    def always_allow(principal: Any, rid_b: bytes, rid_hex: str, pat: Any, purpose: int) -> Any:
        try:
            return real_decide(principal, rid_b, rid_hex, pat, purpose)
        except Exception:
            block = records.chain.block_number()
            answer = records.chain.access_decision_at(
                pat, principal.address, rid_b, purpose, block=block
            )
            return block, answer, _DecisionLog(records, principal.address, pat, rid_hex, purpose)

    return always_allow
