"""The patient's flows in real Chromium against the real stack: records, grant (keyboard only,
EIP-712 shown with readable strings, relayed), who can read each record, who read it with proofs
verified in the browser against the chain's checkpoint, receipts (validated FHIR R5, Kantara),
one-tap revoke (keyboard only) confirmed by the chain, the denial shown, break-glass shown and
closed, zh-CN at phone size, and each API failure shown as one plain sentence."""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from playwright.sync_api import Page, expect
from sqlalchemy import delete

from gateway.storage.tables import AUTH_SESSION
from ledger.audit.receipts import consent_r5, kantara_receipt, validate_r5
from ledger.protocol.consent_types import EMERGENCY_ROLE, ScopeKind, category_id
from tests.helpers.gateway import (
    Stack,
    funded_account,
    login,
    new_account,
    relay,
    signed_grant,
    upload,
)
from tests.helpers.portal import (
    PHONE,
    PORTAL_AUDITOR,
    PORTAL_QUOTA,
    check_page,
    download_json,
    go,
    message,
    open_portal,
    sign_in,
    tab_to,
    wait_until,
)

LAB = category_id("laboratory")


def _records(stack: Stack, patient: LocalAccount) -> tuple[str, str]:
    headers = login(stack, stack.centre)
    ids = []
    for category in ("laboratory", "imaging"):
        data = f"{category} result {secrets.token_hex(8)}".encode()
        r = upload(stack, headers, patient=patient.address, data=data, category=category)
        assert r.status_code in (200, 201), r.text
        ids.append(r.json()["record_id"])
    return ids[0], ids[1]


def _anchored(stack: Stack) -> None:
    """Wait until the gateway's whole log is anchored on the chain."""
    gateway = stack.gateway_account.address
    wait_until(
        lambda: stack.registry.checkpoint_of(gateway).tree_size >= stack.state.access_log.size,
        what="the access log to be anchored",
    )


def _entries(page: Page, requester: str, decision: str) -> Any:
    return page.locator(
        f"[data-testid=access-entry][data-requester='{requester.lower()}'][data-decision={decision}]"
    )


