"""A small, realistic history for the audit tests, and lying nodes to audit it through.

:func:`build_world` deploys a registry, admits a centre / gateway / emergency institution,
registers two records, and plays a consent history with the chain's clock moved between steps
(grants of every scope, an expiry, a guardian, break-glass opened and closed, a revoke, two
grants mined in one block). At each step the "gateway" reads records and logs the decisions the
chain gave at that block with ``ledger.protocol.access_leaf.canonical_leaf``, anchoring two
checkpoints on-chain; two entries stay after the last checkpoint. The export of that log is honest.

The ``world`` fixture (``tests.plugins.audit``) builds it once per session on the session
anvil, outside any test's snapshot, so it outlives them; tests that add transactions run inside
the ``chain`` fixture (evm_snapshot / evm_revert).

Lying nodes are ``httpx.MockTransport``s that forward to anvil and rewrite answers.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount
from web3 import Web3

from ledger.audit.export import AccessLogExport, ExportedCheckpoint, build_access_log_export
from ledger.audit.verify_log import DEFAULT_MAX_TIME_SKEW_S
from ledger.chain.build import compile_contracts
from ledger.chain.node import dev_accounts
from ledger.chain.registry import ConsentRegistry
from ledger.chain.rpc import RpcClient
from ledger.protocol import eip712
from ledger.protocol.access_leaf import Decision, canonical_leaf
from ledger.protocol.consent_types import (
    CENTRE_ROLE,
    EMERGENCY_ROLE,
    GATEWAY_ROLE,
    NO_EXPIRY,
    Purpose,
    ScopeKind,
    category_id,
)
from ledger.protocol.events import EventDecoder, registry_event_abi
from ledger.protocol.merkle import leaf_hash, root_hash
from tests.helpers.build import session_build_cache

CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


@dataclass
class Actors:
    admin: LocalAccount
    centre: LocalAccount
    gateway: LocalAccount
    patient: LocalAccount
    doctor: LocalAccount
    researcher: LocalAccount
    insurer: LocalAccount
    er: LocalAccount
    guardian: LocalAccount
    stranger: LocalAccount


@dataclass
class World:
    url: str
    address: str
    abi: list[dict[str, Any]]
    interface_abi: list[dict[str, Any]]
    deploy_block: int
    actors: Actors
    rec_lab: bytes
    rec_img: bytes
    leaves: list[bytes]
    checkpoints: list[ExportedCheckpoint]
    end_block: int
    two_in_one_block: int  # a block holding two registry logs
    revoke_block: int  # the block of the insurer's revoke
    reads: list[tuple[str, bytes, int]] = field(default_factory=list)  # (grantee, record, purpose)
    open_clients: list[RpcClient] = field(default_factory=list)

    def registry(self, w3: Web3) -> ConsentRegistry:
        return ConsentRegistry(w3, self.address, abi=self.abi)

    def decoder(self) -> EventDecoder:
        return EventDecoder(registry_event_abi(self.interface_abi))

    def export_doc(self, leaves: list[bytes] | None = None, **kw: Any) -> dict[str, Any]:
        return build_access_log_export(
            gateway=self.actors.gateway.address,
            leaves=self.leaves if leaves is None else leaves,
            checkpoints=kw.pop("checkpoints", self.checkpoints),
            chain_id=31337,
            registry=self.address,
            **kw,
        )

    def export(self, leaves: list[bytes] | None = None, **kw: Any) -> AccessLogExport:
        return AccessLogExport.from_document(self.export_doc(leaves, **kw), source="test")

    def rpc(self, transport: httpx.BaseTransport | None = None) -> RpcClient:
        client = (
            httpx.Client(transport=transport, timeout=30.0)
            if transport
            else httpx.Client(timeout=30.0)
        )
        rpc = RpcClient(self.url, client=client)
        self.open_clients.append(rpc)
        return rpc

    def close_clients(self) -> None:
        while self.open_clients:
            self.open_clients.pop().close()


def increase_time(w3: Web3, seconds: int) -> None:
    w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


def head_timestamp(w3: Web3) -> int:
    return int(w3.eth.get_block("latest")["timestamp"])


def audit_time_skew(w3: Web3) -> float:
    """The audit's leaf-time bound for a gateway on this node: the default, plus how far the
    node's clock runs ahead of this machine's. The session node's clock is moved forward for
    good by the audit world (``evm_increaseTime`` outside any snapshot), while a gateway stamps
    leaves with this machine's clock."""
    ahead = head_timestamp(w3) - time.time()
    return DEFAULT_MAX_TIME_SKEW_S + max(0.0, ahead)


