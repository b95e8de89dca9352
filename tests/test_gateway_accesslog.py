"""The access log: every decision is a leaf; inclusion and consistency proofs verify against
checkpoints anchored on-chain."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from ledger.protocol import merkle
from tests.helpers.audit_world import audit_time_skew
from tests.helpers.gateway import (
    Stack,
    close_stack,
    drop_schema,
    login,
    new_account,
    own_registry_stack,
    postgres_url,
    relay,
    signed_grant,
    upload,
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def own_gateway(
    request: pytest.FixtureRequest,
    anvil: Any,
    w3: Web3,
    ipfs_node: Any,
    service_dir: Path,
    tmp_path: Path,
) -> Iterator[Stack]:
    """A gateway on a registry of its own: the audit demands the log of every gateway that
    anchored on the registry, and the session registry has many."""
    backend = str(request.param)
    database_url, schema = postgres_url() if backend == "postgres" else (None, None)
    stack = own_registry_stack(
        home=tmp_path / "gw",
        w3=w3,
        chain_url=anvil.url,
        ipfs_url=ipfs_node.url,
        service_dir=service_dir,
        database_url=database_url,
        backend=backend,
    )
    try:
        yield stack
    finally:
        close_stack(stack)
        if schema is not None:
            drop_schema(schema)


def _hex(text: str) -> bytes:
    return bytes.fromhex(text[2:])


def _setup(stack: Stack) -> tuple[str, LocalAccount, LocalAccount, LocalAccount]:
    patient, doctor, stranger = new_account(), new_account(), new_account()
    r = upload(
        stack,
        login(stack, stack.centre),
        patient=patient.address,
        data=b"ECG " + os.urandom(8).hex().encode(),
    )
    assert r.status_code == 201, r.text
    record_id = r.json()["record_id"]
    relay(
        stack,
        login(stack, patient),
        signed_grant(stack, patient, doctor.address, scope_id=_hex(record_id)),
    )
    return record_id, patient, doctor, stranger


def _anchor(stack: Stack) -> dict[str, Any]:
    stack.state.anchorer.anchor_now()
    r = stack.client.get("/v1/access-log/checkpoint")
    assert r.status_code == 200, r.text
    checkpoint: dict[str, Any] = r.json()
    return checkpoint


def test_every_decision_is_logged_with_a_verifiable_inclusion_proof(gateway: Stack) -> None:
    record_id, patient, doctor, stranger = _setup(gateway)
    url = f"/v1/records/{record_id}?purpose=treatment"
    assert gateway.client.get(url, headers=login(gateway, stranger)).status_code == 403
    assert gateway.client.get(url, headers=login(gateway, doctor)).status_code == 200
    patient_headers = login(gateway, patient)
    assert gateway.client.get(url, headers=patient_headers).status_code == 200

    checkpoint = _anchor(gateway)
    size, root = int(checkpoint["tree_size"]), _hex(str(checkpoint["root_hash"]))

    # The checkpoint is on-chain, under the gateway's account.
    on_chain = gateway.registry.checkpoint_of(gateway.gateway_account.address)
    assert (on_chain.tree_size, on_chain.root_hash) == (size, root)
    assert checkpoint["gateway"] == gateway.gateway_account.address

    page = gateway.client.get("/v1/access-log/entries", headers=patient_headers).json()
    entries = page["entries"]
    decisions = [
        (e["entry"]["requester"], e["entry"]["decision"], e["entry"]["reason"]) for e in entries
    ]
    assert decisions == [
        (stranger.address.lower(), "denied", "no_consent"),
        (doctor.address.lower(), "allowed", "consent"),
        (patient.address.lower(), "allowed", "owner"),
    ]
    for e in entries:
        leaf = e["leaf"].encode()
        assert json.loads(leaf) == e["entry"]
        assert e["entry"]["record"] == record_id
        assert e["entry"]["purpose"] == 0
        assert isinstance(e["entry"]["block"], int)
        assert _hex(e["leaf_hash"]) == merkle.leaf_hash(leaf)
        assert e["index"] < size
        assert merkle.verify_inclusion(
            leaf_hash=merkle.leaf_hash(leaf),
            index=e["index"],
            tree_size=size,
            proof=[_hex(h) for h in e["inclusion_proof"]],
            root=root,
        )


def test_a_patient_sees_only_reads_of_their_own_records(gateway: Stack) -> None:
    _record_id, patient, doctor, _ = _setup(gateway)
    r = gateway.client.get(
        f"/v1/access-log/entries?patient={patient.address}",
        headers=login(gateway, doctor),
    )
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"
    own = gateway.client.get("/v1/access-log/entries", headers=login(gateway, doctor))
    assert own.json()["entries"] == []


def test_consistency_between_anchored_checkpoints_verifies(gateway: Stack) -> None:
    record_id, _patient, doctor, _ = _setup(gateway)
    headers = login(gateway, doctor)
    url = f"/v1/records/{record_id}?purpose=treatment"
    assert gateway.client.get(url, headers=headers).status_code == 200
    first = _anchor(gateway)
    for _ in range(5):
        assert gateway.client.get(url, headers=headers).status_code == 200
    second = _anchor(gateway)
    m, n = int(first["tree_size"]), int(second["tree_size"])
    assert n > m
    on_chain = gateway.registry.checkpoint_of(gateway.gateway_account.address)
    assert (on_chain.tree_size, "0x" + on_chain.root_hash.hex()) == (n, second["root_hash"])

    r = gateway.client.get(f"/v1/access-log/consistency?first={m}&second={n}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["first_root"] == first["root_hash"]
    assert body["second_root"] == second["root_hash"]
    assert merkle.verify_consistency(
        old_size=m,
        new_size=n,
        old_root=_hex(str(first["root_hash"])),
        new_root=on_chain.root_hash,
        proof=[_hex(h) for h in body["proof"]],
    )
    # A forged old root does not verify.
    assert not merkle.verify_consistency(
        old_size=m,
        new_size=n,
        old_root=bytes(32),
        new_root=on_chain.root_hash,
        proof=[_hex(h) for h in body["proof"]],
    )
    bad = gateway.client.get(f"/v1/access-log/consistency?first={n + 10**6}&second={n}")
    assert bad.status_code == 422


def test_checkpoints_are_anchored_by_the_background_task(gateway: Stack) -> None:
    import time

    record_id, _patient, doctor, _ = _setup(gateway)
    headers = login(gateway, doctor)
    for _ in range(gateway.settings.checkpoint_every):
        gateway.client.get(f"/v1/records/{record_id}?purpose=treatment", headers=headers)
    size = gateway.state.access_log.size
    deadline = time.monotonic() + 20
    while gateway.registry.checkpoint_of(gateway.gateway_account.address).tree_size < size:
        assert time.monotonic() < deadline, gateway.state.anchorer.last_error
        time.sleep(0.1)


def test_an_auditor_exports_the_whole_log_and_it_audits_clean(
    own_gateway: Stack, monkeypatch: Any
) -> None:
    gateway = own_gateway
    import httpx

    from ledger.audit.export import ACCESS_LOG_FORMAT, load_access_log
    from ledger.audit.run import run_audit
    from ledger.chain.build import compile_contracts
    from ledger.chain.registry import REGISTRY_CONTRACT
    from ledger.chain.rpc import RpcClient
    from ledger.protocol.events import EventDecoder, registry_event_abi

    record_id, _patient, doctor, stranger = _setup(gateway)
    url = f"/v1/records/{record_id}?purpose=treatment"
    assert gateway.client.get(url, headers=login(gateway, stranger)).status_code == 403
    assert gateway.client.get(url, headers=login(gateway, doctor)).status_code == 200
    checkpoint = _anchor(gateway)

    auditor = new_account()
    monkeypatch.setattr(gateway.state, "auditors", frozenset({auditor.address}))
    export_url = f"{gateway.client.base_url}/v1/access-log/export"

    # Nobody else: no session is 401, a grantee's or a patient's session is 403.
    assert gateway.client.get("/v1/access-log/export").status_code == 401
    refused = gateway.client.get("/v1/access-log/export", headers=login(gateway, doctor))
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "forbidden"

    headers = login(gateway, auditor)
    r = gateway.client.get("/v1/access-log/export", headers=headers)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert (doc["format"], doc["version"]) == (ACCESS_LOG_FORMAT, 1)
    assert doc["gateway"] == gateway.gateway_account.address
    assert doc["registry"] == gateway.settings.registry()
    assert doc["chain_id"] == int(gateway.w3.eth.chain_id)
    assert [e["index"] for e in doc["entries"]] == list(range(len(doc["entries"])))
    assert len(doc["entries"]) >= int(checkpoint["tree_size"])
    for e in doc["entries"]:
        assert _hex(e["leaf_hash"]) == merkle.leaf_hash(e["leaf"].encode())
    (exported,) = [c for c in doc["checkpoints"] if c["tree_size"] == checkpoint["tree_size"]]
    assert (exported["root_hash"], exported["tx_hash"]) == (
        checkpoint["root_hash"],
        checkpoint["tx_hash"],
    )
    leaves = [json.loads(e["leaf"]) for e in doc["entries"]]
    assert {
        (leaf["requester"], leaf["reason"]) for leaf in leaves if leaf["record"] == record_id
    } == {(stranger.address.lower(), "no_consent"), (doctor.address.lower(), "consent")}

    # The auditor's tool reads the URL as is (with the session) and finds nothing wrong.
    with httpx.Client(headers=headers, timeout=60) as http:
        export = load_access_log(export_url, client=http)
    abi = compile_contracts(cache_dir=gateway.home / "build")[REGISTRY_CONTRACT].abi
    rpc = RpcClient(gateway.settings.chain_url, client=httpx.Client(timeout=60))
    try:
        report = run_audit(
            rpc,
            registry=gateway.settings.registry(),
            deploy_block=gateway.settings.deployment_block(),
            decoder=EventDecoder(registry_event_abi(abi)),
            access_logs=[export],
            max_time_skew_s=audit_time_skew(gateway.w3),
        )
    finally:
        rpc.close()
    assert report.exit_code == 0, [(f.kind, f.message) for f in report.findings]
    (verified,) = report.logs
    assert verified.anchored_size >= int(checkpoint["tree_size"])
