"""Attacks on the gateway by a hostile client or a lying / stale node, each refused.

- A node whose head is old (it lost its peers): every decision fails closed with 503
  ``chain_stale`` on both fetch paths, and is logged as ``chain_stale``.
- A node on another chain than the deployment: the gateway refuses to start; one that turns
  into another chain later makes ``/healthz`` unhealthy, naming the chain id.
- An RPC URL carrying an API key never reaches a caller in an error body.
- Unicode digits (``?purpose=²``) and relay fields with whitespace: 422, never 500.
- A high-s attestation signature: 422 before any transaction is sent.
- A KEK file readable by group or others: the gateway refuses to start, naming the chmod.
- Unauthenticated resource use: JSON bodies above 64 KiB are 413, nonces and logins are
  rate-limited per address (429 with ``Retry-After``), expired nonces and sessions are purged
  in bounded batches through an index, and 32 concurrent unauthenticated 45 MB uploads leave the
  gateway's RSS within a stated bound (the gateway runs as its own process for that test).
"""

from __future__ import annotations

import json
import os
import select
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import func, insert, inspect, text
from sqlalchemy import select as sa_select
from starlette import formparsers
from starlette.formparsers import MultiPartParser
from web3 import Web3

from gateway.app import ChainIdRefused, create_app
from gateway.services.auth import PURGE_BATCH
from gateway.settings import Settings
from gateway.storage.engine import init_db, make_engine
from gateway.storage.tables import AUTH_NONCE, AUTH_SESSION, RECORD
from ledger.chain.node import connect, dev_accounts
from ledger.chain.rpc import HttpxRpc
from ledger.devstack.services import AnvilNode, ServiceProcess, free_port
from tests.helpers.build import share_build_cache
from tests.helpers.gateway import (
    Stack,
    attest,
    build_stack,
    close_stack,
    fresh_relayer,
    funded_account,
    login,
    new_account,
    own_registry_stack,
    relay,
    salt_for,
    signed_grant,
    upload,
)

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _granted_record(stack: Stack) -> tuple[str, Any, dict[str, str]]:
    """A record, its patient, and the headers of a doctor holding treatment consent."""
    patient, doctor = new_account(), new_account()
    data = b"hardening " + os.urandom(8).hex().encode()
    r = upload(stack, login(stack, stack.centre), patient=patient.address, data=data)
    assert r.status_code == 201, r.text
    record_id = r.json()["record_id"]
    relay(
        stack,
        login(stack, patient),
        signed_grant(stack, patient, doctor.address, scope_id=bytes.fromhex(record_id[2:])),
    )
    return record_id, patient, login(stack, doctor)


# --------------------------------------------------------------------------- stale node


def test_a_stale_chain_head_fails_every_decision_closed_on_both_fetch_paths(
    tmp_path: Path, throwaway_anvil: AnvilNode, ipfs_node: Any, service_dir: Path
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
        max_head_age_s=30.0,
    )
    try:
        record_id, patient, doctor_h = _granted_record(stack)
        stranger_h = login(stack, new_account())
        fast = f"/v1/records/{record_id}?purpose=treatment"
        slow = fast + "&via=route"  # not the fast path's shape: the FastAPI route serves it
        for url in (fast, slow):
            assert stack.client.get(url, headers=doctor_h).status_code == 200
        assert stack.client.get("/healthz").status_code == 200

        # The node stops following the chain: its latest block is an hour old.
        make = chain.provider.make_request
        make("evm_setTime", [int(time.time()) - 3600])  # type: ignore[arg-type]
        make("evm_mine", [])  # type: ignore[arg-type]
        head = chain.eth.get_block("latest")
        assert time.time() - int(head["timestamp"]) > 3000

        for headers in (doctor_h, stranger_h, login(stack, patient)):
            for url in (fast, slow):
                r = stack.client.get(url, headers=headers)
                assert r.status_code == 503, (url, r.text)
                error = r.json()["error"]
                assert error["code"] == "chain_stale"
                assert error["details"]["max_head_age_s"] == 30.0
                assert error["details"]["age_s"] > 3000
        entries = stack.state.access_log.entries_for_patient(patient.address)
        tail = [json.loads(leaf) for _i, leaf, _h in entries][-6:]
        assert {(e["decision"], e["reason"]) for e in tail} == {("denied", "chain_stale")}
        assert {e["block"] for e in tail} == {int(head["number"])}
        assert {e["chain_time"] for e in tail} == {int(head["timestamp"])}
        health = stack.client.get("/healthz")
        assert health.status_code == 503
        assert "chain_stale" in health.json()["details"]
    finally:
        close_stack(stack)


