"""Fault injection on a real stack: the gateway, IPFS node, chain node and database fail mid-work.

Most tests share one stack of their own (``ledger.devstack.stack.start_stack`` on free ports in a
temp dir: anvil, js-ipfs and the gateway as a uvicorn subprocess), never the session services, and
stop every process by its PID in ``finally``. After each fault the stack must hold these
invariants (:func:`_problems`):

- every record row of the gateway is ``live``, registered on-chain with the same CID, and its
  blob is pinned (no orphan rows);
- every record registered on-chain has its blob pinned and a live row (no record on-chain
  without its blob; none the gateway cannot serve);
- every pin on the IPFS node belongs to a live record (no orphan pins);
- the auditor's export of the access log audits clean against the chain.

The PostgreSQL test runs the gateway in-process on the session chain and IPFS node against a
fresh schema, and kills the gateway's server connections under load.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from gateway.ipfs import IpfsClient
from ledger.audit.export import load_access_log
from ledger.audit.report import FindingKind
from ledger.audit.run import run_audit
from ledger.chain.build import compile_contracts
from ledger.chain.node import connect, dev_accounts
from ledger.chain.registry import REGISTRY_CONTRACT, ConsentRegistry
from ledger.chain.rpc import RpcClient
from ledger.devstack.services import AnvilNode, stack_ports
from ledger.devstack.stack import StackConfig, StackInfo, start_stack
from ledger.paths import StatePaths
from ledger.protocol import eip712
from ledger.protocol.consent_types import CENTRE_ROLE
from ledger.protocol.envelope import open_envelope
from ledger.protocol.events import EventDecoder, registry_event_abi
from tests.helpers.audit_world import audit_time_skew
from tests.helpers.build import share_build_cache
from tests.helpers.gateway import (
    PG_DSN,
    Stack,
    attest,
    close_stack,
    login,
    new_account,
    own_registry_stack,
    quiet_logs,
    relay,
    salt_for,
    signed_grant,
    upload,
)

BIG = 8 * 1024 * 1024  # an upload large enough that encrypting + adding it takes a while


# ------------------------------------------------------------------------------ the stack


@dataclass
class Remote:
    """A stack of our own, shaped like ``tests.helpers.gateway.Stack`` for its helpers."""

    info: StackInfo
    paths: StatePaths
    client: httpx.Client
    settings: SimpleNamespace
    w3: Web3
    registry: ConsentRegistry
    ipfs: IpfsClient
    centre: LocalAccount
    auditor: LocalAccount
    abi: list[dict[str, Any]]

    @property
    def domain(self) -> eip712.Domain:
        return self.registry.domain

    def restart_gateway(self) -> None:
        self.info.gateway.stop()  # already dead: closes its log file
        self.info.gateway.start()
        _wait_health(self, 200)


def _wait_health(remote: Remote, status: int, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            r = remote.client.get("/healthz", timeout=5)
            last = (r.status_code, r.text)
            if r.status_code == status:
                body: dict[str, Any] = r.json()
                return body
        time.sleep(0.1)
    raise AssertionError(f"/healthz never answered {status}: {last}")


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    paths = StatePaths(tmp_path_factory.mktemp("fault-stack"))
    share_build_cache(paths.home)
    auditor = new_account()
    ports = stack_ports()
    config = StackConfig(
        paths,
        chain_port=ports[0],
        ipfs_port=ports[1],
        gateway_port=ports[2],
        state_interval_s=1,
        gateway_env={
            "CONSENT_AUDITORS": auditor.address,
            "CONSENT_CHECKPOINT_EVERY": "4",
            "CONSENT_CHECKPOINT_INTERVAL_S": "1",
            "CONSENT_CHAIN_TIMEOUT_S": "3",
            "CONSENT_IPFS_TIMEOUT_S": "3",
        },
    )
    info = start_stack(config, say=lambda _line: None)
    client: httpx.Client | None = None
    ipfs_http: httpx.Client | None = None
    try:
        w3 = connect(info.anvil.url)
        abi = compile_contracts(cache_dir=paths.build_cache)[REGISTRY_CONTRACT].abi
        registry = ConsentRegistry(w3, info.deployment.address, abi=abi)
        admin, _gateway, centre = dev_accounts()[:3]
        registry.grant_role(admin, CENTRE_ROLE, centre.address)
        client = httpx.Client(base_url=info.gateway_url, timeout=60)
        ipfs_http = httpx.Client(base_url=info.ipfs.url, timeout=30)
        yield Remote(
            info=info,
            paths=paths,
            client=client,
            settings=SimpleNamespace(
                siwe_domain=f"127.0.0.1:{config.gateway_port}",
                siwe_uri=f"http://127.0.0.1:{config.gateway_port}",
            ),
            w3=w3,
            registry=registry,
            ipfs=IpfsClient(ipfs_http, timeout_s=10),
            centre=centre,
            auditor=auditor,
            abi=list(abi),
        )
    finally:
        if client is not None:
            client.close()
        if ipfs_http is not None:
            ipfs_http.close()
        info.stop()  # each process by its own PID: gateway, IPFS node, chain node


# ----------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Prepared:
    """An upload ready to send: the multipart body and the record id it will get."""

    record_id: str
    data: bytes
    content_type: str
    body: bytes


def _prepare(remote: Remote, patient: str, data: bytes, issued_at: int) -> Prepared:
    attestation, signature = attest(
        remote,  # type: ignore[arg-type]
        remote.centre,
        patient=patient,
        data=data,
        issued_at=issued_at,
    )
    request = httpx.Request(
        "POST",
        f"{remote.info.gateway_url}/v1/records",
        files={"file": ("result.bin", data, "application/octet-stream")},
        data={
            "patient": patient,
            "category": "laboratory",
            "issued_at": str(issued_at),
            "signature": signature,
            "salt": "0x" + salt_for(patient, data, issued_at).hex(),
        },
    )
    record_id = "0x" + bytes(eip712.record_id(remote.domain, attestation)).hex()
    return Prepared(record_id, data, request.headers["content-type"], request.read())


def _send(remote: Remote, headers: dict[str, str], prepared: Prepared, **kw: Any) -> httpx.Response:
    return remote.client.post(
        "/v1/records",
        headers={**headers, "content-type": prepared.content_type},
        content=kw.pop("content", prepared.body),
        **kw,
    )


@dataclass
class InFlight:
    """An upload sent from a thread; ``outcome`` is the response or the transport error."""

    thread: threading.Thread
    outcome: list[httpx.Response | Exception]

    def join(self) -> httpx.Response | Exception:
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the upload never returned"
        return self.outcome[0]


def _send_in_thread(
    remote: Remote, headers: dict[str, str], prepared: Prepared, content: Any = None
) -> InFlight:
    outcome: list[httpx.Response | Exception] = []

    def run() -> None:
        try:
            with httpx.Client(base_url=remote.info.gateway_url, timeout=60) as c:
                outcome.append(
                    c.post(
                        "/v1/records",
                        headers={**headers, "content-type": prepared.content_type},
                        content=content if content is not None else prepared.body,
                    )
                )
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, name="upload", daemon=True)
    thread.start()
    return InFlight(thread, outcome)


def _row(remote: Remote, record_id: str) -> tuple[str, str | None] | None:
    """``(status, cid)`` of the gateway's row, read straight from its SQLite file."""
    conn = sqlite3.connect(f"file:{remote.paths.database}?mode=ro", uri=True, timeout=5)
    try:
        found = conn.execute(
            "SELECT status, cid FROM record WHERE record_id = ?", (record_id,)
        ).fetchone()
    except sqlite3.OperationalError:  # locked for a moment by the gateway's writer
        return None
    finally:
        conn.close()
    return (str(found[0]), found[1]) if found is not None else None


