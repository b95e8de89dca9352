"""Talking to an EVM node: connect, sign and send, wait for receipts, deploy.

Transactions are signed locally (eth-account, with coincurve for speed) and sent raw, so the
same code works against anvil, a consortium chain or a public L2. ``TxSender`` owns one
account's nonce locally and bounds how many of its transactions are in flight: anvil stops
mining under a burst of a few thousand pending transactions, and a real node's mempool has
limits too.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3 import HTTPProvider, Web3
from web3.exceptions import TransactionNotFound
from web3.types import TxParams, TxReceipt

__all__ = [
    "ANVIL_CHAIN_ID",
    "ANVIL_MNEMONIC",
    "ChainError",
    "ChainUnavailable",
    "DevKeyOnPublicChain",
    "Sent",
    "TransactionFailed",
    "TxSender",
    "connect",
    "deploy",
    "dev_account",
    "dev_accounts",
    "eip1559_fees",
    "ensure_not_dev_address",
    "ensure_not_dev_key",
    "is_dev_address",
    "wait_for_receipt",
]

ANVIL_CHAIN_ID = 31337
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"
_DEV_ACCOUNT_COUNT = 10
#: Derived from the same mnemonic after the ten named accounts: the first local gateway's
#: registrar (10) and relayer (11), then three accounts (gateway, registrar, relayer) for each
#: further gateway of a local federation of up to 16 (``consent up --gateways``), all funded by
#: ``consent up`` (anvil funds only the first ten).
_DEV_KEY_COUNT = 12 + 3 * 15


class ChainError(Exception):
    """Root of chain-side failures."""


class ChainUnavailable(ChainError):
    """The node did not answer (``sent`` is False when the request certainly never left)."""

    def __init__(self, url: str, reason: str, *, sent: bool = True) -> None:
        super().__init__(f"chain node at {url} is unreachable: {reason}")
        self.url = url
        self.reason = reason
        self.sent = sent


class DevKeyOnPublicChain(ChainError):
    """A well-known development key was offered to a chain other than the local one."""

    def __init__(self, address: str, chain_id: int) -> None:
        super().__init__(
            f"{address} is one of anvil's public development keys; refusing to use it on "
            f"chain {chain_id} (only the local chain {ANVIL_CHAIN_ID} accepts them)"
        )
        self.address = address
        self.chain_id = chain_id


class TransactionFailed(ChainError):
    """A mined transaction reverted (status 0) or was never mined in time."""

    def __init__(self, tx_hash: str, reason: str) -> None:
        super().__init__(f"transaction {tx_hash} failed: {reason}")
        self.tx_hash = tx_hash
        self.reason = reason


#: The base fee assumed when the latest block names none (a chain without EIP-1559).
DEFAULT_BASE_FEE = 1_000_000_000
#: The priority fee offered everywhere but on the local chain (anvil mines without one).
DEFAULT_TIP = 1_000_000_000


def eip1559_fees(chain_id: int, base_fee: int | None) -> dict[str, int]:
    """The one fee policy of every transaction the project sends: a tip (none on the local
    chain, ``ANVIL_CHAIN_ID``) and a fee cap of twice the latest base fee plus the tip."""
    base = DEFAULT_BASE_FEE if base_fee is None else base_fee
    tip = 0 if chain_id == ANVIL_CHAIN_ID else DEFAULT_TIP
    return {"maxPriorityFeePerGas": tip, "maxFeePerGas": base * 2 + tip}


def connect(url: str, *, timeout_s: float = 10.0) -> Web3:
    """A Web3 on ``url`` that caches the requests that never change (chain id)."""
    provider = HTTPProvider(url, request_kwargs={"timeout": timeout_s}, cache_allowed_requests=True)
    return Web3(provider)


_dev_accounts_cache: list[LocalAccount] = []
_dev_lock = threading.Lock()


def _dev_keys(count: int = _DEV_KEY_COUNT) -> list[LocalAccount]:
    """The mnemonic's first ``count`` accounts, derived once each, on first need."""
    with _dev_lock:
        if len(_dev_accounts_cache) < count:
            Account.enable_unaudited_hdwallet_features()
            for i in range(len(_dev_accounts_cache), count):
                _dev_accounts_cache.append(
                    Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}")
                )
        return _dev_accounts_cache[:count]


def dev_accounts() -> list[LocalAccount]:
    """anvil's ten development accounts (from its public mnemonic)."""
    return _dev_keys(_DEV_ACCOUNT_COUNT)


def dev_account(index: int) -> LocalAccount:
    """The public mnemonic's account ``index`` (0-9: anvil's funded accounts; 10 and 11: the
    first local gateway's registrar and relayer; 12 on: the further gateways' accounts, three
    each, which ``consent up`` funds)."""
    if not 0 <= index < _DEV_KEY_COUNT:
        raise IndexError(f"dev account {index} is not one of the {_DEV_KEY_COUNT} local keys")
    return _dev_keys(index + 1)[index]