# ----------------------------------------------------------------------------- chain id


def _account_keys() -> dict[str, Any]:
    """Three distinct sending keys (gateway, registrar, relayer), as the settings require."""
    accounts = dev_accounts()
    return {
        "gateway_key": accounts[1].key.hex(),
        "registrar_key": accounts[2].key.hex(),
        "relayer_key": accounts[3].key.hex(),
    }


def _settings_for(home: Path, *, chain_url: str, deployment: Any, chain_id: int) -> Settings:
    home.mkdir(parents=True, exist_ok=True)
    deployment.save(home / "deployment.json")
    document = json.loads((home / "deployment.json").read_text())
    document["chain_id"] = chain_id
    (home / "deployment.json").write_text(json.dumps(document))
    kek = home / "kek"
    kek.write_text(os.urandom(32).hex())
    kek.chmod(0o600)
    return Settings(
        home=home,
        chain_url=chain_url,
        deployment_file=home / "deployment.json",
        kek_file=kek,
        **_account_keys(),
    )


def test_a_node_on_another_chain_is_refused_at_start(
    tmp_path: Path, anvil: Any, gateway_registry: Any
) -> None:
    _registry, deployment = gateway_registry
    settings = _settings_for(tmp_path, chain_url=anvil.url, deployment=deployment, chain_id=1)
    with pytest.raises(ChainIdRefused) as refused:
        create_app(settings)
    message = str(refused.value)
    assert "refusing to start" in message
    assert f"chain id {anvil.chain_id}" in message
    assert "the deployment names 1" in message
    assert "CONSENT_CHAIN_URL" in message