def test_grant_read_verified_receipts_revoke_denied(
    chromium: Any, portal_stack: Stack, portal_artifacts: Path
) -> None:
    stack = portal_stack
    patient, doctor, insurer = new_account(), new_account(), new_account()
    lab, imaging = _records(stack, patient)
    context, page, wallet = open_portal(chromium, stack, patient)
    try:
        sign_in(page)
        expect(page.locator(f"tr[data-record='{lab}']")).to_contain_text("laboratory")
        expect(page.locator(f"tr[data-record='{imaging}']")).to_contain_text("Only you")
        check_page(page, portal_artifacts, "records-desktop")

        # Grant, keyboard only: the doctor, laboratory results, treatment, 30 days.
        go(page, "grant")
        tab_to(page, "#grantee")
        page.keyboard.type(doctor.address)
        tab_to(page, "#grant-review")
        page.keyboard.press("Enter")
        typed = page.get_by_test_id("typed-data")
        expect(typed.locator("tr", has_text="domain")).to_contain_text("ConsentLedger v1")
        expect(typed.locator("tr", has_text="purposes")).to_contain_text("treatment")
        expect(typed.locator("tr", has_text="scopeId")).to_contain_text("laboratory")
        expect(typed.locator("tr", has_text="scopeKind")).to_contain_text("A category of records")
        check_page(page, portal_artifacts, "grant-desktop")
        assert page.evaluate("document.activeElement.id") == "grant-sign"
        page.keyboard.press("Enter")
        assert message(page).startswith("Granted. The chain (block ")
        signed = wallet.signed_typed[-1]
        assert signed["primaryType"] == "GrantConsent"
        assert signed["message"]["purposes"] == 1
        assert signed["message"]["scopeKind"] == 1
        terms = stack.registry.consent_of(patient.address, doctor.address, ScopeKind.CATEGORY, LAB)
        assert terms.purposes == 1

        go(page, "records")
        lab_row = page.locator(f"tr[data-record='{lab}']")
        expect(lab_row.locator(f"[data-address='{doctor.address}']")).to_be_visible()
        expect(page.locator(f"tr[data-record='{imaging}']")).to_contain_text("Only you")

        # The doctor reads; the insurer is refused; both appear, verified in the browser.
        r = stack.client.get(f"/v1/records/{lab}?purpose=treatment", headers=login(stack, doctor))
        assert r.status_code == 200, r.text
        r = stack.client.get(f"/v1/records/{lab}?purpose=insurance", headers=login(stack, insurer))
        assert r.status_code == 403, r.text
        _anchored(stack)
        go(page, "who-read")
        allowed = _entries(page, doctor.address, "allowed")
        expect(allowed.get_by_test_id("proof-verified")).to_be_visible()
        expect(allowed).to_contain_text("treatment")
        expect(allowed).to_contain_text("consent")
        denied = _entries(page, insurer.address, "denied")
        expect(denied.get_by_test_id("proof-verified")).to_be_visible()
        expect(denied).to_contain_text("no consent")
        expect(page.get_by_test_id("checkpoint")).to_contain_text("Checked in this browser")
        check_page(page, portal_artifacts, "who-read-desktop")

        # Receipts: the browser's documents equal the reference ones; FHIR R5 validates.
        go(page, "consents")
        row = page.locator(f"tr[data-grantee='{doctor.address}']")
        receipt = download_json(page, lambda: row.get_by_test_id("receipt-json").click())
        fhir = download_json(page, lambda: row.get_by_test_id("receipt-fhir").click())
        listed = login(stack, patient)
        consents = stack.client.get("/v1/consents", headers=listed).json()
        (mine,) = [c for c in consents["granted"] if c["grantee"] == doctor.address]
        context_args = {
            "chain_id": int(stack.w3.eth.chain_id),
            "registry": stack.registry.address,
            "block_number": int(fhir["meta"]["tag"][0]["code"]),  # the block the page listed at
        }
        validate_r5(fhir)
        assert fhir == consent_r5(mine, **context_args)
        block_time = int(stack.w3.eth.get_block(context_args["block_number"])["timestamp"])
        assert receipt == kantara_receipt(
            mine, **context_args, block_time=block_time, language="en"
        )
        assert fhir["status"] == "active"
        assert receipt["evidence"]["status"] == "active"
        check_page(page, portal_artifacts, "consents-desktop")

        # One-tap revoke, keyboard only; the confirmation is the chain's own answer.
        tab_to(page, f"tr[data-grantee='{doctor.address}'] [data-testid=revoke]")
        page.keyboard.press("Enter")
        text = message(page)
        assert text.startswith("Revoked. The chain itself (block ")
        assert "consentOf: no consent (purposes 0, expiry 0)." in text
        assert wallet.signed_typed[-1]["primaryType"] == "RevokeConsent"
        terms = stack.registry.consent_of(patient.address, doctor.address, ScopeKind.CATEGORY, LAB)
        assert terms.purposes == 0

        # The doctor is now refused, and that appears too.
        r = stack.client.get(f"/v1/records/{lab}?purpose=treatment", headers=login(stack, doctor))
        assert r.status_code == 403, r.text
        _anchored(stack)
        go(page, "who-read")
        expect(
            _entries(page, doctor.address, "denied").get_by_test_id("proof-verified")
        ).to_be_visible()
        expect(_entries(page, doctor.address, "allowed")).to_have_count(1)
    finally:
        context.close()


