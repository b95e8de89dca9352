"""Gateway orchestration: chain access, SIWE sessions, record upload and consent-checked fetch.

All I/O comes in through constructors (an engine, a :class:`ChainAccess`, an
:class:`gateway.ipfs.IpfsClient`), so tests hand in real services or fakes without
monkeypatching. Routes stay thin: they parse, call one method here, and shape the answer.

Fail-closed rules (see DESIGN.md, threat model):

- A fetch reads the latest block number first and asks ``accessDecision`` *at that block*; the
  block is named in the response and in the access-log leaf, together with the ledger position
  the node actually evaluated (the event digest's count and ``block.timestamp``, returned by the
  same ``eth_call``): a node may answer "at block N" from a state that already holds block
  N+1's transactions, and the event count is what lets an auditor re-evaluate exactly the state
  the decision was taken on. A chain error is a 503 and nothing is served. With
  ``max_head_age_s`` set, a decision whose evaluated chain time is older than that by the
  gateway's clock is a 503 ``chain_stale`` (logged as such): a node that lost its peers
  answers from old state, so revokes mined elsewhere would stay invisible.
- The ciphertext must match its CID (recomputed locally) and the sha256 kept at upload, must
  decrypt under the record's data key with the record id and patient as associated data, and the
  plaintext must hash to the registered ``contentDigest``; otherwise 502. The plaintext never
  leaves the process and is dropped at once.
- Every decision on a known record (allowed, denied, or refused for an operational reason) is
  appended to the access log *before* the response is sent; if the log cannot be written the
  request fails (503) and nothing is served.
- An upload is all or nothing: a ``pending`` row reserves the record id and names the CID
  (computed locally), the ciphertext is pinned, the signed ``registerRecord``'s hash is stored
  with the row *before* it is sent; a failure unpins and deletes the row unless that
  transaction was mined (then the record is live) or may still be. A crash mid-upload leaves a
  row that ``RecordService.recover_pending`` resolves from the chain (at start, and on a retry
  once the row is older than the grace period).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import itertools
import json
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from sqlalchemy import Connection, Engine, Table, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from web3 import Web3

from gateway.accesslog import AccessLog
from gateway.errors import (
    AttestationInvalid,
    BlobTampered,
    ChainIdMismatch,
    ChainStale,
    ChainUnavailable,
    Conflict,
    ConsentDenied,
    ContractRejected,
    DatabaseUnavailable,
    Forbidden,
    InvalidRequest,
    PayloadTooLarge,
    RecordNotFound,
    ServiceUnavailable,
    SiweNonceInvalid,
    Unauthenticated,
    UpstreamFailed,
)
from gateway.ipfs import IpfsClient, IpfsError, IpfsUnavailable, compute_cid, verify_cid
from gateway.metrics import Metrics
from gateway.models import AUTH_NONCE, AUTH_SESSION, RECORD, Record
from gateway.registrar import Registrar
from ledger.chain.node import TxSender
from ledger.chain.registry import CENTRE_ROLE, ConsentRegistry
from ledger.chain.rpc import HttpxRpc, KeepAliveRpc, RpcTransport, RpcTransportError
from ledger.protocol import envelope as env
from ledger.protocol import siwe
from ledger.protocol.access_leaf import Decision
from ledger.protocol.consent_types import Basis, Purpose, category_id, category_name
from ledger.protocol.contract_errors import ContractError, ErrorDecoder
from ledger.protocol.eip712 import Domain, RecordAttestation
from ledger.protocol.eip712 import record_id as attestation_record_id
from ledger.protocol.eip712 import recover_signer as recover_typed_signer
from ledger.protocol.errors import DomainError
from ledger.protocol.wire import NoncePublic, RecordPublic, SessionPublic

__all__ = [
    "AuthService",
    "ChainAccess",
    "ChainDecision",
    "Principal",
    "RecordService",
    "contract_rejection",
    "parse_purpose",
]

log = logging.getLogger("gateway")
T = TypeVar("T")

_ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")
_BYTES32_RE = re.compile(r"^0x[0-9a-fA-F]{64}$")
_QUANTITY_RE = re.compile(r"0x[0-9a-fA-F]{1,64}")
_PURPOSE_ID_RE = re.compile(r"[0-9]{1,10}")  # ASCII digits only: "²".isdigit() is True
#: secp256k1's group order; OpenZeppelin's ECDSA refuses s above half of it (malleability).
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
#: Expired nonce / session rows deleted per issued nonce / login: more than each call adds,
#: so the tables stay bounded, and an index range scan, never a full one.
PURGE_BATCH = 32


# ----------------------------------------------------------------------------- chain access

_CONTRACT_STATUS: Mapping[str, int] = {
    "NotACentre": 403,
    "NotPatientOrGuardian": 403,
    "RecordExists": 409,
    "ConsentUnchanged": 409,
    "InvalidAccountNonce": 409,
    "CheckpointNotGrowing": 409,
    "GuardianUnchanged": 409,
    "BreakGlassAlreadyOpen": 409,
    "UnknownRecord": 404,
    "ConsentNotFound": 404,
    "NoGuardian": 404,
    "BreakGlassNotOpen": 404,
    "CategoryNotListed": 422,  # the upload names a category the registry does not list
    "AccessControlUnauthorizedAccount": 503,  # the gateway itself is not admitted
    "Panic": 502,
    "Reverted": 502,
    "UnknownContractError": 502,
}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def contract_rejection(exc: ContractError) -> ContractRejected:
    """The HTTP-facing error for a registry revert (``code`` = ``contract_<snake_name>``)."""
    name = type(exc).__name__
    status = _CONTRACT_STATUS.get(name, 422)
    fields: dict[str, object] = {}
    for key, value in zip(_field_names(exc), exc.values(), strict=False):
        fields[key] = "0x" + value.hex() if isinstance(value, bytes) else value
    err = ContractRejected(
        error=name, status=status, message=f"the registry refused: {exc}", **fields
    )
    err.code = f"contract_{_snake(name)}"  # type: ignore[misc]
    err.http_status = status  # type: ignore[misc]
    return err


def _field_names(exc: ContractError) -> list[str]:
    import dataclasses

    return [f.name for f in dataclasses.fields(exc)]


@dataclass(frozen=True, slots=True)
class ChainDecision:
    """What ``accessDecision`` answered, and the ledger position it was evaluated on."""

    basis: Basis
    until: int
    event_count: int  # the event digest's count in the state the node evaluated
    block_number: int  # block.number during the call
    timestamp: int  # block.timestamp during the call

    @property
    def allowed(self) -> bool:
        return self.basis is not Basis.NONE


_UINT64 = 1 << 64
_BASIS_MAX = max(Basis)


def _hex_quantity(value: object, *, what: str) -> int:
    """A JSON-RPC quantity (``0x`` hex) from the node; a malformed one is the node's fault."""
    if not isinstance(value, str) or not _QUANTITY_RE.fullmatch(value):
        raise UpstreamFailed(f"the node returned a malformed {what}", value=str(value)[:80])
    return int(value, 16)


