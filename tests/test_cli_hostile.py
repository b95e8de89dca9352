"""The CLI behind a hostile front: no trust anchor, receipt or checkpoint is taken on its word.

The stack here is published behind a front, a real HTTP proxy in front of the real gateway (the
gateway's SIWE domain and URI are the front's address, as behind any reverse proxy), so the CLI
signs in through it. The front is honest until a test makes it lie: rewrite ``/healthz`` to name
a decoy registry (deployed on the same chain, its ``recordOf`` answering a forged digest) or
another chain, serve a forged or tampered envelope, swallow a relayed grant or revoke and answer
with a made-up or an unrelated real receipt, or strip and forge the access log's checkpoint.
Each time the command must exit non-zero and write nothing: no file, no consent change.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from typer.testing import CliRunner
from web3 import Web3

from ledger.chain.keys import DEV_NAMES
from ledger.chain.node import TxSender, connect, deploy, dev_accounts
from ledger.chain.registry import ConsentRegistry
from ledger.cli.main import app
from ledger.devstack.services import stack_ports
from ledger.devstack.stack import StackConfig, StackInfo, start_stack
from ledger.paths import state_paths
from ledger.protocol.consent_types import ScopeKind
from ledger.protocol.envelope import encrypt_record, seal_key_to
from tests.helpers.build import share_build_cache

runner = CliRunner()
DEV = dict(zip(DEV_NAMES, dev_accounts(), strict=True))
FORGED = b'{"resourceType": "DiagnosticReport", "conclusion": "forged: all normal"}'

Rewrite = Callable[[dict[str, Any]], dict[str, Any]]
Route = tuple[str, str]  # (method, path prefix)


# ----------------------------------------------------------------------------------- the front


@dataclass
class Front:
    """An HTTP front to the real gateway; honest until told otherwise.

    ``rewrite[(method, prefix)]`` alters the JSON answer of a matching request after passing it
    on; ``forge[(method, prefix)]`` answers a matching request itself, never passing it on (the
    request body is recorded in ``swallowed``)."""

    upstream: str
    url: str = ""
    rewrite: dict[Route, Rewrite] = field(default_factory=dict)
    forge: dict[Route, Callable[[], dict[str, Any]]] = field(default_factory=dict)
    swallowed: list[bytes] = field(default_factory=list)

    def honest(self) -> None:
        self.rewrite.clear()
        self.forge.clear()
        self.swallowed.clear()

    def pick(self, table: dict[Route, Any], method: str, path: str) -> Any:
        for (m, prefix), value in list(table.items()):
            if m == method and path.startswith(prefix):
                return value
        return None


def _serve_front(front: Front, upstream: httpx.Client) -> ThreadingHTTPServer:

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, content: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else None
            forged = front.pick(front.forge, self.command, self.path)
            if forged is not None:
                front.swallowed.append(body or b"")
                self._answer(200, json.dumps(forged()).encode(), "application/json")
                return
            headers = {
                k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
            }
            r = upstream.request(self.command, self.path, content=body, headers=headers)
            content = r.content
            rewrite = front.pick(front.rewrite, self.command, self.path)
            if rewrite is not None and r.status_code in (200, 503):
                content = json.dumps(rewrite(json.loads(content))).encode()
            self._answer(r.status_code, content, r.headers.get("content-type", "application/json"))

        do_GET = do_POST = _handle

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    front.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@dataclass
class Fronted:
    info: StackInfo
    home: Path
    front: Front

    @property
    def args(self) -> list[str]:
        return [
            "--gateway",
            self.front.url,
            "--chain",
            self.info.anvil.url,
            "--home",
            str(self.home),
        ]

    @property
    def w3(self) -> Web3:
        return connect(self.info.anvil.url)

    @property
    def registry(self) -> ConsentRegistry:
        return ConsentRegistry(self.w3, self.info.deployment.address)


@pytest.fixture(scope="module")
def fronted() -> Iterator[Fronted]:
    chain_port, ipfs_port, gateway_port = stack_ports()
    front = Front(upstream=f"http://127.0.0.1:{gateway_port}")
    upstream = httpx.Client(base_url=front.upstream, timeout=60.0)
    server = _serve_front(front, upstream)
    with tempfile.TemporaryDirectory(prefix="consent-front-", ignore_cleanup_errors=True) as tmp:
        paths = state_paths(Path(tmp) / "home")
        share_build_cache(paths.home)
        config = StackConfig(
            paths=paths,
            chain_port=chain_port,
            ipfs_port=ipfs_port,
            gateway_port=gateway_port,
            gateway_env={
                "CONSENT_CHECKPOINT_INTERVAL_S": "1",
                "CONSENT_SIWE_DOMAIN": front.url.removeprefix("http://"),
                "CONSENT_SIWE_URI": front.url,
                # Every client of this module signs in through the one front, so the gateway
                # sees one client address; its per-address sign-in limit is not under test here.
                "CONSENT_AUTH_RATE_BURST": "100000",
                "CONSENT_AUTH_RATE_PER_MINUTE": "1000000",
            },
        )
        info = start_stack(config, say=lambda s: None)
        try:
            yield Fronted(info, paths.home, front)
        finally:
            info.stop()
            server.shutdown()
            server.server_close()
            upstream.close()


@pytest.fixture
def stack(fronted: Fronted) -> Iterator[Fronted]:
    """The fronted stack, honest again after each test."""
    fronted.front.honest()
    try:
        yield fronted
    finally:
        fronted.front.honest()


def _run(stack: Fronted, *args: str, who: str | None = None) -> Any:
    extra = ["--as", who] if who else []
    return runner.invoke(app, [*args, *extra, *stack.args])


def _upload(stack: Fronted, tmp_path: Path, label: str) -> str:
    admitted = _run(stack, "admin", "add-centre", "centre")
    assert admitted.exit_code == 0, admitted.output + admitted.stderr
    source = tmp_path / f"{label}.json"
    source.write_text(json.dumps({"label": label, "nonce": secrets.token_hex(8), "ldl": 131}))
    result = _run(
        stack, "upload", str(source), "--patient", "patient", "--category", "laboratory",
        "--json", who="centre",
    )  # fmt: skip
    assert result.exit_code == 0, result.output + result.stderr
    record_id: str = json.loads(result.stdout)["record_id"]
    return record_id


def _grant(stack: Fronted, record_id: str) -> Any:
    return _run(
        stack, "grant", "--to", "doctor", "--record", record_id, "--purpose", "treatment",
        "--json", who="patient",
    )  # fmt: skip


def _consent(stack: Fronted, record_id: str) -> tuple[int, int]:
    terms = stack.registry.consent_of(
        DEV["patient"].address,
        DEV["doctor"].address,
        ScopeKind.RECORD,
        bytes.fromhex(record_id[2:]),
    )
    return terms.purposes, terms.expires_at


# ---------------------------------------------------------------------- a decoy registry


def _decoy_registry(w3: Web3, record_id: str) -> str:
    """A contract on the same chain that answers every call, ``recordOf`` included, with the
    patient, the centre and the digest of the forged plaintext (hand-assembled EVM code)."""
    words = [
        int(DEV["patient"].address, 16),
        1_770_000_000,
        int(DEV["centre"].address, 16),
        int.from_bytes(b"laboratory".ljust(32, b"\0")),
        int.from_bytes(hashlib.sha256(FORGED).digest()),
    ]
    runtime = b"".join(
        b"\x7f" + w.to_bytes(32) + b"\x60" + bytes([32 * i]) + b"\x52" for i, w in enumerate(words)
    ) + bytes.fromhex("60a06000f3")  # return memory[0:160]
    init = bytes.fromhex(f"60{len(runtime):02x}600c60003960{len(runtime):02x}6000f3") + runtime
    payer: LocalAccount = Account.create()
    w3.provider.make_request("anvil_setBalance", [payer.address, hex(10**20)])  # type: ignore[arg-type]
    sent = deploy(w3, abi=[], bytecode=init, sender=TxSender(w3, payer))
    address = sent.receipt["contractAddress"]
    assert address is not None
    decoy = ConsentRegistry(w3, address)
    assert (
        decoy.record_of(bytes.fromhex(record_id[2:])).content_digest
        == hashlib.sha256(FORGED).digest()
    )
    return str(address)


def _forged_envelope(record_id: str) -> dict[str, Any]:
    """The forged plaintext, encrypted and sealed to the doctor's key as a gateway would."""
    doctor = DEV["doctor"]
    blob, key = encrypt_record(
        FORGED, record_id=bytes.fromhex(record_id[2:]), patient=DEV["patient"].address
    )
    pubkey = doctor._key_obj.public_key.to_bytes()  # type: ignore[attr-defined]
    return {
        "record_id": record_id,
        "patient": DEV["patient"].address,
        "cid": "bafkreiforgedforgedforgedforgedforgedforgedforgedforgedfo",
        "ciphertext": base64.b64encode(blob).decode(),
        "sealed_key": base64.b64encode(seal_key_to(pubkey, key)).decode(),
        "content_digest": "0x" + hashlib.sha256(FORGED).hexdigest(),
        "block_number": 1,
    }


