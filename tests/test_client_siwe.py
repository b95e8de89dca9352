"""The client signs in only for the site it is connected to (EIP-4361's wallet rule).

A phishing gateway at one address relays the nonce of the real gateway at another, hoping the
victim signs a message the real gateway accepts. The hostile server here is an
``httpx.MockTransport``: it answers ``/v1/auth/nonce`` with whatever domain, URI and chain id
the case names, and records every request, so a login attempt (a signature) would be seen.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from ledger.client import Gateway, SiweSiteMismatch
from ledger.protocol.siwe import parse_message

REAL = "gateway.hospital.example"


class _CountingAccount(LocalAccount):
    """A local account that counts the messages it signs."""

    signed = 0

    def sign_message(self, signable_message: Any) -> Any:
        type(self).signed += 1
        return super().sign_message(signable_message)


class TestSiweSignsOnlyForTheConnectedSite:
    def _gateway(
        self, base_url: str, *, domain: str, uri: str, chain_id: int | None = 31337
    ) -> tuple[Gateway, list[httpx.Request]]:
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            if request.url.path == "/v1/auth/nonce":
                body = {
                    "nonce": "f1c9a0d2b7e34e5c8a6d",
                    "expires_at": time.time() + 300,
                    "domain": domain,
                    "uri": uri,
                    "chain_id": chain_id,
                }
                return httpx.Response(200, json=body)
            return httpx.Response(
                200,
                json={"token": "t", "address": "0x" + "00" * 20, "expires_at": time.time() + 60},
            )

        http = httpx.Client(transport=httpx.MockTransport(handler), base_url=base_url)
        return Gateway(base_url, http=http), seen

    def _account(self) -> _CountingAccount:
        _CountingAccount.signed = 0
        plain = Account.create()
        return _CountingAccount(plain._key_obj, Account)

    @pytest.mark.parametrize(
        ("base_url", "domain", "uri"),
        [
            # a phishing site relays the real gateway's nonce
            ("https://gateway-hospital.example", REAL, f"https://{REAL}"),
            # same host, another port
            (f"https://{REAL}:8443", REAL, f"https://{REAL}"),
            # the domain matches but the URI points elsewhere
            (f"https://{REAL}", REAL, "https://elsewhere.example/login"),
            # plain HTTP connection, the message would be for the HTTPS site
            (f"http://{REAL}", REAL, f"https://{REAL}"),
            # userinfo smuggled into the domain
            (f"https://{REAL}", f"user@{REAL}", f"https://{REAL}"),
            # a URI that is no URL at all
            (f"https://{REAL}", REAL, "urn:gateway"),
        ],
    )
    def test_a_nonce_for_another_site_is_refused_before_signing(
        self, base_url: str, domain: str, uri: str
    ) -> None:
        gateway, seen = self._gateway(base_url, domain=domain, uri=uri)
        account = self._account()
        with pytest.raises(SiweSiteMismatch) as raised:
            gateway.login(account, chain_id=31337)
        assert "nothing was signed" in raised.value.line()
        assert raised.value.exit_code == 1
        assert _CountingAccount.signed == 0
        assert [r.url.path for r in seen] == ["/v1/auth/nonce"]

    def test_a_nonce_for_another_chain_is_refused_before_signing(self) -> None:
        gateway, seen = self._gateway(
            f"https://{REAL}", domain=REAL, uri=f"https://{REAL}", chain_id=1
        )
        account = self._account()
        with pytest.raises(SiweSiteMismatch, match="pinned to chain 31337"):
            gateway.login(account, chain_id=31337)
        assert _CountingAccount.signed == 0
        assert [r.url.path for r in seen] == ["/v1/auth/nonce"]

    @pytest.mark.parametrize(
        ("base_url", "domain", "uri"),
        [
            (f"https://{REAL}", REAL, f"https://{REAL}"),
            (f"https://{REAL}:443", REAL.upper(), f"https://{REAL}/"),
            ("http://127.0.0.1:8000", "127.0.0.1:8000", "http://127.0.0.1:8000"),
        ],
    )
    def test_the_connected_site_is_signed_for(self, base_url: str, domain: str, uri: str) -> None:
        gateway, seen = self._gateway(base_url, domain=domain, uri=uri, chain_id=None)
        account = self._account()
        gateway.login(account, chain_id=31337)
        assert _CountingAccount.signed == 1
        login = seen[-1]
        assert login.url.path == "/v1/auth/login"
        message = parse_message(json.loads(login.content)["message"])
        assert message.domain == domain
        assert message.uri == uri
        assert message.chain_id == 31337
        assert message.scheme == httpx.URL(base_url).scheme
