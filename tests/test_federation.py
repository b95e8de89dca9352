"""Threshold custody end to end: three real gateways (2-of-3) on one registry, the session's
anvil and IPFS node. The centre encrypts and splits on its side; each gateway decides alone and
logs; the reader combines two shares. Attacks and faults performed here:

- compromise: the complete state of one gateway (database, custody key, transaction keys,
  settings) plus every byte on the IPFS node decrypts no record;
- a lying gateway that returns a wrong share is named, and the fetch succeeds from the others;
- a gateway that releases its share without consent is named by the audit;
- one gateway down: served; two down: fails closed, nothing decrypted; a restarted gateway's
  log still verifies;
- after a revoke's receipt every gateway denies.
"""

from __future__ import annotations

import base64
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from web3 import Web3

from gateway.app import create_app
from ledger.audit.export import load_access_log
from ledger.audit.report import FindingKind
from ledger.audit.run import run_audit
from ledger.chain.build import compile_contracts
from ledger.chain.registry import REGISTRY_CONTRACT
from ledger.chain.rpc import RpcClient
from ledger.client import Gateway
from ledger.federation import (
    EXIT_NOT_ENOUGH_SHARES,
    FederationUnavailable,
    fetch_federated,
    upload_sealed,
)
from ledger.protocol import custody
from ledger.protocol.consent_types import EMERGENCY_ROLE, ScopeKind, category_id
from ledger.protocol.events import EventDecoder, registry_event_abi
from tests.helpers.audit_world import audit_time_skew
from tests.helpers.federation import (
    Federation,
    close_federation,
    release_without_consent,
    start_federation,
)
from tests.helpers.gateway import (
    Stack,
    login,
    new_account,
)

LAB = category_id("laboratory")
FAR = 2**40


def _start(stack: Stack) -> None:
    port = int(stack.settings.siwe_uri.rsplit(":", 1)[1])
    app = create_app(stack.settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name=f"gateway-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not restart")
        time.sleep(0.02)
    stack.app, stack.server, stack.thread = app, server, thread


def _stop(stack: Stack) -> None:
    stack.server.should_exit = True
    stack.thread.join(timeout=30)


@pytest.fixture(scope="module")
def fed(
    tmp_path_factory: pytest.TempPathFactory,
    anvil: Any,
    w3: Web3,
    ipfs_node: Any,
    service_dir: Path,
) -> Iterator[Federation]:
    federation = start_federation(
        home=lambda i: tmp_path_factory.mktemp(f"member{i}"),
        w3=w3,
        chain_url=anvil.url,
        ipfs_url=ipfs_node.url,
        service_dir=service_dir,
        checkpoint_every=1,
    )
    try:
        yield federation
    finally:
        close_federation(federation)


def _upload(fed: Federation, patient: str, data: bytes, via: int = 0) -> str:
    stack = fed.stacks[via]
    with Gateway(fed.url(via)) as gw:
        session = gw.login(stack.centre)
        up = upload_sealed(session, data, registry=fed.registry, patient=patient, category=LAB)
    assert up.created
    return up.record.record_id


def _grant(fed: Federation, patient: Any, grantee: str) -> None:
    fed.registry.reset_nonces()
    fed.registry.w3.provider.make_request(  # type: ignore[arg-type]
        "anvil_setBalance", [patient.address, hex(10**20)]
    )
    fed.registry.grant(patient, grantee, ScopeKind.CATEGORY, LAB, 1, FAR)