def test_break_glass_opening_is_highlighted_and_closed_from_the_wallet(
    chromium: Any, portal_stack: Stack, portal_artifacts: Path
) -> None:
    stack = portal_stack
    patient = funded_account(stack.w3)  # closing is a transaction the patient pays for
    institution = funded_account(stack.w3)
    _records(stack, patient)
    stack.registry.reset_nonces()
    stack.registry.grant_role(stack.admin, EMERGENCY_ROLE, institution.address)
    stack.registry.open_break_glass(institution, patient.address, 3600, secrets.token_bytes(32))
    context, page, wallet = open_portal(chromium, stack, patient)
    try:
        sign_in(page)
        expect(page.locator("td", has_text="emergency")).to_have_count(2)  # both records
        go(page, "who-read")
        opening = page.get_by_test_id("break-glass")
        expect(opening).to_have_attribute("data-open", "true")
        expect(opening).to_contain_text("OPEN")
        expect(opening.locator(f"[data-address='{institution.address}']")).to_be_visible()
        expect(opening).to_contain_text("Window:")
        check_page(page, portal_artifacts, "break-glass-desktop")
        opening.get_by_test_id("close-break-glass").click()
        text = message(page)
        assert text.startswith("Closed. The chain (block ")
        assert f"the opening by {institution.address} ended" in text
        assert len(wallet.sent) == 1
        assert stack.registry.break_glass_until(patient.address, institution.address) == 0
        expect(page.get_by_test_id("break-glass")).to_have_attribute("data-open", "false")
    finally:
        context.close()


def test_zh_cn_at_phone_size_every_page_accessible(
    chromium: Any, portal_stack: Stack, portal_artifacts: Path
) -> None:
    stack = portal_stack
    patient, doctor = new_account(), new_account()
    lab, _ = _records(stack, patient)
    headers = login(stack, patient)
    relay(
        stack,
        headers,
        signed_grant(stack, patient, doctor.address, scope_kind=ScopeKind.CATEGORY, scope_id=LAB),
    )
    r = stack.client.get(f"/v1/records/{lab}?purpose=treatment", headers=login(stack, doctor))
    assert r.status_code == 200, r.text
    _anchored(stack)
    context, page, _ = open_portal(chromium, stack, patient, viewport=PHONE)
    try:
        page.select_option("#lang", "zh-CN")
        expect(page.get_by_role("heading", name="登录")).to_be_visible()
        assert page.evaluate("document.documentElement.lang") == "zh-CN"
        check_page(page, portal_artifacts, "signin-phone-zh")
        page.get_by_role("button", name="用钱包登录").click()
        expect(page.get_by_test_id("signed-in")).to_be_visible()
        expect(page.get_by_role("heading", name="我的记录")).to_be_visible()
        # Dates in the chosen locale: 2026年12月1日, not Dec 1, 2026.
        expect(page.locator(f"tr[data-record='{lab}']")).to_contain_text(
            re.compile(r"\d{4}年\d{1,2}月\d{1,2}日")
        )
        expect(page.locator(f"tr[data-record='{lab}']")).to_contain_text("化验")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        check_page(page, portal_artifacts, "records-phone-zh")
        for route, name in (
            ("grant", "授权访问"),
            ("consents", "我的授权"),
            ("upload", "为患者上传结果"),
            ("who-read", "谁查看了我的记录"),
        ):
            go(page, route)
            expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible()
            assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], route
            check_page(page, portal_artifacts, f"{route}-phone-zh")
        expect(page.get_by_test_id("proof-verified").first).to_have_text("✓ 已验证")
        page.select_option("#lang", "en")
        expect(page.get_by_role("heading", name="Who read my records")).to_be_visible()
        check_page(page, portal_artifacts, "who-read-phone")
    finally:
        context.close()


