"""The relayer policy, attacked: a gas-burning ERC-1271 signer, a burst of relays for one
patient, a burst across patients, a signer that flips its answer between the estimate and
mining, and a drained account (each of the gateway's three accounts in turn).

Real anvil, IPFS and SQLite; gateways started as the fixtures start them. Tests that change
the chain's mining mode run on a throw-away anvil of their own.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import func, select
from web3 import Web3

from gateway.services.relay import parse_grant
from gateway.settings import Settings
from gateway.storage.tables import RELAYED_TX
from ledger.chain.build import compile_contracts
from ledger.chain.node import TxSender, connect, deploy, dev_accounts
from ledger.devstack.services import AnvilNode
from ledger.protocol import eip712
from ledger.protocol.consent_types import ScopeKind, category_id, purposes_mask
from tests.helpers.gateway import (
    Stack,
    build_stack,
    chain_time,
    close_stack,
    funded_account,
    login,
    new_account,
    own_registry_stack,
    quiet_logs,
    relay,
    signed_grant,
    upload,
)

LAB = category_id("laboratory")


def _wallet(stack: Stack, name: str, owner: LocalAccount, *args: Any) -> Any:
    w3 = stack.w3
    artifact = compile_contracts(cache_dir=stack.home / "build")[name]
    sent = deploy(
        w3,
        abi=artifact.abi,
        bytecode=artifact.bytecode,
        args=[owner.address, *args],
        sender=TxSender(w3, owner),
    )
    return w3.eth.contract(address=sent.receipt["contractAddress"], abi=artifact.abi)


def _wallet_grant(stack: Stack, owner: LocalAccount, wallet: str, grantee: str) -> dict[str, Any]:
    """A category grant whose patient and signer is the contract ``wallet`` (signed by its
    owner's key, which the wallet's ERC-1271 check accepts)."""
    now = chain_time(stack)
    request = eip712.GrantRequest(
        patient=wallet,  # type: ignore[arg-type]
        grantee=grantee,  # type: ignore[arg-type]
        scope_kind=ScopeKind.CATEGORY,
        scope_id=LAB,
        purposes=purposes_mask((0,)),
        expires_at=now + 86_400,
        signer=wallet,  # type: ignore[arg-type]
        nonce=stack.registry.nonce_of(wallet),
        deadline=now + 3_600,
    )
    signature = eip712.sign(owner, stack.domain, request)
    message = request.message()
    body = {k: ("0x" + v.hex() if isinstance(v, bytes) else v) for k, v in message.items()}
    return {"action": "grant", "request": body, "signature": "0x" + signature.hex()}


def _category_grant(stack: Stack, patient: LocalAccount, grantee: str) -> dict[str, Any]:
    return signed_grant(stack, patient, grantee, scope_kind=ScopeKind.CATEGORY, scope_id=LAB)


def _error(r: Any) -> dict[str, Any]:
    error: dict[str, Any] = r.json()["error"]
    return error


def _relayed_rows(stack: Stack, patient: str) -> int:
    with stack.state.engine.connect() as conn:
        count = conn.execute(
            select(func.count()).where(RELAYED_TX.c.patient == patient.lower())
        ).scalar_one()
    return int(count)


def _home(tmp_path: Path, name: str, service_dir: Path) -> Path:
    """A gateway home with the session's compiled contracts (saves a compile per gateway)."""
    home = tmp_path / name
    if not (home / "build").exists() and (service_dir / "build").is_dir():
        shutil.copytree(service_dir / "build", home / "build")
    return home