def test_the_centre_splits_and_two_of_three_gateways_release(fed: Federation) -> None:
    patient, doctor = new_account(), new_account()
    data = b"haemoglobin 141 g/L" * 50
    rid = _upload(fed, patient.address, data)
    # The uploading gateway holds no key: its row has no wrapped key, its copy is a manifest.
    row = fed.stacks[0].state.records._row(rid)
    assert row is not None
    assert row.wrapped_key == b""
    with pytest.raises(FederationUnavailable) as refused:
        fetch_federated(doctor, rid, registry=fed.registry, purpose="treatment")
    assert refused.value.denied  # every gateway said consent_denied, each on its own
    assert refused.value.exit_code == 1
    _grant(fed, patient, doctor.address)
    opened = fetch_federated(doctor, rid, registry=fed.registry, purpose="treatment")
    assert opened.plaintext == data
    released = [r.gateway for r in opened.releases if r.release is not None]
    assert len(released) == 2
    # A gateway the record was not uploaded through found it from the chain and IPFS.
    assert fed.stacks[1].gateway_account.address in released
    # The patient reads their own record through the federation too.
    assert fetch_federated(patient, rid, registry=fed.registry, purpose=0).plaintext == data


def test_one_gateway_state_and_all_of_ipfs_decrypt_nothing(fed: Federation, ipfs_node: Any) -> None:
    patient = new_account()
    data = b"glucose 5.1 mmol/L, a secret result"
    rid = _upload(fed, patient.address, data, via=1)
    for member in range(3):
        _assert_compromise_fails(fed, member, rid, data, ipfs_node)


def _assert_compromise_fails(
    fed: Federation, member: int, rid: str, data: bytes, ipfs_node: Any
) -> None:
    stack = fed.stacks[member]
    # Every key material of this gateway: settings' secrets, key files, every database blob.
    candidates: set[bytes] = {
        stack.settings.kek_bytes,
        stack.settings.gateway_key_bytes,
        fed.custody_keys[member],
        stack.relayer.key,
        stack.registrar.key,
        stack.gateway_account.key,
    }
    for path in stack.home.rglob("*"):
        if path.is_file() and path.suffix == ".key":
            candidates.add(bytes.fromhex(path.read_text().strip().removeprefix("0x")))
    db = sqlite3.connect(stack.home / "gateway.sqlite3")
    blobs: list[bytes] = []
    for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'"):
        for row in db.execute(f'SELECT * FROM "{table}"'):  # noqa: S608 - our own table names
            blobs += [v for v in row if isinstance(v, bytes)]
            blobs += [v.encode() for v in row if isinstance(v, str)]
    db.close()
    manifest_raw = next(b for b in blobs if b.startswith(b'{"blob_cid"'))
    manifest = custody.CustodyManifest.parse(manifest_raw)
    # The whole IPFS repository: every pinned object, none holding the plaintext.
    with httpx.Client(base_url=ipfs_node.url, timeout=60) as http:
        pins = http.post("/api/v0/pin/ls", params={"type": "recursive"}).json()["Keys"]
        for cid in pins:
            assert data not in http.post("/api/v0/cat", params={"arg": cid}).content
        blob = http.post("/api/v0/cat", params={"arg": manifest.blob_cid}).content
    assert data not in b"".join(blobs)
    # Its own share is the only one any of its key material opens, and alone it combines to
    # nothing (t - 1 of t).
    own = custody.unseal_share(manifest, member, fed.custody_keys[member])
    for other in range(3):
        for key in candidates:
            if other != member:
                with pytest.raises(custody.CustodyError):
                    custody.unseal_share(manifest, other, key)
    with pytest.raises(custody.NotEnoughShares):
        custody.combine_shares({member: own}, manifest=manifest)
    # Every 32-byte window of every secret and stored value tried as the AES-256-GCM key.
    windows = set(candidates)
    for value in [*blobs, own]:
        windows.update(value[i : i + 32] for i in range(0, max(0, len(value) - 31)))
    nonce, body = blob[5:17], blob[17:]
    for key in windows:
        if len(key) == 32:
            with pytest.raises(InvalidTag):
                AESGCM(key).decrypt(nonce, body, None)
    assert rid


