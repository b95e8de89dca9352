"""Helpers for the verified consent index's tests: the contract's own answers read in JSON-RPC
batches (to compare the index with), and a transport that edits a real node's answers (a node
that lies, or one that is slow on purpose)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

from ledger.chain.registry import AccessDecision
from ledger.chain.rpc import HttpxRpc, RpcClient, RpcTransport
from ledger.protocol.consent_types import Basis, ScopeKind

_ACCESS_DECISION = keccak(text="accessDecision(address,address,bytes32,uint8)")[:4]
_CONSENT_OF = keccak(text="consentOf(address,address,uint8,bytes32)")[:4]
_HAS_ROLE = keccak(text="hasRole(bytes32,address)")[:4]

Query = tuple[str, str, bytes, int]  # patient, grantee, record id, purpose
ConsentKey = tuple[str, str, ScopeKind, bytes]  # patient, grantee, scope kind, scope id


def _calls(registry: str, block: int, payloads: Sequence[bytes]) -> list[tuple[str, list[Any]]]:
    return [("eth_call", [{"to": registry, "data": "0x" + p.hex()}, hex(block)]) for p in payloads]


def _answers(rpc: RpcClient, calls: list[tuple[str, list[Any]]]) -> list[bytes]:
    out: list[bytes] = []
    for i in range(0, len(calls), 500):
        out += [bytes.fromhex(r[2:]) for r in rpc.batch(calls[i : i + 500])]
    return out


def chain_decisions(
    rpc: RpcClient, registry: str, queries: Sequence[Query], block: int
) -> list[AccessDecision]:
    """The contract's ``accessDecision`` for each query, ``eth_call`` at ``block``."""
    payloads = [
        _ACCESS_DECISION + abi_encode(["address", "address", "bytes32", "uint8"], list(q))
        for q in queries
    ]
    out = []
    for raw in _answers(rpc, _calls(registry, block, payloads)):
        basis, until, count, number, timestamp = abi_decode(["uint8", *["uint64"] * 4], raw)
        out.append(AccessDecision(Basis(basis), until, count, number, timestamp))
    return out


def chain_consents(
    rpc: RpcClient, registry: str, keys: Sequence[ConsentKey], block: int
) -> list[tuple[int, int]]:
    """The contract's ``consentOf`` ``(purposes, expiresAt)`` for each key at ``block``."""
    payloads = [
        _CONSENT_OF + abi_encode(["address", "address", "uint8", "bytes32"], [p, g, int(k), s])
        for p, g, k, s in keys
    ]
    out: list[tuple[int, int]] = []
    for raw in _answers(rpc, _calls(registry, block, payloads)):
        purposes, expires_at = abi_decode(["uint32", "uint64"], raw)
        out.append((int(purposes), int(expires_at)))
    return out


def chain_roles(
    rpc: RpcClient, registry: str, pairs: Sequence[tuple[bytes, str]], block: int
) -> list[bool]:
    """The contract's ``hasRole`` for each ``(role, account)`` at ``block``."""
    payloads = [_HAS_ROLE + abi_encode(["bytes32", "address"], [r, a]) for r, a in pairs]
    return [
        bool(abi_decode(["bool"], raw)[0])
        for raw in _answers(rpc, _calls(registry, block, payloads))
    ]


Edit = Callable[[str, list[Any], Any], Any]
"""``edit(method, params, result) -> result``: what the lying node answers instead."""


class EditingTransport:
    """A real node's transport whose answers pass through ``edit`` (per call, batches too),
    counting the calls of each method; ``before(method, params)`` runs before a call is sent
    (a test blocks or slows it there)."""

    def __init__(
        self,
        inner: RpcTransport,
        *,
        edit: Edit | None = None,
        before: Callable[[str, list[Any]], None] | None = None,
    ) -> None:
        self.inner = inner
        self.edit = edit
        self.before = before
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def post(self, body: bytes) -> bytes:
        request = json.loads(body)
        requests = request if isinstance(request, list) else [request]
        for one in requests:
            with self._lock:
                self.calls[one["method"]] += 1
            if self.before is not None:
                self.before(one["method"], one["params"])
        raw = self.inner.post(body)
        if self.edit is None:
            return raw
        answer = json.loads(raw)
        answers = answer if isinstance(answer, list) else [answer]
        by_id = {one["id"]: one for one in requests}
        for item in answers:
            sent = by_id.get(item.get("id"))
            if sent is not None and "result" in item:
                item["result"] = self.edit(sent["method"], sent["params"], item["result"])
        return json.dumps(answer).encode()

    def close(self) -> None:
        self.inner.close()


def editing_client(
    url: str, *, edit: Edit | None = None, before: Callable[[str, list[Any]], None] | None = None
) -> tuple[RpcClient, EditingTransport]:
    """An ``RpcClient`` on an :class:`EditingTransport` over a fresh httpx connection."""
    import httpx

    transport = EditingTransport(HttpxRpc(url, httpx.Client(timeout=30)), edit=edit, before=before)
    return RpcClient(url, transport=transport), transport


def chain_views(
    rpc: RpcClient,
    registry: str,
    calls: Sequence[tuple[str, list[str], list[Any], list[str]]],
    block: int,
) -> list[Any]:
    """Any views at ``block``: each ``(name, argument types, arguments, result types)``; a
    single result is returned bare."""
    payloads = [
        keccak(text=f"{name}({','.join(types)})")[:4] + abi_encode(types, args)
        for name, types, args, _ in calls
    ]
    out: list[Any] = []
    for (_, _, _, result_types), raw in zip(
        calls, _answers(rpc, _calls(registry, block, payloads)), strict=True
    ):
        values = abi_decode(result_types, raw)
        out.append(values[0] if len(values) == 1 else tuple(values))
    return out
