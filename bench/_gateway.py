"""Shared plumbing for the gateway benchmarks: actors, consent relay, a cheap load generator,
CPU accounting.

The load generator is a few lines of asyncio over raw HTTP/1.1 keep-alive connections (one per
virtual client): it sends a ``GET`` with the client's bearer token and reads the status line,
the headers and ``Content-Length`` bytes of body, nothing more. It costs a fraction of what
httpx costs per request, so on a 2-core machine the gateway, not the generator, is measured;
the client's CPU share is reported next to the figures either way.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from bench._common import Stack
from ledger.chain.build import compile_contracts
from ledger.chain.keys import DEV_NAMES
from ledger.chain.node import connect, dev_accounts
from ledger.chain.registry import REGISTRY_CONTRACT, ConsentRegistry
from ledger.client import Gateway, Session
from ledger.paths import state_paths
from ledger.protocol.consent_types import CENTRE_ROLE, ScopeKind, category_id, purposes_mask
from ledger.protocol.eip712 import Domain, GrantRequest, RevokeRequest

DEV = dict(zip(DEV_NAMES, dev_accounts(), strict=True))
#: Every benchmark's own gateway: the auditor may export the log, and the relayer policy's
#: quota and rate are lifted (the benchmarks relay hundreds of consents for one patient to
#: measure the gateway, not the policy; the gas cap stays). Against ``--url``, that gateway's
#: policy applies.
AUDITOR_ENV = {
    "CONSENT_AUDITORS": DEV["auditor"].address,
    "CONSENT_RELAY_PATIENT_QUOTA_PER_HOUR": "1000000",
    "CONSENT_RELAY_RATE_PER_MINUTE": "1000000",
}
RECORD_BYTES = 64 * 1024


def new_account() -> LocalAccount:
    account: LocalAccount = Account.create()
    return account


@dataclass
class World:
    """The registry, the gateway client and the signed-in centre of a stack."""

    stack: Stack
    w3: Web3
    registry: ConsentRegistry
    gateway: Gateway
    centre: Session
    domain: Domain
    _nonces: dict[str, int] = field(default_factory=dict)

    def session(self, account: LocalAccount) -> Session:
        return self.gateway.login(account)

    def upload(self, patient: str, data: bytes) -> str:
        uploaded = self.centre.upload(
            data, domain=self.domain, patient=patient, category=category_id("laboratory")
        )
        return uploaded.record.record_id

    def _nonce(self, patient: str) -> int:
        if patient not in self._nonces:
            self._nonces[patient] = self.registry.nonce_of(patient)
        nonce = self._nonces[patient]
        self._nonces[patient] = nonce + 1
        return nonce

    def grant(
        self, patient: LocalAccount, session: Session, grantee: str, record_id: str
    ) -> dict[str, Any]:
        now = int(time.time())
        request = GrantRequest(
            patient=patient.address,
            grantee=grantee,  # type: ignore[arg-type]
            scope_kind=ScopeKind.RECORD,
            scope_id=bytes.fromhex(record_id[2:]),
            purposes=purposes_mask((0,)),
            expires_at=now + 86_400,
            signer=patient.address,
            nonce=self._nonce(patient.address),
            deadline=now + 3_600,
        )
        return session.relay(request, domain=self.domain, signer=patient).model_dump()

    def revoke(
        self, patient: LocalAccount, session: Session, grantee: str, record_id: str
    ) -> dict[str, Any]:
        request = RevokeRequest(
            patient=patient.address,
            grantee=grantee,  # type: ignore[arg-type]
            scope_kind=ScopeKind.RECORD,
            scope_id=bytes.fromhex(record_id[2:]),
            signer=patient.address,
            nonce=self._nonce(patient.address),
            deadline=int(time.time()) + 3_600,
        )
        return session.relay(request, domain=self.domain, signer=patient).model_dump()

    def close(self) -> None:
        self.gateway.close()


def world(stack: Stack) -> World:
    """Admit dev ``centre`` (CENTRE_ROLE, sent by dev ``admin``) and sign it in."""
    cache = (stack.home / "build") if stack.home is not None else state_paths().build_cache
    abi = compile_contracts(cache_dir=cache)[REGISTRY_CONTRACT].abi
    w3 = connect(stack.chain_url)
    registry = ConsentRegistry(w3, Web3.to_checksum_address(stack.registry), abi=abi)
    if not registry.has_role(CENTRE_ROLE, DEV["centre"].address):
        registry.grant_role(DEV["admin"], CENTRE_ROLE, DEV["centre"].address)
    gateway = Gateway(stack.gateway_url, timeout_s=120.0)
    return World(
        stack=stack,
        w3=w3,
        registry=registry,
        gateway=gateway,
        centre=gateway.login(DEV["centre"]),
        domain=registry.domain,
    )


# ------------------------------------------------------------------------ load generator


@dataclass
class LoadResult:
    seconds: float
    statuses: dict[int, int]
    latencies_ms: list[float]
    client_cpu_s: float
    bytes_received: int

    def rate(self, status: int) -> float:
        return self.statuses.get(status, 0) / self.seconds if self.seconds else 0.0


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, int]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length is None:
        raise RuntimeError("response without Content-Length")
    await reader.readexactly(length)
    return status, length


async def _client(
    host: str,
    port: int,
    requests: list[bytes],
    *,
    stop_at: float,
    record_from: float,
    max_requests: int,
    out: LoadResult,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        i = 0
        while i < max_requests:
            start = time.perf_counter()
            if start >= stop_at:
                break
            writer.write(requests[i % len(requests)])
            status, size = await _read_response(reader)
            end = time.perf_counter()
            i += 1
            if start >= record_from:
                out.statuses[status] = out.statuses.get(status, 0) + 1
                out.latencies_ms.append((end - start) * 1000)
                out.bytes_received += size
    finally:
        writer.close()


def get_request(url: str, path: str, token: str) -> bytes:
    netloc = urlsplit(url).netloc
    return (
        f"GET {path} HTTP/1.1\r\nHost: {netloc}\r\nAuthorization: Bearer {token}\r\n"
        f"Accept: application/json\r\n\r\n"
    ).encode()


def run_load(
    url: str,
    clients: Iterable[list[bytes]],
    *,
    seconds: float,
    warmup_s: float = 1.0,
    max_requests_per_client: int = 1_000_000,
) -> LoadResult:
    """Each element of ``clients`` is one connection's request cycle; bounded by time and count."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    out = LoadResult(
        seconds=seconds, statuses={}, latencies_ms=[], client_cpu_s=0.0, bytes_received=0
    )

    async def main() -> None:
        now = time.perf_counter()
        await asyncio.gather(
            *(
                _client(
                    host,
                    port,
                    requests,
                    stop_at=now + warmup_s + seconds,
                    record_from=now + warmup_s,
                    max_requests=max_requests_per_client,
                    out=out,
                )
                for requests in clients
            )
        )

    cpu0 = _own_cpu()
    asyncio.run(main())
    out.client_cpu_s = _own_cpu() - cpu0
    return out


# ------------------------------------------------------------------------------ CPU accounting


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def process_tree_cpu(pid: int | None) -> float | None:
    """User + system CPU seconds of ``pid`` and its live descendants (Linux /proc)."""
    if pid is None:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        ppid = int(fields[1])
        children.setdefault(ppid, []).append(int(entry.name))
        stats[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, 0.0)
        todo += children.get(p, [])
    return total


def gateway_pid(stack: Stack) -> int | None:
    return stack.info.gateway.pid if stack.info is not None else None


def cpu_share(client_cpu_s: float, server_cpu_s: float | None, seconds: float) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    out: dict[str, Any] = {"client_cpu_cores": round(client_cpu_s / seconds, 2)}
    if server_cpu_s is not None:
        out["gateway_cpu_cores"] = round(server_cpu_s / seconds, 2)
    out["machine_cores"] = cores
    return out


def health(stack: Stack) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{stack.gateway_url}/healthz", timeout=10).json()
    return body