@pytest.fixture
def own_stack(
    tmp_path: Path,
    anvil: Any,
    w3: Web3,
    ipfs_node: Any,
    service_dir: Path,
    gateway_registry: Any,
) -> Iterator[Any]:
    """Builds gateways with policy overrides on the session chain; closes them afterwards."""
    registry, deployment = gateway_registry
    stacks: list[Stack] = []

    def make(name: str = "gw", **overrides: Any) -> Stack:
        stack = build_stack(
            home=_home(tmp_path, name, service_dir),
            w3=w3,
            chain_url=anvil.url,
            ipfs_url=ipfs_node.url,
            registry=registry,
            deployment=deployment,
            relayer=overrides.pop("relayer", None) or funded_account(w3),
            anchor_enabled=False,
            **overrides,
        )
        stacks.append(stack)
        return stack

    try:
        yield make
    finally:
        for stack in stacks:
            close_stack(stack)


# ------------------------------------------------------------------------------ the policy


def test_policy_endpoint_serves_the_default_settings(gateway: Stack) -> None:
    r = gateway.client.get("/v1/consents/policy")
    assert r.status_code == 200, r.text
    defaults = Settings.model_fields
    assert r.json() == {
        "relayer": gateway.relayer.address,
        "gas_cap": defaults["relay_gas_cap"].default,
        "patient_quota_per_hour": defaults["relay_patient_quota_per_hour"].default,
        "rate_per_minute": defaults["relay_rate_per_minute"].default,
        "receipt_wait_s": defaults["relay_receipt_wait_s"].default,
    }
    assert r.json()["patient_quota_per_hour"] < 30


def test_policy_endpoint_serves_configured_values(own_stack: Any) -> None:
    stack = own_stack(
        relay_gas_cap=150_000,
        relay_patient_quota_per_hour=4,
        relay_rate_per_minute=7,
        relay_receipt_wait_s=1.5,
    )
    assert stack.client.get("/v1/consents/policy").json() == {
        "relayer": stack.relayer.address,
        "gas_cap": 150_000,
        "patient_quota_per_hour": 4,
        "rate_per_minute": 7,
        "receipt_wait_s": 1.5,
    }


def test_one_key_for_two_accounts_or_a_missing_one_refuses_to_start(tmp_path: Path) -> None:
    from pydantic import ValidationError

    kek = tmp_path / "kek"
    kek.write_text(os.urandom(32).hex())
    kek.chmod(0o600)
    a, b, c = (dev_accounts()[i].key.hex() for i in (1, 2, 3))
    Settings(home=tmp_path, kek_file=kek, relayer_key=a, gateway_key=b, registrar_key=c)
    for keys in (
        {"relayer_key": a, "gateway_key": a, "registrar_key": c},
        {"relayer_key": a, "gateway_key": b, "registrar_key": b},
        {"relayer_key": c, "gateway_key": b, "registrar_key": c},
    ):
        with pytest.raises(ValidationError, match="three different accounts"):
            Settings(home=tmp_path, kek_file=kek, **keys)
    with pytest.raises(ValidationError, match="no gateway key"):
        Settings(home=tmp_path, kek_file=kek, relayer_key=a, registrar_key=c)
    with pytest.raises(ValidationError, match="no registrar key"):
        Settings(home=tmp_path, kek_file=kek, relayer_key=a, gateway_key=b)


# ----------------------------------------------------------------------------- gas cap