def _wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def _rows(remote: Remote) -> list[tuple[str, str, str | None]]:
    conn = sqlite3.connect(f"file:{remote.paths.database}?mode=ro", uri=True, timeout=5)
    try:
        return [
            (str(r[0]), str(r[1]), r[2])
            for r in conn.execute("SELECT record_id, status, cid FROM record").fetchall()
        ]
    finally:
        conn.close()


def _onchain_records(remote: Remote) -> dict[str, str]:
    """record id -> CID, from every ``RecordRegistered`` event of the stack's registry."""
    logs = remote.registry.contract.events.RecordRegistered().get_logs(
        from_block=remote.info.deployment.block
    )
    return {"0x" + bytes(e["args"]["recordId"]).hex(): str(e["args"]["cid"]) for e in logs}


def _problems(remote: Remote) -> list[str]:
    """Every violated invariant of the stack (see the module docstring)."""
    problems: list[str] = []
    rows = _rows(remote)
    chain = _onchain_records(remote)
    pins = {str(c) for c in remote.ipfs.pin_ls()}
    live = {rid: cid for rid, status, cid in rows if status == "live"}
    for rid, status, cid in rows:
        if status != "live":
            problems.append(f"orphan row: {rid} is {status} (cid {cid})")
        elif chain.get(rid) != cid:
            problems.append(
                f"live row {rid} (cid {cid}) is registered on-chain as {chain.get(rid)}"
            )
    for rid, cid in chain.items():
        if cid not in pins:
            problems.append(f"record {rid} is on-chain but its blob {cid} is not pinned")
        if rid not in live:
            problems.append(f"record {rid} is on-chain but the gateway has no live row for it")
    for cid in sorted(pins - set(live.values())):
        problems.append(f"orphan pin: {cid} belongs to no live record")
    return problems


