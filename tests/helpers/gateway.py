"""Gateway test helpers: a real gateway stack and the calls a client makes to it.

Plain functions (the fixtures built on them are in ``tests.plugins.gateway``).

:func:`build_stack` runs a gateway app on a chain with a deployed registry: it writes the
deployment file and a KEK, links the home's build cache to the session's compiled contracts
(``tests.helpers.build``), and runs the app in-process under uvicorn in a thread (its lifespan
starts the anchoring thread), talked to with ``httpx`` (Starlette's TestClient warns without
``httpx2``). Kill tests build their own throw-away chain / IPFS nodes and call it themselves.

Chain state is *not* rewound between gateway tests (``evm_revert`` would desynchronise the
gateway's database and the relayer's nonce from the chain); tests isolate themselves with fresh
patient / grantee accounts and fresh record contents instead.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from web3 import Web3

from gateway.api.deps import GatewayState
from gateway.app import create_app
from gateway.settings import Settings
from ledger.chain.build import compile_contracts
from ledger.chain.deployment import Deployment
from ledger.chain.node import dev_accounts
from ledger.chain.registry import REGISTRY_CONTRACT, ConsentRegistry
from ledger.devstack.services import free_port
from ledger.protocol import eip712
from ledger.protocol.consent_types import (
    CENTRE_ROLE,
    GATEWAY_ROLE,
    ScopeKind,
    category_id,
    purposes_mask,
)
from ledger.protocol.envelope import salted_digest
from ledger.protocol.siwe import SiweMessage
from tests.helpers.build import session_build_cache, share_build_cache

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass
class Stack:
    """A running gateway app on a chain with a deployed registry."""

    app: FastAPI
    client: httpx.Client
    server: uvicorn.Server
    thread: threading.Thread
    settings: Settings
    registry: ConsentRegistry  # the test side's client (admin sends)
    w3: Web3
    admin: LocalAccount
    relayer: LocalAccount  # pays for relayed consents (no role needed)
    gateway_account: LocalAccount  # GATEWAY_ROLE: anchors checkpoints, names the gateway
    registrar: LocalAccount  # GATEWAY_ROLE: registers records
    centre: LocalAccount
    home: Path
    backend: str

    @property
    def state(self) -> GatewayState:
        state: GatewayState = self.app.state.gateway
        return state

    @property
    def domain(self) -> eip712.Domain:
        return self.registry.domain


def deploy_registry(
    w3: Web3, *, cache_dir: Path | None = None
) -> tuple[ConsentRegistry, Deployment]:
    """Deploy a fresh registry (admin = dev 0), admit dev 1 (gateway) and dev 2 (centre).

    The contracts come from ``cache_dir``, by default the session's build cache."""
    admin, gateway, centre = dev_accounts()[:3]
    artifact = compile_contracts(cache_dir=cache_dir or session_build_cache())[REGISTRY_CONTRACT]
    registry, receipt = ConsentRegistry.deploy(
        w3, admin=admin.address, sender=admin, artifact=artifact
    )
    registry.grant_role(admin, GATEWAY_ROLE, gateway.address)
    registry.grant_role(admin, CENTRE_ROLE, centre.address)
    deployment = Deployment(
        chain_id=int(w3.eth.chain_id),
        address=registry.address,
        block=receipt.block_number,
        tx_hash=receipt.tx_hash,
        abi_hash=artifact.abi_hash,
    )
    return registry, deployment


def fresh_relayer(w3: Web3, registry: ConsentRegistry) -> LocalAccount:
    """A new funded account holding GATEWAY_ROLE."""
    account = funded_account(w3)
    registry.reset_nonces()  # other tests may have sent from the admin account meanwhile
    registry.grant_role(dev_accounts()[0], GATEWAY_ROLE, account.address)
    return account


def funded_account(w3: Web3, wei: int = 10**21) -> LocalAccount:
    """A new account with ``wei`` (and no role)."""
    account: LocalAccount = Account.create()
    w3.provider.make_request("anvil_setBalance", [account.address, hex(wei)])  # type: ignore[arg-type]
    return account


def own_registry_stack(
    *,
    home: Path,
    w3: Web3,
    chain_url: str,
    ipfs_url: str,
    service_dir: Path,
    relayer: LocalAccount | None = None,
    **options: Any,
) -> Stack:
    """A gateway on a registry of its own, deployed now (the audit demands the log of every
    gateway that anchored on a registry, and the session registry has many); the relayer is a
    fresh funded account unless given. ``options`` go to :func:`build_stack`."""
    registry, deployment = deploy_registry(w3, cache_dir=service_dir / "build")  # the session's
    return build_stack(
        home=home,
        w3=w3,
        chain_url=chain_url,
        ipfs_url=ipfs_url,
        registry=registry,
        deployment=deployment,
        relayer=relayer or funded_account(w3),
        **options,
    )


