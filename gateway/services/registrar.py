"""``registerRecord`` for the upload path, and the chain-side lookups of upload recovery.

The upload path sends one ``registerRecord`` per record, so it skips web3's contract machinery:
the calldata is ABI-encoded with a precomputed selector, the gas limit is a fixed bound (no
``eth_estimateGas``), the fee comes from a base fee cached for a second, and the transaction is
signed locally with the registrar account's :class:`ledger.chain.node.TxSender` nonce (its own
account: relayed consents and anchoring send from others) and sent raw on a connection of its
own (:class:`ledger.chain.rpc.FreshConnectionRpc`); reads and receipt polling (short) go over
the gateway's keep-alive JSON-RPC transport. Fees follow the one policy,
:func:`ledger.chain.node.eip1559_fees`.

Crash safety hinges on one rule: **the transaction hash is stored with the pending row before
the transaction is sent** (``on_signed``). A pending row without a hash was never sent; a row
with a hash is resolved by asking the node about that hash (:meth:`Registrar.lookup`): mined
(registered, or reverted), still pending (leave it), or unknown to the node (never sent, or
dropped: it can no longer be mined, the row may be rolled back).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

from gateway.errors import (
    ChainUnavailable,
    ContractRejected,
    ServiceUnavailable,
    UpstreamFailed,
)
from ledger.chain import node
from ledger.chain.node import TxSender, eip1559_fees
from ledger.chain.rpc import FreshConnectionRpc, MalformedAnswer, RpcClient, RpcError
from ledger.protocol.eip712 import RecordAttestation

__all__ = ["Registered", "Registrar", "TxLookup", "registration_gas_limit"]

_ATTESTATION = "(address,bytes32,bytes32,uint64,bytes32,bytes32)"
_SIGNATURE = f"registerRecord({_ATTESTATION},bytes,string)"
_REGISTERED_TOPIC = keccak(
    text="RecordRegistered(bytes32,address,address,bytes32,bytes32,uint64,string)"
)
_REGISTERED_DATA = ["bytes32", "bytes32", "uint64", "string"]

# registerRecord's gasUsed, measured on anvil (receipts): 134,896 with a 1-byte CID, 135,985
# with a 59-byte CIDv1, 137,636 with the contract's 128-byte maximum (~21 gas per CID byte:
# calldata, log data, the digest fold's keccak and memory). No storage slot is cleared, so no
# refund hides a higher execution cost. The bound is 1.48x-1.64x of that; unused gas is not
# charged, and a registration that somehow ran out would revert and be rolled back.
_GAS_BASE = 200_000
_GAS_PER_CID_BYTE = 200
_MAX_CID_BYTES = 128  # the contract's _MAX_CID_LENGTH


def registration_gas_limit(cid: str) -> int:
    """A safe gas limit for ``registerRecord`` with ``cid`` (no ``eth_estimateGas``)."""
    return _GAS_BASE + _GAS_PER_CID_BYTE * min(len(cid.encode()), _MAX_CID_BYTES + 1)


@dataclass(frozen=True, slots=True)
class Registered:
    """A mined, successful ``registerRecord``."""

    tx_hash: str
    block_number: int


@dataclass(frozen=True, slots=True)
class TxLookup:
    """What the node knows of a stored registration hash.

    ``mined``: included and succeeded, ``cid`` is what its ``RecordRegistered`` log names for
    the record (None if the receipt has no such log); ``reverted``: included and failed;
    ``pending``: known but not mined (may still be); ``unknown``: the node does not know it.
    """

    state: Literal["mined", "reverted", "pending", "unknown"]
    block_number: int | None = None
    cid: str | None = None


class _NotSent(Exception):
    """The transaction certainly did not reach the node's pool; ``error`` says why."""

    def __init__(self, error: Exception, *, nonce_error: bool = False) -> None:
        super().__init__(str(error))
        self.error = error
        self.nonce_error = nonce_error


