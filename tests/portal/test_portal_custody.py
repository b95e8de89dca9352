"""The centre's upload and opening one's own record under threshold custody, in real
Chromium, against a real 2-of-3 federation. Opening: the portal (served by member 0) signs in
to the members at the URLs the chain lists, takes the manifest and ciphertext from one and a
share from two, checks the manifest against the record id and each share against its
commitment, combines them (npm slip39), decrypts (WebCrypto) and checks the digest against the
chain. Uploading: the browser encrypts and splits, the centre's wallet attests, and the record
opens through the Python client. Attacks performed here: a member that releases a wrong share
is named and the record still opens from the others; manifests the centre did not attest are
passed over and nothing is opened; a grantee is refused until the patient grants; a wallet
user is told in one sentence that opening needs the built-in key; no origin outside the
federation is let through by CORS."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import FilePayload, Page, expect
from web3.types import RPCEndpoint

from ledger.client import Gateway
from ledger.federation import fetch_federated, upload_sealed
from ledger.protocol import custody
from ledger.protocol.consent_types import ScopeKind, category_id
from tests.helpers.federation import Federation
from tests.helpers.gateway import new_account
from tests.helpers.portal import check_page, go, message, open_portal, sign_in

PASSPHRASE = "correct horse battery staple"
LAB = category_id("laboratory")


def _upload(fed: Federation, patient: str, data: bytes) -> str:
    with Gateway(fed.url(0)) as gw:
        session = gw.login(fed.stacks[0].centre)
        up = upload_sealed(session, data, registry=fed.registry, patient=patient, category=LAB)
    assert up.created
    return up.record.record_id


def _built_in_key(page: Page) -> str:
    page.fill("#new-passphrase", PASSPHRASE)
    page.fill("#new-passphrase-2", PASSPHRASE)
    page.click("#create-key")
    signed_in = page.get_by_test_id("signed-in").locator("[data-address]")
    expect(signed_in).to_be_visible()
    return str(signed_in.get_attribute("data-address"))


def _records(page: Page) -> None:
    """The records page, freshly rendered (the records were uploaded after sign-in)."""
    go(page, "consents")
    go(page, "records")


def _open(page: Page, record_id: str) -> bytes:
    _records(page)
    with page.expect_download(timeout=60_000) as info:
        page.locator(f'tr[data-record="{record_id}"] [data-testid="open-record"]').click()
    return Path(info.value.path()).read_bytes()


def test_the_patient_opens_her_record_combined_in_the_browser(
    chromium: Any, portal_federation: Federation, portal_artifacts: Path
) -> None:
    fed = portal_federation
    context, page, wallet = open_portal(chromium, fed.stacks[0], new_account())
    try:
        patient = _built_in_key(page)
        data = b"HbA1c 5.4 %\nfasting glucose 5.1 mmol/L\n" + bytes(range(256))
        rid = _upload(fed, patient, data)
        assert _open(page, rid) == data
        assert (
            message(page)
            == "Record opened: its digest matches the chain; 2 gateways signed you in."
        )
        assert wallet.requests == []  # the built-in key signed every sign-in
        check_page(page, portal_artifacts, "open-record-desktop")
    finally:
        context.close()


def test_a_wrong_share_is_named_and_the_record_opens_from_the_others(
    chromium: Any,
    portal_federation: Federation,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fed = portal_federation
    liar = fed.stacks[0]
    honest_release = liar.state.records.release_share

    def lying_release(principal: Any, record_id: str, purpose: int) -> Any:
        good = honest_release(principal, record_id, purpose)
        other_key = custody.split_key(bytes(range(32)), threshold=2, n=3)[good.index]
        forged = custody.reseal_share(other_key, principal.public_key)
        return good.model_copy(update={"sealed_share": base64.b64encode(forged).decode()})

    context, page, _ = open_portal(chromium, fed.stacks[0], new_account())
    try:
        patient = _built_in_key(page)
        data = b"creatinine 71 umol/L"
        rid = _upload(fed, patient, data)
        monkeypatch.setattr(liar.state.records, "release_share", lying_release)
        assert _open(page, rid) == data
        assert message(page) == (
            f"Record opened: its digest matches the chain. Gateway {liar.gateway_account.address} "
            "sent a key share that does not match its commitment; tell its operator."
        )
    finally:
        context.close()


def test_a_manifest_the_centre_did_not_attest_is_passed_over(
    chromium: Any,
    portal_federation: Federation,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fed = portal_federation
    context, page, _ = open_portal(chromium, fed.stacks[0], new_account())
    try:
        patient = _built_in_key(page)
        data = b"TSH 2.1 mU/L"
        rid = _upload(fed, patient, data)
        # Every member serves a manifest with one commitment changed: nothing may be decrypted.
        for stack in fed.stacks:
            honest_bundle = stack.state.records.custody_bundle

            def forged_bundle(principal: Any, record_id: str, honest: Any = honest_bundle) -> Any:
                bundle = honest(principal, record_id)
                doc = json.loads(base64.b64decode(bundle.manifest))
                doc["members"][0]["commitment"] = "0x" + "00" * 32
                raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
                return bundle.model_copy(update={"manifest": base64.b64encode(raw).decode()})

            monkeypatch.setattr(stack.state.records, "custody_bundle", forged_bundle)
        _records(page)
        page.locator(f'tr[data-record="{rid}"] [data-testid="open-record"]').click()
        assert message(page, "error") == (
            "No gateway served this record as the centre attested it on the chain. Try again later."
        )
    finally:
        context.close()


def test_a_wallet_user_is_told_opening_needs_the_built_in_key(
    chromium: Any, portal_federation: Federation
) -> None:
    fed = portal_federation
    patient = new_account()
    _upload(fed, patient.address, b"ferritin 80 ug/L")
    context, page, _ = open_portal(chromium, fed.stacks[0], patient)
    try:
        sign_in(page)
        go(page, "records")
        expect(page.get_by_test_id("open-needs-key")).to_have_text(
            "Opening a record needs the built-in key: a wallet cannot open the key shares the "
            "gateways seal to your account, so sign in with the built-in key to open your records."
        )
        expect(page.get_by_test_id("open-record")).to_have_count(0)
    finally:
        context.close()


def test_cors_lets_through_the_federation_members_origins_only(
    portal_federation: Federation,
) -> None:
    fed = portal_federation
    member = fed.url(1).rstrip("/")
    portal_origin = fed.url(0).rstrip("/")
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    with httpx.Client(timeout=10) as http:
        ok = http.options(f"{member}/v1/auth/nonce", headers={"Origin": portal_origin, **preflight})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == portal_origin
        assert "access-control-allow-credentials" not in ok.headers
        evil = http.options(
            f"{member}/v1/auth/nonce", headers={"Origin": "http://evil.example", **preflight}
        )
        assert evil.status_code == 400
        assert "access-control-allow-origin" not in evil.headers
        plain = http.post(f"{member}/v1/auth/nonce", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in plain.headers
        csp = http.get(f"{portal_origin}/portal/").headers["content-security-policy"]
        connect = next(d for d in csp.split("; ") if d.startswith("connect-src"))
        for i in range(3):
            assert fed.url(i).rstrip("/") in connect.split()


def test_the_centre_uploads_from_the_browser_and_the_record_opens_with_the_client(
    chromium: Any, portal_federation: Federation, portal_artifacts: Path
) -> None:
    fed = portal_federation
    centre = fed.stacks[0].centre
    patient = new_account()
    data = b"LDL 2.9 mmol/L\n" + bytes(range(256)) * 64  # 16 KiB and a line
    context, page, wallet = open_portal(chromium, fed.stacks[0], centre)
    try:
        sign_in(page)
        go(page, "upload")
        page.fill("#upload-patient", patient.address)
        page.select_option("#upload-category", "laboratory")
        page.set_input_files(
            "#upload-file",
            files=[FilePayload(name="ldl.txt", mimeType="text/plain", buffer=data)],
        )
        page.click("#upload-send")
        done = message(page)
        rid = str(page.locator("#status").get_attribute("data-record"))
        assert done == f"Uploaded and registered on the chain as record {rid}."
        assert page.locator("#upload-progress").evaluate("(e) => e.value") == 1
        assert "eth_signTypedData_v4" in [method for method, _ in wallet.requests]
        check_page(page, portal_artifacts, "centre-upload-desktop")
    finally:
        context.close()
    opened = fetch_federated(patient, rid, registry=fed.registry, purpose="treatment")
    assert opened.plaintext == data
    assert opened.bad_gateways == []


def test_a_grantee_opens_a_shared_record_only_once_consent_is_granted(
    chromium: Any, portal_federation: Federation
) -> None:
    fed = portal_federation
    patient = new_account()
    data = b"INR 1.0"
    rid = _upload(fed, patient.address, data)
    context, page, _ = open_portal(chromium, fed.stacks[0], new_account())
    try:
        doctor = _built_in_key(page)
        _records(page)
        page.fill("#shared-record", rid)
        page.click("#shared-open")
        assert message(page, "error") == (
            "You hold no consent for this record. Ask the patient to grant it."
        )
        fed.registry.reset_nonces()
        fed.registry.w3.provider.make_request(
            RPCEndpoint("anvil_setBalance"), [patient.address, hex(10**20)]
        )
        fed.registry.grant(patient, doctor, ScopeKind.CATEGORY, LAB, 1, 2**40)
        with page.expect_download(timeout=60_000) as info:
            page.click("#shared-open")
        assert Path(info.value.path()).read_bytes() == data
        assert message(page).startswith("Record opened: its digest matches the chain")
    finally:
        context.close()