def test_api_failures_are_one_plain_sentence_with_what_to_do(
    chromium: Any, portal_stack: Stack, anvil: Any
) -> None:
    stack = portal_stack
    patient = new_account()
    _records(stack, patient)
    headers = login(stack, patient)
    for _ in range(PORTAL_QUOTA):  # the patient's relays for this hour, used up
        grantee = new_account().address
        relay(
            stack,
            headers,
            signed_grant(stack, patient, grantee, scope_kind=ScopeKind.CATEGORY, scope_id=LAB),
        )
    context, page, _ = open_portal(chromium, stack, patient)
    try:
        sign_in(page)
        # Quota reached.
        go(page, "grant")
        page.fill("#grantee", new_account().address)
        page.get_by_role("button", name="Review").click()
        page.get_by_role("button", name="Sign and grant").click()
        assert re.fullmatch(
            rf"You reached this gateway's limit of {PORTAL_QUOTA} relayed changes per hour\. "
            r"Try again in \d+ minutes\.",
            message(page, "error"),
        )
        # Chain down (as the browser sees it).
        page.route(re.compile(re.escape(anvil.url) + ".*"), lambda route: route.abort())
        go(page, "who-read")
        assert message(page, "error") == (
            "The blockchain node cannot be reached, so nothing can be checked. Try again in a "
            "few minutes; if it lasts, tell the gateway operator."
        )
        page.unroute(re.compile(re.escape(anvil.url) + ".*"))
        # Session expired: the gateway no longer holds it.
        with stack.state.engine.begin() as conn:
            conn.execute(delete(AUTH_SESSION).where(AUTH_SESSION.c.address == patient.address))
        stack.state.auth._cache.clear()
        page.evaluate("() => { window.location.hash = '#/consents' }")
        assert message(page, "error") == "Your session has ended. Sign in again to continue."
        expect(page.get_by_role("button", name="Sign in with wallet")).to_be_visible()
    finally:
        context.close()


def test_auditor_sees_each_gateway_checkpoint_from_the_chain_and_downloads_the_log(
    chromium: Any, portal_stack: Stack, portal_artifacts: Path
) -> None:
    stack = portal_stack
    patient = new_account()
    lab, _ = _records(stack, patient)
    own = stack.client.get(f"/v1/records/{lab}?purpose=treatment", headers=login(stack, patient))
    assert own.status_code == 200, own.text  # a decision in the log, anchored below
    _anchored(stack)
    context, page, _ = open_portal(chromium, stack, PORTAL_AUDITOR)
    try:
        sign_in(page)
        go(page, "auditor")
        gateway = stack.gateway_account.address
        row = page.locator(f"tr[data-gateway='{gateway}']")
        expect(row).to_contain_text("this gateway")
        anchored = stack.registry.checkpoint_of(gateway).tree_size
        expect(row.get_by_test_id("anchored-size")).to_have_text(f"{anchored:,}")
        check_page(page, portal_artifacts, "auditor-desktop")
        export = download_json(page, lambda: page.click("#download-export"))
        assert export["format"] == "consent-ledger/access-log"
        assert export["gateway"] == gateway
        assert len(export["entries"]) >= anchored
    finally:
        context.close()
    context, page, _ = open_portal(chromium, stack, patient)
    try:
        sign_in(page)
        go(page, "auditor")
        page.click("#download-export")
        assert message(page, "error").startswith("This account may not do that here")
    finally:
        context.close()


def test_a_guardian_grants_for_the_patient_clearly_labelled(
    chromium: Any, portal_stack: Stack
) -> None:
    stack = portal_stack
    patient, guardian, doctor = funded_account(stack.w3), new_account(), new_account()
    stack.registry.set_guardian(patient, guardian.address)
    context, page, wallet = open_portal(chromium, stack, guardian)
    try:
        sign_in(page)
        go(page, "grant")
        page.fill("#acting-for", new_account().address)  # not their guardian: refused
        page.fill("#grantee", doctor.address)
        page.get_by_role("button", name="Review").click()
        assert message(page, "error").startswith("The chain does not list you as the guardian")
        page.fill("#acting-for", patient.address)
        expect(page.locator("input[name=scope][value=record]")).to_be_disabled()
        page.get_by_role("button", name="Review").click()
        expect(page.locator("#acting-banner")).to_contain_text(
            f"You are acting for patient {patient.address}"
        )
        page.get_by_role("button", name="Sign and grant").click()
        assert message(page).startswith("Granted. The chain (block ")
        signed = wallet.signed_typed[-1]["message"]
        assert signed["patient"] == patient.address
        assert signed["signer"] == guardian.address
        terms = stack.registry.consent_of(patient.address, doctor.address, ScopeKind.CATEGORY, LAB)
        assert terms.purposes == 1
    finally:
        context.close()
