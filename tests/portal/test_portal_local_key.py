"""The built-in key in real Chromium: made in the browser, stored in IndexedDB encrypted with a
passphrase (WebCrypto), refused with a wrong passphrase, signing in with SIWE like a wallet, and
exported as an Ethereum keyfile that `consent key import` reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eth_account import Account
from playwright.sync_api import expect
from typer.testing import CliRunner

from ledger.cli.main import app
from tests.helpers.gateway import Stack, new_account
from tests.helpers.portal import check_page, download_json, message, open_portal

PASSPHRASE = "correct horse battery staple"

STORED = """async () => {
  const db = await new Promise((ok, err) => {
    const r = indexedDB.open('consent-portal');
    r.onsuccess = () => ok(r.result); r.onerror = err });
  const row = await new Promise((ok) => {
    const r = db.transaction('keys').objectStore('keys').get('default');
    r.onsuccess = () => ok(r.result) });
  db.close();
  const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return { address: row.address, ciphertext: hex(row.ciphertext), iterations: row.iterations };
}"""


def test_built_in_key_with_passphrase_keyfile_export_and_wrong_passphrase(
    chromium: Any, portal_stack: Stack, portal_artifacts: Path, tmp_path: Path
) -> None:
    context, page, wallet = open_portal(chromium, portal_stack, new_account())
    try:
        page.fill("#new-passphrase", PASSPHRASE)
        page.fill("#new-passphrase-2", PASSPHRASE + "!")
        page.click("#create-key")
        refused = message(page, "error")
        assert refused == "The two passphrases differ. Type the same passphrase twice."
        page.fill("#new-passphrase-2", PASSPHRASE)
        page.click("#create-key")
        signed_in = page.get_by_test_id("signed-in").locator("[data-address]")
        expect(signed_in).to_be_visible()
        address = signed_in.get_attribute("data-address")
        assert wallet.requests == []  # the injected wallet was never asked

        keyfile = download_json(page, lambda: page.click("#export-key"))
        private_key = Account.decrypt(keyfile, PASSPHRASE)
        assert Account.from_key(private_key).address == address
        stored = page.evaluate(STORED)
        assert stored["address"] == address
        assert stored["iterations"] == 600_000
        assert private_key.hex().removeprefix("0x") not in stored["ciphertext"]
        key_file = tmp_path / "portal-key.json"
        key_file.write_text(json.dumps(keyfile))
        imported = CliRunner().invoke(
            app,
            ["key", "import", "from-portal", "--key-file", str(key_file), "--home", str(tmp_path)],
            input=PASSPHRASE + "\n",
            env={"CONSENT_PASSWORD": "another keystore password"},
        )
        assert imported.exit_code == 0, imported.output
        assert address in imported.output

        # A new visit: the stored key is offered; a wrong passphrase is refused.
        page.reload()
        expect(page.locator(".local [data-address]")).to_have_attribute("data-address", address)
        check_page(page, portal_artifacts, "signin-built-in-key-desktop")
        page.fill("#passphrase", "not the passphrase")
        page.click("#unlock")
        assert message(page, "error") == (
            "That passphrase does not unlock the key in this browser. Check it and try again."
        )
        expect(page.get_by_test_id("signed-in")).to_have_count(0)
        page.fill("#passphrase", PASSPHRASE)
        page.keyboard.press("Enter")
        expect(page.get_by_test_id("signed-in").locator("[data-address]")).to_have_attribute(
            "data-address", address
        )
    finally:
        context.close()


def test_a_keyfile_of_consent_key_new_is_imported_into_the_browser(
    chromium: Any, portal_stack: Stack, tmp_path: Path
) -> None:
    created = CliRunner().invoke(
        app,
        ["key", "new", "alice", "--home", str(tmp_path), "--json"],
        env={"CONSENT_PASSWORD": PASSPHRASE},
    )
    assert created.exit_code == 0, created.output
    address = json.loads(created.stdout)["address"]
    (keyfile,) = (tmp_path / "keys").glob("alice*.json")
    context, page, wallet = open_portal(chromium, portal_stack, new_account())
    try:
        page.fill("#new-passphrase", "not the keyfile's passphrase")
        page.set_input_files("#keyfile", str(keyfile))
        assert message(page, "error").startswith("That passphrase does not open this keyfile.")
        page.fill("#new-passphrase", PASSPHRASE)
        page.set_input_files("#keyfile", [])
        page.set_input_files("#keyfile", str(keyfile))
        expect(page.get_by_test_id("signed-in").locator("[data-address]")).to_have_attribute(
            "data-address", address, timeout=30_000
        )
        assert wallet.requests == []
    finally:
        context.close()
