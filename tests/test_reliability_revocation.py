"""Revocation race: grantees fetch concurrently while their patients revoke.

20 grantee threads fetch their record in a loop through a real gateway (uvicorn, SQLite) on the
session anvil and IPFS node, while the patients revoke one grantee after another — half by a
signed ``revokeBySig`` relayed through the gateway, half by a direct ``revoke`` transaction from
the patient's own wallet — with the anchoring thread sending checkpoints meanwhile. Afterwards:

- no response served a read checked at a block at or after that grantee's revoke block, and every
  request started after the revoke's receipt was in was denied (the very next request);
- the gateway logged exactly the decisions the clients saw (none lost, none invented);
- the auditor's export (``GET /v1/access-log/export``) audits clean against the replayed chain
  (``ledger.audit.run.run_audit``: every allowed read covered, every denial justified, the log
  consistent with its anchored checkpoints), and — checked directly on the leaves — no allowed
  read names a block >= the revoke's block for that grantee.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount
from web3 import Web3

from ledger.audit.export import load_access_log
from ledger.audit.report import FindingKind
from ledger.audit.run import run_audit
from ledger.chain.build import compile_contracts
from ledger.chain.registry import REGISTRY_CONTRACT
from ledger.chain.rpc import RpcClient
from ledger.protocol.consent_types import ScopeKind, category_id
from ledger.protocol.events import EventDecoder, registry_event_abi
from tests.helpers.audit_world import audit_time_skew
from tests.helpers.gateway import (
    Stack,
    close_stack,
    login,
    new_account,
    own_registry_stack,
    quiet_logs,
    relay,
    signed_grant,
    signed_revoke,
    upload,
)

N_PATIENTS = 5
N_GRANTEES = 20
PURPOSE = "treatment"


@dataclass
class Grantee:
    account: LocalAccount
    patient: LocalAccount
    record_id: str
    scope_kind: ScopeKind
    scope_id: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Seen:
    """One response as the grantee's client saw it (monotonic start and end)."""

    started: float
    ended: float
    status: int
    block: int | None


@dataclass(frozen=True)
class Revoked:
    block: int
    receipt_at: float  # monotonic time the receipt was in the revoker's hand
    how: str


def _scope(index: int, record_id: str) -> tuple[ScopeKind, bytes]:
    kind = (ScopeKind.RECORD, ScopeKind.CATEGORY, ScopeKind.ALL)[index % 3]
    scope_id = {
        ScopeKind.RECORD: bytes.fromhex(record_id[2:]),
        ScopeKind.CATEGORY: category_id("laboratory"),
        ScopeKind.ALL: bytes(32),
    }[kind]
    return kind, scope_id


def _fetcher(
    stack: Stack, grantee: Grantee, stop: threading.Event, out: list[Seen], errors: list[str]
) -> None:
    url = f"/v1/records/{grantee.record_id}?purpose={PURPOSE}"
    with httpx.Client(
        base_url=str(stack.client.base_url), headers=grantee.headers, timeout=30
    ) as c:
        while not stop.is_set():
            started = time.monotonic()
            try:
                r = c.get(url)
            except httpx.HTTPError as exc:  # pragma: no cover - reported by the test
                errors.append(f"{grantee.account.address}: {type(exc).__name__}: {exc}")
                return
            ended = time.monotonic()
            block: int | None = None
            if r.status_code == 200:
                block = int(r.json()["block_number"])
            elif r.status_code == 403:
                block = int(r.json()["error"]["details"]["block_number"])
            else:
                errors.append(f"{grantee.account.address}: HTTP {r.status_code} {r.text[:300]}")
            out.append(Seen(started, ended, r.status_code, block))


def _setup(stack: Stack, w3: Web3) -> list[Grantee]:
    centre_headers = login(stack, stack.centre)
    patients = [new_account() for _ in range(N_PATIENTS)]
    records: dict[str, str] = {}
    for patient in patients:
        # Funded, so half of the revokes can be the patient's own transaction.
        w3.provider.make_request("anvil_setBalance", [patient.address, hex(10**20)])  # type: ignore[arg-type]
        data = b"lipid panel " + os.urandom(16).hex().encode()
        r = upload(stack, centre_headers, patient=patient.address, data=data)
        assert r.status_code == 201, r.text
        records[patient.address] = r.json()["record_id"]
    patient_headers = {p.address: login(stack, p) for p in patients}
    grantees: list[Grantee] = []
    for i in range(N_GRANTEES):
        patient = patients[i % N_PATIENTS]
        account = new_account()
        record_id = records[patient.address]
        kind, scope_id = _scope(i, record_id)
        relay(
            stack,
            patient_headers[patient.address],
            signed_grant(stack, patient, account.address, scope_kind=kind, scope_id=scope_id),
        )
        grantees.append(Grantee(account, patient, record_id, kind, scope_id, login(stack, account)))
    return grantees


def _revoke(stack: Stack, grantee: Grantee, index: int) -> Revoked:
    if index % 2 == 0:
        body = signed_revoke(
            stack,
            grantee.patient,
            grantee.account.address,
            scope_kind=grantee.scope_kind,
            scope_id=grantee.scope_id,
        )
        result = relay(stack, login(stack, grantee.patient), body)
        return Revoked(int(result["block_number"]), time.monotonic(), "relayed revokeBySig")
    receipt = stack.registry.revoke(
        grantee.patient, grantee.account.address, grantee.scope_kind, grantee.scope_id
    )
    return Revoked(receipt.block_number, time.monotonic(), "direct revoke tx")