def _audit(remote: Remote) -> Any:
    headers = login(remote, remote.auditor)  # type: ignore[arg-type]
    with httpx.Client(headers=headers, timeout=60) as http:
        export = load_access_log(f"{remote.info.gateway_url}/v1/access-log/export", client=http)
    rpc = RpcClient(remote.info.anvil.url, client=httpx.Client(timeout=60))
    try:
        return run_audit(
            rpc,
            registry=remote.info.deployment.address,
            deploy_block=remote.info.deployment.block,
            decoder=EventDecoder(registry_event_abi(remote.abi)),
            access_logs=[export],
        )
    finally:
        rpc.close()


def _assert_audit_clean(remote: Remote) -> None:
    report = _audit(remote)
    assert report.exit_code == 0, [(f.kind, f.message) for f in report.findings]
    assert {f.kind for f in report.findings} <= {FindingKind.UNANCHORED_ENTRIES}


def _fetch_own(remote: Remote, patient: LocalAccount, record_id: str, data: bytes) -> None:
    """The patient reads the record back and it opens to the uploaded bytes."""
    r = remote.client.get(
        f"/v1/records/{record_id}?purpose=treatment",
        headers=login(remote, patient),  # type: ignore[arg-type]
    )
    assert r.status_code == 200, r.text
    on_chain = remote.registry.record_of(bytes.fromhex(record_id[2:])).content_digest
    assert on_chain != hashlib.sha256(data).digest()  # salted
    opened = open_envelope(r.json(), private_key=patient.key, expected_digest=on_chain)
    assert opened == data