def test_a_wrong_share_is_named_and_the_honest_gateways_serve(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    patient, doctor = new_account(), new_account()
    data = b"cholesterol 4.2 mmol/L"
    rid = _upload(fed, patient.address, data)
    _grant(fed, patient, doctor.address)
    liar = fed.stacks[0]
    honest_release = liar.state.records.release_share

    def lying_release(principal: Any, record_id: str, purpose: int) -> Any:
        good = honest_release(principal, record_id, purpose)
        other_key = custody.split_key(bytes(range(32)), threshold=2, n=3)[good.index]
        forged = custody.reseal_share(other_key, principal.public_key)
        return good.model_copy(update={"sealed_share": base64.b64encode(forged).decode()})

    monkeypatch.setattr(liar.state.records, "release_share", lying_release)
    opened = fetch_federated(doctor, rid, registry=fed.registry, purpose="treatment")
    assert opened.plaintext == data
    assert opened.bad_gateways == [liar.gateway_account.address]


def test_one_down_still_served_two_down_fails_closed_and_the_log_verifies(
    fed: Federation,
) -> None:
    patient, doctor = new_account(), new_account()
    data = b"ALT 22 U/L"
    rid = _upload(fed, patient.address, data)
    _grant(fed, patient, doctor.address)
    a, b = fed.stacks[0], fed.stacks[1]
    _stop(a)
    try:
        assert fetch_federated(doctor, rid, registry=fed.registry, purpose=0).plaintext == data
        _stop(b)
        try:
            with pytest.raises(FederationUnavailable) as down:
                fetch_federated(doctor, rid, registry=fed.registry, purpose=0)
            assert down.value.exit_code == EXIT_NOT_ENOUGH_SHARES
            assert a.gateway_account.address in down.value.refusals
        finally:
            _start(b)
    finally:
        _start(a)
    assert fetch_federated(doctor, rid, registry=fed.registry, purpose=0).plaintext == data
    _audit(fed, expect_clean=True)


def test_after_the_revoke_receipt_every_gateway_denies(fed: Federation) -> None:
    patient, doctor = new_account(), new_account()
    rid = _upload(fed, patient.address, b"creatinine 80 umol/L")
    _grant(fed, patient, doctor.address)
    fetch_federated(doctor, rid, registry=fed.registry, purpose=0)
    fed.registry.revoke(patient, doctor.address, ScopeKind.CATEGORY, LAB)
    for stack in fed.stacks:
        r = stack.client.get(
            f"/v1/custody/records/{rid}/share",
            params={"purpose": "treatment"},
            headers=login(stack, doctor),
        )
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "consent_denied"


def test_guardian_and_break_glass_are_decided_by_each_gateway(fed: Federation) -> None:
    """A guardian reads for the patient, and an emergency institution reads while its
    break-glass window is open and is refused by every gateway once the patient closes it."""
    patient, guardian, ward = new_account(), new_account(), new_account()
    data = b"troponin 3 ng/L"
    rid = _upload(fed, patient.address, data)
    for acc in (patient, guardian, ward):
        fed.registry.w3.provider.make_request(  # type: ignore[arg-type]
            "anvil_setBalance", [acc.address, hex(10**20)]
        )
    fed.registry.reset_nonces()
    fed.registry.set_guardian(patient, guardian.address)
    assert fetch_federated(guardian, rid, registry=fed.registry, purpose=0).plaintext == data
    fed.registry.grant_role(fed.stacks[0].admin, EMERGENCY_ROLE, ward.address)
    fed.registry.open_break_glass(ward, patient.address, 3600, b"\x11" * 32)
    opened = fetch_federated(ward, rid, registry=fed.registry, purpose="emergency")
    assert opened.plaintext == data
    fed.registry.close_break_glass(patient, patient.address, ward.address)
    with pytest.raises(FederationUnavailable) as closed:
        fetch_federated(ward, rid, registry=fed.registry, purpose="emergency")
    assert closed.value.denied


def test_revocation_race_across_the_federation_no_release_after_a_revoke(
    fed: Federation,
) -> None:
    """20 grantees keep asking every gateway for their shares while the patients revoke, one
    grant after another; the audit, judging every gateway's every release on the exact state it
    was decided on, finds none at or after a revoke's position."""
    patients = [new_account() for _ in range(4)]
    grantees = [new_account() for _ in range(20)]
    rids = [_upload(fed, p.address, b"race " + p.address.encode()) for p in patients]
    owner = {g.address: i % len(patients) for i, g in enumerate(grantees)}
    for i, g in enumerate(grantees):
        _grant(fed, patients[i % len(patients)], g.address)
    tokens = {
        (g.address, k): login(stack, g) for g in grantees for k, stack in enumerate(fed.stacks)
    }
    stop = threading.Event()
    counts = {"allowed": 0, "denied": 0, "other": 0}
    lock = threading.Lock()

    def hammer(g: Any) -> None:
        rid = rids[owner[g.address]]
        k = 0
        while not stop.is_set():
            stack = fed.stacks[k % 3]
            r = stack.client.get(
                f"/v1/custody/records/{rid}/share",
                params={"purpose": "treatment"},
                headers=tokens[(g.address, k % 3)],
            )
            with lock:
                key = {200: "allowed", 403: "denied"}.get(r.status_code, "other")
                counts[key] += 1
            k += 1

    threads = [threading.Thread(target=hammer, args=(g,)) for g in grantees]
    for t in threads:
        t.start()
    try:
        for i, g in enumerate(grantees):
            fed.registry.revoke(patients[i % len(patients)], g.address, ScopeKind.CATEGORY, LAB)
    finally:
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert counts["allowed"] > 0
    assert counts["denied"] > 0
    assert counts["other"] == 0, counts
    # After every revoke's receipt, every gateway denies every grantee.
    for g in grantees:
        for k, stack in enumerate(fed.stacks):
            r = stack.client.get(
                f"/v1/custody/records/{rids[owner[g.address]]}/share",
                params={"purpose": "treatment"},
                headers=tokens[(g.address, k)],
            )
            assert r.status_code == 403, r.text
    report = _audit(fed, expect_clean=True)
    assert not [f for f in report.violations if f.kind is FindingKind.READ_WITHOUT_CONSENT]


def test_a_release_without_consent_is_a_violation_naming_that_gateway(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    patient, stranger = new_account(), new_account()
    rid = _upload(fed, patient.address, b"a result nobody consented to share")
    rogue = fed.stacks[2]
    records = rogue.state.records
    monkeypatch.setattr(records, "_decide", release_without_consent(records))
    r = rogue.client.get(
        f"/v1/custody/records/{rid}/share",
        params={"purpose": "treatment"},
        headers=login(rogue, stranger),
    )
    assert r.status_code == 200, r.text
    monkeypatch.undo()
    report = _audit(fed, expect_clean=False)
    offenders = {
        f.details.get("gateway")
        for f in report.violations
        if f.kind is FindingKind.READ_WITHOUT_CONSENT
    }
    assert offenders == {rogue.gateway_account.address}


def _audit(fed: Federation, *, expect_clean: bool) -> Any:
    auditor = new_account()
    exports = []
    for stack in fed.stacks:
        stack.state.auditors = frozenset({auditor.address})
        stack.state.anchorer.anchor_now()
        headers = login(stack, auditor)
        with httpx.Client(headers=headers, timeout=60) as http:
            exports.append(
                load_access_log(f"{stack.client.base_url}/v1/access-log/export", client=http)
            )
    stack = fed.stacks[0]
    abi = compile_contracts(cache_dir=stack.home / "build")[REGISTRY_CONTRACT].abi
    rpc = RpcClient(stack.settings.chain_url, client=httpx.Client(timeout=60))
    try:
        report = run_audit(
            rpc,
            registry=stack.settings.registry(),
            deploy_block=stack.settings.deployment_block(),
            decoder=EventDecoder(registry_event_abi(abi)),
            access_logs=exports,
            max_time_skew_s=audit_time_skew(stack.w3),
        )
    finally:
        rpc.close()
    listed = {g.address for g in report.gateways}
    assert {s.gateway_account.address for s in fed.stacks} <= listed
    if expect_clean:
        assert report.exit_code == 0, [(f.kind, f.message) for f in report.findings]
    return report
