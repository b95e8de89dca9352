"""The portal does not take a gateway's word for facts the chain holds: a gateway (played by a
proxy in front of the real one, in the browser) that rewrites a logged decision gets a "NOT
verified" badge, and one that claims a revoke it never sent gets the chain's answer."""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from playwright.sync_api import Route, expect

from ledger.protocol.consent_types import ScopeKind, category_id
from tests.helpers.gateway import Stack, login, new_account, relay, signed_grant, upload
from tests.helpers.portal import go, message, open_portal, sign_in, wait_until

LAB = category_id("laboratory")


def _granted_and_read(stack: Stack) -> tuple[Any, Any, str]:
    patient, doctor = new_account(), new_account()
    data = f"laboratory result {secrets.token_hex(8)}".encode()
    r = upload(stack, login(stack, stack.centre), patient=patient.address, data=data)
    assert r.status_code in (200, 201), r.text
    record = r.json()["record_id"]
    grant = signed_grant(
        stack, patient, doctor.address, scope_kind=ScopeKind.CATEGORY, scope_id=LAB
    )
    relay(stack, login(stack, patient), grant)
    read = stack.client.get(f"/v1/records/{record}?purpose=treatment", headers=login(stack, doctor))
    assert read.status_code == 200, read.text
    gateway = stack.gateway_account.address
    wait_until(
        lambda: stack.registry.checkpoint_of(gateway).tree_size >= stack.state.access_log.size,
        what="the access log to be anchored",
    )
    return patient, doctor, record


def test_a_rewritten_log_entry_is_not_verified(chromium: Any, portal_stack: Stack) -> None:
    patient, doctor, _ = _granted_and_read(portal_stack)
    context, page, _ = open_portal(chromium, portal_stack, patient)

    def rewrite(route: Route) -> None:
        response = route.fetch()
        body = response.json()
        for entry in body["entries"]:  # "treatment" becomes "public health", proof unchanged
            entry["leaf"] = entry["leaf"].replace('"purpose":0', '"purpose":3')
        route.fulfill(response=response, body=json.dumps(body))

    try:
        sign_in(page)
        page.route(re.compile(r".*/v1/access-log/entries.*"), rewrite)
        go(page, "who-read")
        entry = page.locator(
            f"[data-testid=access-entry][data-requester='{doctor.address.lower()}']"
        )
        expect(entry).to_contain_text("public health")
        expect(entry.get_by_test_id("proof-failed")).to_have_text("✗ NOT verified")
        expect(page.get_by_test_id("proof-verified")).to_have_count(0)
    finally:
        context.close()


def test_a_revoke_the_gateway_claims_but_never_sent_is_caught(
    chromium: Any, portal_stack: Stack
) -> None:
    stack = portal_stack
    patient, doctor, _ = _granted_and_read(stack)
    context, page, wallet = open_portal(chromium, stack, patient)

    def swallow(route: Route) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        fake = {"action": "revoke", "tx_hash": "0x" + "ab" * 32, "block_number": 1,
                "status": "mined", "gas_used": 31_206}  # fmt: skip
        route.fulfill(status=200, content_type="application/json", body=json.dumps(fake))

    try:
        sign_in(page)
        page.route(re.compile(r".*/v1/consents$"), swallow)
        go(page, "consents")
        page.locator(f"tr[data-grantee='{doctor.address}'] [data-testid=revoke]").click()
        assert message(page, "error") == (
            "The gateway reported success, but the chain does not show the change yet. Reload in "
            "a minute; if it stays, revoke from your own wallet."
        )
        assert wallet.signed_typed[-1]["primaryType"] == "RevokeConsent"  # signed, not sent
        terms = stack.registry.consent_of(patient.address, doctor.address, ScopeKind.CATEGORY, LAB)
        assert terms.purposes == 1
    finally:
        context.close()
