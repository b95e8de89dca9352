"""The portal's sign-in in real Chromium: SIWE with an injected wallet, the domain of the page's
origin, the session in memory only; the CSP the gateway serves it under; its config."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from playwright.sync_api import expect

from gateway.portal_static import mount_portal
from tests.helpers.gateway import Stack, new_account
from tests.helpers.portal import (
    PHONE,
    check_page,
    message,
    open_portal,
    sign_in,
    tab_to,
)


def test_portal_is_served_under_a_strict_csp_with_its_trust_anchors(portal_stack: Stack) -> None:
    page = portal_stack.client.get("/portal/")
    assert page.status_code == 200
    assert 'src="/portal/assets/' in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert f"connect-src 'self' {portal_stack.settings.chain_url}" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    config = portal_stack.client.get("/portal/config.json").json()
    assert config == {
        "chain_id": int(portal_stack.w3.eth.chain_id),
        "registry": portal_stack.registry.address,
        "deploy_block": portal_stack.settings.deployment_block(),
        "chain_rpc_url": portal_stack.settings.chain_url,
        "siwe_domain": portal_stack.settings.siwe_domain,
        "siwe_uri": portal_stack.settings.siwe_uri,
    }
    assert portal_stack.client.get("/portal").status_code == 308
    # Not part of the API: the committed OpenAPI schema stays as it is.
    assert not any(
        p.startswith("/portal") for p in portal_stack.client.get("/openapi.json").json()["paths"]
    )


def test_a_portal_not_built_answers_503_with_the_command_to_run(
    portal_stack: Stack, tmp_path: Path
) -> None:
    app = FastAPI()
    mount_portal(app, portal_stack.settings.model_copy(update={"portal_dir": tmp_path}))

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/portal/")

    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API holds this thread's loop
        r = pool.submit(asyncio.run, get()).result()
    assert r.status_code == 503
    assert "make install" in r.text
    assert "content-security-policy" in r.headers


def test_a_remote_chain_url_is_never_handed_to_browsers(portal_stack: Stack) -> None:
    from gateway.portal_static import portal_chain_url

    remote = portal_stack.settings.model_copy(
        update={"chain_url": "https://rpc.example.org/v3/SECRET-KEY", "portal_chain_url": None}
    )
    assert portal_chain_url(remote) is None
    public = remote.model_copy(update={"portal_chain_url": "https://public-rpc.example.org"})
    assert portal_chain_url(public) == "https://public-rpc.example.org"


def test_an_inline_script_is_refused_by_the_csp(chromium: Any, portal_stack: Stack) -> None:
    context, page, _ = open_portal(chromium, portal_stack, new_account())
    try:
        expect(page.get_by_role("button", name="Sign in with wallet")).to_be_visible()
        page.evaluate(
            """() => { const s = document.createElement('script');
                       s.textContent = 'window.__injected = true';
                       document.body.append(s); }"""
        )
        page.wait_for_function("window.__cspViolations.length > 0")
        assert page.evaluate("window.__injected") is None
        assert "script-src" in page.evaluate("window.__cspViolations[0]")
    finally:
        context.close()


def test_keyboard_sign_in_with_siwe_for_the_page_origin_session_in_memory_only(
    chromium: Any, portal_stack: Stack, portal_artifacts: Path
) -> None:
    patient = new_account()
    context, page, wallet = open_portal(chromium, portal_stack, patient)
    try:
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        check_page(page, portal_artifacts, "signin-desktop")
        tab_to(page, "#sign-in")
        page.keyboard.press("Enter")
        expect(page.get_by_test_id("signed-in")).to_contain_text(patient.address[:6])
        (siwe,) = wallet.signed_messages
        host = f"127.0.0.1:{portal_stack.client.base_url.port}"
        assert siwe.startswith(f"{host} wants you to sign in with your Ethereum account:\n")
        assert f"\n{patient.address}\n" in siwe
        assert f"\nURI: http://{host}\n" in siwe
        assert f"\nChain ID: {int(portal_stack.w3.eth.chain_id)}\n" in siwe
        stored = page.evaluate(
            """async () => ({
                local: JSON.stringify(localStorage), session: JSON.stringify(sessionStorage),
                cookie: document.cookie,
                dbs: (await indexedDB.databases()).map((d) => d.name) })"""
        )
        assert stored["session"] == "{}"
        assert stored["cookie"] == ""
        assert stored["dbs"] == []
        assert "token" not in stored["local"].lower()
        page.reload()
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()  # memory only
    finally:
        context.close()


def test_sign_in_from_another_origin_is_refused_before_the_wallet_signs(
    chromium: Any, portal_stack: Stack
) -> None:
    context, page, wallet = open_portal(chromium, portal_stack, new_account(), host="localhost")
    try:
        sign_in_button = page.get_by_role("button", name="Sign in with wallet")
        sign_in_button.click()
        text = message(page, "error")
        port = portal_stack.client.base_url.port
        assert f"open at localhost:{port}" in text
        assert f"Open the portal at http://127.0.0.1:{port}/portal/ instead." in text
        assert wallet.signed_messages == []
        assert "personal_sign" not in [m for m, _ in wallet.requests]
    finally:
        context.close()


def test_a_wallet_on_another_network_is_told_to_switch(chromium: Any, portal_stack: Stack) -> None:
    context, page, wallet = open_portal(chromium, portal_stack, new_account(), viewport=PHONE)
    wallet.reported_chain_id = 1
    wallet.can_switch = False
    try:
        page.get_by_role("button", name="Sign in with wallet").click()
        chain_id = int(portal_stack.w3.eth.chain_id)
        assert message(page, "error") == (
            f"Your wallet is on network 1, but this portal works on network {chain_id}. "
            f"Switch your wallet to network {chain_id} and try again."
        )
        assert wallet.signed_messages == []
    finally:
        context.close()


def test_a_declined_signature_says_nothing_changed(chromium: Any, portal_stack: Stack) -> None:
    context, page, wallet = open_portal(chromium, portal_stack, new_account())
    wallet.reject_next.add("personal_sign")
    try:
        page.get_by_role("button", name="Sign in with wallet").click()
        assert message(page, "error").startswith("You declined the request in your wallet.")
        sign_in(page)  # and a second try works
    finally:
        context.close()
