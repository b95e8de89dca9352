"""Kubo RPC API client: local CID computation, protocol details on a mock, and a real js-ipfs node.

The real node comes from the shared session fixture ``ipfs_node`` (tests/conftest.py,
``ledger.devstack.services.IpfsNode``): js-ipfs 0.66.1 from hardhat_local, offline, throw-away repo.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multiformats import CID, multihash

from gateway.errors import GatewayError
from gateway.ipfs import (
    InvalidCid,
    IpfsApiError,
    IpfsClient,
    IpfsError,
    IpfsNotFound,
    IpfsProtocolError,
    IpfsUnavailable,
    compute_cid,
    parse_cid,
    verify_cid,
)
from ledger.devstack.services import IpfsNode, free_port

EMPTY_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
HELLO_CID = "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"


# -- local CID computation ------------------------------------------------------------------


def test_single_chunk_cids_are_raw_sha256() -> None:
    assert compute_cid(b"") == EMPTY_CID
    assert compute_cid(b"hello") == HELLO_CID
    cid = CID.decode(compute_cid(b"x" * 262_144))
    assert cid.codec.name == "raw"
    assert cid.raw_digest == hashlib.sha256(b"x" * 262_144).digest()
    assert CID.decode(compute_cid(b"x" * 262_145)).codec.name == "dag-pb"


def test_parse_cid_canonicalises_and_rejects_garbage() -> None:
    v0 = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
    assert parse_cid(v0) == "bafybeie5nqv6kd3qnfjupgvz34woh3oksc3iau6abmyajn7qvtf6d2ho34"
    assert parse_cid("zb2rhdRrBppcp8R9sTVSdnxJEt1PFjUCZsjACGSj5dj7xafc1") == (
        "bafkreide2kiiwdna7d4hevzgpcxikolyeztzbzmls7dcdazhmrlcu3m7dy"
    )
    for bad in ["", "notacid", "b", "bafy", "Qm", HELLO_CID[:-1] + "z", "x" * 600]:
        with pytest.raises(InvalidCid):
            parse_cid(bad)


def test_verify_cid_rejects_wrong_content_and_unknown_layouts() -> None:
    assert verify_cid(HELLO_CID, b"hello")
    assert not verify_cid(HELLO_CID, b"hellO")
    assert not verify_cid("garbage", b"hello")
    blake = CID("base32", 1, "raw", multihash.digest(b"hello", "blake2b-256"))
    assert not verify_cid(str(blake), b"hello")
    big = os.urandom(600_000)
    cid = compute_cid(big)
    assert verify_cid(cid, big)
    assert not verify_cid(cid, big[:-1])
    assert not verify_cid(cid, big + b"\x00")
    # a dag-pb CID for single-chunk content is not our layout
    assert not verify_cid(cid, b"small")
    # CIDv0 text of the same DAG verifies too
    v0 = str(CID.decode(cid).set(version=0, base="base58btc"))
    assert v0.startswith("Qm")
    assert verify_cid(v0, big)


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=2000), chunk=st.integers(1, 300))
def test_verify_own_computation(data: bytes, chunk: int) -> None:
    assert verify_cid(compute_cid(data, chunk_size=chunk), data, chunk_size=chunk)


# -- protocol details on a mock transport ---------------------------------------------------

Handler = Callable[[httpx.Request], httpx.Response]


def mock_client(handler: Handler, **kwargs: Any) -> tuple[IpfsClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return handler(request)

    http = httpx.Client(base_url="http://ipfs.test:5001", transport=httpx.MockTransport(record))
    return IpfsClient(http, **kwargs), seen


def error(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"Message": message, "Code": 0, "Type": "error"})


def test_add_sends_the_documented_request_and_accepts_string_size() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        # Kubo answers Size as a string
        return httpx.Response(
            200, text=json.dumps({"Name": "blob", "Hash": HELLO_CID, "Size": "5"})
        )

    client, seen = mock_client(handler, timeout_s=7)
    assert client.add(b"hello") == HELLO_CID
    (request,) = seen
    assert request.method == "POST"
    assert request.url.path == "/api/v0/add"
    params = dict(request.url.params)
    assert params == {
        "cid-version": "1",
        "cid-base": "base32",
        "raw-leaves": "true",
        "hash": "sha2-256",
        "chunker": "size-262144",
        "trickle": "false",
        "pin": "true",
        "progress": "false",
        "timeout": "7000ms",
    }
    body = request.content
    assert b"Content-Type: application/octet-stream" in body
    assert b"hello" in body


def test_add_accepts_kubo_json_lines_and_numeric_size() -> None:
    lines = "\n".join(
        [
            json.dumps({"Name": "blob", "Bytes": 5}),
            json.dumps({"Name": "blob", "Hash": HELLO_CID, "Size": 5}),
        ]
    )
    client, seen = mock_client(lambda r: httpx.Response(200, text=lines + "\n"))
    assert client.add(b"hello", pin=False) == HELLO_CID
    assert seen[0].url.params["pin"] == "false"


@pytest.mark.parametrize(
    "answer",
    [
        {"Name": "blob", "Hash": EMPTY_CID, "Size": 0},  # CID of other bytes
        {"Name": "blob", "Hash": "zb2rhdRrBppcp8R9sTVSdnxJEt1PFjUCZsjACGSj5dj7xafc1", "Size": 5},
        {"Name": "blob", "Hash": "not-a-cid", "Size": 5},
        {"Name": "blob", "Hash": HELLO_CID, "Size": "five"},
        {"Name": "blob", "Hash": HELLO_CID, "Size": 2},
        {"Name": "blob"},
    ],
)
def test_add_refuses_answers_it_cannot_verify(answer: dict[str, Any]) -> None:
    client, _ = mock_client(lambda r: httpx.Response(200, text=json.dumps(answer)))
    with pytest.raises(IpfsProtocolError):
        client.add(b"hello")


def test_every_call_is_post_with_a_timeout_argument() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/cat"):
            return httpx.Response(200, content=b"hello")
        if path.endswith("/pin/add"):
            return httpx.Response(200, json={"Pins": [HELLO_CID]})
        if path.endswith("/pin/rm"):
            return httpx.Response(200, json={"Pins": [HELLO_CID]})
        if path.endswith("/pin/ls"):
            return httpx.Response(200, json={"Keys": {HELLO_CID: {"Type": "recursive"}}})
        if path.endswith("/id"):
            return httpx.Response(200, json={"ID": "12D3Koo", "Addresses": ["/ip4/1.2.3.4/tcp/1"]})
        return httpx.Response(
            200, json={"Version": "0.30.0", "Commit": "abc", "Repo": "15", "System": "amd64/linux"}
        )

    client, seen = mock_client(handler)
    assert client.cat(HELLO_CID, timeout_s=2.5) == b"hello"
    client.pin_add(HELLO_CID, timeout_s=1)
    assert client.pin_rm(HELLO_CID)
    assert client.is_pinned(HELLO_CID)
    assert client.pin_ls() == {HELLO_CID: "recursive"}
    assert client.id().addresses == ("/ip4/1.2.3.4/tcp/1",)
    assert client.version().system == "amd64/linux"
    assert {r.method for r in seen} == {"POST"}
    assert all("timeout" in r.url.params for r in seen)
    assert seen[0].url.params["timeout"] == "2500ms"
    assert seen[1].url.params["timeout"] == "1000ms"


def test_cid_arguments_are_validated_and_canonicalised_before_sending() -> None:
    client, seen = mock_client(lambda r: httpx.Response(200, content=b""))
    with pytest.raises(InvalidCid):
        client.cat("../../etc/passwd")
    assert seen == []
    client.cat("zb2rhdRrBppcp8R9sTVSdnxJEt1PFjUCZsjACGSj5dj7xafc1")
    assert (
        seen[0].url.params["arg"] == "bafkreide2kiiwdna7d4hevzgpcxikolyeztzbzmls7dcdazhmrlcu3m7dy"
    )


@pytest.mark.parametrize(
    "message",
    [
        "Failed to cat file: request timed out",  # js-ipfs
        "context deadline exceeded",  # Kubo
        "block was not found locally (offline): ipld: could not find bafk...",  # Kubo --offline
    ],
)
def test_node_timeouts_on_a_cid_are_not_found(message: str) -> None:
    client, _ = mock_client(lambda r: error(500, message))
    with pytest.raises(IpfsNotFound) as exc:
        client.cat(HELLO_CID)
    assert exc.value.cid == HELLO_CID
    with pytest.raises(IpfsNotFound):
        client.pin_add(HELLO_CID)


def test_not_pinned_is_fine_for_pin_rm_and_is_pinned() -> None:
    client, _ = mock_client(
        lambda r: error(500, f"Failed to remove pin: {HELLO_CID} is not pinned")
    )
    assert client.pin_rm(HELLO_CID) is False
    assert client.is_pinned(HELLO_CID) is False
    client, _ = mock_client(lambda r: error(500, "not pinned or pinned indirectly"))  # Kubo
    assert client.pin_rm(HELLO_CID) is False


def test_other_error_answers_are_api_errors() -> None:
    client, _ = mock_client(lambda r: error(405, "Method Not Allowed"))
    with pytest.raises(IpfsApiError) as exc:
        client.version()
    assert exc.value.status == 405
    assert exc.value.detail == "Method Not Allowed"
    client, _ = mock_client(lambda r: httpx.Response(502, text="bad gateway"))
    with pytest.raises(IpfsApiError):
        client.pin_rm(HELLO_CID)
    client, _ = mock_client(lambda r: httpx.Response(200, text="<html>"))
    with pytest.raises(IpfsProtocolError):
        client.id()
    client, _ = mock_client(lambda r: httpx.Response(200, json={"Pins": []}))
    with pytest.raises(IpfsProtocolError):
        client.pin_add(HELLO_CID)


def test_transport_failures_are_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    for handler in (refuse, slow):
        client, _ = mock_client(handler)
        with pytest.raises(IpfsUnavailable) as exc:
            client.add(b"x")
        assert isinstance(exc.value, IpfsError)
        assert isinstance(exc.value, GatewayError)
        assert exc.value.http_status == 503


# -- a real js-ipfs node --------------------------------------------------------------------


@pytest.fixture(scope="module")
def ipfs(ipfs_node: IpfsNode) -> Iterator[IpfsClient]:
    with httpx.Client(base_url=ipfs_node.url) as http:
        yield IpfsClient(http, timeout_s=20)


@pytest.mark.parametrize("size", [0, 1, 100, 262_144, 262_145, 600_000])
def test_add_cat_verify_round_trip_on_a_real_node(ipfs: IpfsClient, size: int) -> None:
    data = os.urandom(size)
    cid = ipfs.add(data)
    assert cid == compute_cid(data)
    assert verify_cid(cid, data)
    assert ipfs.cat(cid) == data
    assert ipfs.is_pinned(cid)


def test_two_level_tree_with_a_one_child_parent(ipfs: IpfsClient) -> None:
    data = os.urandom(262_144 * 174 + 1)  # 175 leaves: root -> (174 leaves, 1 leaf)
    cid = ipfs.add(data, pin=False, timeout_s=120)
    assert verify_cid(cid, data)
    assert not ipfs.is_pinned(cid)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=6000), chunk=st.sampled_from([1, 7, 64, 1024]))
def test_small_chunks_match_the_node(ipfs_node: IpfsNode, data: bytes, chunk: int) -> None:
    with httpx.Client(base_url=ipfs_node.url) as http:
        client = IpfsClient(http, timeout_s=60, chunk_size=chunk)
        cid = client.add(data, pin=False)  # add() itself checks the node's CID against ours
        assert verify_cid(cid, data, chunk_size=chunk)


@pytest.mark.slow
def test_three_level_tree_matches_the_node(ipfs_node: IpfsNode) -> None:
    data = os.urandom(174 * 174 + 3)  # 1-byte chunks: 30279 leaves, three levels
    with httpx.Client(base_url=ipfs_node.url) as http:
        cid = IpfsClient(http, timeout_s=300, chunk_size=1).add(data, pin=False)
    assert verify_cid(cid, data, chunk_size=1)


def test_pin_lifecycle_is_idempotent(ipfs: IpfsClient) -> None:
    data = os.urandom(64)
    cid = ipfs.add(data, pin=False)
    assert not ipfs.is_pinned(cid)
    ipfs.pin_add(cid)
    ipfs.pin_add(cid)
    assert ipfs.is_pinned(cid)
    assert ipfs.pin_ls()[cid] == "recursive"
    assert ipfs.pin_rm(cid) is True
    assert ipfs.pin_rm(cid) is False
    assert not ipfs.is_pinned(cid)
    assert cid not in ipfs.pin_ls()


def test_missing_content_is_not_found_quickly(ipfs: IpfsClient) -> None:
    missing = compute_cid(os.urandom(32))
    with pytest.raises(IpfsNotFound):
        ipfs.cat(missing, timeout_s=1)
    with pytest.raises(IpfsNotFound):
        ipfs.pin_add(missing, timeout_s=1)
    assert ipfs.pin_rm(missing) is False
    assert not ipfs.is_pinned(missing)


def test_node_identity(ipfs: IpfsClient) -> None:
    node = ipfs.id()
    assert node.id
    assert node.agent_version.startswith("js-ipfs/")
    version = ipfs.version()
    assert version.version


def test_node_not_running_is_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with httpx.Client(base_url=url) as http, pytest.raises(IpfsUnavailable):
        IpfsClient(http, timeout_s=1).version()
