"""The one JSON-RPC layer (ledger.chain.rpc, ledger.chain.logs) without a node: transports and
the client's reading of HTTP statuses, the strict mode the gateway uses, a connection that
cannot be opened, a web3 provider as a transport, and the chunked log fetch's topic filter."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import pytest

from ledger.chain.logs import fetch_logs
from ledger.chain.node import ChainUnavailable
from ledger.chain.rpc import (
    FreshConnectionRpc,
    HttpxRpc,
    MalformedAnswer,
    ProviderRpc,
    RpcClient,
    RpcError,
)

URL = "http://node.invalid/rpc"


def _client(handler: Any, *, strict: bool = False) -> RpcClient:
    transport = HttpxRpc(URL, httpx.Client(transport=httpx.MockTransport(handler)))
    return RpcClient(URL, transport=transport, http_errors_as_answers=not strict)


def _answer(request: httpx.Request, **member: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": json.loads(request.content)["id"], **member}


def test_a_result_and_an_error_answer() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["method"] == "eth_blockNumber":
            return httpx.Response(200, json=_answer(request, result="0x2a"))
        error = {"code": 3, "message": "execution reverted", "data": "0x12345678"}
        return httpx.Response(200, json=_answer(request, error=error))

    rpc = _client(handler)
    assert rpc.block_number() == 42
    with pytest.raises(RpcError) as caught:
        rpc.call("eth_call", [{}, "latest"])
    assert (caught.value.code, caught.value.data) == (3, "0x12345678")
    assert caught.value.raw == {"code": 3, "message": "execution reverted", "data": "0x12345678"}


def test_the_audit_reads_an_http_error_as_the_answer_it_carries() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        method = json.loads(request.content)["method"]
        if method == "too_large":
            return httpx.Response(413, content=b"")
        if method == "empty":
            return httpx.Response(502, content=b"")
        refusal = {"code": -32005, "message": "query returned more than 10000 results"}
        return httpx.Response(400, json=_answer(request, error=refusal))

    rpc = _client(handler)
    with pytest.raises(RpcError) as caught:
        rpc.call("eth_getLogs", [{}])
    assert caught.value.code == -32005
    with pytest.raises(RpcError) as caught:
        rpc.call("too_large", [])
    assert caught.value.code == 413
    with pytest.raises(RpcError) as caught:
        rpc.call("empty", [])
    assert caught.value.code == 502


def test_the_gateway_treats_any_status_but_200_as_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json=_answer(request, error={"code": 1, "message": "x"}))

    with pytest.raises(ChainUnavailable) as caught:
        _client(handler, strict=True).call("eth_blockNumber", [])
    assert caught.value.reason == "HTTP 500"
    assert caught.value.sent


def test_an_answer_that_is_not_json_is_malformed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"<html>proxy error</html>")

    with pytest.raises(MalformedAnswer) as caught:
        _client(handler, strict=True).call("eth_blockNumber", [])
    assert caught.value.not_json


def test_an_answer_without_result_or_error_is_malformed_but_json() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": 1})

    with pytest.raises(MalformedAnswer) as caught:
        _client(handler).call("eth_blockNumber", [])
    assert not caught.value.not_json


def test_a_batch_answers_in_the_order_of_the_calls() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        calls = json.loads(request.content)
        answers = [{"jsonrpc": "2.0", "id": c["id"], "result": c["params"][0]} for c in calls]
        return httpx.Response(200, json=list(reversed(answers)))

    assert _client(handler).batch([("echo", ["a"]), ("echo", ["b"]), ("echo", ["c"])]) == [
        "a",
        "b",
        "c",
    ]


def test_a_connection_that_cannot_be_opened_proves_nothing_was_sent() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    rpc = RpcClient(
        url, transport=FreshConnectionRpc(url, timeout_s=2.0), http_errors_as_answers=False
    )
    with pytest.raises(ChainUnavailable) as caught:
        rpc.call("eth_sendRawTransaction", ["0x00"])
    assert not caught.value.sent


def test_a_web3_provider_is_a_transport() -> None:
    class Provider:
        def __init__(self) -> None:
            self.asked: list[tuple[str, Any]] = []

        def make_request(self, method: str, params: Any) -> dict[str, Any]:
            self.asked.append((method, params))
            return {"jsonrpc": "2.0", "id": 0, "result": hex(len(self.asked))}

    provider = Provider()
    rpc = RpcClient("provider", transport=ProviderRpc(provider))
    assert rpc.call("eth_blockNumber", []) == "0x1"
    assert rpc.batch([("eth_chainId", []), ("eth_gasPrice", [])]) == ["0x2", "0x3"]
    assert [m for m, _ in provider.asked] == ["eth_blockNumber", "eth_chainId", "eth_gasPrice"]


def test_fetch_logs_sends_topics_as_hex_in_bounded_chunks() -> None:
    queries: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        query = json.loads(request.content)["params"][0]
        queries.append(query)
        return httpx.Response(200, json=_answer(request, result=[]))

    topic = bytes.fromhex("ab" * 32)
    logs = fetch_logs(
        _client(handler),
        address="0x" + "11" * 20,
        from_block=5,
        to_block=30,
        chunk_blocks=10,
        max_chunk_blocks=10,
        topics=[[topic, "0x" + "cd" * 32], None],
    )
    assert logs == []
    assert [(int(q["fromBlock"], 16), int(q["toBlock"], 16)) for q in queries] == [
        (5, 14),
        (15, 24),
        (25, 30),
    ]
    assert all(q["topics"] == [["0x" + "ab" * 32, "0x" + "cd" * 32], None] for q in queries)