def test_a_node_that_turns_into_another_chain_makes_healthz_unhealthy(
    sqlite_gateway: Stack,
) -> None:
    stack = sqlite_gateway
    assert stack.client.get("/healthz").status_code == 200
    chain = stack.state.chain
    real = chain.rpc_client.transport
    upstream = httpx.Client()

    def other_chain(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body.get("method") == "eth_chainId":
            return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": "0x1"})
        answer = upstream.post(
            stack.settings.chain_url,
            content=request.content,
            headers={"content-type": "application/json"},
        )
        return httpx.Response(answer.status_code, content=answer.content)

    chain.rpc_client.transport = HttpxRpc(
        stack.settings.chain_url, httpx.Client(transport=httpx.MockTransport(other_chain))
    )
    try:
        health = stack.client.get("/healthz")
    finally:
        chain.rpc_client.transport = real
        upstream.close()
    assert health.status_code == 503, health.text
    assert "chain_id" in health.json()["details"], health.text
    detail = health.json()["details"]["chain_id"]
    assert "reports chain id 1" in detail
    assert f"names {stack.w3.eth.chain_id}" in detail
    assert stack.client.get("/healthz").status_code == 200


# --------------------------------------------------------------------- RPC URL not echoed


def test_the_rpc_url_never_reaches_a_caller(
    tmp_path: Path,
    w3: Web3,
    ipfs_node: Any,
    gateway_registry: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("WARNING", logger="gateway")
    registry, deployment = gateway_registry
    secret = "apikey-" + os.urandom(8).hex()
    dead = f"http://127.0.0.1:{free_port()}/v3/{secret}"  # a provider URL with a key; no node
    stack = build_stack(
        home=tmp_path / "gw",
        w3=w3,
        chain_url=dead,
        ipfs_url=ipfs_node.url,
        registry=registry,
        deployment=deployment,
        relayer=dev_accounts()[1],
        anchor_enabled=False,
        chain_timeout_s=1.0,
    )
    try:
        centre_h = login(stack, stack.centre)
        bodies: list[str] = []
        r = upload(stack, centre_h, patient=new_account().address, data=b"while the node is down")
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "chain_unavailable"
        bodies.append(r.text)
        record_id = "0x" + os.urandom(32).hex()
        with stack.state.engine.begin() as conn:  # a live record, so a fetch asks the chain
            conn.execute(
                insert(RECORD).values(
                    record_id=record_id,
                    patient=new_account().address.lower(),
                    centre=stack.centre.address.lower(),
                    category="0x" + "00" * 32,
                    content_digest="0x" + "00" * 32,
                    issued_at=0,
                    cid="bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
                    wrapped_key=b"\0" * 60,
                    status="live",
                    created_at=time.time(),
                )
            )
        for url in (
            f"/v1/records/{record_id}?purpose=treatment",
            f"/v1/records/{record_id}?purpose=0&x=1",
        ):
            r = stack.client.get(url, headers=centre_h)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "chain_unavailable"
            bodies.append(r.text)
        health = stack.client.get("/healthz")
        assert health.status_code == 503
        bodies.append(health.text)
        patient = new_account()
        grant = signed_grant(stack, patient, new_account().address, scope_id=os.urandom(32))
        r = stack.client.post("/v1/consents", headers=login(stack, patient), json=grant)
        assert r.status_code == 503, r.text
        bodies.append(r.text)
        for body in bodies:
            assert secret not in body
            assert "127.0.0.1:" + dead.split(":")[2].split("/")[0] not in body
        assert secret in caplog.text  # the operator still sees which node failed
    finally:
        close_stack(stack)


# ------------------------------------------------------------------- parsing, never a 500


@pytest.mark.parametrize("purpose", ["²", "٣", "１", "³0", "0" * 11])
def test_unicode_digits_as_purpose_are_422_on_both_paths(gateway: Stack, purpose: str) -> None:
    headers = login(gateway, new_account())
    record_id = "0x" + "ab" * 32
    for params in ({"purpose": purpose}, {"purpose": purpose, "x": "1"}):
        r = gateway.client.get(f"/v1/records/{record_id}", params=params, headers=headers)
        assert r.status_code == 422, (purpose, r.text)
        assert r.json()["error"]["code"] == "invalid_request"
        assert r.json()["error"]["details"]["purpose"] == purpose


_BAD_FIELDS = [
    ("scopeId", "0x" + "1f" * 31 + "  "),  # bytes.fromhex skips the spaces: 31 bytes
    ("scopeId", " 0x" + "1f" * 32),
    ("patient", "0x90F79bf6EB2c4f870365E785982E1f101E93b9  "),
    ("grantee", "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65 "),
    ("nonce", "١"),  # an Arabic-Indic one: int() takes it
    ("nonce", " 0 "),
    ("deadline", "1_000"),
    ("purposes", "²"),
    ("scopeKind", "١"),
]


@pytest.mark.parametrize(("field", "value"), _BAD_FIELDS)
def test_relay_fields_with_whitespace_or_unicode_digits_are_422(
    gateway: Stack, field: str, value: str
) -> None:
    patient = new_account()
    body = signed_grant(gateway, patient, new_account().address, scope_id=os.urandom(32))
    body["request"][field] = value
    r = gateway.client.post("/v1/consents", headers=login(gateway, patient), json=body)
    assert r.status_code == 422, (field, value, r.text)
    assert r.json()["error"]["code"] == "invalid_request"
    assert r.json()["error"]["details"]["field"] == field


# ------------------------------------------------------------------------------- high-s


def test_a_high_s_attestation_is_refused_before_any_transaction(sqlite_gateway: Stack) -> None:
    stack = sqlite_gateway
    patient = new_account()
    data = b"high-s " + os.urandom(8).hex().encode()
    attestation, signature = attest(stack, stack.centre, patient=patient.address, data=data)
    raw = bytes.fromhex(signature[2:])
    s = int.from_bytes(raw[32:64], "big")
    flipped = raw[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - raw[64]])
    headers = login(stack, stack.centre)
    senders = (stack.registrar.address, stack.relayer.address, stack.gateway_account.address)
    sent_before = [stack.w3.eth.get_transaction_count(a) for a in senders]
    r = stack.client.post(
        "/v1/records",
        headers=headers,
        files={"file": ("result.txt", data, "text/plain")},
        data={
            "patient": patient.address,
            "category": "laboratory",
            "issued_at": str(attestation.issued_at),
            "signature": "0x" + flipped.hex(),
            "salt": "0x" + salt_for(patient.address, data, attestation.issued_at).hex(),
        },
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "attestation_invalid"
    assert "high-s" in r.json()["error"]["details"]["reason"]
    assert [stack.w3.eth.get_transaction_count(a) for a in senders] == sent_before
    with stack.state.engine.connect() as conn:
        assert conn.execute(sa_select(func.count()).select_from(RECORD)).scalar_one() == 0
    # The same attestation with its low-s signature goes through.
    ok = upload(stack, headers, patient=patient.address, data=data, issued_at=attestation.issued_at)
    assert ok.status_code == 201, ok.text


# ---------------------------------------------------------------------------------- KEK


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_kek_open_to_group_or_others_refuses_to_start(tmp_path: Path, mode: int) -> None:
    kek = tmp_path / "gateway-kek.key"
    kek.write_text(os.urandom(32).hex())
    kek.chmod(mode)
    keys = _account_keys()
    with pytest.raises(ValidationError, match=rf"mode {mode:04o}.*chmod 600 {kek}"):
        Settings(home=tmp_path, kek_file=kek, **keys)
    kek.chmod(0o600)
    assert len(Settings(home=tmp_path, kek_file=kek, **keys).kek_bytes) == 32


# ------------------------------------------------------------------ body limits, rate limits


def test_an_upload_over_starlettes_spool_size_stays_in_memory(
    gateway: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file over Starlette's default spool (1 MiB) is parsed in memory, never rolled over to
    a temporary file on disk (plaintext at rest), and the limit is the app's: the process-wide
    MultiPartParser.spool_max_size is left as Starlette ships it."""
    assert MultiPartParser.spool_max_size == 1024 * 1024
    spools: list[int] = []
    rolled: list[int] = []

    class Watched(formparsers.SpooledTemporaryFile):  # type: ignore[type-arg]
        def __init__(self, *args: Any, max_size: int = 0, **kwargs: Any) -> None:
            spools.append(max_size)
            super().__init__(*args, max_size=max_size, **kwargs)

        def rollover(self) -> None:
            rolled.append(self.tell())
            super().rollover()

    monkeypatch.setattr(formparsers, "SpooledTemporaryFile", Watched)
    patient = new_account()
    data = os.urandom(3 * 1024 * 1024)
    r = upload(gateway, login(gateway, gateway.centre), patient=patient.address, data=data)
    assert r.status_code == 201, r.text
    assert spools, "the upload was not parsed through a spooled file"
    assert all(size > len(data) for size in spools), spools
    assert rolled == []
    assert MultiPartParser.spool_max_size == 1024 * 1024


def test_a_json_body_over_the_limit_is_413(gateway: Stack) -> None:
    limit = gateway.settings.max_json_body_bytes
    assert limit == 64 * 1024
    big = json.dumps({"message": "x" * limit, "signature": "0x" + "ab" * 65}).encode()
    r = gateway.client.post(
        "/v1/auth/login", content=big, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413, r.text
    assert r.json()["error"] == {
        "code": "body_too_large",
        "message": f"the request body exceeds {limit} bytes",
        "details": {"limit": limit},
    }

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it arrives
        yield big[: limit // 2]
        yield big[limit // 2 :]

    headers = {**login(gateway, new_account()), "content-type": "application/json"}
    r = gateway.client.post("/v1/consents", content=chunks(), headers=headers)
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "body_too_large"
    # Uploads keep their own, larger limit.
    data = os.urandom(3 * limit)
    ok = upload(gateway, login(gateway, gateway.centre), patient=new_account().address, data=data)
    assert ok.status_code == 201, ok.text


class ManualClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def limiter_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def limited_gateway(
    tmp_path: Path,
    anvil: Any,
    w3: Web3,
    ipfs_node: Any,
    gateway_registry: Any,
    limiter_clock: ManualClock,
) -> Iterator[Stack]:
    registry, deployment = gateway_registry
    stack = build_stack(
        limiter_clock=limiter_clock,
        home=tmp_path / "gw",
        w3=w3,
        chain_url=anvil.url,
        ipfs_url=ipfs_node.url,
        registry=registry,
        deployment=deployment,
        relayer=fresh_relayer(w3, registry),
        anchor_enabled=False,
        auth_rate_per_minute=6.0,
        auth_rate_burst=5,
    )
    try:
        yield stack
    finally:
        close_stack(stack)


def test_a_nonce_flood_from_one_address_meets_429(
    limited_gateway: Stack, limiter_clock: ManualClock
) -> None:
    stack = limited_gateway
    for _ in range(5):
        assert stack.client.post("/v1/auth/nonce").status_code == 200
    r = stack.client.post("/v1/auth/nonce")
    assert r.status_code == 429, r.text
    assert 1 <= int(r.headers["retry-after"]) <= 10
    error = r.json()["error"]
    assert error["code"] == "rate_limited"
    assert error["details"]["limit"] == (
        "/v1/auth/nonce: 5 at once, then 6 per minute, per client address"
    )
    assert error["details"]["retry_after_s"] == int(r.headers["retry-after"])
    # Logins share the budget, and a refused request writes nothing.
    login_r = stack.client.post("/v1/auth/login", json={"message": "x", "signature": "0x00"})
    assert login_r.status_code == 429
    with stack.state.engine.connect() as conn:
        assert conn.execute(sa_select(func.count()).select_from(AUTH_NONCE)).scalar_one() == 5
    # Fetches and every other route are not limited.
    assert stack.client.get("/healthz").status_code == 200
    limiter_clock.now += 9.5  # not yet a token back at 6 per minute
    assert stack.client.post("/v1/auth/nonce").status_code == 429
    limiter_clock.now += 0.6  # one token back (10.1 s at 6 per minute)
    assert stack.client.post("/v1/auth/nonce").status_code == 200
    assert stack.client.post("/v1/auth/nonce").status_code == 429


def test_expired_nonces_and_sessions_are_purged_in_bounded_batches_by_index(
    sqlite_gateway: Stack,
) -> None:
    stack = sqlite_gateway
    engine = stack.state.engine
    past = time.time() - 10
    with engine.begin() as conn:
        conn.execute(
            insert(AUTH_NONCE), [{"nonce": f"old{i:04d}", "expires_at": past} for i in range(100)]
        )
        conn.execute(
            insert(AUTH_SESSION),
            [
                {
                    "token_hash": f"0x{i:064x}",
                    "address": "0x" + "00" * 20,
                    "public_key": "0x04",
                    "expires_at": past,
                    "created_at": past - 3600,
                }
                for i in range(50)
            ],
        )

    def expired(table: Any) -> int:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    sa_select(func.count()).select_from(table).where(table.c.expires_at < past + 1)
                ).scalar_one()
            )

    assert stack.client.post("/v1/auth/nonce").status_code == 200
    assert expired(AUTH_NONCE) == 100 - PURGE_BATCH  # at most a batch per call, not all
    for _ in range(3):
        stack.client.post("/v1/auth/nonce")
    assert expired(AUTH_NONCE) == 0
    login(stack, new_account())  # a nonce (purges nothing now) and a login (purges sessions)
    assert expired(AUTH_SESSION) == 50 - PURGE_BATCH
    login(stack, new_account())
    assert expired(AUTH_SESSION) == 0

    for table in ("auth_nonce", "auth_session"):
        indexed = [ix["column_names"] for ix in inspect(engine).get_indexes(table)]
        assert ["expires_at"] in indexed, (table, indexed)
    with engine.connect() as conn:
        plan = conn.execute(
            text(
                "EXPLAIN QUERY PLAN DELETE FROM auth_nonce WHERE nonce IN "
                "(SELECT nonce FROM auth_nonce WHERE expires_at < 0 LIMIT 32)"
            )
        ).all()
    assert any("ix_auth_nonce_expires_at" in str(row) for row in plan), plan


def test_an_older_database_gets_the_expiry_indexes(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE auth_nonce (nonce VARCHAR(64) PRIMARY KEY, expires_at FLOAT)")
    conn.execute(
        "CREATE TABLE auth_session (token_hash VARCHAR(66) PRIMARY KEY, address VARCHAR(42), "
        "public_key VARCHAR(132), expires_at FLOAT, created_at FLOAT)"
    )
    conn.commit()
    conn.close()
    engine = make_engine(f"sqlite:///{path}")
    try:
        init_db(engine)
        for table in ("auth_nonce", "auth_session"):
            indexed = [ix["column_names"] for ix in inspect(engine).get_indexes(table)]
            assert ["expires_at"] in indexed, (table, indexed)
    finally:
        engine.dispose()


# --------------------------------------------------------- unauthenticated uploads, RSS bound

UPLOADS = 32
UPLOAD_BYTES = 45 * 1024 * 1024
#: The bound stated in the README: the gateway's resident memory grows by less than this while
#: 32 unauthenticated 45 MB uploads (1.4 GB) are attempted at once. Parsing them before the
#: 401, as the gateway once did, holds all of them in memory.
RSS_GROWTH_BOUND = 64 * 1024 * 1024


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def gateway_process(
    tmp_path: Path, anvil: Any, w3: Web3, ipfs_node: Any, gateway_registry: Any
) -> Iterator[tuple[str, int]]:
    """The gateway as its own uvicorn process (its RSS is measured), on the session services."""
    registry, deployment = gateway_registry
    home = tmp_path / "gw"
    home.mkdir()
    share_build_cache(home)
    deployment.save(home / "deployment.json")
    kek = home / "gateway-kek.key"
    kek.write_text(os.urandom(32).hex())
    kek.chmod(0o600)
    port = free_port()
    gateway_account = fresh_relayer(w3, registry)  # GATEWAY_ROLE: anchors, names the gateway
    registrar = fresh_relayer(w3, registry)  # GATEWAY_ROLE: registers records
    relayer = funded_account(w3)  # pays for relays, no role
    process = ServiceProcess(
        "gateway",
        [
            *(sys.executable, "-m", "uvicorn", "gateway.app:create_app", "--factory"),
            *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
        ],
        home / "gateway.log",
        env={
            "CONSENT_HOME": str(home),
            "CONSENT_CHAIN_URL": anvil.url,
            "CONSENT_IPFS_URL": ipfs_node.url,
            "CONSENT_DATABASE_URL": f"sqlite:///{home / 'gateway.sqlite3'}",
            "CONSENT_DEPLOYMENT_FILE": str(home / "deployment.json"),
            "CONSENT_KEK_FILE": str(kek),
            "CONSENT_GATEWAY_KEY": gateway_account.key.hex(),
            "CONSENT_REGISTRAR_KEY": registrar.key.hex(),
            "CONSENT_RELAYER_KEY": relayer.key.hex(),
            "CONSENT_SIWE_DOMAIN": f"127.0.0.1:{port}",
            "CONSENT_SIWE_URI": f"http://127.0.0.1:{port}",
            "CONSENT_ANCHOR_ENABLED": "false",
        },
    )
    process.start()
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            process.check_alive()
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the gateway did not start: {process.tail()}")
            time.sleep(0.2)
        assert process.pid is not None
        yield url, process.pid
    finally:
        process.stop()


def _unauthenticated_upload(port: int, body: memoryview, head: bytes, out: list[str]) -> None:
    """Send ``head`` and as much of ``body`` as the gateway takes; the status line it answers."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    answer = b""
    try:
        sock.sendall(head)
        sent = 0
        while sent < len(body) and not answer:
            readable, writable, _ = select.select([sock], [sock], [], 30)
            if readable:
                answer = sock.recv(4096)
                break
            if not writable:
                break
            try:
                sent += sock.send(body[sent : sent + 256 * 1024])
            except OSError:
                break
        if not answer:
            try:
                answer = sock.recv(4096)
            except OSError as exc:
                out.append(f"reset after {sent} bytes ({type(exc).__name__})")
                return
        out.append(answer.split(b"\r\n", 1)[0].decode() + f" after {sent} bytes")
    finally:
        sock.close()


def test_unauthenticated_uploads_are_refused_before_their_bodies_are_read(
    gateway_process: tuple[str, int],
) -> None:
    url, pid = gateway_process
    port = int(url.rsplit(":", 1)[1])
    boundary = "hardeningboundary"
    preamble = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = memoryview(preamble + b"\0" * UPLOAD_BYTES + f"\r\n--{boundary}--\r\n".encode())
    baseline = _rss(pid)
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss(pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    outcomes: list[str] = []
    threads = []
    for i in range(UPLOADS):
        auth = "" if i % 2 == 0 else "Authorization: Bearer not-a-session\r\n"
        head = (
            f"POST /v1/records HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        thread = threading.Thread(target=_unauthenticated_upload, args=(port, body, head, outcomes))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(timeout=120)
    time.sleep(0.5)
    done.set()
    sampler.join()
    growth = peak[0] - baseline
    print(f"gateway RSS: baseline {baseline / 2**20:.1f} MiB, peak {peak[0] / 2**20:.1f} MiB")
    assert len(outcomes) == UPLOADS
    refused = [o for o in outcomes if o.startswith("HTTP/1.1 401")]
    assert len(refused) == UPLOADS, outcomes
    assert all(int(o.rsplit(" ", 2)[1]) < UPLOAD_BYTES for o in refused), outcomes
    assert growth < RSS_GROWTH_BOUND, f"RSS grew by {growth / 2**20:.1f} MiB"
    # The gateway still serves.
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200


@pytest.mark.parametrize("path", ["/v1/records", "/v1/consents"])
@pytest.mark.parametrize("token", [None, "not-a-session"])
def test_a_body_without_a_session_is_401_before_it_is_parsed(
    gateway: Stack, path: str, token: str | None
) -> None:
    # A body that does not parse: were it read first, the answer would be 400.
    headers = {
        "content-type": "application/json"
        if path == "/v1/consents"
        else "multipart/form-data; boundary=x"
    }
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    r = gateway.client.post(path, content=b"\xff{not json" * 1000, headers=headers)
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "unauthenticated"
    assert r.headers["connection"] == "close"