def is_dev_address(address: str) -> bool:
    """Whether ``address`` (checksummed) belongs to one of the public mnemonic's keys."""
    return address in {a.address for a in _dev_keys()}


def ensure_not_dev_address(address: str, chain_id: int) -> None:
    """Refuse the public mnemonic's accounts anywhere but the local chain."""
    if chain_id != ANVIL_CHAIN_ID and is_dev_address(address):
        raise DevKeyOnPublicChain(address, chain_id)


def ensure_not_dev_key(account: LocalAccount, chain_id: int) -> None:
    """Refuse the public mnemonic's keys anywhere but the local chain."""
    ensure_not_dev_address(account.address, chain_id)


def wait_for_receipt(
    w3: Web3, tx_hash: HexBytes | bytes, *, timeout_s: float = 60.0, poll_s: float = 0.005
) -> TxReceipt:
    """Poll for a receipt with a short interval (anvil mines at once)."""
    deadline = time.monotonic() + timeout_s
    delay = poll_s
    while True:
        try:
            return w3.eth.get_transaction_receipt(HexBytes(tx_hash))
        except TransactionNotFound:
            pass
        if time.monotonic() > deadline:
            raise TransactionFailed(HexBytes(tx_hash).to_0x_hex(), f"not mined in {timeout_s} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


@dataclass(frozen=True)
class Sent:
    """A mined transaction."""

    tx_hash: str
    block_number: int
    gas_used: int
    status: int
    receipt: TxReceipt


class TxSender:
    """Signs and sends one account's transactions with a locally managed nonce.

    ``max_in_flight`` bounds transactions sent but not yet mined; callers beyond it wait.
    Safe to share between threads.
    """

    def __init__(
        self,
        w3: Web3,
        account: LocalAccount,
        *,
        max_in_flight: int = 64,
        gas_multiplier: float = 1.25,
    ) -> None:
        self.w3 = w3
        self.account = account
        self.chain_id = w3.eth.chain_id
        ensure_not_dev_key(account, self.chain_id)
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._lock = threading.Lock()
        self._nonce: int | None = None
        self._gas_multiplier = gas_multiplier

    @property
    def address(self) -> ChecksumAddress:
        return self.account.address

    def _next_nonce(self) -> int:
        with self._lock:
            if self._nonce is None:
                self._nonce = self.w3.eth.get_transaction_count(self.account.address, "pending")
            nonce = self._nonce
            self._nonce += 1
            return nonce

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the ``max_in_flight`` slots (from signing until the receipt is in), for
        callers that sign and send raw themselves (``next_nonce``)."""
        with self._slots:
            yield

    def next_nonce(self) -> int:
        """Take the next nonce. The caller must get a transaction with it to the node, or call
        ``resync`` (else later transactions wait behind the gap)."""
        return self._next_nonce()

    def resync(self) -> None:
        """Forget the local nonce; the next send asks the node (after a failed send)."""
        with self._lock:
            self._nonce = None

    def send(self, tx: TxParams, *, wait: bool = True, timeout_s: float = 60.0) -> Sent:
        """Fill in chain id, gas, fees and nonce; sign; send; wait for the receipt.

        A reverted transaction raises ``TransactionFailed``; estimate-time reverts surface as
        web3's ``ContractCustomError`` / ``ContractLogicError`` for the caller to map.
        """
        params: dict[str, Any] = dict(tx)
        params.setdefault("from", self.account.address)
        params["chainId"] = self.chain_id
        if "gas" not in params:
            estimate = self.w3.eth.estimate_gas(params)  # type: ignore[arg-type]
            params["gas"] = int(estimate * self._gas_multiplier) + 10_000
        if "maxFeePerGas" not in params and "gasPrice" not in params:
            params.update(eip1559_fees(self.chain_id, self._base_fee()))
        with self._slots:
            params["nonce"] = self._next_nonce()
            signed = self.account.sign_transaction(params)
            try:
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except Exception:
                self.resync()
                raise
            receipt = wait_for_receipt(self.w3, tx_hash, timeout_s=timeout_s)
        sent = Sent(
            tx_hash=HexBytes(tx_hash).to_0x_hex(),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            status=int(receipt["status"]),
            receipt=receipt,
        )
        if sent.status != 1:
            raise TransactionFailed(sent.tx_hash, "reverted")
        return sent

    def _base_fee(self) -> int | None:
        fee = self.w3.eth.get_block("latest").get("baseFeePerGas")
        return None if fee is None else int(fee)


def deploy(
    w3: Web3,
    *,
    abi: Sequence[dict[str, Any]],
    bytecode: bytes,
    args: Sequence[Any] = (),
    sender: TxSender,
) -> Sent:
    """Deploy a contract; the receipt carries ``contractAddress``."""
    factory = w3.eth.contract(abi=abi, bytecode=bytecode)
    tx = factory.constructor(*args).build_transaction({"from": sender.address})
    return sender.send(tx)