@pytest.mark.parametrize("burn", [20_000_000, 150_000], ids=["burns-20M", "burns-150k"])
def test_gas_burning_erc1271_signer_is_refused_naming_the_cap(gateway: Stack, burn: int) -> None:
    """The wallet's isValidSignature burns ``burn`` gas: 20M (the attack), or 150k (fits in the
    cap alone, not with the rest of the call). Either is refused before anything is sent; the
    relayer's balance and nonce do not move."""
    w3, cap = gateway.w3, gateway.settings.relay_gas_cap
    owner = funded_account(w3)
    wallet = _wallet(gateway, "GasBurningERC1271Wallet", owner, burn)
    body = _wallet_grant(gateway, owner, wallet.address, new_account().address)
    # The unbounded estimate (what the gateway used to multiply by 1.25) is the burn itself.
    estimate = w3.eth.estimate_gas(
        {
            "from": gateway.relayer.address,
            "to": gateway.registry.address,
            "data": _calldata(gateway, body),
        }
    )
    assert estimate > burn > cap * 0.7

    balance = w3.eth.get_balance(gateway.relayer.address)
    nonce = w3.eth.get_transaction_count(gateway.relayer.address, "pending")
    r = gateway.client.post("/v1/consents", headers=login(gateway, owner), json=body)
    assert r.status_code == 403, r.text
    error = _error(r)
    assert error["code"] == "relay_gas_cap_exceeded"
    assert error["details"]["limit"] == "relay_gas_cap"
    assert error["details"]["gas_cap"] == cap
    assert error["details"]["signer"] == wallet.address
    assert w3.eth.get_balance(gateway.relayer.address) == balance
    assert w3.eth.get_transaction_count(gateway.relayer.address, "pending") == nonce
    assert _relayed_rows(gateway, wallet.address) == 0  # refused: not counted either


def _calldata(stack: Stack, body: dict[str, Any]) -> str:
    request = parse_grant(body["request"])
    data: str = stack.registry.contract.encode_abi(
        "grantBySig", args=[request.as_tuple(), bytes.fromhex(body["signature"][2:])]
    )
    return data


def test_a_call_whose_own_execution_exceeds_the_cap_is_refused(own_stack: Any, w3: Web3) -> None:
    """An EOA's grant (~70k gas) under a 50k cap: the capped estimate runs out of gas."""
    stack = own_stack(relay_gas_cap=50_000)
    patient = new_account()
    balance = w3.eth.get_balance(stack.relayer.address)
    r = stack.client.post(
        "/v1/consents",
        headers=login(stack, patient),
        json=_category_grant(stack, patient, new_account().address),
    )
    assert r.status_code == 403, r.text
    assert _error(r)["code"] == "relay_gas_cap_exceeded"
    assert _error(r)["details"]["gas_cap"] == 50_000
    assert w3.eth.get_balance(stack.relayer.address) == balance
    assert stack.registry.nonce_of(patient.address) == 0


def test_an_ordinary_erc1271_signer_is_relayed_with_the_cap_as_gas_limit(gateway: Stack) -> None:
    w3 = gateway.w3
    owner = funded_account(w3)
    wallet = _wallet(gateway, "MockERC1271Wallet", owner)
    body = _wallet_grant(gateway, owner, wallet.address, new_account().address)
    receipt = relay(gateway, login(gateway, owner), body)
    tx = w3.eth.get_transaction(receipt["tx_hash"])
    assert tx["from"] == gateway.relayer.address
    assert tx["gas"] == gateway.settings.relay_gas_cap
    assert receipt["gas_used"] < gateway.settings.relay_gas_cap


# ------------------------------------------------------------------------ quota and rate


def test_thirty_rapid_relays_for_one_patient_hit_the_quota(gateway: Stack) -> None:
    """Any signed-in account may relay a patient's signatures: the quota is the patient's."""
    quota = gateway.settings.relay_patient_quota_per_hour
    patient, relayer_of_requests = new_account(), new_account()
    headers = login(gateway, relayer_of_requests)
    statuses: list[int] = []
    refusals: list[Any] = []
    for _ in range(30):
        r = gateway.client.post(
            "/v1/consents",
            headers=headers,
            json=_category_grant(gateway, patient, new_account().address),
        )
        statuses.append(r.status_code)
        if r.status_code != 200:
            refusals.append(r)
    assert statuses == [200] * quota + [429] * (30 - quota), statuses
    for r in refusals:
        error = _error(r)
        assert error["code"] == "relay_quota_exceeded"
        assert error["details"]["limit"] == "relay_patient_quota_per_hour"
        assert error["details"]["quota"] == quota
        assert error["details"]["patient"] == patient.address.lower()
        assert 0 < int(r.headers["Retry-After"]) <= 3600
        assert error["details"]["retry_after_s"] == int(r.headers["Retry-After"])
    assert gateway.registry.nonce_of(patient.address) == quota  # only the quota was sent
    assert _relayed_rows(gateway, patient.address) == quota


