"""A test wallet for the portal: an injected EIP-1193 provider (``window.ethereum``) whose every
request is answered on the Python side by a local key that really signs (eth-account):
``personal_sign`` (SIWE), ``eth_signTypedData_v4`` (grants, revokes) and
``eth_sendTransaction`` (signed here and sent to the real chain node).

It records every request, so tests can assert what the page asked the wallet to sign (or that
it asked nothing). ``reported_chain_id`` and ``can_switch`` play a wallet on another network;
``reject_next`` plays the user pressing "Reject" (EIP-1193 error 4001).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from eth_account.messages import encode_defunct, encode_typed_data
from eth_account.signers.local import LocalAccount
from playwright.sync_api import BrowserContext
from web3 import Web3

INIT_SCRIPT = """
(() => {
  const provider = {
    isConsentTestWallet: true,
    async request({ method, params }) {
      const answer = await window.__consentTestWallet(method, params ?? []);
      if (answer.error) {
        const error = new Error(answer.error.message);
        error.code = answer.error.code;
        throw error;
      }
      return answer.result;
    },
    on() {},
    removeListener() {},
  };
  Object.defineProperty(window, 'ethereum', { value: provider, configurable: false });
})();
"""


@dataclass
class TestWallet:
    account: LocalAccount
    w3: Web3
    chain_id: int
    reported_chain_id: int | None = None
    can_switch: bool = True
    reject_next: set[str] = field(default_factory=set)
    requests: list[tuple[str, list[Any]]] = field(default_factory=list)
    signed_messages: list[str] = field(default_factory=list)
    signed_typed: list[dict[str, Any]] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)

    __test__ = False  # not a pytest test class

    @property
    def address(self) -> str:
        return str(self.account.address)

    def install(self, context: BrowserContext) -> None:
        context.expose_binding("__consentTestWallet", self._handle)
        context.add_init_script(INIT_SCRIPT)

    def _handle(self, source: Any, method: str, params: list[Any]) -> dict[str, Any]:
        del source
        self.requests.append((method, params))
        if method in self.reject_next:
            self.reject_next.discard(method)
            return {"error": {"code": 4001, "message": "User rejected the request."}}
        try:
            return {"result": self._answer(method, params)}
        except _WalletError as exc:
            return {"error": {"code": exc.code, "message": str(exc)}}

    def _chain(self) -> int:
        return self.reported_chain_id if self.reported_chain_id is not None else self.chain_id

    def _answer(self, method: str, params: list[Any]) -> Any:
        if method in ("eth_requestAccounts", "eth_accounts"):
            return [self.address]
        if method == "eth_chainId":
            return hex(self._chain())
        if method == "wallet_switchEthereumChain":
            if not self.can_switch:
                raise _WalletError(4902, "Unrecognized chain")
            self.reported_chain_id = int(params[0]["chainId"], 16)
            return None
        if method == "personal_sign":
            data, address = params
            self._check_address(address)
            text = bytes.fromhex(data.removeprefix("0x")).decode()
            self.signed_messages.append(text)
            signed = self.account.sign_message(encode_defunct(text=text))
            return "0x" + bytes(signed.signature).hex()
        if method == "eth_signTypedData_v4":
            address, data = params
            self._check_address(address)
            typed = json.loads(data)
            self.signed_typed.append(typed)
            signed = self.account.sign_message(encode_typed_data(full_message=typed))
            return "0x" + bytes(signed.signature).hex()
        if method == "eth_sendTransaction":
            (tx,) = params
            self._check_address(tx["from"])
            call = {
                "from": self.address,
                "to": Web3.to_checksum_address(tx["to"]),
                "data": tx["data"],
            }
            built = {
                **call,
                "nonce": self.w3.eth.get_transaction_count(self.account.address, "pending"),
                "chainId": self.chain_id,
                "gas": int(self.w3.eth.estimate_gas(call) * 1.2),  # type: ignore[arg-type]
                "maxFeePerGas": 2 * self.w3.eth.gas_price + 1,
                "maxPriorityFeePerGas": 1,
            }
            signed = self.account.sign_transaction(built)
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            self.sent.append("0x" + bytes(tx_hash).hex())
            return "0x" + bytes(tx_hash).hex()
        raise _WalletError(4200, f"unsupported method {method}")

    def _check_address(self, address: str) -> None:
        if address.lower() != self.address.lower():
            raise _WalletError(4100, f"not this wallet's account: {address}")


class _WalletError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