def build_stack(
    *,
    home: Path,
    w3: Web3,
    chain_url: str,
    ipfs_url: str,
    registry: ConsentRegistry,
    deployment: Deployment,
    relayer: LocalAccount,
    gateway_account: LocalAccount | None = None,
    registrar: LocalAccount | None = None,
    database_url: str | None = None,
    backend: str = "sqlite",
    limiter_clock: Callable[[], float] = time.monotonic,
    **overrides: Any,
) -> Stack:
    """A gateway app relaying from ``relayer``; the gateway and registrar accounts are fresh
    funded ones holding GATEWAY_ROLE unless given."""
    home.mkdir(parents=True, exist_ok=True)
    share_build_cache(home)  # anything that compiles for this home reuses the session's build
    gateway_account = gateway_account or fresh_relayer(w3, registry)
    registrar = registrar or fresh_relayer(w3, registry)
    port = free_port()
    deployment_file = home / "deployment.json"
    deployment.save(deployment_file)
    kek_file = home / "gateway-kek.key"
    kek_file.write_text(secrets.token_hex(32) + "\n")
    kek_file.chmod(0o600)  # the gateway refuses a KEK open to group or others
    options: dict[str, Any] = {
        # The suite signs in hundreds of accounts from one loopback address; the per-IP limit
        # on nonces and logins has its own tests (which set it low).
        "auth_rate_per_minute": 1_000_000.0,
        "auth_rate_burst": 1_000_000,
        "checkpoint_every": 4,
        "checkpoint_interval_s": 1.0,
        "chain_timeout_s": 3.0,
        "ipfs_timeout_s": 5.0,
        **overrides,
    }
    settings = Settings(
        home=home,
        chain_url=chain_url,
        ipfs_url=ipfs_url,
        database_url=database_url or f"sqlite:///{home / 'gateway.sqlite3'}",
        deployment_file=deployment_file,
        kek_file=kek_file,
        relayer_key=relayer.key.hex(),  # type: ignore[arg-type]
        gateway_key=gateway_account.key.hex(),  # type: ignore[arg-type]
        registrar_key=registrar.key.hex(),  # type: ignore[arg-type]
        siwe_domain=f"127.0.0.1:{port}",
        siwe_uri=f"http://127.0.0.1:{port}",
        **options,
    )
    app = create_app(settings, clock=limiter_clock)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name=f"gateway-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.02)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    return Stack(
        app=app,
        client=client,
        server=server,
        thread=thread,
        settings=settings,
        registry=registry,
        w3=w3,
        admin=dev_accounts()[0],
        relayer=relayer,
        gateway_account=gateway_account,
        registrar=registrar,
        centre=dev_accounts()[2],
        home=home,
        backend=backend,
    )


def close_stack(stack: Stack) -> None:
    stack.client.close()
    stack.server.should_exit = True
    stack.thread.join(timeout=30)


# ------------------------------------------------------------------------------ PostgreSQL


def postgres_url() -> tuple[str, str]:
    """A URL on a fresh schema of the test database, or skip with the reason."""
    try:
        import psycopg

        with psycopg.connect(PG_DSN, connect_timeout=2, autocommit=True) as conn:
            schema = f"gw_{uuid.uuid4().hex[:12]}"
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except Exception as exc:
        pytest.skip(f"no PostgreSQL server at 127.0.0.1:5432 (database test, user postgres): {exc}")
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    return url, schema


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_DSN, connect_timeout=2, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# ------------------------------------------------------------------------------- helpers


def new_account() -> LocalAccount:
    account: LocalAccount = Account.create()
    return account


def siwe_message(stack: Stack, account: LocalAccount, nonce: str, **fields: Any) -> str:
    values: dict[str, Any] = {
        "domain": stack.settings.siwe_domain,
        "address": account.address,
        "uri": stack.settings.siwe_uri,
        "version": "1",
        "chain_id": int(stack.w3.eth.chain_id),
        "nonce": nonce,
        "issued_at": datetime.now(UTC),
        "statement": "Sign in to Consent Ledger",
        **fields,
    }
    return SiweMessage(**values).prepare_message()


def personal_sign(account: LocalAccount, text: str) -> str:
    return "0x" + bytes(account.sign_message(encode_defunct(text=text)).signature).hex()