# ----------------------------------------------------------------------------------- fetch


@pytest.mark.parametrize("healthz", ["decoy registry", "honest"])
def test_fetch_of_a_forged_record_writes_nothing(
    stack: Fronted, tmp_path: Path, healthz: str
) -> None:
    record_id = _upload(stack, tmp_path, f"forge-{healthz}")
    assert _grant(stack, record_id).exit_code == 0
    if healthz == "decoy registry":
        decoy = _decoy_registry(stack.w3, record_id)
        stack.front.rewrite[("GET", "/healthz")] = lambda h: {**h, "contract": decoy}
    stack.front.forge[("GET", "/v1/records/0x")] = lambda: _forged_envelope(record_id)
    out = tmp_path / "result.json"
    result = _run(stack, "fetch", record_id, "--purpose", "treatment", "-o", str(out), who="doctor")
    assert result.exit_code == 1, result.output + result.stderr
    if healthz == "decoy registry":
        assert f"names the registry {decoy}" in result.stderr
        assert stack.info.deployment.address in result.stderr
        assert stack.front.swallowed == []  # refused before asking for the record
    else:
        assert "failed verification" in result.stderr
    assert "sha256 matches" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".result.json")]


@pytest.mark.parametrize("field_name", ["ciphertext", "content_digest"])
def test_fetch_with_tampered_envelope_writes_nothing(
    stack: Fronted, tmp_path: Path, field_name: str
) -> None:
    record_id = _upload(stack, tmp_path, f"tamper-{field_name}")
    assert _grant(stack, record_id).exit_code == 0

    def tamper(envelope: dict[str, Any]) -> dict[str, Any]:
        if field_name == "ciphertext":
            blob = bytearray(base64.b64decode(envelope["ciphertext"]))
            blob[-1] ^= 0x01
            return {**envelope, "ciphertext": base64.b64encode(bytes(blob)).decode()}
        return {**envelope, "content_digest": "0x" + hashlib.sha256(b"forged").hexdigest()}

    stack.front.rewrite[("GET", "/v1/records/0x")] = tamper
    out = tmp_path / "out.json"
    result = _run(stack, "fetch", record_id, "--purpose", "treatment", "-o", str(out), who="doctor")
    assert result.exit_code == 1, result.output + result.stderr
    assert "failed verification" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.json")]


