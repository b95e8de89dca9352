"""The gateway's decisions come from the verified consent index (``decision_source = "index"``,
the default): no ``eth_call`` of ``accessDecision`` per decision, counted at a JSON-RPC proxy
between the gateway and the node; the same proxy counts one per decision with ``"chain"`` (the
count is real). A node that drops the revoke's log makes the gateway fail closed (503, logged
``chain_unavailable``) instead of serving the record on the state without the revoke."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_utils.crypto import keccak
from web3 import Web3

from ledger.devstack.services import IpfsNode
from tests.helpers.gateway import (
    Stack,
    close_stack,
    login,
    new_account,
    own_registry_stack,
    relay,
    signed_grant,
    signed_revoke,
    upload,
)

ACCESS_DECISION = "0x" + keccak(text="accessDecision(address,address,bytes32,uint8)")[:4].hex()


@dataclass
class RpcProxy:
    """A JSON-RPC proxy in front of a node: counts calls (``eth_call`` of ``accessDecision``
    as ``"accessDecision"``), and with ``drop_logs_after`` set leaves every log of a later
    block out of ``eth_getLogs`` answers (a lying node)."""

    upstream: str
    counts: Counter[str] = field(default_factory=Counter)
    drop_logs_after: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None
    client: httpx.Client | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def _count(self, call: dict[str, Any]) -> None:
        method = call.get("method", "")
        params = call.get("params") or []
        with self.lock:
            self.counts[method] += 1
            if (
                method == "eth_call"
                and params
                and str(params[0].get("data", "")).startswith(ACCESS_DECISION)
            ):
                self.counts["accessDecision"] += 1

    def _edit(self, call: dict[str, Any], answer: dict[str, Any]) -> None:
        after = self.drop_logs_after
        if after is None or call.get("method") != "eth_getLogs":
            return
        if isinstance(answer.get("result"), list):
            answer["result"] = [
                entry for entry in answer["result"] if int(entry["blockNumber"], 16) <= after
            ]

    def start(self) -> None:
        proxy = self
        upstream = self.client = httpx.Client(timeout=30)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the gateway's transport expects

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                request = json.loads(body)
                calls = request if isinstance(request, list) else [request]
                for call in calls:
                    proxy._count(call)
                answer = upstream.post(
                    proxy.upstream, content=body, headers={"content-type": "application/json"}
                ).json()
                answers = answer if isinstance(answer, list) else [answer]
                by_id = {call.get("id"): call for call in calls}
                for one in answers:
                    proxy._edit(by_id.get(one.get("id"), {}), one)
                out = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        if self.client is not None:
            self.client.close()


@pytest.fixture
def proxy(anvil: Any) -> Iterator[RpcProxy]:
    p = RpcProxy(anvil.url)
    p.start()
    try:
        yield p
    finally:
        p.stop()


def _stack(
    tmp_path: Path, w3: Web3, proxy: RpcProxy, ipfs: IpfsNode, service_dir: Path, **options: Any
) -> Stack:
    return own_registry_stack(
        home=tmp_path / "gw",
        w3=w3,
        chain_url=proxy.url,
        ipfs_url=ipfs.url,
        service_dir=service_dir,
        anchor_enabled=False,
        **options,
    )


def _granted(stack: Stack) -> tuple[str, Any, Any]:
    """A record, its patient, and a doctor holding treatment consent for it."""
    patient, doctor = new_account(), new_account()
    r = upload(stack, login(stack, stack.centre), patient=patient.address, data=b"index " * 32)
    assert r.status_code == 201, r.text
    record_id = r.json()["record_id"]
    grant = signed_grant(stack, patient, doctor.address, scope_id=bytes.fromhex(record_id[2:]))
    relay(stack, login(stack, patient), grant)
    return record_id, patient, doctor


def _decisions(stack: Stack, proxy: RpcProxy, record_id: str, doctor: Any) -> tuple[int, int]:
    """Allowed and denied fetches on both fetch paths: ``(decisions, accessDecision calls)``."""
    doctor_h, stranger_h = login(stack, doctor), login(stack, new_account())
    fast = f"/v1/records/{record_id}?purpose=treatment"
    urls = (fast, fast + "&via=route")  # the fast path and the FastAPI route
    before = proxy.counts["accessDecision"]
    decisions = 0
    for _ in range(5):
        for url in urls:
            assert stack.client.get(url, headers=doctor_h).status_code == 200
            assert stack.client.get(url, headers=stranger_h).status_code == 403
            decisions += 2
    return decisions, proxy.counts["accessDecision"] - before


@pytest.mark.parametrize("source", ["index", "chain"])
def test_index_decisions_make_no_eth_call_and_chain_decisions_one_each(
    tmp_path: Path,
    w3: Web3,
    proxy: RpcProxy,
    ipfs_node: IpfsNode,
    service_dir: Path,
    source: str,
) -> None:
    options = {} if source == "index" else {"decision_source": "chain"}
    stack = _stack(tmp_path, w3, proxy, ipfs_node, service_dir, **options)
    try:
        assert stack.settings.decision_source == source
        record_id, _patient, doctor = _granted(stack)
        decisions, calls = _decisions(stack, proxy, record_id, doctor)
        assert decisions == 20
        if source == "index":
            assert calls == 0
            index = stack.state.records.decisions
            assert index is not None
            assert index.index is not None
            assert index.index.position is not None
        else:
            assert calls == decisions
            assert stack.state.records.decisions is None
    finally:
        close_stack(stack)
    # the index's snapshot is written at shutdown (resumed from once the chain confirms it)
    assert (stack.home / "consent-index.json").exists() == (source == "index")


def test_a_node_that_drops_the_revoke_log_fails_the_gateway_closed(
    tmp_path: Path, w3: Web3, proxy: RpcProxy, ipfs_node: IpfsNode, service_dir: Path
) -> None:
    stack = _stack(tmp_path, w3, proxy, ipfs_node, service_dir)
    try:
        record_id, patient, doctor = _granted(stack)
        doctor_h = login(stack, doctor)
        url = f"/v1/records/{record_id}?purpose=treatment"
        assert stack.client.get(url, headers=doctor_h).status_code == 200

        # From now on the node leaves every new block's logs out of eth_getLogs: the revoke
        # below is mined, but a log-fed index without the digest check would still allow.
        proxy.drop_logs_after = w3.eth.block_number
        revoke = signed_revoke(
            stack, patient, doctor.address, scope_id=bytes.fromhex(record_id[2:])
        )
        relay(stack, login(stack, patient), revoke)

        patient_h = login(stack, patient)
        # While the revoke's block is the head, a digest ahead of its logs may be the node
        # answering on the block being mined: no decision (503), not yet a verdict.
        r = stack.client.get(url, headers=doctor_h)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "chain_unavailable"
        # Once a block follows, the lie is certain: the index refuses, and stays refused.
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        for headers in (doctor_h, patient_h):
            for target in (url, url + "&via=route"):
                r = stack.client.get(target, headers=headers)
                assert r.status_code == 503, r.text
                assert r.json()["error"]["code"] == "chain_unavailable"
        decisions = stack.state.records.decisions
        assert decisions is not None
        assert decisions.index is not None
        assert decisions.index.refused is not None  # sticky: nothing is served until restart
        health = stack.client.get("/healthz")  # and the operator is told why
        assert health.status_code == 503, health.text
        assert "refused to serve" in health.json()["details"]["consent_index"]
        entries = stack.state.access_log.entries_for_patient(patient.address)
        tail = [json.loads(leaf) for _i, leaf, _h in entries][-5:]
        assert {(e["decision"], e["reason"], e["block"]) for e in tail} == {
            ("denied", "chain_unavailable", None)
        }
    finally:
        close_stack(stack)