def login(stack: Stack, account: LocalAccount) -> dict[str, str]:
    """Sign in with Ethereum; the Authorization header of the session."""
    nonce = stack.client.post("/v1/auth/nonce").json()["nonce"]
    message = siwe_message(stack, account, nonce)
    r = stack.client.post(
        "/v1/auth/login", json={"message": message, "signature": personal_sign(account, message)}
    )
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def salt_for(patient: str, data: bytes, issued_at: int) -> bytes:
    """The tests' salt for one upload: fixed by (patient, data, issued_at), so a retried upload
    is the same attestation. A real centre draws a fresh one (``ledger.client``)."""
    seed = b"test salt|" + patient.encode() + str(issued_at).encode() + b"|" + data
    return hashlib.sha256(seed).digest()


def attest(
    stack: Stack,
    signer: LocalAccount,
    *,
    patient: str,
    data: bytes,
    category: str = "laboratory",
    issued_at: int | None = None,
) -> tuple[eip712.RecordAttestation, str]:
    issued = issued_at if issued_at is not None else int(time.time())
    attestation = eip712.RecordAttestation(
        patient=patient,  # type: ignore[arg-type]
        category=category_id(category),
        content_digest=salted_digest(salt_for(patient, data, issued), data),
        issued_at=issued,
    )
    signature = eip712.sign(signer, stack.domain, attestation)
    return attestation, "0x" + signature.hex()


def upload(
    stack: Stack,
    headers: dict[str, str],
    *,
    patient: str,
    data: bytes,
    signer: LocalAccount | None = None,
    category: str = "laboratory",
    issued_at: int | None = None,
) -> Any:
    """POST /v1/records with an attestation signed by ``signer`` (default: the centre)."""
    attestation, signature = attest(
        stack,
        signer or stack.centre,
        patient=patient,
        data=data,
        category=category,
        issued_at=issued_at,
    )
    return stack.client.post(
        "/v1/records",
        headers=headers,
        files={"file": ("result.txt", data, "text/plain")},
        data={
            "patient": patient,
            "category": category,
            "issued_at": str(attestation.issued_at),
            "signature": signature,
            "salt": "0x" + salt_for(patient, data, attestation.issued_at).hex(),
        },
    )


def chain_time(stack: Stack) -> int:
    return int(stack.w3.eth.get_block("latest")["timestamp"])


def signed_grant(
    stack: Stack,
    patient: LocalAccount,
    grantee: str,
    *,
    scope_kind: ScopeKind = ScopeKind.RECORD,
    scope_id: bytes,
    purposes: tuple[int, ...] = (0,),
    expires_at: int | None = None,
) -> dict[str, Any]:
    """The body of POST /v1/consents for a grant signed by ``patient``."""
    request = eip712.GrantRequest(
        patient=patient.address,
        grantee=grantee,  # type: ignore[arg-type]
        scope_kind=scope_kind,
        scope_id=scope_id,
        purposes=purposes_mask(purposes),
        expires_at=expires_at if expires_at is not None else chain_time(stack) + 86_400,
        signer=patient.address,
        nonce=stack.registry.nonce_of(patient.address),
        deadline=chain_time(stack) + 3_600,
    )
    signature = eip712.sign(patient, stack.domain, request)
    message = request.message()
    body = {k: ("0x" + v.hex() if isinstance(v, bytes) else v) for k, v in message.items()}
    return {"action": "grant", "request": body, "signature": "0x" + signature.hex()}


def signed_revoke(
    stack: Stack,
    patient: LocalAccount,
    grantee: str,
    *,
    scope_kind: ScopeKind = ScopeKind.RECORD,
    scope_id: bytes,
) -> dict[str, Any]:
    request = eip712.RevokeRequest(
        patient=patient.address,
        grantee=grantee,  # type: ignore[arg-type]
        scope_kind=scope_kind,
        scope_id=scope_id,
        signer=patient.address,
        nonce=stack.registry.nonce_of(patient.address),
        deadline=chain_time(stack) + 3_600,
    )
    signature = eip712.sign(patient, stack.domain, request)
    message = request.message()
    body = {k: ("0x" + v.hex() if isinstance(v, bytes) else v) for k, v in message.items()}
    return {"action": "revoke", "request": body, "signature": "0x" + signature.hex()}


def relay(stack: Stack, headers: dict[str, str], body: dict[str, Any]) -> Any:
    r = stack.client.post("/v1/consents", headers=headers, json=body)
    assert r.status_code == 200, r.text
    return r.json()


def quiet_logs() -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
