"""Threat-model tests: no plaintext at rest, tampered blobs, IPFS or chain down (fail closed).

Kill tests use their own throw-away chain / IPFS nodes, never the session ones.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from web3 import Web3

from gateway.ipfs import IpfsClient
from gateway.storage.tables import RECORD
from ledger.chain.node import connect, dev_accounts
from ledger.devstack.services import AnvilNode, IpfsNode, free_port
from ledger.protocol import eip712
from ledger.protocol.consent_types import category_id
from ledger.protocol.contract_errors import UnknownRecord
from ledger.protocol.envelope import salted_digest
from tests.helpers.gateway import (
    Stack,
    build_stack,
    close_stack,
    fresh_relayer,
    login,
    new_account,
    own_registry_stack,
    relay,
    salt_for,
    signed_grant,
    upload,
)


def _files_under(root: Path) -> Iterator[Path]:
    for path in root.rglob("*"):
        if path.is_file():
            yield path


def _contains(root: Path, needle: bytes) -> list[Path]:
    return [p for p in _files_under(root) if needle in p.read_bytes()]


def _grant_and_login(stack: Stack, patient: Any, grantee: Any, record_id: str) -> dict[str, str]:
    relay(
        stack,
        login(stack, patient),
        signed_grant(stack, patient, grantee.address, scope_id=bytes.fromhex(record_id[2:])),
    )
    return login(stack, grantee)


def test_no_plaintext_in_ipfs_the_database_or_the_logs(
    sqlite_gateway: Stack,
    ipfs_node: IpfsNode,
    service_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    stack = sqlite_gateway
    marker = b"PLAINTEXT-MARKER-" + os.urandom(12).hex().encode()
    data = b"Haemoglobin 14.2 g/dL\n" + marker + b"\n" + os.urandom(300_000)  # several chunks
    patient, doctor = new_account(), new_account()
    r = upload(stack, login(stack, stack.centre), patient=patient.address, data=data)
    assert r.status_code == 201, r.text
    record_id = r.json()["record_id"]
    headers = _grant_and_login(stack, patient, doctor, record_id)
    fetched = stack.client.get(f"/v1/records/{record_id}?purpose=treatment", headers=headers)
    assert fetched.status_code == 200
    ciphertext = base64.b64decode(fetched.json()["ciphertext"])
    assert marker not in ciphertext

    # The ciphertext is in the IPFS repository (so we grep the right place) ...
    assert _contains(ipfs_node.repo, ciphertext[100:164]), "ciphertext not found in the repo"
    # ... and the plaintext is nowhere: IPFS repo, gateway database files, service logs.
    assert _contains(ipfs_node.repo, marker) == []
    assert _contains(stack.home, marker) == []
    assert [p for p in service_dir.glob("*.log") if marker in p.read_bytes()] == []
    assert marker.decode() not in caplog.text
    for record in caplog.records:
        assert marker.decode() not in record.getMessage()


def test_tampered_ciphertext_is_refused_with_502_and_logged(
    sqlite_gateway: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway")
    stack = sqlite_gateway
    patient, doctor = new_account(), new_account()
    data = b"X-ray report " + os.urandom(16).hex().encode()
    r = upload(stack, login(stack, stack.centre), patient=patient.address, data=data)
    record_id, cid = r.json()["record_id"], r.json()["cid"]
    headers = _grant_and_login(stack, patient, doctor, record_id)

    # An attacker swaps the blob for a tampered copy (and fixes up the stored CID and hash).
    blob = bytearray(stack.state.ipfs.cat(cid))
    blob[-5] ^= 0x01
    forged_cid = str(stack.state.ipfs.add(bytes(blob)))
    with stack.state.engine.begin() as conn:
        conn.execute(
            update(RECORD)
            .where(RECORD.c.record_id == record_id)
            .values(cid=forged_cid, blob_sha256="0x" + hashlib.sha256(blob).hexdigest())
        )
    stack.state.records.clear_caches()
    url = f"/v1/records/{record_id}?purpose=treatment"
    r = stack.client.get(url, headers=headers)
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "blob_tampered"
    assert r.json()["error"]["details"]["reason"] == "does not decrypt"

    # A node that serves other bytes than the CID names: caught by the local CID check.
    with stack.state.engine.begin() as conn:
        conn.execute(update(RECORD).where(RECORD.c.record_id == record_id).values(cid=cid))
    stack.state.records.clear_caches()
    real = stack.state.records.blobs

    def flip(request: httpx.Request) -> httpx.Response:
        upstream = real._http.send(request)  # the real node, then one bit flipped
        body = bytearray(upstream.read())
        if request.url.path.endswith("/cat"):
            body[-1] ^= 0x80
        return httpx.Response(upstream.status_code, content=bytes(body))

    stack.state.records.blobs = IpfsClient(
        httpx.Client(base_url=stack.settings.ipfs_url, transport=httpx.MockTransport(flip))
    )
    try:
        r = stack.client.get(url, headers=headers)
    finally:
        stack.state.records.blobs = real
    assert r.status_code == 502
    assert r.json()["error"]["details"]["reason"] == "does not match its CID or upload digest"

    page = stack.client.get("/v1/access-log/entries", headers=login(stack, patient)).json()
    reasons = [(e["entry"]["decision"], e["entry"]["reason"]) for e in page["entries"]]
    assert reasons == [("denied", "blob_tampered"), ("denied", "blob_tampered")]
    assert "tampered blob" in caplog.text


# --------------------------------------------------------------------------- kill tests


@pytest.fixture
def throwaway_ipfs(tmp_path: Path) -> Iterator[IpfsNode]:
    node = IpfsNode(repo=tmp_path / "ipfs", api_port=free_port(), log_path=tmp_path / "ipfs.log")
    try:
        node.start()
        yield node
    finally:
        node.stop()


def test_ipfs_killed_means_503_and_no_record_registered(
    tmp_path: Path,
    anvil: Any,
    w3: Web3,
    throwaway_ipfs: IpfsNode,
    gateway_registry: Any,
) -> None:
    registry, deployment = gateway_registry
    stack = build_stack(
        home=tmp_path / "gw",
        w3=w3,
        chain_url=anvil.url,
        ipfs_url=throwaway_ipfs.url,
        registry=registry,
        deployment=deployment,
        relayer=fresh_relayer(w3, registry),
        anchor_enabled=False,
        ipfs_timeout_s=2.0,
    )
    try:
        patient, doctor = new_account(), new_account()
        centre_headers = login(stack, stack.centre)
        before = upload(stack, centre_headers, patient=patient.address, data=b"before the kill")
        assert before.status_code == 201, before.text
        doctor_headers = _grant_and_login(stack, patient, doctor, before.json()["record_id"])

        throwaway_ipfs.kill()

        data = b"after the kill " + os.urandom(8).hex().encode()
        r = upload(
            stack, centre_headers, patient=patient.address, data=data, issued_at=1_700_000_000
        )
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "ipfs_unavailable"
        attestation = eip712.RecordAttestation(
            patient=patient.address,
            category=category_id("laboratory"),
            content_digest=salted_digest(salt_for(patient.address, data, 1_700_000_000), data),
            issued_at=1_700_000_000,
        )
        record_id = eip712.record_id(stack.domain, attestation)
        with pytest.raises(UnknownRecord):
            registry.record_of(record_id)
        with stack.state.engine.connect() as conn:
            rows = conn.execute(select(RECORD.c.record_id, RECORD.c.status)).all()
        assert [r.record_id for r in rows] == [before.json()["record_id"]]

        # Fetching needs the blob: 503 as well, and the refusal is logged.
        fetch = stack.client.get(
            f"/v1/records/{before.json()['record_id']}?purpose=treatment", headers=doctor_headers
        )
        assert fetch.status_code == 503
        assert fetch.json()["error"]["code"] == "ipfs_unavailable"
        health = stack.client.get("/healthz")
        assert health.status_code == 503
        assert "ipfs" in health.json()["details"]
    finally:
        close_stack(stack)


def test_chain_killed_means_503_never_200(
    tmp_path: Path, throwaway_anvil: AnvilNode, ipfs_node: IpfsNode, service_dir: Path
) -> None:
    chain = connect(throwaway_anvil.url)
    stack = own_registry_stack(
        home=tmp_path / "gw",
        w3=chain,
        chain_url=throwaway_anvil.url,
        ipfs_url=ipfs_node.url,
        service_dir=service_dir,
        relayer=dev_accounts()[1],
        anchor_enabled=False,
        chain_timeout_s=2.0,
    )
    try:
        patient, doctor = new_account(), new_account()
        centre_headers = login(stack, stack.centre)
        r = upload(stack, centre_headers, patient=patient.address, data=b"chest CT")
        record_id = r.json()["record_id"]
        doctor_headers = _grant_and_login(stack, patient, doctor, record_id)
        url = f"/v1/records/{record_id}?purpose=treatment"
        assert stack.client.get(url, headers=doctor_headers).status_code == 200

        throwaway_anvil.process.kill()

        for _ in range(5):
            r = stack.client.get(url, headers=doctor_headers)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "chain_unavailable"
        own = stack.client.get(url, headers=login(stack, patient))
        assert own.status_code == 503
        again = upload(stack, centre_headers, patient=patient.address, data=b"while down")
        assert again.status_code == 503
        with stack.state.engine.connect() as conn:
            assert len(conn.execute(select(RECORD.c.record_id)).all()) == 1
        health = stack.client.get("/healthz")
        assert health.status_code == 503
        assert "chain" in health.json()["details"]
        entries = stack.state.access_log.entries_for_patient(patient.address)
        import json

        tail = [json.loads(leaf) for _i, leaf, _h in entries][-6:]
        assert {(e["decision"], e["reason"], e["block"]) for e in tail} == {
            ("denied", "chain_unavailable", None)
        }
    finally:
        close_stack(stack)


def test_placeholder_or_missing_kek_refuses_to_start(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from gateway.settings import Settings

    key = dev_accounts()[1].key.hex()
    for content in ("0" * 64, "changeme", "00" * 31 + "01", "deadbeef" * 8):
        kek = tmp_path / "kek"
        kek.write_text(content)
        with pytest.raises(ValidationError, match=r"placeholder|must be 32 bytes|not hex"):
            Settings(home=tmp_path, kek_file=kek, relayer_key=key)
    with pytest.raises(ValidationError, match="does not exist"):
        Settings(home=tmp_path, kek_file=tmp_path / "missing", relayer_key=key)
    kek = tmp_path / "good"
    kek.write_text(os.urandom(32).hex())
    kek.chmod(0o600)
    with pytest.raises(ValidationError, match="no relayer key"):
        Settings(home=tmp_path, kek_file=kek)
    accounts = {
        "gateway_key": dev_accounts()[2].key.hex(),
        "registrar_key": dev_accounts()[3].key.hex(),
    }
    settings = Settings(home=tmp_path, kek_file=kek, relayer_key=key, **accounts)
    assert len(settings.kek_bytes) == 32