class Gateway:
    """Logs decisions the way the gateway does: ``hasConsent`` at the head block."""

    def __init__(self, w3: Web3, registry: ConsentRegistry, gateway: LocalAccount) -> None:
        self.w3 = w3
        self.registry = registry
        self.account = gateway
        self.leaves: list[bytes] = []
        self.checkpoints: list[ExportedCheckpoint] = []

    def read(self, requester: str, patient: str, record: bytes, purpose: int) -> bool:
        block = self.w3.eth.block_number
        allowed = self.registry.has_consent(
            patient, requester, record, purpose, block_identifier=block
        )
        reason = "owner" if requester == patient else ("consent" if allowed else "no_consent")
        ts = int(self.w3.eth.get_block(block)["timestamp"])
        self.append(
            Decision(
                requester, patient, "0x" + record.hex(), purpose, allowed, reason, block, ts + 0.25
            )
        )
        return allowed

    def append(self, decision: Decision) -> None:
        self.leaves.append(canonical_leaf(decision))

    def anchor(
        self, size: int | None = None, leaves: list[bytes] | None = None
    ) -> ExportedCheckpoint:
        source = self.leaves if leaves is None else leaves
        size = len(source) if size is None else size
        root = root_hash([leaf_hash(x) for x in source[:size]])
        receipt = self.registry.anchor_checkpoint(self.account, size, root)
        cp = ExportedCheckpoint(size, root, receipt.block_number, receipt.tx_hash)
        self.checkpoints.append(cp)
        return cp


def _register(
    registry: ConsentRegistry, actors: Actors, category: str, content: bytes, issued: int
) -> bytes:
    attestation = eip712.RecordAttestation(
        patient=actors.patient.address,
        category=category_id(category),
        content_digest=hashlib.sha256(content).digest(),
        issued_at=issued,
    )
    signature = eip712.sign(actors.centre, registry.domain, attestation)
    return bytes(registry.register_record(actors.gateway, attestation, signature, CID).record_id)


def build_world(w3: Web3, url: str) -> World:
    a = Actors(*dev_accounts()[:10])
    artifacts = compile_contracts(cache_dir=session_build_cache())
    artifact = artifacts["ConsentRegistry"]
    reg, deployed = ConsentRegistry.deploy(
        w3, admin=a.admin.address, sender=a.admin, artifact=artifact
    )
    reg.grant_role(a.admin, CENTRE_ROLE, a.centre.address)
    reg.grant_role(a.admin, GATEWAY_ROLE, a.gateway.address)
    reg.grant_role(a.admin, EMERGENCY_ROLE, a.er.address)
    now = head_timestamp(w3)
    rec_lab = _register(reg, a, "laboratory", b"lab result", now)
    rec_img = _register(reg, a, "imaging", b"x-ray", now)
    gw = Gateway(w3, reg, a.gateway)
    p = a.patient.address
    T, R, INS, EM = Purpose.TREATMENT, Purpose.RESEARCH, Purpose.INSURANCE, Purpose.EMERGENCY

    now = head_timestamp(w3)
    reg.grant(a.patient, a.doctor.address, ScopeKind.RECORD, rec_lab, T.bit, now + 100_000)
    # Two grants mined in one block (two registry logs in a block).
    w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    try:
        contract = reg.contract
        nonce = w3.eth.get_transaction_count(a.patient.address)
        base = int(w3.eth.get_block("latest")["baseFeePerGas"])
        hashes = []
        for i, (grantee, kind, scope, purposes, expiry) in enumerate(
            [
                (
                    a.researcher.address,
                    ScopeKind.CATEGORY,
                    category_id("laboratory"),
                    R.bit,
                    now + 300,
                ),
                (a.insurer.address, ScopeKind.ALL, bytes(32), INS.bit, NO_EXPIRY),
            ]
        ):
            tx = contract.functions.grant(
                grantee, int(kind), scope, purposes, expiry
            ).build_transaction(
                {
                    "from": a.patient.address,
                    "nonce": nonce + i,
                    "gas": 300_000,
                    "maxFeePerGas": base * 2,
                    "maxPriorityFeePerGas": 0,
                    "chainId": 31337,
                }
            )
            signed = a.patient.sign_transaction(tx)
            hashes.append(w3.eth.send_raw_transaction(signed.raw_transaction))
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    finally:
        w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
    receipts = [w3.eth.get_transaction_receipt(h) for h in hashes]
    assert all(r["status"] == 1 for r in receipts)
    assert receipts[0]["blockNumber"] == receipts[1]["blockNumber"]
    two_in_one = int(receipts[0]["blockNumber"])
    reg.reset_nonces()

    reads = [
        (a.doctor.address, rec_lab, int(T)),
        (a.doctor.address, rec_img, int(T)),
        (a.researcher.address, rec_lab, int(R)),
        (a.insurer.address, rec_img, int(INS)),
        (p, rec_img, int(R)),
        (a.stranger.address, rec_lab, int(T)),
    ]
    for requester, record, purpose in reads:
        gw.read(requester, p, record, purpose)
    gw.anchor()  # checkpoint 1: 6 entries

    increase_time(w3, 400)  # the researcher's category grant lapses
    reg.set_guardian(a.patient, a.guardian.address)
    reg.open_break_glass(a.er, p, 3600, hashlib.sha256(b"unconscious at ER").digest())
    gw.read(a.researcher.address, p, rec_lab, int(R))  # denied: expired
    gw.read(a.guardian.address, p, rec_img, int(R))  # allowed: guardian
    gw.read(a.er.address, p, rec_lab, int(EM))  # allowed: break-glass
    revoke = reg.revoke(a.patient, a.insurer.address, ScopeKind.ALL, bytes(32))
    reg.close_break_glass(a.patient, p, a.er.address)
    gw.read(a.insurer.address, p, rec_img, int(INS))  # denied: revoked
    gw.read(a.er.address, p, rec_lab, int(T))  # denied: break-glass closed
    gw.anchor()  # checkpoint 2: 11 entries
    gw.read(a.doctor.address, p, rec_lab, int(T))  # allowed, unanchored
    gw.read(a.stranger.address, p, rec_img, int(T))  # denied, unanchored
    reads += [
        (a.guardian.address, rec_img, int(R)),
        (a.er.address, rec_lab, int(EM)),
        (a.er.address, rec_lab, int(T)),
    ]
    return World(
        url=url,
        address=reg.address,
        abi=artifact.abi,
        interface_abi=artifacts["IConsentRegistry"].abi,
        deploy_block=deployed.block_number,
        actors=a,
        rec_lab=rec_lab,
        rec_img=rec_img,
        leaves=list(gw.leaves),
        checkpoints=list(gw.checkpoints),
        end_block=w3.eth.block_number,
        two_in_one_block=two_in_one,
        revoke_block=revoke.block_number,
        reads=reads,
    )