@pytest.fixture(scope="module")
def history(remote: Remote) -> dict[str, Any]:
    """Some reads in the access log before any fault: allowed, denied, and anchored."""
    patient, doctor, stranger = new_account(), new_account(), new_account()
    data = b"blood count " + os.urandom(16).hex().encode()
    prepared = _prepare(remote, patient.address, data, int(time.time()))
    r = _send(remote, login(remote, remote.centre), prepared)  # type: ignore[arg-type]
    assert r.status_code == 201, r.text
    relay(
        remote,  # type: ignore[arg-type]
        login(remote, patient),  # type: ignore[arg-type]
        signed_grant(
            remote,  # type: ignore[arg-type]
            patient,
            doctor.address,
            scope_id=bytes.fromhex(prepared.record_id[2:]),
        ),
    )
    url = f"/v1/records/{prepared.record_id}?purpose=treatment"
    for who, status in ((doctor, 200), (stranger, 403), (doctor, 200), (stranger, 403)):
        got = remote.client.get(url, headers=login(remote, who))  # type: ignore[arg-type]
        assert got.status_code == status, got.text
    _assert_audit_clean(remote)
    assert _problems(remote) == []
    return {"patient": patient, "doctor": doctor, "record_id": prepared.record_id, "url": url}


# ----------------------------------------------------------------- the gateway SIGKILLed


def _kill_when(remote: Remote, predicate: Callable[[], bool], what: str) -> None:
    _wait_for(predicate, what)
    remote.info.gateway.kill()  # SIGKILL, by the gateway's own PID


def _in_pool(remote: Remote, cid: str) -> bool:
    """Whether a transaction carrying ``cid`` (registerRecord's calldata) waits in the pool."""
    pool = remote.w3.provider.make_request("txpool_content", [])  # type: ignore[arg-type]
    needle = cid.encode().hex()
    return any(
        needle in str(tx.get("input", ""))
        for by_nonce in pool["result"].get("pending", {}).values()
        for tx in by_nonce.values()
    )


def _automine(remote: Remote, on: bool) -> None:
    remote.w3.provider.make_request("evm_setAutomine", [on])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "moment",
    [
        "body-half-sent",
        "ipfs-add",
        "tx-mined-after-crash",
        "tx-dropped",
    ],
)
def test_gateway_sigkilled_mid_upload_leaves_nothing_half_done_and_the_retry_succeeds(
    remote: Remote, history: dict[str, Any], moment: str
) -> None:
    """SIGKILL the gateway at one moment of an 8 MiB upload, restart it on the same port:
    the invariants hold, the access log still audits clean, and the same upload retried
    succeeds (201, or 200 if the first attempt had completed) and reads back."""
    patient = new_account()
    data = os.urandom(BIG)
    prepared = _prepare(remote, patient.address, data, 1_700_000_000)
    headers = login(remote, remote.centre)  # type: ignore[arg-type]
    rid = prepared.record_id
    try:
        if moment == "body-half-sent":
            half = threading.Event()

            def body() -> Iterator[bytes]:
                step = 256 * 1024
                for i in range(0, len(prepared.body), step):
                    if i >= len(prepared.body) // 2:
                        half.set()
                        time.sleep(0.05)
                    yield prepared.body[i : i + step]

            flight = _send_in_thread(remote, headers, prepared, content=body())
            _kill_when(remote, half.is_set, "half of the body to be sent")
        elif moment == "ipfs-add":
            flight = _send_in_thread(remote, headers, prepared)
            # The pending row (it names its CID from the start) is written just before the
            # 8 MiB blob is streamed to the node: the kill lands while it is being added.
            _kill_when(
                remote, lambda: (_row(remote, rid) or ("", None))[0] == "pending", "the pending row"
            )
        else:
            # registerRecord is sent but not mined while automine is off: kill the gateway
            # then, and mine (or drop) its transaction after it died.
            _automine(remote, False)
            flight = _send_in_thread(remote, headers, prepared)
            _wait_for(
                lambda: (_row(remote, rid) or ("", None))[1] is not None, "the blob to be pinned"
            )
            cid = (_row(remote, rid) or ("", None))[1]
            assert cid is not None
            _kill_when(remote, lambda: _in_pool(remote, cid), "registerRecord in the tx pool")
            if moment == "tx-dropped":
                remote.w3.provider.make_request("anvil_dropAllTransactions", [])  # type: ignore[arg-type]
            _automine(remote, True)
            remote.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        outcome = flight.join()
        assert isinstance(outcome, httpx.TransportError), outcome

        remote.restart_gateway()
        assert _problems(remote) == []
        _assert_audit_clean(remote)

        retry = _send(remote, login(remote, remote.centre), prepared)  # type: ignore[arg-type]
        assert retry.status_code in (200, 201), retry.text
        assert retry.json()["record_id"] == rid
        _fetch_own(remote, patient, rid, data)
        assert _problems(remote) == []
        # The reads before the crash are still served.
        r = remote.client.get(history["url"], headers=login(remote, history["doctor"]))  # type: ignore[arg-type]
        assert r.status_code == 200, r.text
    finally:
        _automine(remote, True)
        if not remote.info.gateway.alive():
            remote.restart_gateway()  # its start-up sweep resolves what the crash left


