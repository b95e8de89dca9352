"""The gateway's access to the chain: the typed registry client (created on first use) and
raw JSON-RPC (:class:`ledger.chain.rpc.RpcClient`) on a keep-alive transport for the hot path,
with transport failures mapped to ``ChainUnavailable`` and registry reverts to
``ContractRejected`` (``contract_<snake_name>``).
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import httpx
from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils.crypto import keccak
from web3 import Web3

from gateway.errors import (
    ChainIdMismatch,
    ChainUnavailable,
    ContractRejected,
    UpstreamFailed,
)
from ledger.chain import node
from ledger.chain.logs import LogFetchError, fetch_logs
from ledger.chain.node import TxSender
from ledger.chain.registry import AccessDecision, ConsentRegistry
from ledger.chain.rpc import (
    HttpxRpc,
    KeepAliveRpc,
    MalformedAnswer,
    RpcClient,
    RpcError,
    RpcTransport,
)
from ledger.protocol.consent_types import Basis
from ledger.protocol.contract_errors import ContractError, ErrorDecoder
from ledger.protocol.eip712 import Domain
from ledger.protocol.errors import DomainError
from ledger.protocol.events import RawLog

__all__ = ["ChainAccess", "contract_code", "contract_rejection", "contract_status"]

T = TypeVar("T")

_QUANTITY_RE = re.compile(r"0x[0-9a-fA-F]{1,64}")

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


def contract_code(name: str) -> str:
    """The stable ``code`` of a registry custom error: ``contract_<snake_name>``."""
    return f"contract_{_snake(name)}"


def contract_status(name: str) -> int:
    """The HTTP status a registry custom error is answered with."""
    return _CONTRACT_STATUS.get(name, 422)


def contract_rejection(exc: ContractError) -> ContractRejected:
    """The HTTP-facing error for a registry revert (``code`` = ``contract_<snake_name>``)."""
    name = type(exc).__name__
    status = contract_status(name)
    fields: dict[str, object] = {}
    for key, value in zip(_field_names(exc), exc.values(), strict=False):
        fields[key] = "0x" + value.hex() if isinstance(value, bytes) else value
    err = ContractRejected(
        error=name, status=status, message=f"the registry refused: {exc}", **fields
    )
    err.code = contract_code(name)  # type: ignore[misc]
    err.http_status = status  # type: ignore[misc]
    return err


def _field_names(exc: ContractError) -> list[str]:
    import dataclasses

    return [f.name for f in dataclasses.fields(exc)]


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
        transport: RpcTransport = rpc if rpc is not None else KeepAliveRpc(url, timeout_s=10.0)
        # Any answer but HTTP 200 is "unavailable": fail closed, and the registrar keeps the
        # hash of a transaction whose send it cannot prove failed.
        self.rpc_client = RpcClient(url, transport=transport, http_errors_as_answers=False)
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
                    self._registry = ConsentRegistry(
                        self.w3, self.address, abi=self._abi, rpc=self.rpc_client
                    )
                    # Bound each account's in-flight transactions (the default sender: 64).
                    for account in (self.relayer, self.registrar, self.gateway_account):
                        self._registry.install_sender(
                            TxSender(self.w3, account, max_in_flight=self._max_in_flight)
                        )
                registry = self._registry
        return registry

    def sender(self, account: LocalAccount) -> TxSender:
        """The nonce-keeping sender of one of the gateway's accounts."""
        return self.registry.sender(account)

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
        self.rpc_client.close()

    @contextlib.contextmanager
    def rpc_guard(self, method: str) -> Iterator[None]:
        """Map the JSON-RPC layer's failures: unreachable -> ``ChainUnavailable``, a revert's
        data -> ``ContractRejected``, any other error answer -> ``UpstreamFailed``."""
        try:
            yield
        except node.ChainUnavailable as exc:
            raise ChainUnavailable(url=self.url, reason=exc.reason) from exc
        except MalformedAnswer as exc:
            if exc.not_json:
                raise ChainUnavailable(url=self.url, reason="not JSON") from None
            raise UpstreamFailed(f"{method} failed", detail=str(exc)[:300]) from None
        except RpcError as exc:
            if isinstance(exc.data, str) and len(exc.data) >= 10:
                raise contract_rejection(self._errors.decode(exc.data)) from None
            raise UpstreamFailed(f"{method} failed", detail=str(exc.raw)[:300]) from None

    def rpc(self, method: str, params: list[Any]) -> Any:
        """One JSON-RPC call on the keep-alive transport (also used by the record registrar)."""
        with self.rpc_guard(method):
            return self.rpc_client.call(method, params)

    def logs(self, *, topics: Sequence[Any], from_block: int, to_block: int) -> list[RawLog]:
        """The registry's logs matching ``topics`` in ``[from_block, to_block]``, fetched in
        bounded chunks that shrink when the node refuses a range (``fetch_logs``)."""
        with self.rpc_guard("eth_getLogs"):
            try:
                return fetch_logs(
                    self.rpc_client,
                    address=self.address,
                    from_block=from_block,
                    to_block=to_block,
                    topics=topics,
                )
            except LogFetchError as exc:
                raise UpstreamFailed("eth_getLogs failed", detail=str(exc)[:300]) from None

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

    def access_decision_at(
        self, patient: str, grantee: str, record_id: bytes, purpose: int, *, block: int
    ) -> AccessDecision:
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
        return AccessDecision(Basis(words[0]), words[1], words[2], words[3], words[4])

    def resync_nonce(self, account: LocalAccount | None = None) -> None:
        """Forget an account's local nonce (default: the gateway account's); the next send
        asks the node."""
        if self._registry is not None:
            with self.guard():
                self._registry.sender(account or self.gateway_account).resync()

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