# ------------------------------------------------------------------------------ lying nodes


Rewrite = Callable[[dict[str, Any], Any], Any]
Intercept = Callable[[dict[str, Any]], dict[str, Any] | None]


class ForwardingTransport(httpx.BaseTransport):
    """Forwards JSON-RPC to ``url``. ``intercept(request)`` may answer instead (a JSON-RPC
    answer object); ``rewrite(request, result)`` may change each forwarded result."""

    def __init__(
        self, url: str, *, rewrite: Rewrite | None = None, intercept: Intercept | None = None
    ) -> None:
        self.url = url
        self.rewrite = rewrite
        self.intercept = intercept
        self.upstream = httpx.Client(timeout=30.0)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        body = json.loads(request.content)
        if self.intercept is not None and not isinstance(body, list):
            answer = self.intercept(body)
            if answer is not None:
                return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], **answer})
        answer = self.upstream.post(
            self.url, content=request.content, headers={"content-type": "application/json"}
        ).json()
        if self.rewrite is not None:
            if isinstance(body, list):
                by_id = {b["id"]: b for b in body}
                for a in answer:
                    if "result" in a:
                        a["result"] = self.rewrite(by_id[a["id"]], a["result"])
            elif "result" in answer:
                answer["result"] = self.rewrite(body, answer["result"])
        return httpx.Response(200, json=answer)

    def close(self) -> None:
        self.upstream.close()


def proxy_transport(url: str, rewrite: Rewrite) -> ForwardingTransport:
    return ForwardingTransport(url, rewrite=rewrite)


def logs_rewriter(change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> Rewrite:
    """A rewrite that changes only eth_getLogs answers."""

    def rewrite(request: dict[str, Any], result: Any) -> Any:
        if request["method"] == "eth_getLogs":
            return change(list(result))
        return result

    return rewrite


def self_named_export(world: World, *, name: str) -> AccessLogExport:
    """The reproduced attack: the gateway's log with anchored entry 4 dropped and the rest
    renumbered, exported under an address that never held GATEWAY_ROLE and with no checkpoints,
    so there is nothing on-chain to compare it with."""
    leaves = world.leaves[:4] + world.leaves[5:]
    doc = world.export_doc(leaves, checkpoints=[])
    doc["gateway"] = name
    return AccessLogExport.from_document(doc, source="self-named.json")