class ChainAccess:
    """The registry client, created on first use (the gateway starts even if the chain is
    down, and says so on ``/healthz``), with transport errors mapped to ``ChainUnavailable``
    and reverts to ``ContractRejected``."""

    def __init__(
        self,
        w3: Web3,
        *,
        url: str,
        address: ChecksumAddress,
        abi: Sequence[Mapping[str, Any]],
        relayer: LocalAccount,
        chain_id: int | None,
        max_in_flight: int = 64,
        rpc: RpcTransport | httpx.Client | None = None,
        gateway_account: LocalAccount | None = None,
        registrar: LocalAccount | None = None,
    ) -> None:
        self.w3 = w3
        self.url = url
        # The two calls of every fetch (eth_blockNumber, accessDecision) go over a plain keep-alive
        # JSON-RPC transport with a precomputed selector: web3's contract machinery costs ~2 ms
        # a call, httpx ~0.5 ms, this ~0.1 ms. Everything else uses the typed registry client.
        if isinstance(rpc, httpx.Client):
            rpc = HttpxRpc(url, rpc)
        self._rpc: RpcTransport = rpc if rpc is not None else KeepAliveRpc(url, timeout_s=10.0)
        self._rpc_id = itertools.count(1)
        self._has_consent_selector = keccak(text="hasConsent(address,address,bytes32,uint8)")[:4]
        self._access_decision_selector = keccak(
            text="accessDecision(address,address,bytes32,uint8)"
        )[:4]
        self._errors = ErrorDecoder(abi)
        self.address = address
        # Three senders, so that draining one cannot stop the others (``Settings`` refuses one
        # key for two of them): the relayer pays for relayed consents, the registrar registers
        # records, the gateway account anchors checkpoints (and names the gateway). Without
        # the last two, the relayer does everything (a read-only or single-purpose client).
        self.relayer = relayer
        self.gateway_account = gateway_account if gateway_account is not None else relayer
        self.registrar = registrar if registrar is not None else relayer
        self._abi = list(abi)
        self._chain_id = chain_id
        self.expected_chain_id = chain_id  # the deployment's; the node's is compared with it
        self._max_in_flight = max_in_flight
        self._registry: ConsentRegistry | None = None
        self._lock = threading.Lock()

    @property
    def domain(self) -> Domain:
        """The registry's EIP-712 domain (no RPC when the chain id is known)."""
        return Domain(chain_id=self.chain_id, verifying_contract=self.address)

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            with self.guard():
                self._chain_id = int(self.w3.eth.chain_id)
        return self._chain_id

    @property
    def registry(self) -> ConsentRegistry:
        registry = self._registry
        if registry is None:
            with self._lock, self.guard():
                if self._registry is None:
                    self._registry = ConsentRegistry(self.w3, self.address, abi=self._abi)
                    self._install_sender(self._registry)
                registry = self._registry
        return registry

    def _install_sender(self, registry: ConsentRegistry) -> None:
        # Bound each account's in-flight transactions (the registry's default sender uses 64).
        senders = getattr(registry, "_senders", None)
        if isinstance(senders, dict):
            for account in (self.relayer, self.registrar, self.gateway_account):
                senders[account.address] = TxSender(
                    self.w3, account, max_in_flight=self._max_in_flight
                )

    def sender(self, account: LocalAccount) -> TxSender:
        """The nonce-keeping sender of one of the gateway's accounts."""
        return self.registry._sender(account)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Map transport failures and reverts inside the block."""
        try:
            yield
        except ContractError as exc:
            raise contract_rejection(exc) from exc
        except DomainError:
            raise
        except (OSError, TimeoutError) as exc:  # requests' errors are OSErrors
            raise ChainUnavailable(url=self.url, reason=type(exc).__name__) from exc
        except Exception as exc:
            # web3 wraps some transport failures in its own types
            if type(exc).__module__.startswith(("web3", "requests", "urllib3", "aiohttp")):
                name = type(exc).__name__
                if "Timeout" in name or "Connection" in name or "Provider" in name:
                    raise ChainUnavailable(url=self.url, reason=name) from exc
            raise

    def call(self, fn: Callable[[ConsentRegistry], T]) -> T:
        with self.guard():
            return fn(self.registry)

    def close(self) -> None:
        self._rpc.close()

    def rpc(self, method: str, params: list[Any]) -> Any:
        """One JSON-RPC call on the keep-alive transport (also used by the record registrar)."""
        body = {"jsonrpc": "2.0", "id": next(self._rpc_id), "method": method, "params": params}
        try:
            raw = self._rpc.post(json.dumps(body, separators=(",", ":")).encode())
        except RpcTransportError as exc:
            raise ChainUnavailable(url=self.url, reason=exc.reason) from exc
        try:
            answer = json.loads(raw)
        except ValueError:
            raise ChainUnavailable(url=self.url, reason="not JSON") from None
        error = answer.get("error") if isinstance(answer, dict) else None
        if error is not None:
            data = error.get("data") if isinstance(error, dict) else None
            if isinstance(data, str) and len(data) >= 10:
                raise contract_rejection(self._errors.decode(data))
            raise UpstreamFailed(f"{method} failed", detail=str(error)[:300])
        return answer["result"]

    def block_number(self) -> int:
        """The latest block number (raw JSON-RPC)."""
        return int(self.rpc("eth_blockNumber", []), 16)

    def node_chain_id(self) -> int:
        """The chain id the node reports (``eth_chainId``, asked every time)."""
        return _hex_quantity(self.rpc("eth_chainId", []), what="eth_chainId")

    def check_chain_id(self) -> int:
        """The node's chain id; ``ChainIdMismatch`` if it is not the deployment's."""
        node = self.node_chain_id()
        if self.expected_chain_id is not None and node != self.expected_chain_id:
            raise ChainIdMismatch(node=node, expected=self.expected_chain_id)
        return node

    def head_timestamp(self) -> tuple[int, int]:
        """``(number, timestamp)`` of the node's latest block."""
        block = self.rpc("eth_getBlockByNumber", ["latest", False])
        if not isinstance(block, dict):
            raise UpstreamFailed("eth_getBlockByNumber returned no block")
        return (
            _hex_quantity(block.get("number"), what="block number"),
            _hex_quantity(block.get("timestamp"), what="block timestamp"),
        )

    def has_consent_at(
        self, patient: str, grantee: str, record_id: bytes, purpose: int, *, block: int
    ) -> bool:
        """``hasConsent`` evaluated at ``block`` (raw ``eth_call``)."""
        args = abi_encode(
            ["address", "address", "bytes32", "uint8"], [patient, grantee, record_id, purpose]
        )
        call = {"to": self.address, "data": "0x" + (self._has_consent_selector + args).hex()}
        result = self.rpc("eth_call", [call, hex(block)])
        raw = bytes.fromhex(str(result)[2:])
        if len(raw) != 32 or raw[:31] != bytes(31) or raw[31] > 1:
            raise UpstreamFailed("hasConsent returned a malformed bool", result=str(result)[:80])
        return raw[31] == 1

    def access_decision_at(
        self, patient: str, grantee: str, record_id: bytes, purpose: int, *, block: int
    ) -> ChainDecision:
        """``accessDecision`` evaluated at ``block`` (raw ``eth_call``): the basis, and the event
        count / block number / timestamp of the state the node actually evaluated."""
        args = abi_encode(
            ["address", "address", "bytes32", "uint8"], [patient, grantee, record_id, purpose]
        )
        call = {"to": self.address, "data": "0x" + (self._access_decision_selector + args).hex()}
        result = self.rpc("eth_call", [call, hex(block)])
        try:
            raw = bytes.fromhex(str(result)[2:])
        except ValueError:
            raw = b""
        words = [int.from_bytes(raw[i : i + 32], "big") for i in range(0, len(raw), 32)]
        if len(raw) != 160 or words[0] > _BASIS_MAX or any(w >= _UINT64 for w in words):
            raise UpstreamFailed(
                "accessDecision returned a malformed answer", result=str(result)[:400]
            )
        return ChainDecision(Basis(words[0]), words[1], words[2], words[3], words[4])

    def resync_nonce(self, account: LocalAccount | None = None) -> None:
        registry = self._registry
        if registry is not None:
            senders = getattr(registry, "_senders", {})
            sender = senders.get((account or self.gateway_account).address)
            if sender is not None:
                sender.resync()

    def send(self, fn: Callable[[ConsentRegistry], T]) -> T:
        """A transaction of the gateway account; one retry after a nonce error (the chain was
        rewound or another process used the account)."""
        try:
            return self.call(fn)
        except (ChainUnavailable, ContractRejected):
            raise
        except Exception as exc:
            if "nonce" not in str(exc).lower():
                raise
            self.resync_nonce()
            try:
                return self.call(fn)
            except (ChainUnavailable, ContractRejected):
                raise
            except Exception as again:
                raise UpstreamFailed(f"transaction failed: {again}") from again


