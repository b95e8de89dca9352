"""Gateway end to end on the real chain, IPFS node and database (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import json
import os
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ledger.chain.rpc import HttpxRpc
from ledger.protocol.consent_types import CENTRE_ROLE, Purpose, ScopeKind, category_id
from ledger.protocol.envelope import open_envelope, salted_digest
from tests.helpers.gateway import (
    Stack,
    chain_time,
    login,
    new_account,
    personal_sign,
    relay,
    salt_for,
    signed_grant,
    signed_revoke,
    siwe_message,
    upload,
)


def _record(stack: Stack, patient_address: str, marker: bytes = b"") -> tuple[str, bytes]:
    data = b"CBC result " + os.urandom(16).hex().encode() + b" " + marker
    centre_headers = login(stack, stack.centre)
    r = upload(stack, centre_headers, patient=patient_address, data=data)
    assert r.status_code == 201, r.text
    return r.json()["record_id"], data


def test_upload_grant_fetch_decrypt_digest_matches(gateway: Stack) -> None:
    patient, doctor = new_account(), new_account()
    record_id, data = _record(gateway, patient.address)

    on_chain = gateway.registry.record_of(bytes.fromhex(record_id[2:]))
    assert on_chain.patient == patient.address
    assert on_chain.centre == gateway.centre.address
    # salted: sha256(salt || data), the salt only inside the encrypted blob
    assert on_chain.content_digest == salted_digest(
        salt_for(patient.address, data, on_chain.issued_at), data
    )
    assert on_chain.content_digest != hashlib.sha256(data).digest()

    patient_headers = login(gateway, patient)
    receipt = relay(
        gateway,
        patient_headers,
        signed_grant(
            gateway, patient, doctor.address, scope_id=bytes.fromhex(record_id[2:]), purposes=(0,)
        ),
    )
    assert receipt["status"] == "mined"
    assert receipt["tx_hash"].startswith("0x")
    assert receipt["block_number"] > 0

    doctor_headers = login(gateway, doctor)
    r = gateway.client.get(f"/v1/records/{record_id}?purpose=treatment", headers=doctor_headers)
    assert r.status_code == 200, r.text
    envelope = r.json()
    assert envelope["block_number"] >= receipt["block_number"]
    plaintext = open_envelope(
        envelope, private_key=doctor.key, expected_digest=on_chain.content_digest
    )
    assert plaintext == data


def test_fetch_without_consent_is_denied(gateway: Stack) -> None:
    patient, stranger = new_account(), new_account()
    record_id, _ = _record(gateway, patient.address)
    r = gateway.client.get(
        f"/v1/records/{record_id}?purpose=treatment", headers=login(gateway, stranger)
    )
    assert r.status_code == 403
    error = r.json()["error"]
    assert error["code"] == "consent_denied"
    assert error["details"]["block_number"] > 0


def test_fetch_for_another_purpose_is_denied(gateway: Stack) -> None:
    patient, insurer = new_account(), new_account()
    record_id, _ = _record(gateway, patient.address)
    relay(
        gateway,
        login(gateway, patient),
        signed_grant(
            gateway,
            patient,
            insurer.address,
            scope_id=bytes.fromhex(record_id[2:]),
            purposes=(int(Purpose.RESEARCH),),
        ),
    )
    headers = login(gateway, insurer)
    assert (
        gateway.client.get(f"/v1/records/{record_id}?purpose=research", headers=headers).status_code
        == 200
    )
    r = gateway.client.get(f"/v1/records/{record_id}?purpose=insurance", headers=headers)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "consent_denied"


def test_fetch_after_expiry_is_denied(gateway: Stack) -> None:
    patient, doctor = new_account(), new_account()
    record_id, _ = _record(gateway, patient.address)
    expires = chain_time(gateway) + 60
    relay(
        gateway,
        login(gateway, patient),
        signed_grant(
            gateway,
            patient,
            doctor.address,
            scope_id=bytes.fromhex(record_id[2:]),
            expires_at=expires,
        ),
    )
    headers = login(gateway, doctor)
    url = f"/v1/records/{record_id}?purpose=treatment"
    assert gateway.client.get(url, headers=headers).status_code == 200  # served until it expires
    # Move the chain's clock past the expiry (other tests may have moved it away from the wall
    # clock); a new block is needed for block.timestamp to pass it.
    make = gateway.w3.provider.make_request
    make("evm_increaseTime", [expires - chain_time(gateway) + 1])  # type: ignore[arg-type]
    make("evm_mine", [])  # type: ignore[arg-type]
    assert chain_time(gateway) > expires
    r = gateway.client.get(url, headers=headers)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "consent_denied"


def test_fetch_after_revoke_is_denied_on_the_very_next_request(gateway: Stack) -> None:
    patient, doctor = new_account(), new_account()
    record_id, _ = _record(gateway, patient.address)
    rid = bytes.fromhex(record_id[2:])
    patient_headers = login(gateway, patient)
    relay(gateway, patient_headers, signed_grant(gateway, patient, doctor.address, scope_id=rid))
    doctor_headers = login(gateway, doctor)
    url = f"/v1/records/{record_id}?purpose=treatment"
    assert gateway.client.get(url, headers=doctor_headers).status_code == 200
    revoked = relay(
        gateway, patient_headers, signed_revoke(gateway, patient, doctor.address, scope_id=rid)
    )
    r = gateway.client.get(url, headers=doctor_headers)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "consent_denied"
    assert r.json()["error"]["details"]["block_number"] >= revoked["block_number"]


def test_category_and_all_scopes_cover_records(gateway: Stack) -> None:
    patient, lab, gp = new_account(), new_account(), new_account()
    record_id, _ = _record(gateway, patient.address)
    patient_headers = login(gateway, patient)
    relay(
        gateway,
        patient_headers,
        signed_grant(
            gateway,
            patient,
            lab.address,
            scope_kind=ScopeKind.CATEGORY,
            scope_id=category_id("laboratory"),
        ),
    )
    relay(
        gateway,
        patient_headers,
        signed_grant(gateway, patient, gp.address, scope_kind=ScopeKind.ALL, scope_id=bytes(32)),
    )
    for who in (lab, gp):
        r = gateway.client.get(f"/v1/records/{record_id}?purpose=0", headers=login(gateway, who))
        assert r.status_code == 200, r.text


def test_patient_reads_own_record(gateway: Stack) -> None:
    patient = new_account()
    record_id, data = _record(gateway, patient.address)
    headers = login(gateway, patient)
    r = gateway.client.get(f"/v1/records/{record_id}?purpose=treatment", headers=headers)
    assert r.status_code == 200, r.text
    assert open_envelope(r.json(), private_key=patient.key) == data


def test_listing_records_and_consents(gateway: Stack) -> None:
    patient, doctor = new_account(), new_account()
    record_id, _ = _record(gateway, patient.address)
    patient_headers = login(gateway, patient)
    relay(
        gateway,
        patient_headers,
        signed_grant(
            gateway, patient, doctor.address, scope_id=bytes.fromhex(record_id[2:]), purposes=(0, 1)
        ),
    )
    mine = gateway.client.get("/v1/records", headers=patient_headers).json()["records"]
    assert [r["record_id"] for r in mine] == [record_id]
    assert mine[0]["category"] == "laboratory"
    uploads = gateway.client.get("/v1/records?limit=1000", headers=login(gateway, gateway.centre))
    assert record_id in {r["record_id"] for r in uploads.json()["records"]}

    granted = gateway.client.get("/v1/consents", headers=patient_headers).json()
    assert [(c["grantee"], c["purposes"], c["active"]) for c in granted["granted"]] == [
        (doctor.address, [0, 1], True)
    ]
    received = gateway.client.get("/v1/consents", headers=login(gateway, doctor)).json()
    assert [(c["patient"], c["scope_kind"]) for c in received["received"]] == [
        (patient.address, "record")
    ]


def test_the_consents_listing_reads_logs_in_ranges_the_node_accepts(gateway: Stack) -> None:
    """Behind a node that refuses ``eth_getLogs`` over more than 50 blocks (as providers do),
    the listing still answers: it reads from the pinned deploy block up to the block it names,
    in chunks the node accepts."""
    patient, doctor = new_account(), new_account()
    record_id, _ = _record(gateway, patient.address)
    headers = login(gateway, patient)
    relay(
        gateway,
        headers,
        signed_grant(
            gateway, patient, doctor.address, scope_id=bytes.fromhex(record_id[2:]), purposes=(0,)
        ),
    )
    chain = gateway.state.chain
    real = chain.rpc_client.transport
    upstream = httpx.Client()
    asked: list[tuple[int, int]] = []

    def narrow(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body.get("method") == "eth_getLogs":
            query = body["params"][0]
            lo, hi = int(query["fromBlock"], 16), int(query["toBlock"], 16)
            asked.append((lo, hi))
            if hi - lo + 1 > 50:
                refusal = {"code": -32005, "message": "query returned more than 10000 results"}
                return httpx.Response(
                    200, json={"jsonrpc": "2.0", "id": body["id"], "error": refusal}
                )
        answer = upstream.post(
            gateway.settings.chain_url,
            content=request.content,
            headers={"content-type": "application/json"},
        )
        return httpx.Response(answer.status_code, content=answer.content)

    chain.rpc_client.transport = HttpxRpc(
        gateway.settings.chain_url, httpx.Client(transport=httpx.MockTransport(narrow))
    )
    try:
        listed = gateway.client.get("/v1/consents", headers=headers)
    finally:
        chain.rpc_client.transport = real
        upstream.close()
    assert listed.status_code == 200, listed.text
    assert [(c["grantee"], c["purposes"]) for c in listed.json()["granted"]] == [
        (doctor.address, [0])
    ]
    # Two scans (granted, received), each covering every block once, in accepted chunks only.
    start, end = gateway.state.consents.from_block, listed.json()["block_number"]
    covered = sorted(b for lo, hi in asked if hi - lo + 1 <= 50 for b in range(lo, hi + 1))
    assert covered == sorted([*range(start, end + 1)] * 2)


def test_upload_retry_of_the_same_attestation_is_idempotent(gateway: Stack) -> None:
    patient = new_account()
    data = b"lipid panel " + os.urandom(8).hex().encode()
    headers = login(gateway, gateway.centre)
    issued = int(time.time())
    first = upload(gateway, headers, patient=patient.address, data=data, issued_at=issued)
    again = upload(gateway, headers, patient=patient.address, data=data, issued_at=issued)
    assert first.status_code == 201, first.text
    assert again.status_code == 200, again.text
    assert again.json()["record_id"] == first.json()["record_id"]
    assert again.json()["tx_hash"] == first.json()["tx_hash"]


def test_upload_under_an_unlisted_category_is_a_422_naming_it(gateway: Stack) -> None:
    patient = new_account()
    headers = login(gateway, gateway.centre)
    r = upload(gateway, headers, patient=patient.address, data=b"positive", category="hiv-test")
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "contract_category_not_listed"
    assert error["details"]["category"] == "0x" + category_id("hiv-test").hex()
    mine = gateway.client.get("/v1/records", headers=login(gateway, patient))
    assert mine.status_code == 200
    assert mine.json()["records"] == []


def test_forged_attestation_is_refused(gateway: Stack) -> None:
    patient, forger = new_account(), new_account()
    data = b"forged " + os.urandom(8).hex().encode()
    centre_headers = login(gateway, gateway.centre)
    # Signed by someone else than the signed-in centre.
    r = upload(gateway, centre_headers, patient=patient.address, data=data, signer=forger)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "attestation_invalid"
    assert r.json()["error"]["details"]["recovered"] == forger.address
    # A non-centre signing in and attesting itself.
    assert not gateway.registry.has_role(CENTRE_ROLE, forger.address)
    r = upload(gateway, login(gateway, forger), patient=patient.address, data=data, signer=forger)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"
    assert (
        gateway.client.get("/v1/records", headers=login(gateway, patient)).json()["records"] == []
    )


def test_replayed_siwe_message_is_refused(gateway: Stack) -> None:
    account = new_account()
    nonce = gateway.client.post("/v1/auth/nonce").json()["nonce"]
    message = siwe_message(gateway, account, nonce)
    body = {"message": message, "signature": personal_sign(account, message)}
    assert gateway.client.post("/v1/auth/login", json=body).status_code == 200
    replay = gateway.client.post("/v1/auth/login", json=body)
    assert replay.status_code == 401
    assert replay.json()["error"]["code"] == "siwe_nonce_invalid"


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"domain": "evil.example"}, "siwe_domain_mismatch"),
        ({"uri": "http://evil.example"}, "siwe_uri_mismatch"),
        ({"chain_id": 1}, "siwe_chain_mismatch"),
    ],
)
def test_siwe_message_for_another_site_or_chain_is_refused(
    gateway: Stack, fields: dict[str, object], code: str
) -> None:
    account = new_account()
    nonce = gateway.client.post("/v1/auth/nonce").json()["nonce"]
    message = siwe_message(gateway, account, nonce, **fields)
    r = gateway.client.post(
        "/v1/auth/login", json={"message": message, "signature": personal_sign(account, message)}
    )
    assert r.status_code == 401
    assert r.json()["error"]["code"] == code


def test_requests_without_a_session_are_refused(gateway: Stack) -> None:
    for method, url in (
        ("GET", "/v1/records"),
        ("GET", "/v1/records/0x" + "11" * 32 + "?purpose=0"),
        ("GET", "/v1/consents"),
        ("GET", "/v1/access-log/entries"),
    ):
        r = gateway.client.request(method, url)
        assert r.status_code == 401, url
        assert r.json()["error"]["code"] == "unauthenticated"
    r = gateway.client.get("/v1/records", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


def test_unknown_record_and_bad_purpose(gateway: Stack) -> None:
    headers = login(gateway, new_account())
    r = gateway.client.get("/v1/records/0x" + "ab" * 32 + "?purpose=treatment", headers=headers)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "record_not_found"
    r = gateway.client.get("/v1/records/0x" + "ab" * 32 + "?purpose=astrology", headers=headers)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_request"


def test_relay_of_a_replayed_signature_is_refused(gateway: Stack) -> None:
    patient, doctor = new_account(), new_account()
    record_id, _ = _record(gateway, patient.address)
    headers = login(gateway, patient)
    body = signed_grant(gateway, patient, doctor.address, scope_id=bytes.fromhex(record_id[2:]))
    relay(gateway, headers, body)
    again = gateway.client.post("/v1/consents", headers=headers, json=body)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "contract_invalid_account_nonce"


def test_upload_over_the_limit_is_413(gateway: Stack) -> None:
    limit = gateway.settings.max_upload_bytes
    r = gateway.client.post(
        "/v1/records",
        headers=login(gateway, gateway.centre),
        files={"file": ("big.bin", b"\0" * (limit + 100_000), "application/octet-stream")},
        data={
            "patient": new_account().address,
            "category": "x",
            "issued_at": "1",
            "signature": "0x",
        },
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"


def test_healthz_metrics_and_openapi(gateway: Stack) -> None:
    r = gateway.client.get("/healthz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["chain_id"] == 31337
    assert body["contract"] == gateway.registry.address
    assert body["ipfs_node_id"]
    assert body["database"].startswith("ok")
    metrics = gateway.client.get("/metrics")
    assert metrics.status_code == 200
    # The name is in the text from the start (HELP and TYPE lines): the /healthz call above
    # must be a counted sample.
    healthz = [
        sample.value
        for family in text_string_to_metric_families(metrics.text)
        for sample in family.samples
        if sample.name == "gateway_http_requests_total"
        and sample.labels == {"method": "GET", "route": "/healthz", "status": "200"}
    ]
    assert healthz, metrics.text
    assert healthz[0] >= 1
    spec = gateway.client.get("/openapi.json").json()
    for path in (
        "/v1/auth/nonce",
        "/v1/auth/login",
        "/v1/records",
        "/v1/records/{record_id}",
        "/v1/consents",
        "/v1/access-log/checkpoint",
        "/v1/access-log/entries",
        "/v1/access-log/consistency",
        "/healthz",
        "/metrics",
    ):
        assert path in spec["paths"], path
    fetch = spec["paths"]["/v1/records/{record_id}"]["get"]["responses"]
    assert {"200", "403", "502", "503"} <= set(fetch)
    denied = fetch["403"]["content"]["application/json"]
    assert denied["examples"]["consent_denied"]["value"]["error"]["code"] == "consent_denied"
    assert "consent_denied" in denied["schema"]["properties"]["error"]["properties"]["code"]["enum"]