def test_a_front_naming_another_chain_is_refused(stack: Fronted, tmp_path: Path) -> None:
    record_id = _upload(stack, tmp_path, "other-chain")
    stack.front.rewrite[("GET", "/healthz")] = lambda h: {**h, "chain_id": 1}
    nonce = stack.registry.nonce_of(DEV["patient"].address)
    result = _grant(stack, record_id)
    assert result.exit_code == 1, result.output + result.stderr
    assert "names chain 1" in result.stderr
    assert stack.registry.nonce_of(DEV["patient"].address) == nonce
    assert _consent(stack, record_id) == (0, 0)


# ---------------------------------------------------------------------------- grant, revoke


def _made_up_receipt(stack: Fronted, action: str) -> Callable[[], dict[str, Any]]:
    def answer() -> dict[str, Any]:
        return {
            "action": action,
            "tx_hash": "0x" + secrets.token_hex(32),
            "block_number": stack.w3.eth.block_number,
            "status": "mined",
            "gas_used": 31_173,
        }

    return answer


def test_a_swallowed_grant_is_an_error(stack: Fronted, tmp_path: Path) -> None:
    record_id = _upload(stack, tmp_path, "swallowed-grant")
    stack.front.forge[("POST", "/v1/consents")] = _made_up_receipt(stack, "grant")
    result = _grant(stack, record_id)
    assert result.exit_code == 1, result.output + result.stderr
    assert len(stack.front.swallowed) == 1
    assert "does not show the grant" in result.stderr
    assert "is not on the chain" in result.stderr
    assert _consent(stack, record_id) == (0, 0)