# ------------------------------------------------------------------------------- sessions


@dataclass(frozen=True, slots=True)
class Principal:
    """A signed-in account, with the public key recovered from its login signature."""

    address: ChecksumAddress
    public_key: bytes
    expires_at: float


def _token_hash(token: str) -> str:
    return "0x" + hashlib.sha256(token.encode()).hexdigest()


@contextlib.contextmanager
def _db_guard() -> Iterator[None]:
    try:
        yield
    except OperationalError as exc:
        raise DatabaseUnavailable(reason=type(exc.orig).__name__ if exc.orig else "error") from exc


def _purge_expired(conn: Connection, table: Table, key: Any, now: float) -> int:
    """Delete at most ``PURGE_BATCH`` rows of ``table`` expired before ``now`` (through the
    ``expires_at`` index); the number deleted."""
    oldest = select(key).where(table.c.expires_at < now).limit(PURGE_BATCH)
    return int(conn.execute(delete(table).where(key.in_(oldest.scalar_subquery()))).rowcount)


class AuthService:
    """SIWE nonces, logins and bearer sessions (single-use nonces and sessions in the DB)."""

    def __init__(
        self,
        engine: Engine,
        *,
        domain: str,
        uri: str,
        chain_id: Callable[[], int],
        nonce_ttl_s: int,
        session_ttl_s: int,
        max_age_s: int,
        clock: Callable[[], float] = time.time,
        cache_size: int = 10_000,
    ) -> None:
        self._engine = engine
        self.domain = domain
        self.uri = uri
        self._chain_id = chain_id
        self._nonce_ttl_s = nonce_ttl_s
        self._session_ttl_s = session_ttl_s
        self._max_age = timedelta(seconds=max_age_s)
        self._clock = clock
        self._cache: OrderedDict[str, Principal] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()

    def new_nonce(self) -> NoncePublic:
        nonce = secrets.token_hex(16)
        now = self._clock()
        expires = now + self._nonce_ttl_s
        with _db_guard(), self._engine.begin() as conn:
            conn.execute(insert(AUTH_NONCE).values(nonce=nonce, expires_at=expires))
            _purge_expired(conn, AUTH_NONCE, AUTH_NONCE.c.nonce, now)
        try:
            chain_id: int | None = self._chain_id()
        except DomainError:
            chain_id = None
        return NoncePublic(
            nonce=nonce, expires_at=expires, domain=self.domain, uri=self.uri, chain_id=chain_id
        )

    def login(self, message: str, signature: str) -> SessionPublic:
        parsed = siwe.parse_message(message)
        now = self._clock()
        table = AUTH_NONCE
        with _db_guard(), self._engine.begin() as conn:
            consumed = conn.execute(
                delete(table).where(table.c.nonce == parsed.nonce, table.c.expires_at >= now)
            ).rowcount
        if consumed != 1:
            raise SiweNonceInvalid(nonce=parsed.nonce)
        verified = siwe.verify(
            message,
            signature,
            expected_domain=self.domain,
            expected_uri=self.uri,
            expected_chain_id=self._chain_id(),
            now=datetime.fromtimestamp(now, tz=UTC),
            max_age=self._max_age,
        )
        expires = now + self._session_ttl_s
        if verified.message.expiration_time is not None:
            expires = min(expires, verified.message.expiration_time.timestamp())
        token = secrets.token_urlsafe(32)
        address = to_checksum_address(verified.address)
        with _db_guard(), self._engine.begin() as conn:
            conn.execute(
                insert(AUTH_SESSION).values(
                    token_hash=_token_hash(token),
                    address=address,
                    public_key="0x" + verified.public_key.hex(),
                    expires_at=expires,
                    created_at=now,
                )
            )
            _purge_expired(conn, AUTH_SESSION, AUTH_SESSION.c.token_hash, now)
        log.info("login address=%s expires_at=%.0f", address, expires)
        return SessionPublic(token=token, address=address, expires_at=expires)

    def cached(self, token: str | None) -> Principal | None:
        """The session from memory if it is cached and unexpired (no I/O), else None."""
        if not token:
            return None
        with self._cache_lock:
            principal = self._cache.get(_token_hash(token))
        if principal is None or principal.expires_at <= self._clock():
            return None
        return principal

    def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise Unauthenticated(reason="missing bearer token")
        key = _token_hash(token)
        now = self._clock()
        with self._cache_lock:
            principal = self._cache.get(key)
        if principal is None:
            table = AUTH_SESSION
            with _db_guard(), self._engine.connect() as conn:
                row = conn.execute(
                    select(table.c.address, table.c.public_key, table.c.expires_at).where(
                        table.c.token_hash == key
                    )
                ).first()
            if row is None:
                raise Unauthenticated(reason="unknown session")
            principal = Principal(
                address=to_checksum_address(row.address),
                public_key=bytes.fromhex(row.public_key[2:]),
                expires_at=float(row.expires_at),
            )
            with self._cache_lock:
                self._cache[key] = principal
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        if principal.expires_at <= now:
            with self._cache_lock:
                self._cache.pop(key, None)
            raise Unauthenticated(reason="session expired")
        return principal