class Registrar:
    """Signs, stores-then-sends and confirms ``registerRecord`` transactions of the registrar."""

    def __init__(
        self,
        chain: Any,
        *,
        sender: Callable[[], TxSender],
        timeout_s: float = 60.0,
        poll_s: float = 0.002,
        fee_ttl_s: float = 1.0,
        role_ttl_s: float = 5.0,
        send_timeout_s: float = 10.0,
    ) -> None:
        self._chain = chain
        self._sender = sender
        # A connection of its own per send, so that a failure to connect proves nothing was
        # sent (a kept-alive connection's silent retry could not tell).
        self._raw_sender = RpcClient(
            str(chain.url),
            transport=FreshConnectionRpc(str(chain.url), timeout_s=send_timeout_s),
            http_errors_as_answers=False,
        )
        self._selector = keccak(text=_SIGNATURE)[:4]
        self._has_role_selector = keccak(text="hasRole(bytes32,address)")[:4]
        self._record_of_selector = keccak(text="recordOf(bytes32)")[:4]
        self._role_ttl_s = role_ttl_s
        self._roles: dict[tuple[bytes, str], float] = {}
        self._timeout_s = timeout_s
        self._poll_s = poll_s
        self._fee_ttl_s = fee_ttl_s
        self._fee: tuple[float, int | None] | None = None
        self._fee_lock = threading.Lock()

    # -- reads --------------------------------------------------------------------------------

    def has_role_cached(self, role: bytes, account: str) -> bool:
        """``has_role``, with a *positive* answer remembered for ``role_ttl_s``: the contract
        checks the role again when it registers, so a role revoked meanwhile still refuses the
        upload (``NotACentre``, 403), only later. A negative answer is never cached."""
        key = (bytes(role), account)
        until = self._roles.get(key)
        if until is not None and time.monotonic() < until:
            return True
        if not self.has_role(role, account):
            self._roles.pop(key, None)
            return False
        if len(self._roles) > 10_000:
            self._roles.clear()
        self._roles[key] = time.monotonic() + self._role_ttl_s
        return True

    def has_role(self, role: bytes, account: str) -> bool:
        """``hasRole(role, account)`` at the latest block (raw ``eth_call``)."""
        args = abi_encode(["bytes32", "address"], [bytes(role), account])
        call = {"to": self._chain.address, "data": "0x" + (self._has_role_selector + args).hex()}
        result = str(self._chain.rpc("eth_call", [call, "latest"]))
        try:
            raw = bytes.fromhex(result[2:])
        except ValueError:
            raw = b""
        if len(raw) != 32 or raw[:31] != bytes(31) or raw[31] > 1:
            raise UpstreamFailed("hasRole returned a malformed bool", result=result[:80])
        return raw[31] == 1

    # -- encoding -----------------------------------------------------------------------------

    def calldata(self, attestation: RecordAttestation, signature: bytes, cid: str) -> bytes:
        args = abi_encode(
            [_ATTESTATION, "bytes", "string"], [attestation.as_tuple(), bytes(signature), cid]
        )
        return self._selector + args

    def _base_fee(self) -> int | None:
        now = time.monotonic()
        cached = self._fee
        if cached is not None and now - cached[0] < self._fee_ttl_s:
            return cached[1]
        with self._fee_lock:
            cached = self._fee
            if cached is not None and now - cached[0] < self._fee_ttl_s:
                return cached[1]
            block = self._chain.rpc("eth_getBlockByNumber", ["latest", False])
            fee = block.get("baseFeePerGas") if isinstance(block, Mapping) else None
            base = int(str(fee), 16) if fee is not None else None
            self._fee = (now, base)
            return base

    # -- sending ------------------------------------------------------------------------------

    def register(
        self,
        attestation: RecordAttestation,
        signature: bytes,
        cid: str,
        *,
        record_id: bytes,
        on_signed: Callable[[str, str | None], None],
        on_unsent: Callable[[str], None],
    ) -> Registered:
        """Send ``registerRecord`` and wait for its receipt.

        ``on_signed(tx_hash, previous_hash)`` runs after signing and before sending; it must
        store the hash durably (or raise, and then nothing is sent). ``on_unsent(tx_hash)``
        runs when the transaction certainly did not reach the node (connection refused, or the
        node refused it); then the stored hash may be forgotten. A revert raises the
        contract's error (``ContractRejected``); no receipt in time raises
        ``ServiceUnavailable`` (the transaction may still be mined: the caller keeps the row).
        """
        chain = self._chain
        data = "0x" + self.calldata(attestation, signature, cid).hex()
        sender = self._sender()
        fees = eip1559_fees(chain.chain_id, self._base_fee())
        previous: str | None = None
        for attempt in (0, 1):
            with sender.slot():
                tx = {
                    "type": 2,
                    "chainId": chain.chain_id,
                    "to": chain.address,
                    "data": data,
                    "value": 0,
                    "gas": registration_gas_limit(cid),
                    **fees,
                    "nonce": sender.next_nonce(),
                }
                signed = chain.registrar.sign_transaction(tx)
                tx_hash = "0x" + bytes(signed.hash).hex()
                try:
                    on_signed(tx_hash, previous)
                except BaseException:
                    sender.resync()  # the nonce was taken but nothing was sent
                    raise
                previous = tx_hash
                try:
                    self._send_raw("0x" + bytes(signed.raw_transaction).hex())
                except _NotSent as exc:
                    # Nothing reached the node's pool: forget the hash (the row may be rolled
                    # back at once) and the nonce.
                    sender.resync()
                    on_unsent(tx_hash)
                    previous = None
                    if attempt == 0 and exc.nonce_error:
                        continue  # the chain was rewound or another process used the account
                    raise exc.error from None
                except BaseException:
                    sender.resync()  # it may have reached the node: the row keeps the hash
                    raise
                receipt = self._wait(tx_hash)
            break
        block = int(str(receipt["blockNumber"]), 16)
        if int(str(receipt.get("status", "0x0")), 16) != 1:
            self._replay_revert(data, block)
            raise UpstreamFailed("registerRecord reverted", tx_hash=tx_hash, block=block)
        if _registered_cid(receipt.get("logs", ()), chain.address, record_id) != cid:
            raise UpstreamFailed(
                "registerRecord mined without the expected RecordRegistered event",
                tx_hash=tx_hash,
            )
        return Registered(tx_hash, block)

    def _send_raw(self, raw_tx: str) -> None:
        """``eth_sendRawTransaction`` on a connection of its own (see ``__init__``). Raises
        ``_NotSent`` when the transaction certainly is not in the node's pool."""
        url = self._chain.url
        try:
            self._raw_sender.call("eth_sendRawTransaction", [raw_tx])
        except node.ChainUnavailable as exc:
            if not exc.sent:  # the connection could not be opened
                raise _NotSent(ChainUnavailable(url=url, reason=exc.reason)) from None
            # Proxies answer 5xx for a node they could not reach, but it may also have been
            # received: uncertain, keep the hash.
            raise ChainUnavailable(url=url, reason=exc.reason) from None
        except MalformedAnswer:  # an answer that says nothing: uncertain, keep the hash
            raise ChainUnavailable(url=url, reason="HTTP 200") from None
        except RpcError as exc:
            text = str(exc.raw).lower()
            if "already known" in text or "known transaction" in text:
                return  # it is in the pool (a resend of the same bytes)
            raise _NotSent(
                UpstreamFailed("eth_sendRawTransaction failed", detail=str(exc.raw)[:300]),
                nonce_error="nonce" in text,
            ) from None

    def _wait(self, tx_hash: str) -> Mapping[str, Any]:
        deadline = time.monotonic() + self._timeout_s
        delay = self._poll_s
        while True:
            receipt = self._chain.rpc("eth_getTransactionReceipt", [tx_hash])
            if isinstance(receipt, Mapping) and receipt.get("blockNumber") is not None:
                return receipt
            if time.monotonic() > deadline:
                raise ServiceUnavailable(
                    "registerRecord was sent but not mined in time; the upload is resolved "
                    "when it is (retry later)",
                    tx_hash=tx_hash,
                    timeout_s=self._timeout_s,
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _replay_revert(self, data: str, block: int) -> None:
        """Raise the custom error of a reverted registration (replayed on its block; a reverted
        transaction changed nothing, so the state after it is the state it ran on)."""
        call = {"from": self._chain.registrar.address, "to": self._chain.address, "data": data}
        self._chain.rpc("eth_call", [call, hex(block)])  # raises ContractRejected on a revert

    # -- recovery lookups ---------------------------------------------------------------------

    def lookup(self, tx_hash: str, record_id: bytes) -> TxLookup:
        """The node's view of a stored registration hash (see :class:`TxLookup`)."""
        chain = self._chain
        receipt = chain.rpc("eth_getTransactionReceipt", [tx_hash])
        if isinstance(receipt, Mapping) and receipt.get("blockNumber") is not None:
            block = int(str(receipt["blockNumber"]), 16)
            if int(str(receipt.get("status", "0x0")), 16) != 1:
                return TxLookup("reverted", block)
            cid = _registered_cid(receipt.get("logs", ()), chain.address, record_id)
            return TxLookup("mined", block, cid)
        tx = chain.rpc("eth_getTransactionByHash", [tx_hash])
        if isinstance(tx, Mapping):
            return TxLookup("pending")
        return TxLookup("unknown")

    def is_registered(self, record_id: bytes) -> bool:
        """Whether ``recordOf(record_id)`` knows the record (raw ``eth_call``)."""
        data = self._record_of_selector + bytes(record_id)
        call = {"to": self._chain.address, "data": "0x" + data.hex()}
        try:
            self._chain.rpc("eth_call", [call, "latest"])
        except ContractRejected as exc:
            if exc.error == "UnknownRecord":
                return False
            raise
        return True

    def registration_of(self, record_id: bytes) -> tuple[str, str, int] | None:
        """``(cid, tx_hash, block)`` of the record's ``RecordRegistered`` event, or None."""
        logs = self._chain.rpc(
            "eth_getLogs",
            [
                {
                    "address": self._chain.address,
                    "fromBlock": "0x0",
                    "toBlock": "latest",
                    "topics": ["0x" + _REGISTERED_TOPIC.hex(), "0x" + bytes(record_id).hex()],
                }
            ],
        )
        for entry in logs or ():
            cid = _registered_cid([entry], self._chain.address, record_id)
            if cid is not None:
                return cid, str(entry["transactionHash"]), int(str(entry["blockNumber"]), 16)
        return None


def _registered_cid(
    logs: Sequence[Mapping[str, Any]], address: str, record_id: bytes
) -> str | None:
    """The CID a ``RecordRegistered`` log among ``logs`` names for ``record_id``."""
    want_topic = "0x" + _REGISTERED_TOPIC.hex()
    want_id = "0x" + bytes(record_id).hex()
    for entry in logs:
        topics = [str(t).lower() for t in entry.get("topics", ())]
        if (
            str(entry.get("address", "")).lower() == address.lower()
            and len(topics) >= 2
            and topics[0] == want_topic
            and topics[1] == want_id
        ):
            try:
                values = abi_decode(_REGISTERED_DATA, bytes.fromhex(str(entry["data"])[2:]))
            except Exception:
                raise UpstreamFailed("malformed RecordRegistered log", record_id=want_id) from None
            return str(values[3])
    return None