def _audit(stack: Stack) -> tuple[Any, list[dict[str, Any]]]:
    stack.state.anchorer.anchor_now()
    auditor_headers = login(stack, stack.auditor)  # type: ignore[attr-defined]
    export_url = f"{stack.client.base_url}/v1/access-log/export"
    with httpx.Client(headers=auditor_headers, timeout=60) as http:
        export = load_access_log(export_url, client=http)
        doc = http.get(export_url).json()
    abi = compile_contracts(cache_dir=stack.home / "build")[REGISTRY_CONTRACT].abi
    rpc = RpcClient(stack.settings.chain_url, client=httpx.Client(timeout=60))
    try:
        report = run_audit(
            rpc,
            registry=stack.settings.registry(),
            deploy_block=stack.settings.deployment_block(),
            decoder=EventDecoder(registry_event_abi(abi)),
            access_logs=[export],
            max_time_skew_s=audit_time_skew(stack.w3),
        )
    finally:
        rpc.close()
    leaves = [json.loads(e["leaf"]) for e in doc["entries"]]
    return report, leaves


def test_no_read_is_served_at_or_after_the_revoke_block_and_the_audit_proves_it(
    tmp_path: Path, anvil: Any, w3: Web3, ipfs_node: Any, service_dir: Path
) -> None:
    quiet_logs()
    # A registry of its own: the audit demands the log of every gateway that anchored on it.
    auditor = new_account()
    stack = own_registry_stack(
        home=tmp_path / "gw",
        w3=w3,
        chain_url=anvil.url,
        ipfs_url=ipfs_node.url,
        service_dir=service_dir,
        auditors=auditor.address,
        checkpoint_every=64,
        checkpoint_interval_s=0.5,
    )
    stack.auditor = auditor  # type: ignore[attr-defined]
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        grantees = _setup(stack, w3)
        seen: dict[str, list[Seen]] = {g.account.address: [] for g in grantees}
        errors: list[str] = []
        for g in grantees:
            t = threading.Thread(
                target=_fetcher,
                args=(stack, g, stop, seen[g.account.address], errors),
                name=f"fetch-{g.account.address[:8]}",
                daemon=True,
            )
            t.start()
            threads.append(t)

        # Every grantee has been served at least once before the revokes start.
        deadline = time.monotonic() + 30
        while not all(any(s.status == 200 for s in v) for v in list(seen.values())):
            assert not errors, errors
            assert time.monotonic() < deadline, "grantees were never served before the revokes"
            time.sleep(0.02)

        rng = random.Random(7)
        order = list(range(N_GRANTEES))
        rng.shuffle(order)
        revoked: dict[str, Revoked] = {}
        for n, i in enumerate(order):
            time.sleep(rng.uniform(0.0, 0.03))
            revoked[grantees[i].account.address] = _revoke(stack, grantees[i], n)

        # Keep fetching until every grantee has sent requests after its revoke was mined.
        deadline = time.monotonic() + 30
        while not all(
            sum(s.started > revoked[a].receipt_at for s in list(v)) >= 3 for a, v in seen.items()
        ):
            assert not errors, errors
            assert time.monotonic() < deadline, "grantees stopped fetching"
            time.sleep(0.02)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    try:
        assert not errors, errors
        assert not any(t.is_alive() for t in threads)

        # 1. What the clients saw.
        total = 0
        for address, responses in seen.items():
            rv = revoked[address]
            statuses = Counter(s.status for s in responses)
            assert set(statuses) <= {200, 403}, statuses
            assert statuses[200] >= 1, (address, statuses)
            assert statuses[403] >= 3, (address, statuses)
            for s in responses:
                if s.status == 200:
                    assert s.block is not None
                    assert s.block < rv.block, (
                        f"{address} was served a read checked at block {s.block}, "
                        f"at or after its revoke ({rv.how}) in block {rv.block}"
                    )
                if s.started > rv.receipt_at:
                    assert s.status == 403, (
                        f"{address}: a request sent after the revoke receipt "
                        f"(block {rv.block}, {rv.how}) was allowed at block {s.block}"
                    )
                    assert s.block is not None
                    assert s.block >= rv.block
            total += len(responses)

        # 2. The audit of the gateway's own log, as an auditor exports it.
        report, leaves = _audit(stack)
        assert report.exit_code == 0, [(f.kind, f.message) for f in report.findings]
        assert {f.kind for f in report.findings} <= {FindingKind.UNANCHORED_ENTRIES}
        assert report.replay is not None
        assert report.replay.complete
        (verified,) = report.logs
        assert verified.anchored_size == len(leaves)  # anchor_now covered the whole log

        # 3. The same property, checked directly on the leaves, and nothing lost or invented.
        mine = {g.account.address.lower(): g for g in grantees}
        logged: Counter[tuple[str, str]] = Counter()
        for leaf in leaves:
            g = mine.get(leaf["requester"])
            if g is None:
                continue
            rv = revoked[g.account.address]
            assert leaf["record"] == g.record_id
            assert leaf["patient"] == g.patient.address.lower()
            if leaf["decision"] == "allowed":
                assert leaf["reason"] == "consent"
                assert leaf["block"] < rv.block, (leaf, rv)
            else:
                assert leaf["reason"] == "no_consent", leaf
            logged[(leaf["requester"], leaf["decision"])] += 1
        for address, responses in seen.items():
            key = address.lower()
            assert logged[(key, "allowed")] == sum(s.status == 200 for s in responses)
            assert logged[(key, "denied")] == sum(s.status == 403 for s in responses)
        assert sum(logged.values()) == total
    finally:
        close_stack(stack)