# -------------------------------------------------------------------------------- records


def parse_purpose(value: str | int) -> int:
    """A purpose id from its number (0..31) or name (``treatment``, ``research`` ...)."""
    if isinstance(value, int) or (isinstance(value, str) and _PURPOSE_ID_RE.fullmatch(value)):
        number = int(value)
        if not 0 <= number <= 31:
            raise InvalidRequest("purpose id out of range 0..31", purpose=value)
        return number
    try:
        return int(Purpose[str(value).strip().upper().replace("-", "_")])
    except (KeyError, UnicodeError):
        names = ", ".join(p.name.lower() for p in Purpose)
        raise InvalidRequest(
            f"unknown purpose {value!r}; use one of {names} or an id 0..31", purpose=value
        ) from None


def _address(value: str, *, what: str) -> ChecksumAddress:
    if not isinstance(value, str) or not _ADDRESS_RE.match(value.strip()):
        raise InvalidRequest(f"{what} is not a 0x-prefixed 20-byte address", field=what)
    return to_checksum_address(value.strip())


def _category(value: str) -> bytes:
    text = value.strip()
    if _BYTES32_RE.match(text):
        return bytes.fromhex(text[2:])
    try:
        return category_id(text)
    except (ValueError, UnicodeEncodeError) as exc:
        raise InvalidRequest(str(exc), field="category") from None


def _record_id(value: str) -> bytes:
    if not _BYTES32_RE.match(value):
        raise InvalidRequest("record id is not 0x + 64 hex digits", record_id=value)
    return bytes.fromhex(value[2:])


def _signature(value: str) -> bytes:
    text = value.strip()
    text = text[2:] if text[:2] in ("0x", "0X") else text
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise InvalidRequest("signature is not hex", field="signature") from None
    if len(raw) != 65:
        raise InvalidRequest("signature must be 65 bytes r || s || v", field="signature")
    return raw


def _public(row: Record) -> RecordPublic:
    category = bytes.fromhex(row.category[2:])
    try:
        name = category_name(category)
    except UnicodeDecodeError:
        name = row.category
    return RecordPublic(
        record_id=row.record_id,
        patient=to_checksum_address(row.patient),
        centre=to_checksum_address(row.centre),
        category=name,
        category_id=row.category,
        content_digest=row.content_digest,
        issued_at=row.issued_at,
        cid=row.cid or "",
        size=row.size,
        tx_hash=row.tx_hash,
        block_number=row.block_number,
    )