# ----------------------------------------------------------------------- IPFS killed


def test_ipfs_killed_mid_upload_is_a_clear_503_then_recovers_after_restart(
    remote: Remote, history: dict[str, Any]
) -> None:
    patient = new_account()
    data = os.urandom(BIG)
    prepared = _prepare(remote, patient.address, data, 1_700_000_001)
    headers = login(remote, remote.centre)  # type: ignore[arg-type]
    try:
        flight = _send_in_thread(remote, headers, prepared)
        _wait_for(lambda: _row(remote, prepared.record_id) is not None, "the pending row")
        remote.info.ipfs.kill()  # SIGKILL while the gateway streams the blob to it
        outcome = flight.join()
        assert isinstance(outcome, httpx.Response), outcome
        assert outcome.status_code == 503, outcome.text
        assert outcome.json()["error"]["code"] == "ipfs_unavailable"

        # Nothing half-done: no row, nothing on-chain.
        assert _row(remote, prepared.record_id) is None
        assert prepared.record_id not in _onchain_records(remote)
        # Reads fail closed with 503 and say why; so does the health check.
        r = remote.client.get(history["url"], headers=login(remote, history["doctor"]))  # type: ignore[arg-type]
        assert r.status_code in (200, 503), r.text  # 200 only from the verified-blob cache
        if r.status_code == 503:
            assert r.json()["error"]["code"] == "ipfs_unavailable"
        health = _wait_health(remote, 503)
        assert "ipfs" in health["details"]
    finally:
        remote.info.ipfs.stop()  # already dead: closes its log file
        remote.info.ipfs.start()
    _wait_health(remote, 200)
    retry = _send(remote, login(remote, remote.centre), prepared)  # type: ignore[arg-type]
    assert retry.status_code == 201, retry.text
    _fetch_own(remote, patient, prepared.record_id, data)
    assert _problems(remote) == []
    _assert_audit_clean(remote)


# ----------------------------------------------------------------------- chain killed


def _wait_until_anchored_and_dumped(remote: Remote, timeout_s: float = 30.0) -> None:
    """Until the gateway has anchored its whole access log and anvil's periodic state dump (every
    second) covers the head block: a SIGKILL of the node then loses no block the gateway's log
    relies on."""
    url = f"{remote.info.gateway_url}/v1/access-log/export"
    deadline = time.monotonic() + timeout_s
    with httpx.Client(headers=login(remote, remote.auditor), timeout=60) as http:  # type: ignore[arg-type]
        while True:
            size = len(load_access_log(url, client=http).entries)
            anchored = remote.client.get("/v1/access-log/checkpoint")
            head = remote.w3.eth.block_number
            if (
                anchored.status_code == 200
                and anchored.json()["tree_size"] == size
                and _dumped_block(remote) >= head
            ):
                return
            assert time.monotonic() < deadline, (
                f"log of {size} entries, last checkpoint {anchored.text}, head block {head}, "
                f"state dumped up to block {_dumped_block(remote)}"
            )
            time.sleep(0.1)