def test_the_quota_counts_only_relayed_transactions_and_survives_a_restart(
    own_stack: Any, w3: Web3
) -> None:
    """Requests refused before sending (a bad signature) do not use up the quota, so nobody
    can exhaust a patient's quota without the patient's signatures; what was relayed is
    counted in the database, so a restarted gateway (or another replica) still refuses."""
    relayer = funded_account(w3)
    first = own_stack("gw", relay_patient_quota_per_hour=3, relayer=relayer)
    patient, stranger = new_account(), new_account()
    headers = login(first, stranger)
    for _ in range(5):
        forged = _category_grant(first, stranger, new_account().address)
        forged["request"]["patient"] = patient.address  # signed by someone else
        r = first.client.post("/v1/consents", headers=headers, json=forged)
        assert r.status_code == 403, r.text  # NotPatientOrGuardian: nothing sent
    for _ in range(3):
        relay(first, headers, _category_grant(first, patient, new_account().address))
    close_stack(first)

    again = own_stack("gw", relay_patient_quota_per_hour=3, relayer=relayer)
    assert again.settings.database_url == first.settings.database_url
    r = again.client.post(
        "/v1/consents",
        headers=login(again, stranger),
        json=_category_grant(again, patient, new_account().address),
    )
    assert r.status_code == 429, r.text
    assert _error(r)["code"] == "relay_quota_exceeded"
    # Another patient is not affected by this one's quota.
    other = new_account()
    relay(again, login(again, other), _category_grant(again, other, new_account().address))


def test_relays_across_patients_hit_the_global_rate(own_stack: Any) -> None:
    stack = own_stack(relay_rate_per_minute=4)
    statuses = []
    last = None
    for _ in range(6):
        patient = new_account()
        last = stack.client.post(
            "/v1/consents",
            headers=login(stack, patient),
            json=_category_grant(stack, patient, new_account().address),
        )
        statuses.append(last.status_code)
    assert statuses == [200] * 4 + [429] * 2, statuses
    assert last is not None
    error = _error(last)
    assert error["code"] == "relay_rate_limited"
    assert error["details"]["limit"] == "relay_rate_per_minute"
    assert error["details"]["rate"] == 4
    assert 0 < int(last.headers["Retry-After"]) <= 60


# ------------------------------------------------- a signer that flips after the estimate