class _BlobCache:
    """A byte-bounded LRU of verified ciphertext, keyed by CID (immutable by construction)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict[str, bytes] = OrderedDict()
        # the standard base64 of each cached blob (what a fetch response carries), made once
        self._encoded: dict[str, bytes] = {}
        self._size = 0
        self._lock = threading.Lock()

    def get(self, cid: str) -> bytes | None:
        if self._capacity == 0:
            return None
        with self._lock:
            blob = self._items.get(cid)
            if blob is not None:
                self._items.move_to_end(cid)
            return blob

    def encoded(self, cid: str) -> bytes | None:
        """The base64 of the cached blob ``cid`` (no LRU bump: ``get`` just did it)."""
        return self._encoded.get(cid)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._encoded.clear()
            self._size = 0

    def put(self, cid: str, blob: bytes) -> None:
        if 2 * len(blob) > self._capacity // 4:
            return
        encoded = base64.b64encode(blob)
        with self._lock:
            if cid in self._items:
                return
            self._items[cid] = blob
            self._encoded[cid] = encoded
            self._size += len(blob) + len(encoded)
            while self._size > self._capacity:
                old_cid, old = self._items.popitem(last=False)
                self._size -= len(old) + len(self._encoded.pop(old_cid, b""))


class RecordService:
    """Upload and fetch of records, with the access log written for every fetch decision."""

    def __init__(
        self,
        engine: Engine,
        *,
        chain: ChainAccess,
        blobs: IpfsClient,
        kek: bytes,
        access_log: AccessLog,
        metrics: Metrics,
        max_upload_bytes: int,
        blob_cache_bytes: int = 0,
        clock: Callable[[], float] = time.time,
        pending_grace_s: float = 300.0,
        tx_timeout_s: float = 60.0,
        max_head_age_s: float | None = None,
    ) -> None:
        self._engine = engine
        # A decision evaluated at a chain time older than this (by our clock) fails closed.
        self.max_head_age_s = max_head_age_s
        self.chain = chain
        self.blobs = blobs
        # Longer than any upload may take (IPFS add + the registration's receipt wait): a
        # pending row older than this has no live uploader and is resolved by whoever meets it.
        self.pending_grace_s = pending_grace_s
        self.registrar = Registrar(
            chain,
            sender=lambda: chain.sender(chain.registrar),
            timeout_s=tx_timeout_s,
        )
        self._kek = kek
        self.access_log = access_log
        self.metrics = metrics
        self.max_upload_bytes = max_upload_bytes
        self._clock = clock
        self._blob_cache = _BlobCache(blob_cache_bytes)
        self._rows: OrderedDict[str, Record] = OrderedDict()
        self._rows_lock = threading.Lock()

    # -- upload ------------------------------------------------------------------------------

    def upload(
        self,
        principal: Principal,
        *,
        data: bytes,
        patient: str,
        category: str,
        issued_at: int,
        signature: str,
        salt: str,
        content_digest: str | None = None,
    ) -> tuple[RecordPublic, bool]:
        """Encrypt, pin and register a centre's attested record; ``(record, created)``.

        The attested digest is ``sha256(salt || data)``; the salt goes into the encrypted blob
        (``ledger.protocol.envelope``) and nowhere else.

        Retrying the same attestation returns the existing record with ``created=False``.
        """
        if len(data) > self.max_upload_bytes:
            raise PayloadTooLarge(limit=self.max_upload_bytes)
        patient_addr = _address(patient, what="patient")
        if not 0 <= issued_at < 2**64:
            raise InvalidRequest("issued_at must be a uint64 (UNIX seconds)", field="issued_at")
        sig = _signature(signature)
        if int.from_bytes(sig[32:64], "big") > _SECP256K1_N // 2:
            # eth-account recovers a high-s signature, the registry's ECDSA reverts on it: the
            # relayer would pay for the revert. Refused before anything is sent.
            self.metrics.uploads.labels("refused").inc()
            raise AttestationInvalid(
                expected=principal.address,
                recovered=None,
                reason="high-s signature (s > secp256k1n/2), which the registry refuses; "
                "sign again with a signer that normalises s (EIP-2)",
            )
        if not _BYTES32_RE.fullmatch(salt):
            raise InvalidRequest("salt must be 32 bytes, 0x hex", field="salt")
        salt_bytes = bytes.fromhex(salt[2:])
        digest = env.salted_digest(salt_bytes, data)
        if content_digest is not None and content_digest.lower() != "0x" + digest.hex():
            raise InvalidRequest(
                "content_digest is not sha256(salt || the uploaded file)",
                expected="0x" + digest.hex(),
                actual=content_digest,
            )
        attestation = RecordAttestation(
            patient=patient_addr,
            category=_category(category),
            content_digest=digest,
            issued_at=issued_at,
        )
        domain = self.chain.domain
        rid = bytes(attestation_record_id(domain, attestation))
        rid_hex = "0x" + rid.hex()
        try:
            signer = recover_typed_signer(domain, attestation, sig)
        except Exception:
            raise AttestationInvalid(
                expected=principal.address, recovered=None, reason="signature does not recover"
            ) from None
        if signer != principal.address:
            self.metrics.uploads.labels("refused").inc()
            log.warning(
                "attestation refused: signer=%s session=%s record=%s",
                signer,
                principal.address,
                rid_hex,
            )
            raise AttestationInvalid(
                expected=principal.address,
                recovered=signer,
                reason="the attestation was not signed by the signed-in centre",
            )
        existing = self._row(rid_hex)
        if existing is not None:
            return self._existing(existing), False
        is_centre = self.registrar.has_role_cached(CENTRE_ROLE, principal.address)
        if not is_centre:
            raise Forbidden(account=principal.address, reason="not a checkup centre (CENTRE_ROLE)")

        blob, data_key = env.encrypt_record(
            data, record_id=rid, patient=patient_addr, salt=salt_bytes
        )
        wrapped = env.wrap_key(data_key, self._kek, record_id=rid)
        del data_key
        # The CID is known before anything leaves the process, and stored with the pending row:
        # a crash at any later moment leaves a row that names everything it may have reached.
        cid = str(compute_cid(blob, chunk_size=self.blobs.chunk_size))
        row_values: dict[str, Any] = {
            "record_id": rid_hex,
            "patient": patient_addr.lower(),
            "centre": principal.address.lower(),
            "category": "0x" + attestation.category.hex(),
            "content_digest": "0x" + digest.hex(),
            "issued_at": issued_at,
            "cid": cid,
            "size": len(blob),
            "blob_sha256": "0x" + hashlib.sha256(blob).hexdigest(),
            "wrapped_key": wrapped,
            "status": "pending",
        }
        existing_after = self._reserve(rid_hex, row_values)
        if existing_after is not None:
            return self._existing(existing_after), False
        created_at = float(row_values["created_at"])  # set by _reserve
        try:
            added = str(self.blobs.add(blob, pin=True))
            if added != cid:  # add() checks the node's CID against the same computation
                raise UpstreamFailed("the IPFS node stored the blob under another CID", cid=added)
            registered = self.registrar.register(
                attestation,
                sig,
                cid,
                record_id=rid,
                on_signed=lambda tx_hash, previous: self._mark_sent(
                    rid_hex, cid, created_at, tx_hash, previous
                ),
                on_unsent=lambda tx_hash: self._mark_unsent(rid_hex, tx_hash),
            )
            with _db_guard(), self._engine.begin() as conn:
                conn.execute(
                    update(RECORD)
                    .where(RECORD.c.record_id == rid_hex, RECORD.c.cid == cid)
                    .values(
                        status="live",
                        tx_hash=registered.tx_hash,
                        block_number=registered.block_number,
                    )
                )
        except BaseException as exc:
            outcome = self._abandon(rid_hex, cid)
            self.metrics.uploads.labels("failed").inc()
            log.warning("upload of %s failed (%s): %s", rid_hex, outcome, type(exc).__name__)
            if isinstance(exc, ChainUnavailable):
                self.metrics.chain_errors.inc()
            raise
        self.metrics.uploads.labels("created").inc()
        log.info("record registered id=%s cid=%s tx=%s", rid_hex, cid, registered.tx_hash)
        row = self._row(rid_hex)
        assert row is not None
        return _public(row), True

    def _existing(self, row: Record) -> RecordPublic:
        return _public(row)

    # -- upload: reservation, crash recovery -------------------------------------------------
    #
    # A pending row names everything an upload may have reached: the CID (computed locally
    # before the blob is added) and, once signed and *before* it is sent, the registerRecord
    # transaction hash. Recovery resolves a pending row from the node's view of that hash:
    #
    #   no hash               -> never sent: unpin, delete (unless the record is on-chain with
    #                            this CID after all, then live)
    #   hash mined, succeeded -> live (and the blob pinned again if it lost its pin)
    #   hash mined, reverted  -> unpin, delete
    #   hash pending          -> left alone; resolved by a later sweep or retry
    #   hash unknown to node  -> never sent or dropped: it can no longer be mined; unpin, delete
    #
    # Rolling back first claims the row (status "aborting", only if nothing changed since it
    # was read), then unpins, then deletes: a live uploader cannot send after the claim, and a
    # crash mid-rollback leaves an "aborting" row that the next sweep finishes. An uploader
    # refuses to send once its row is older than half the grace period, and sweeps outside
    # start-up only touch rows older than the grace period, so a sweep never races a send.

    def _reserve(self, rid_hex: str, values: dict[str, Any]) -> Record | None:
        """Insert the pending row; a live row of the same record if one exists (a retry)."""
        for _ in range(3):
            values["created_at"] = self._clock()
            try:
                with _db_guard(), self._engine.begin() as conn:
                    conn.execute(insert(RECORD).values(**values))
                return None
            except IntegrityError:
                existing = self._row(rid_hex, include_pending=True)
            if existing is None:
                continue  # rolled back meanwhile: try again
            if existing.status == "live":
                return existing
            if existing.status == "pending" and (
                self._clock() - existing.created_at < self.pending_grace_s
            ):
                break
            # Older than any upload may take: its uploader died. Resolve it, then look again.
            try:
                self._recover_row(existing)
            except DomainError as exc:
                log.warning("could not resolve pending upload %s: %s", rid_hex, exc.code)
                break
            again = self._row(rid_hex, include_pending=True)
            if again is not None and again.status == "live":
                return again
            if again is not None:
                break
        raise Conflict(
            "an upload of this attestation is in progress; retry shortly", record_id=rid_hex
        )

    def _mark_sent(
        self, rid_hex: str, cid: str, created_at: float, tx_hash: str, previous: str | None
    ) -> None:
        """Store the signed registration's hash before it is sent (or refuse to send)."""
        if self._clock() - created_at > self.pending_grace_s / 2:
            raise ServiceUnavailable(
                "the upload took too long to reach the chain; retry", record_id=rid_hex
            )
        table = RECORD
        same = table.c.tx_hash.is_(None) if previous is None else table.c.tx_hash == previous
        with _db_guard(), self._engine.begin() as conn:
            done = conn.execute(
                update(table)
                .where(
                    table.c.record_id == rid_hex,
                    table.c.status == "pending",
                    table.c.cid == cid,
                    same,
                )
                .values(tx_hash=tx_hash)
            ).rowcount
        if done != 1:
            raise Conflict("the pending upload was reclaimed; retry", record_id=rid_hex)

    def _mark_unsent(self, rid_hex: str, tx_hash: str) -> None:
        """Forget a stored hash whose transaction certainly never reached the node."""
        table = RECORD
        with _db_guard(), self._engine.begin() as conn:
            conn.execute(
                update(table)
                .where(
                    table.c.record_id == rid_hex,
                    table.c.status == "pending",
                    table.c.tx_hash == tx_hash,
                )
                .values(tx_hash=None)
            )

    def _abandon(self, rid_hex: str, cid: str) -> str:
        """After a failed upload: resolve its row now (roll back unless a transaction that may
        still be mined, or was, holds it)."""
        try:
            row = self._row(rid_hex, include_pending=True)
            if row is None or row.cid != cid:
                return "gone"
            if row.status == "pending" and row.tx_hash is None:
                return self._roll_back_row(row)  # nothing was sent: no need to ask the chain
            return self._recover_row(row)
        except Exception as exc:  # the sweep at the next start, or a retry, finishes it
            log.error("could not resolve failed upload %s: %s", rid_hex, type(exc).__name__)
            return "left pending"

    def recover_pending(self, older_than_s: float) -> dict[str, int]:
        """Resolve every pending upload row older than ``older_than_s`` (see above); counts by
        outcome. Errors on one row are logged and leave it for a later sweep."""
        cutoff = self._clock() - older_than_s
        table = RECORD
        with _db_guard(), self._engine.connect() as conn:
            found = (
                conn.execute(
                    select(table).where(
                        table.c.status.in_(("pending", "aborting")), table.c.created_at <= cutoff
                    )
                )
                .mappings()
                .all()
            )
        counts: dict[str, int] = {}
        for raw in found:
            row = Record.model_validate(dict(raw))
            try:
                outcome = self._recover_row(row)
            except Exception as exc:
                outcome = "error"
                log.error("recovery of upload %s failed: %s", row.record_id, type(exc).__name__)
            counts[outcome] = counts.get(outcome, 0) + 1
        if found:
            log.warning("recovered pending uploads: %s", counts)
        return counts

    def _recover_row(self, row: Record) -> str:
        rid = bytes.fromhex(row.record_id[2:])
        if row.status == "aborting":
            return self._finish_rollback(row)
        if row.tx_hash is not None:
            found = self.registrar.lookup(row.tx_hash, rid)
            if found.state == "pending":
                log.info("upload %s: registration %s still pending", row.record_id, row.tx_hash)
                return "pending"
            if found.state == "mined" and found.cid == row.cid and found.block_number is not None:
                return self._make_live(row, row.tx_hash, found.block_number)
        # Never sent, reverted, or unknown to the node: registered only if some other
        # transaction did it (then with this CID, or it is not ours).
        on_chain = None
        if self.registrar.is_registered(rid):  # recordOf; only then search the logs for the CID
            on_chain = self.registrar.registration_of(rid)
        if on_chain is not None and on_chain[0] == row.cid:
            return self._make_live(row, on_chain[1], on_chain[2])
        if on_chain is not None:
            log.error(
                "record %s is registered on-chain with CID %s, not the pending row's %s",
                row.record_id,
                on_chain[0],
                row.cid,
            )
        return self._roll_back_row(row)

    def _make_live(self, row: Record, tx_hash: str, block_number: int) -> str:
        table = RECORD
        with _db_guard(), self._engine.begin() as conn:
            conn.execute(
                update(table)
                .where(
                    table.c.record_id == row.record_id,
                    table.c.status == "pending",
                    table.c.cid == row.cid,
                )
                .values(status="live", tx_hash=tx_hash, block_number=block_number)
            )
        if row.cid is not None:
            try:
                self.blobs.pin_add(row.cid)  # idempotent; re-pins if the pin was lost
            except Exception as exc:
                log.error(
                    "record %s is registered but its blob %s cannot be pinned: %s",
                    row.record_id,
                    row.cid,
                    type(exc).__name__,
                )
        log.warning("upload %s recovered: registered in tx %s", row.record_id, tx_hash)
        return "live"

    def _roll_back_row(self, row: Record) -> str:
        table = RECORD
        same = table.c.tx_hash.is_(None) if row.tx_hash is None else table.c.tx_hash == row.tx_hash
        with _db_guard(), self._engine.begin() as conn:
            claimed = conn.execute(
                update(table)
                .where(table.c.record_id == row.record_id, table.c.status == "pending", same)
                .values(status="aborting")
            ).rowcount
        if claimed != 1:
            return "changed"  # the uploader moved on meanwhile; a later sweep looks again
        return self._finish_rollback(row)

    def _finish_rollback(self, row: Record) -> str:
        if row.cid is not None:
            try:
                self.blobs.pin_rm(row.cid)  # not pinned is fine
            except IpfsError as exc:
                # Best effort, as before: a node we cannot reach now may still hold the pin
                # (an add it finished after we gave up). Say so, with the CID to unpin.
                log.error(
                    "could not unpin %s rolling back %s (%s): unpin it when the node is back",
                    row.cid,
                    row.record_id,
                    exc.code,
                )
        table = RECORD
        with _db_guard(), self._engine.begin() as conn:
            conn.execute(
                delete(table).where(
                    table.c.record_id == row.record_id, table.c.status == "aborting"
                )
            )
        log.warning("upload %s rolled back (cid %s)", row.record_id, row.cid)
        return "rolled back"

    # -- reads -------------------------------------------------------------------------------

    def clear_caches(self) -> None:
        """Forget cached record rows and ciphertext (after restoring a database backup)."""
        with self._rows_lock:
            self._rows.clear()
        self._blob_cache.clear()

    def _row(self, rid_hex: str, *, include_pending: bool = False) -> Record | None:
        with self._rows_lock:
            cached = self._rows.get(rid_hex)
        if cached is not None:
            return cached
        table = RECORD
        with _db_guard(), self._engine.connect() as conn:
            found = (
                conn.execute(select(table).where(table.c.record_id == rid_hex)).mappings().first()
            )
        if found is None:
            return None
        row = Record.model_validate(dict(found))
        if row.status == "live":
            with self._rows_lock:  # live rows never change: cache them
                self._rows[rid_hex] = row
                if len(self._rows) > 50_000:
                    self._rows.popitem(last=False)
            return row
        return row if include_pending else None

    def list_for(self, address: str, *, limit: int = 100, offset: int = 0) -> list[RecordPublic]:
        """Live records where ``address`` is the patient or the uploading centre."""
        table = RECORD
        who = address.lower()
        with _db_guard(), self._engine.connect() as conn:
            rows = (
                conn.execute(
                    select(table)
                    .where(
                        table.c.status == "live", or_(table.c.patient == who, table.c.centre == who)
                    )
                    .order_by(table.c.created_at, table.c.record_id)
                    .limit(limit)
                    .offset(offset)
                )
                .mappings()
                .all()
            )
        return [_public(Record.model_validate(dict(r))) for r in rows]

    # -- fetch -------------------------------------------------------------------------------

    def fetch(self, principal: Principal, record_id: str, purpose: int) -> env.Envelope:
        """The record's envelope for ``principal``, if the chain allows it at the latest block."""
        c = self._checked_fetch(principal, record_id, purpose)
        return env.seal_envelope(
            record_id=c.rid,
            patient=c.patient,
            cid=c.cid,
            blob=c.blob,
            data_key=c.data_key,
            reader_public_key=principal.public_key,
            content_digest=bytes.fromhex(c.content_digest[2:]),
            block_number=c.block,
            event_count=c.answer.event_count,
            chain_time=c.answer.timestamp,
        )

    def fetch_json(self, principal: Principal, record_id: str, purpose: int) -> bytes:
        """:meth:`fetch`, answered as the envelope's JSON (the API's response body).

        The same decision, checks and access-log entry; only the serialisation differs: the
        ciphertext's base64 is made once per verified blob (the blob cache keeps it) and the
        body is assembled directly instead of validating and dumping a ~90 KB model per read.
        """
        c = self._checked_fetch(principal, record_id, purpose)
        sealed = base64.b64encode(env.seal_key_to(principal.public_key, c.data_key))
        encoded = self._blob_cache.encoded(c.cid) if c.cached else None
        if encoded is None:
            encoded = base64.b64encode(c.blob)
        return b"".join(
            (
                b'{"record_id":"0x',
                c.rid.hex().encode(),
                b'","patient":',
                json.dumps(c.patient).encode(),
                b',"cid":',
                json.dumps(c.cid).encode(),
                b',"ciphertext":"',
                encoded,
                b'","sealed_key":"',
                sealed,
                b'","content_digest":',
                json.dumps(c.content_digest.lower()).encode(),
                b',"block_number":%d,"event_count":%d,"chain_time":%d}'
                % (c.block, c.answer.event_count, c.answer.timestamp),
            )
        )

    def _checked_fetch(self, principal: Principal, record_id: str, purpose: int) -> _Checked:
        """The chain's decision at the latest block, logged; the verified blob if allowed."""
        rid = _record_id(record_id)
        rid_hex = "0x" + rid.hex()
        row = self._row(rid_hex)
        if row is None:
            raise RecordNotFound(record_id=rid_hex)
        patient = _checksum(row.patient)
        decide = _DecisionLog(self, principal.address, patient, rid_hex, purpose)
        try:
            block = self.chain.block_number()
            # One eth_call answers the question and names the state it was answered on (event
            # count and block.timestamp): the node may have evaluated a later state than `block`.
            answer = self.chain.access_decision_at(
                patient, principal.address, rid, purpose, block=block
            )
        except ChainUnavailable:
            self.metrics.chain_errors.inc()
            decide(False, "chain_unavailable", None)
            raise
        limit = self.max_head_age_s
        if limit is not None:
            age = self._clock() - answer.timestamp
            if age > limit:
                # A node that lost its peers answers from old state (a revoke mined elsewhere is
                # invisible, expiries are judged at an old time): no decision, allowed or not.
                self.metrics.chain_errors.inc()
                decide(False, "chain_stale", block, answer)
                log.warning(
                    "stale chain view: block %d chain time %d is %.0f s old (limit %g s)",
                    block,
                    answer.timestamp,
                    age,
                    limit,
                )
                raise ChainStale(
                    block=block, chain_time=answer.timestamp, age_s=age, max_head_age_s=limit
                )
        if not answer.allowed:
            decide(False, "no_consent", block, answer)
            raise ConsentDenied(
                requester=principal.address,
                patient=patient,
                record_id=rid_hex,
                purpose=purpose,
                block=block,
                event_count=answer.event_count,
                chain_time=answer.timestamp,
            )
        try:
            blob, data_key, cached = self._verified_blob(row, rid)
        except IpfsUnavailable:
            self.metrics.ipfs_errors.inc()
            decide(False, "ipfs_unavailable", block, answer)
            raise
        except IpfsError as exc:  # the node answered but could not produce the blob
            log.error("blob unavailable record=%s cid=%s: %s", rid_hex, row.cid, exc.code)
            decide(False, "blob_missing", block, answer)
            raise BlobTampered(record_id=rid_hex, cid=row.cid or "", reason=exc.code) from exc
        except BlobTampered as exc:
            log.error("tampered blob record=%s cid=%s: %s", rid_hex, row.cid, exc.reason)
            decide(False, "blob_tampered", block, answer)
            raise
        decide(True, "owner" if principal.address == patient else "consent", block, answer)
        return _Checked(
            rid, patient, row.cid or "", row.content_digest, blob, data_key, cached, block, answer
        )

    def _verified_blob(self, row: Record, rid: bytes) -> tuple[bytes, bytes, bool]:
        """``(blob, data_key, from_cache)``."""
        cid = row.cid or ""
        data_key = env.unwrap_key(row.wrapped_key, self._kek, record_id=rid)
        cached = self._blob_cache.get(cid)
        if cached is not None:
            return cached, data_key, True
        blob = self.blobs.cat(cid)
        if "0x" + hashlib.sha256(blob).hexdigest() != row.blob_sha256 or not verify_cid(cid, blob):
            raise BlobTampered(
                record_id=row.record_id, cid=cid, reason="does not match its CID or upload digest"
            )
        try:
            salt, plaintext = env.open_record(
                blob, data_key=data_key, record_id=rid, patient=to_checksum_address(row.patient)
            )
        except env.EnvelopeError:
            raise BlobTampered(
                record_id=row.record_id, cid=cid, reason="does not decrypt"
            ) from None
        ok = "0x" + hashlib.sha256(salt + plaintext).hexdigest() == row.content_digest
        del plaintext, salt
        if not ok:
            raise BlobTampered(record_id=row.record_id, cid=cid, reason="content digest mismatch")
        self._blob_cache.put(cid, blob)
        return blob, data_key, False