@pytest.mark.parametrize("receipt", ["made up", "an older real one"])
def test_a_swallowed_revoke_is_an_error_and_revoke_direct_fixes_it(
    stack: Fronted, tmp_path: Path, receipt: str
) -> None:
    record_id = _upload(stack, tmp_path, f"swallowed-revoke-{receipt}")
    granted = _grant(stack, record_id)
    assert granted.exit_code == 0, granted.output + granted.stderr
    in_force = _consent(stack, record_id)
    assert in_force[0] != 0
    if receipt == "made up":
        stack.front.forge[("POST", "/v1/consents")] = _made_up_receipt(stack, "revoke")
    else:  # the grant's own receipt: mined, successful, sent to the registry
        old = json.loads(granted.stdout)
        stack.front.forge[("POST", "/v1/consents")] = lambda: {
            "action": "revoke",
            "tx_hash": old["tx_hash"],
            "block_number": old["block_number"],
            "status": "mined",
            "gas_used": old["gas_used"],
        }
    result = _run(stack, "revoke", "--to", "doctor", "--record", record_id, who="patient")
    assert result.exit_code == 1, result.output + result.stderr
    assert len(stack.front.swallowed) == 1
    assert "does not show the revoke" in result.stderr
    assert f"consent revoke --direct --to doctor --record {record_id}" in result.stderr
    assert _consent(stack, record_id) == in_force

    direct = _run(
        stack, "revoke", "--direct", "--to", "doctor", "--record", record_id, "--json",
        who="patient",
    )  # fmt: skip
    assert direct.exit_code == 0, direct.output + direct.stderr
    assert len(stack.front.swallowed) == 1  # --direct never asked the gateway
    body = json.loads(direct.stdout)
    assert body["confirmed_on_chain"] is True
    tx = stack.w3.eth.get_transaction(body["tx_hash"])
    assert tx["from"] == DEV["patient"].address
    assert _consent(stack, record_id) == (0, 0)


def test_grant_and_revoke_direct_pay_their_own_gas(stack: Fronted, tmp_path: Path) -> None:
    record_id = _upload(stack, tmp_path, "direct")
    # the gateway is not consulted at all
    stack.front.forge[("POST", "/v1/consents")] = _made_up_receipt(stack, "grant")
    granted = _run(
        stack, "grant", "--direct", "--to", "doctor", "--record", record_id, "--purpose",
        "treatment", "--json", who="patient",
    )  # fmt: skip
    assert granted.exit_code == 0, granted.output + granted.stderr
    assert stack.front.swallowed == []
    assert _consent(stack, record_id)[0] == 1
    revoked = _run(
        stack, "revoke", "--direct", "--to", "doctor", "--record", record_id, who="patient"
    )
    assert revoked.exit_code == 0, revoked.output + revoked.stderr
    assert "confirmed on-chain" in revoked.stdout
    assert _consent(stack, record_id) == (0, 0)