def _dumped_block(remote: Remote) -> int:
    """The head block of anvil's last state dump (-1 before the first, or mid-write)."""
    try:
        dumped = json.loads(remote.paths.chain_state.read_text())["best_block_number"]
        return int(dumped, 0) if isinstance(dumped, str) else int(dumped)
    except (OSError, ValueError, KeyError):
        return -1


def test_chain_killed_fails_closed_then_recovers_after_restart(
    remote: Remote, history: dict[str, Any]
) -> None:
    """``test_gateway_faults`` shows 503-never-200 while the node is down; here the node comes
    back (same port, state file) and the gateway serves again without a restart of its own."""
    doctor_headers = login(remote, history["doctor"])  # type: ignore[arg-type]
    before = remote.client.get(history["url"], headers=doctor_headers)
    assert before.status_code == 200, before.text
    _wait_until_anchored_and_dumped(remote)
    anvil: AnvilNode = remote.info.anvil
    anvil.process.kill()
    try:
        for _ in range(3):
            r = remote.client.get(history["url"], headers=doctor_headers)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "chain_unavailable"
    finally:
        anvil.process.stop()  # already dead: closes its log file
        anvil.start()
    _wait_health(remote, 200)
    after = remote.client.get(history["url"], headers=doctor_headers)
    assert after.status_code == 200, after.text
    assert after.json()["block_number"] >= before.json()["block_number"]
    # Writes work again too (the relayer's nonce is still right).
    patient = new_account()
    data = b"after the chain came back " + os.urandom(8).hex().encode()
    prepared = _prepare(remote, patient.address, data, int(time.time()))
    r = _send(remote, login(remote, remote.centre), prepared)  # type: ignore[arg-type]
    assert r.status_code == 201, r.text
    _fetch_own(remote, patient, prepared.record_id, data)
    assert _problems(remote) == []
    _assert_audit_clean(remote)


# ------------------------------------------------------------ PostgreSQL connection loss


def _pg() -> Any:
    try:
        import psycopg

        return psycopg.connect(PG_DSN, connect_timeout=2, autocommit=True)
    except Exception as exc:
        pytest.skip(f"no PostgreSQL server at 127.0.0.1:5432 (database test, user postgres): {exc}")


@pytest.mark.postgres
def test_postgres_connections_killed_under_load_the_gateway_reconnects(
    tmp_path: Path, anvil: Any, w3: Web3, ipfs_node: Any, service_dir: Path
) -> None:
    """``pg_terminate_backend`` on every connection of the gateway, six times under load:
    only a bounded number of clear 503s (``database_unavailable``), never another 5xx, no
    decision a client saw is missing from the log, and service is back at once afterwards."""
    quiet_logs()
    admin = _pg()
    schema = f"rel_{uuid.uuid4().hex[:12]}"
    app_name = f"consent-reliability-{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE SCHEMA "{schema}"')
    # A registry of its own: the audit demands the log of every gateway that anchored on it.
    auditor = new_account()
    stack: Stack | None = None
    try:
        stack = own_registry_stack(
            home=tmp_path / "gw",
            w3=w3,
            chain_url=anvil.url,
            ipfs_url=ipfs_node.url,
            service_dir=service_dir,
            database_url=(
                "postgresql+psycopg://postgres@127.0.0.1:5432/test"
                f"?options=-csearch_path%3D{schema}&application_name={app_name}"
            ),
            backend="postgres",
            auditors=auditor.address,
            db_pool_size=4,
        )
        _postgres_storm(stack, admin, app_name, auditor)
    finally:
        if stack is not None:
            close_stack(stack)
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()