@functools.lru_cache(maxsize=65_536)
def _checksum(address: str) -> ChecksumAddress:
    """``to_checksum_address`` memoised (a keccak per call; the fetch path asks it per read)."""
    return to_checksum_address(address)


@dataclass(frozen=True, slots=True)
class _Checked:
    """An allowed, logged fetch decision and the verified ciphertext it releases."""

    rid: bytes
    patient: ChecksumAddress
    cid: str
    content_digest: str
    blob: bytes
    data_key: bytes
    cached: bool  # the blob came from the blob cache (whose base64 is then cached too)
    block: int
    answer: ChainDecision


class _DecisionLog:
    """Appends one fetch decision; a log that cannot be written fails the request."""

    __slots__ = ("_patient", "_purpose", "_record", "_requester", "_svc")

    def __init__(
        self, svc: RecordService, requester: str, patient: str, record: str, purpose: int
    ) -> None:
        self._svc = svc
        self._requester = requester
        self._patient = patient
        self._record = record
        self._purpose = purpose

    def __call__(
        self, allowed: bool, reason: str, block: int | None, answer: ChainDecision | None = None
    ) -> None:
        svc = self._svc
        decision = Decision(
            requester=self._requester,
            patient=self._patient,
            record_id=self._record,
            purpose=self._purpose,
            allowed=allowed,
            reason=reason,
            block_number=block,
            time=svc._clock(),
            event_count=answer.event_count if answer is not None else None,
            chain_time=answer.timestamp if answer is not None else None,
        )
        with _db_guard():
            appended = svc.access_log.append(decision)
        svc.metrics.decisions.labels("allowed" if allowed else "denied", reason).inc()
        svc.metrics.log_size.set(appended.index + 1)
