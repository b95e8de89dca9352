"""Helpers for the portal's browser tests: a page with the test wallet, sign-in, keyboard-only
navigation, axe-core, CSP violations, screenshots, downloads.

axe-core is the npm package in ``gateway/portal/node_modules`` (a dev dependency of the
portal), evaluated in the page through the DevTools protocol: the portal's CSP refuses an
inline ``<script>``, which is the point of it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from playwright.sync_api import Browser, BrowserContext, Page, expect

from ledger.chain.node import dev_accounts
from ledger.paths import PROJECT_ROOT
from tests.helpers.gateway import Stack
from tests.helpers.wallet import TestWallet

CHROMIUM = Path(os.environ.get("CONSENT_CHROMIUM", "/usr/bin/chromium"))
PORTAL_DIST = PROJECT_ROOT / "gateway" / "portal" / "dist"
PORTAL_QUOTA = 6  # the portal gateway's relays per patient per hour
PORTAL_AUDITOR = dev_accounts()[9]  # the local chain's `auditor` account, in CONSENT_AUDITORS
AXE = PROJECT_ROOT / "gateway" / "portal" / "node_modules" / "axe-core" / "axe.min.js"
DOCS_SCREENSHOTS = PROJECT_ROOT / "docs" / "portal"
PHONE = {"width": 360, "height": 740}
DESKTOP = {"width": 1280, "height": 860}

CSP_RECORDER = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI);
});
"""


def open_portal(
    browser: Browser,
    stack: Stack,
    account: LocalAccount,
    *,
    viewport: dict[str, int] | None = None,
    host: str = "127.0.0.1",
    locale: str = "en-US",
) -> tuple[BrowserContext, Page, TestWallet]:
    """A fresh browser context with the test wallet for ``account``, at the portal."""
    context = browser.new_context(
        viewport=viewport or DESKTOP, locale=locale, accept_downloads=True, timezone_id="UTC"
    )
    context.set_default_timeout(15_000)
    wallet = TestWallet(account=account, w3=stack.w3, chain_id=int(stack.w3.eth.chain_id))
    wallet.install(context)
    context.add_init_script(CSP_RECORDER)
    page = context.new_page()
    port = stack.client.base_url.port
    page.goto(f"http://{host}:{port}/portal/")
    return context, page, wallet


def sign_in(page: Page) -> None:
    page.get_by_role("button", name="Sign in with wallet").click()
    expect(page.get_by_test_id("signed-in")).to_be_visible()


def go(page: Page, route: str) -> None:
    """Open a page of the portal by its navigation link and wait until it has loaded."""
    page.evaluate("(r) => { window.location.hash = '#/' + r }", route)
    page.wait_for_selector("main section:not([aria-busy])")


def tab_to(page: Page, selector: str, *, limit: int = 80) -> None:
    """Press Tab until the element matching ``selector`` has the focus (keyboard only)."""
    for _ in range(limit):
        if page.evaluate("(s) => document.activeElement?.matches(s) ?? false", selector):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"{selector} cannot be reached with the Tab key")


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now (WCAG 2.1 AA)."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text(encoding="utf-8") + "\n;true")
    result = page.evaluate(
        """async () => {
            const r = await window.axe.run(document, {
              runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] },
            });
            return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
              nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 5) }));
        }"""
    )
    return [v for v in result if v["impact"] in ("serious", "critical")]


def check_page(page: Page, artifacts: Path, name: str) -> None:
    """No serious/critical axe violation, no CSP violation, and a screenshot saved."""
    violations = axe_violations(page)
    assert violations == [], json.dumps(violations, indent=1)
    assert page.evaluate("window.__cspViolations") == []
    screenshot(page, artifacts, name)


def screenshot(page: Page, artifacts: Path, name: str) -> Path:
    path = artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("CONSENT_UPDATE_DOCS_SCREENSHOTS"):
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOCS_SCREENSHOTS / path.name)
    return path


def download_json(page: Page, click: Callable[[], None]) -> Any:
    with page.expect_download() as info:
        click()
    path = info.value.path()
    return json.loads(Path(path).read_text(encoding="utf-8"))


def message(page: Page, kind: str = "ok") -> str:
    """The message shown once the page is done (a busy message ends with an ellipsis)."""
    locator = page.get_by_test_id(f"message-{kind}")
    expect(locator).to_have_text(re.compile(r".*[^…]$"), timeout=30_000)
    return str(locator.inner_text())


def wait_until(check: Callable[[], bool], *, timeout_s: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
