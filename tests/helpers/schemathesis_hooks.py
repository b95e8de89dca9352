"""Schemathesis hooks for the API contract run (named in ``schemathesis.toml``).

Read from the environment (set by ``tests/test_api_schemathesis.py``, ``bench/api_contract.py``):

- ``CONSENT_API_URL``: the gateway; ``CONSENT_API_CHAIN_URL``: its chain node;
- ``CONSENT_API_KEY``: the private key of the account the run signs in as (a centre that is also
  the gateway's auditor, so uploads and the export reach their handlers);
- ``CONSENT_API_STATUS_FILE``: where the statuses seen per operation are written (JSON) after
  every call, for the caller to check that no operation was tested only as 401/403.

What the hooks do:

- **Auth**: a real SIWE sign-in (``POST /v1/auth/nonce`` → EIP-4361 message → ``personal_sign``
  → ``POST /v1/auth/login``) gives the bearer token; schemathesis still sends the cases that
  drop ``Authorization`` without it (the unauthenticated variants).
- **Real requests among the generated ones**: a login, an upload or a relay built from random data
  can never carry a valid signature, so such an operation would only ever be refused. For every
  other positive case of these three operations (chosen by a hash of the generated body, so a
  seed replays the same run), the body is replaced by a real one of the same shape: a freshly
  signed SIWE message, a centre-attested upload whose patient is the signed-in account (so the
  record is listed and can be fetched as its owner), and a grant of scope All from this run's
  patient (a fresh account) to a fresh grantee, signed with its current registry nonce (any
  signed-in account may relay a patient's signed grant). Negative cases are never
  touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import httpx
import schemathesis
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from ledger.protocol import eip712
from ledger.protocol.consent_types import ScopeKind, category_id, purposes_mask
from ledger.protocol.envelope import salted_digest
from ledger.protocol.siwe import SiweMessage

_LOCK = threading.Lock()
_STATUSES: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
_REPLACED: dict[str, int] = defaultdict(int)
#: The patient whose grants this run relays: a fresh one per run, so each run has the relayer
#: policy's whole hourly quota (another patient's quota is never used up by an earlier run).
_PATIENT: LocalAccount = Account.create()


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set")
    return value


def _account() -> LocalAccount:
    account: LocalAccount = Account.from_key(_env("CONSENT_API_KEY"))
    return account


def _client() -> httpx.Client:
    return httpx.Client(base_url=_env("CONSENT_API_URL"), timeout=60)


def signed_login_body(client: httpx.Client, account: LocalAccount) -> dict[str, str]:
    """A fresh nonce's EIP-4361 message for this gateway, signed by ``account``."""
    r = client.post("/v1/auth/nonce")
    r.raise_for_status()
    nonce = r.json()
    message = SiweMessage(
        domain=nonce["domain"],
        address=account.address,
        uri=nonce["uri"],
        version="1",
        chain_id=int(nonce["chain_id"]),
        nonce=nonce["nonce"],
        issued_at=datetime.now(UTC),
        statement="Sign in to Consent Ledger",
    ).prepare_message()
    signature = account.sign_message(encode_defunct(text=message)).signature
    return {"message": message, "signature": "0x" + bytes(signature).hex()}


@schemathesis.auth(refresh_interval=600)
class SiweSession:
    """The bearer token of a real SIWE sign-in."""

    def get(self, case: Any, ctx: Any) -> str:
        with _client() as client:
            r = client.post("/v1/auth/login", json=signed_login_body(client, _account()))
        r.raise_for_status()
        token: str = r.json()["token"]
        return token

    def set(self, case: Any, data: str, ctx: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def _rpc(method: str, params: list[Any]) -> Any:
    r = httpx.post(
        _env("CONSENT_API_CHAIN_URL"),
        json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
        timeout=30,
    )
    r.raise_for_status()
    return r.json()["result"]


def _domain() -> eip712.Domain:
    with _client() as client:
        health = client.get("/healthz").json()
    return eip712.Domain(chain_id=int(health["chain_id"]), verifying_contract=health["contract"])


def _chain_time() -> int:
    return int(_rpc("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)


def _nonce_of(registry: str, signer: str) -> int:
    data = "0x" + keccak(text="nonces(address)")[:4].hex() + signer[2:].lower().rjust(64, "0")
    return int(_rpc("eth_call", [{"to": registry, "data": data}, "latest"]), 16)


def real_upload_body() -> dict[str, Any]:
    """A centre-attested upload of fresh content for the signed-in account as patient."""
    account = _account()
    text = "checkup result " + secrets.token_hex(16)  # text: the schema's file is a string
    data = text.encode()
    salt = secrets.token_bytes(32)
    issued = int(time.time())
    attestation = eip712.RecordAttestation(
        patient=account.address,
        category=category_id("laboratory"),
        content_digest=salted_digest(salt, data),
        issued_at=issued,
    )
    signature = eip712.sign(account, _domain(), attestation)
    return {
        "file": text,
        "patient": account.address,
        "category": "laboratory",
        "issued_at": issued,
        "signature": "0x" + signature.hex(),
        "salt": "0x" + salt.hex(),
    }


def real_grant_body() -> dict[str, Any]:
    """A grant of scope All from this run's patient to a fresh grantee, signed now."""
    account = _PATIENT
    domain = _domain()
    now = _chain_time()
    grantee: LocalAccount = Account.create()
    request = eip712.GrantRequest(
        patient=account.address,
        grantee=grantee.address,
        scope_kind=ScopeKind.ALL,
        scope_id=bytes(32),
        purposes=purposes_mask((0,)),
        expires_at=now + 86_400,
        signer=account.address,
        nonce=_nonce_of(domain.verifying_contract, account.address),
        deadline=now + 3_600,
    )
    signature = eip712.sign(account, domain, request)
    body = {
        k: ("0x" + v.hex() if isinstance(v, bytes) else v) for k, v in request.message().items()
    }
    return {"action": "grant", "request": body, "signature": "0x" + signature.hex()}


_REAL = {
    ("POST", "/v1/auth/login"): lambda: _login_body(),
    ("POST", "/v1/records"): real_upload_body,
    ("POST", "/v1/consents"): real_grant_body,
}


def _login_body() -> dict[str, str]:
    with _client() as client:
        return signed_login_body(client, _account())


def _is_positive(case: Any) -> bool:
    """Whether every part of the case was generated as valid data."""
    meta = getattr(case, "meta", None)
    if meta is None or not meta.generation.mode.is_positive:
        return False
    return all(component.mode.is_positive for component in meta.components.values())


def _label(case: Any) -> str:
    return f"{case.method.upper()} {case.operation.path}"


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    make = _REAL.get((case.method.upper(), case.operation.path))
    if make is None or not _is_positive(case) or not isinstance(case.body, dict):
        return
    digest = hashlib.sha256(repr(sorted(case.body.items(), key=str)).encode()).digest()
    if digest[0] % 2:
        return
    case.body = make()
    with _LOCK:
        _REPLACED[_label(case)] += 1


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    path = os.environ.get("CONSENT_API_STATUS_FILE")
    with _LOCK:
        _STATUSES[_label(case)][str(response.status_code)] += 1
        if path:
            with open(path, "w", encoding="utf-8") as out:
                json.dump({"statuses": _STATUSES, "real_bodies": _REPLACED}, out, indent=1)