# ---------------------------------------------------------------------------------- who-read


def _read_something(stack: Fronted, tmp_path: Path) -> None:
    record_id = _upload(stack, tmp_path, "who-read")
    out = tmp_path / "x"
    denied = _run(stack, "fetch", record_id, "--purpose", "research", "-o", str(out), who="doctor")
    assert denied.exit_code == 1, denied.output + denied.stderr
    honest = _run(stack, "who-read", "--json", "--wait", "60", who="patient")
    assert honest.exit_code == 0, honest.output + honest.stderr


def _zero_checkpoint(page: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint of the empty tree, which matches any gateway that never anchored."""
    stranger = Account.create().address
    cp = {**page["checkpoint"], "tree_size": 0, "root_hash": "0x" + "00" * 32, "gateway": stranger}
    entries = [{**e, "inclusion_proof": None} for e in page["entries"]]
    return {**page, "checkpoint": cp, "entries": entries}


@pytest.mark.parametrize(
    ("lie", "rewrite", "says"),
    [
        ("no checkpoint", lambda p: {**p, "checkpoint": None}, "no checkpoint anchored"),
        (
            "another root",
            lambda p: {**p, "checkpoint": {**p["checkpoint"], "root_hash": "0x" + "ab" * 32}},
            "not the root anchored on-chain",
        ),
        ("empty tree", _zero_checkpoint, "does not hold GATEWAY_ROLE"),
    ],
)
def test_who_read_without_an_anchored_checkpoint_could_not_verify(
    stack: Fronted, tmp_path: Path, lie: str, rewrite: Rewrite, says: str
) -> None:
    _read_something(stack, tmp_path)
    stack.front.rewrite[("GET", "/v1/access-log/entries")] = rewrite
    result = _run(stack, "who-read", "--json", who="patient")
    assert result.exit_code == 2, result.output + result.stderr
    assert "could not verify" in result.stderr
    assert says in result.stderr


def test_who_read_pending_entries_could_not_verify(stack: Fronted, tmp_path: Path) -> None:
    _read_something(stack, tmp_path)

    def older(page: dict[str, Any]) -> dict[str, Any]:
        # every entry claimed to lie past the checkpoint: nothing is covered, nothing verified
        cp = page["checkpoint"]
        shifted = [
            {**e, "index": cp["tree_size"] + i, "inclusion_proof": None}
            for i, e in enumerate(page["entries"])
        ]
        return {**page, "entries": shifted}

    stack.front.rewrite[("GET", "/v1/access-log/entries")] = older
    result = _run(stack, "who-read", "--json", who="patient")
    assert result.exit_code == 2, result.output + result.stderr
    assert "could not verify" in result.stderr
    assert "no checkpoint anchored on-chain covers them" in result.stderr


def test_who_read_through_a_front_naming_a_decoy_registry_is_refused(
    stack: Fronted, tmp_path: Path
) -> None:
    _read_something(stack, tmp_path)
    stack.front.rewrite[("GET", "/healthz")] = lambda h: {
        **h,
        "contract": Account.create().address,
    }
    result = _run(stack, "who-read", who="patient")
    assert result.exit_code == 1, result.output + result.stderr
    assert "names the registry" in result.stderr


# ------------------------------------------------------------------------------------ upload


@pytest.mark.parametrize("answer", ["made up", "another record"])
def test_an_upload_the_chain_does_not_hold_is_an_error(
    stack: Fronted, tmp_path: Path, answer: str
) -> None:
    other = _upload(stack, tmp_path, f"real-{answer}")
    record_id = "0x" + secrets.token_hex(32) if answer == "made up" else other
    source = tmp_path / "new.json"
    source.write_text(json.dumps({"new": secrets.token_hex(8)}))
    digest = "0x" + hashlib.sha256(source.read_bytes()).hexdigest()
    stack.front.forge[("POST", "/v1/records")] = lambda: {
        "record_id": record_id,
        "patient": DEV["patient"].address,
        "centre": DEV["centre"].address,
        "category": "laboratory",
        "category_id": "0x" + b"laboratory".ljust(32, b"\0").hex(),
        "content_digest": digest,
        "issued_at": 1_770_000_000,
        "cid": "bafkreiforgedforgedforgedforgedforgedforgedforgedforgedfo",
        "size": source.stat().st_size,
        "tx_hash": "0x" + secrets.token_hex(32),
        "block_number": stack.w3.eth.block_number,
    }
    result = _run(
        stack, "upload", str(source), "--patient", "patient", "--category", "laboratory",
        who="centre",
    )  # fmt: skip
    assert result.exit_code == 1, result.output + result.stderr
    assert len(stack.front.swallowed) == 1
    assert f"holds no record {record_id}" in result.stderr
    assert "uploaded" not in result.stdout


# ---------------------------------------------------------------------------- the anchors


def _bare_home(tmp_path: Path) -> Path:
    home = tmp_path / "elsewhere"
    home.mkdir()
    return home


def test_without_a_pinned_registry_nothing_is_asked_of_the_gateway(
    stack: Fronted, tmp_path: Path
) -> None:
    home = _bare_home(tmp_path)
    args = ["--gateway", stack.front.url, "--chain", stack.info.anvil.url, "--home", str(home)]
    result = runner.invoke(app, ["records", "--as", "patient", *args])
    assert result.exit_code == 2, result.output + result.stderr
    assert "cannot tell which registry to trust" in result.stderr
    assert "--registry" in result.stderr


def test_registry_flag_and_env_pin_without_a_deployment_file(
    stack: Fronted, tmp_path: Path
) -> None:
    record_id = _upload(stack, tmp_path, "registry-flag")
    home = _bare_home(tmp_path)
    args = ["--gateway", stack.front.url, "--chain", stack.info.anvil.url, "--home", str(home)]
    address = stack.info.deployment.address
    granted = runner.invoke(
        app,
        [
            "grant", "--to", "doctor", "--record", record_id, "--purpose", "treatment",
            "--as", "patient", "--registry", address, *args,
        ],
    )  # fmt: skip
    assert granted.exit_code == 0, granted.output + granted.stderr
    assert _consent(stack, record_id)[0] == 1
    listed = runner.invoke(
        app, ["records", "--as", "patient", "--json", *args], env={"CONSENT_REGISTRY": address}
    )
    assert listed.exit_code == 0, listed.output + listed.stderr
    assert record_id in {r["record_id"] for r in json.loads(listed.stdout)}
    decoy = Account.create().address
    refused = runner.invoke(
        app, ["records", "--as", "patient", *args], env={"CONSENT_REGISTRY": decoy}
    )
    assert refused.exit_code == 1, refused.output + refused.stderr
    assert f"this client trusts {decoy}" in refused.stderr


def test_a_deployment_file_of_another_chain_is_refused(stack: Fronted, tmp_path: Path) -> None:
    home = _bare_home(tmp_path)
    recorded = json.loads(state_paths(stack.home).deployment.read_text())
    state_paths(home).deployment.write_text(json.dumps({**recorded, "chain_id": 5}))
    env = {"CONSENT_PASSWORD": "pw"}
    assert runner.invoke(app, ["key", "new", "k", "--home", str(home)], env=env).exit_code == 0
    args = ["--gateway", stack.front.url, "--chain", stack.info.anvil.url, "--home", str(home)]
    result = runner.invoke(app, ["records", "--as", "k", *args], env=env)
    assert result.exit_code != 0, result.output + result.stderr
    assert "names chain 31337" in result.stderr
    out = tmp_path / "x"
    fetched = runner.invoke(
        app,
        ["fetch", "0x" + "ab" * 32, "--purpose", "treatment", "-o", str(out), "--as", "k", *args],
        env=env,
    )
    assert fetched.exit_code == 2, fetched.output + fetched.stderr
    assert "pinned to chain 5" in fetched.stderr
    assert not out.exists()