def test_a_signer_that_flips_after_the_estimate_costs_at_most_the_cap(
    tmp_path: Path, throwaway_anvil: AnvilNode, ipfs_node: Any, service_dir: Path
) -> None:
    """Automine off: the relay is estimated while the wallet accepts and sent; the wallet then
    refuses (its owner's setAccepting, ordered first by its tip) and the block is mined. The
    relayed transaction reverts, the route has answered 202, the outcome endpoint names the
    registry's error, and the relayer paid gas_used x price with gas_used <= the cap."""
    w3 = connect(throwaway_anvil.url)
    stack = own_registry_stack(
        home=_home(tmp_path, "gw", service_dir),
        w3=w3,
        chain_url=throwaway_anvil.url,
        ipfs_url=ipfs_node.url,
        service_dir=service_dir,
        anchor_enabled=False,
        relay_receipt_wait_s=0.5,
    )
    try:
        cap = stack.settings.relay_gas_cap
        owner = funded_account(w3)
        wallet = _wallet(stack, "MockERC1271Wallet", owner)
        body = _wallet_grant(stack, owner, wallet.address, new_account().address)
        headers = login(stack, owner)
        balance = w3.eth.get_balance(stack.relayer.address)
        assert w3.provider.make_request("evm_setAutomine", [False]).get("result") is None  # type: ignore[arg-type]
        try:
            started = time.monotonic()
            r = stack.client.post("/v1/consents", headers=headers, json=body)
            assert r.status_code == 202, r.text
            assert time.monotonic() - started < 5  # bounded wait, not a block time
            pending = r.json()
            assert pending["status"] == "pending"
            assert pending["status_url"] == f"/v1/consents/relays/{pending['tx_hash']}"
            assert stack.client.get(pending["status_url"], headers=headers).status_code == 202

            flip = wallet.functions.setAccepting(False).build_transaction(
                {
                    "from": owner.address,
                    "nonce": w3.eth.get_transaction_count(owner.address, "pending"),
                    "gas": 100_000,
                    "maxPriorityFeePerGas": 10**10,
                    "maxFeePerGas": 10**11,
                }
            )
            w3.eth.send_raw_transaction(owner.sign_transaction(flip).raw_transaction)
            w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        finally:
            w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]

        receipt = w3.eth.get_transaction_receipt(pending["tx_hash"])
        assert receipt["status"] == 0  # reverted when mined
        tx = w3.eth.get_transaction(pending["tx_hash"])
        assert tx["gas"] == cap
        assert receipt["gasUsed"] <= cap
        paid = balance - w3.eth.get_balance(stack.relayer.address)
        assert paid == receipt["gasUsed"] * receipt["effectiveGasPrice"]
        assert paid <= cap * receipt["effectiveGasPrice"]

        outcome = stack.client.get(pending["status_url"], headers=headers)
        assert outcome.status_code == 422, outcome.text
        assert _error(outcome)["code"] == "contract_invalid_signature"
        assert _relayed_rows(stack, wallet.address) == 1  # a relayed attempt counts
    finally:
        close_stack(stack)


# ----------------------------------------------------------------- three accounts, drained


@pytest.mark.parametrize("drained", ["relayer", "registrar", "gateway_account"])
def test_draining_one_account_leaves_the_others_working(
    own_stack: Any, w3: Web3, drained: str
) -> None:
    """The relayer pays for relays, the registrar registers, the gateway account anchors:
    with any one at zero balance, the other two still work."""
    quiet_logs()
    stack = own_stack()
    accounts = {
        "relayer": stack.relayer,
        "registrar": stack.registrar,
        "gateway_account": stack.gateway_account,
    }
    assert len({a.address for a in accounts.values()}) == 3
    patient, doctor = new_account(), new_account()
    centre = login(stack, stack.centre)
    r = upload(stack, centre, patient=patient.address, data=b"HbA1c " + os.urandom(8))
    assert r.status_code == 201, r.text
    record_id = r.json()["record_id"]
    patient_headers, doctor_headers = login(stack, patient), login(stack, doctor)
    relay(stack, patient_headers, _category_grant(stack, patient, doctor.address))

    w3.provider.make_request("anvil_setBalance", [accounts[drained].address, "0x0"])  # type: ignore[arg-type]

    # relaying
    r = stack.client.post(
        "/v1/consents",
        headers=patient_headers,
        json=_category_grant(stack, patient, new_account().address),
    )
    assert (r.status_code == 200) == (drained != "relayer"), r.text
    # registering
    r = upload(stack, centre, patient=patient.address, data=b"LDL " + os.urandom(8))
    assert (r.status_code == 201) == (drained != "registrar"), r.text
    # anchoring (a read makes a log entry to anchor)
    url = f"/v1/records/{record_id}?purpose=treatment"
    assert stack.client.get(url, headers=doctor_headers).status_code == 200
    before = stack.registry.checkpoint_of(stack.gateway_account.address).tree_size
    if drained == "gateway_account":
        with pytest.raises(Exception, match=r"(?i)insufficient funds"):
            stack.state.anchorer.anchor_now()
    else:
        checkpoint = stack.state.anchorer.anchor_now()
        assert checkpoint is not None
        after = stack.registry.checkpoint_of(stack.gateway_account.address).tree_size
        assert after == checkpoint.tree_size > before