def _postgres_storm(stack: Stack, admin: Any, app_name: str, auditor: LocalAccount) -> None:
    patient = new_account()
    up = upload(stack, login(stack, stack.centre), patient=patient.address, data=os.urandom(4096))
    assert up.status_code == 201, up.text
    record_id = up.json()["record_id"]
    readers = [new_account() for _ in range(6)]
    for reader in readers[:3]:  # half hold consent, half do not
        relay(
            stack,
            login(stack, patient),
            signed_grant(stack, patient, reader.address, scope_id=bytes.fromhex(record_id[2:])),
        )
    url = f"/v1/records/{record_id}?purpose=treatment"
    seen: dict[str, Counter[int]] = {r.address: Counter() for r in readers}
    codes: Counter[str] = Counter()
    bad: list[str] = []
    stop = threading.Event()

    def load(reader: LocalAccount) -> None:
        with httpx.Client(
            base_url=str(stack.client.base_url), headers=login(stack, reader), timeout=30
        ) as c:
            while not stop.is_set():
                got = c.get(url)
                seen[reader.address][got.status_code] += 1
                if got.status_code >= 500:
                    codes[got.json()["error"]["code"]] += 1
                if got.status_code not in (200, 403, 503):
                    bad.append(f"{got.status_code} {got.text[:300]}")

    threads = [threading.Thread(target=load, args=(r,), daemon=True) for r in readers]
    for t in threads:
        t.start()
    terminated = 0
    rounds = 6
    try:
        _wait_for(lambda: all(seen[r.address].total() for r in readers), "every reader's answer")
        for _ in range(rounds):
            killed = admin.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = 'test' AND pid <> pg_backend_pid() AND application_name = %s",
                (app_name,),
            ).fetchone()[0]
            terminated += int(killed)
            time.sleep(0.4)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert terminated >= rounds, f"only {terminated} gateway connections were terminated"
    assert not bad, bad
    total = Counter[int]()
    for c in seen.values():
        total.update(c)
    assert set(codes) <= {"database_unavailable"}, codes
    assert total[503] <= rounds * len(readers), total  # at most the requests in flight
    assert total[200] > 50, total
    assert total[403] > 50, total

    # Service is back at once: every request answers as it should.
    for reader in readers:
        headers = login(stack, reader)
        for _ in range(3):
            got = stack.client.get(url, headers=headers)
            want = 200 if reader in readers[:3] else 403
            assert got.status_code == want, got.text
            seen[reader.address][want] += 1

    # No decision a client saw is missing from the log (a 503 may have committed its leaf
    # before the connection died, so the log may hold up to that many more).
    stack.state.anchorer.anchor_now()
    with httpx.Client(headers=login(stack, auditor), timeout=60) as http:
        doc = http.get(f"{stack.client.base_url}/v1/access-log/export").json()
        export = load_access_log(f"{stack.client.base_url}/v1/access-log/export", client=http)
    logged: Counter[tuple[str, str]] = Counter()
    for e in doc["entries"]:
        leaf = json.loads(e["leaf"])
        logged[(leaf["requester"], leaf["decision"])] += 1
    for reader in readers:
        c = seen[reader.address]
        key = reader.address.lower()
        assert c[200] <= logged[(key, "allowed")] <= c[200] + c[503], (c, logged)
        assert c[403] <= logged[(key, "denied")] <= c[403] + c[503], (c, logged)
    abi = compile_contracts(cache_dir=stack.home / "build")[REGISTRY_CONTRACT].abi
    rpc = RpcClient(stack.settings.chain_url, client=httpx.Client(timeout=60))
    try:
        report = run_audit(
            rpc,
            registry=stack.settings.registry(),
            deploy_block=stack.settings.deployment_block(),
            decoder=EventDecoder(registry_event_abi(abi)),
            access_logs=[export],
            max_time_skew_s=audit_time_skew(stack.w3),
        )
    finally:
        rpc.close()
    assert report.exit_code == 0, [(f.kind, f.message) for f in report.findings]
