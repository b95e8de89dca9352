"""The gateway's start-up checks against the chain, run before it serves.

``consent gateway check`` runs them and exits; ``consent gateway serve`` runs them and starts
the gateway only when every one passed. Each refusal is one sentence saying what to do:

- the chain node answers, and is on the deployment's chain (``chain_id``);
- the registry has code at its address;
- the gateway and registrar accounts hold ``GATEWAY_ROLE``;
- no sending account is one of anvil's public development keys (off the local chain);
- every sending account (above all the relayer) can pay for one transaction at the relay gas
  cap at the node's current fee.

Run as ``python -m gateway.preflight`` with the settings in the environment (``CONSENT_*``,
``CONSENT_CONFIG_FILE``). Exit 0: every check passed; 1: a check refused; 2: the settings or
the deployment could not be read, or the chain node does not answer.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from eth_account import Account
from eth_account.signers.local import LocalAccount
from pydantic import ValidationError
from web3 import Web3

from gateway.settings import PlaceholderSecret, Settings
from ledger.chain.abi import registry_abi
from ledger.chain.node import ANVIL_CHAIN_ID, connect, eip1559_fees, is_dev_address
from ledger.chain.registry import ConsentRegistry
from ledger.config_file import ConfigFileError
from ledger.protocol.consent_types import GATEWAY_ROLE

__all__ = ["Finding", "Preflight", "check_chain", "main", "node_label"]

_WEI_PER_ETH = Decimal(10**18)


@dataclass(frozen=True)
class Finding:
    """One check: passed (``ok``) or a refusal, with its one line."""

    ok: bool
    line: str


@dataclass(frozen=True)
class Preflight:
    """Every check's finding; ``reachable`` is False when the chain node did not answer."""

    findings: tuple[Finding, ...]
    reachable: bool = True

    @property
    def passed(self) -> bool:
        return self.reachable and all(f.ok for f in self.findings)

    @property
    def exit_code(self) -> int:
        if not self.reachable:
            return 2
        return 0 if self.passed else 1


def node_label(url: str) -> str:
    """``scheme://host[:port]`` of a node URL: its path or user part may hold an API key."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")


def _eth(wei: int) -> str:
    return f"{Decimal(wei) / _WEI_PER_ETH:.6f} ETH"


def check_chain(settings: Settings, w3: Web3) -> Preflight:
    """Run every check of the module docstring against the node ``w3``."""
    try:
        node_chain = int(w3.eth.chain_id)
    except Exception as exc:
        return Preflight(
            (
                Finding(
                    False,
                    f"the chain node at {node_label(settings.chain_url)} is not answering "
                    f"({type(exc).__name__}); start it or point chain_url (CONSENT_CHAIN_URL) "
                    f"at a node that answers",
                ),
            ),
            reachable=False,
        )
    findings: list[Finding] = []
    expected = settings.expected_chain_id()
    if expected is not None and node_chain != expected:
        findings.append(
            Finding(
                False,
                f"the chain node at {node_label(settings.chain_url)} is chain {node_chain} but "
                f"the deployment is on chain {expected}; point chain_url (CONSENT_CHAIN_URL) at "
                f"chain {expected}'s node, or use the deployment file of chain {node_chain}",
            )
        )
        return Preflight(tuple(findings))
    findings.append(Finding(True, f"chain id {node_chain} matches the deployment"))
    address = settings.registry()
    if not bytes(w3.eth.get_code(address)):
        findings.append(
            Finding(
                False,
                f"there is no contract at {address} on chain {node_chain}; check "
                f"deployment_file / registry_address (`consent deploy` writes the file)",
            )
        )
        return Preflight(tuple(findings))
    findings.append(Finding(True, f"registry {address} has code"))
    registry = ConsentRegistry(w3, address, abi=registry_abi())
    accounts: list[tuple[str, LocalAccount]] = [
        ("gateway", Account.from_key(settings.gateway_key_bytes)),
        ("registrar", Account.from_key(settings.registrar_key_bytes)),
        ("relayer", Account.from_key(settings.relayer_key_bytes)),
    ]
    for name, account in accounts[:2]:
        if registry.has_role(GATEWAY_ROLE, account.address):
            findings.append(
                Finding(True, f"the {name} account {account.address} holds GATEWAY_ROLE")
            )
        else:
            findings.append(
                Finding(
                    False,
                    f"the {name} account {account.address} does not hold GATEWAY_ROLE on "
                    f"registry {address}; have the registry admin run `consent admin "
                    f"add-gateway {account.address} --as ADMIN` and start again",
                )
            )
    if node_chain != ANVIL_CHAIN_ID:
        for name, account in accounts:
            if is_dev_address(account.address):
                findings.append(
                    Finding(
                        False,
                        f"the {name} key is one of anvil's public development keys, refused on "
                        f"chain {node_chain}; create a key of your own (`consent key new`) and "
                        f"set {name}_key_file to it",
                    )
                )
    base_fee = w3.eth.get_block("latest").get("baseFeePerGas")
    fee = eip1559_fees(node_chain, None if base_fee is None else int(base_fee))["maxFeePerGas"]
    one_tx = settings.relay_gas_cap * fee
    for name, account in reversed(accounts):  # the relayer first: it pays for every relay
        balance = int(w3.eth.get_balance(account.address))
        if balance < one_tx:
            findings.append(
                Finding(
                    False,
                    f"the {name} account {account.address} holds {_eth(balance)}, less than one "
                    f"transaction at the relay gas cap costs at the current fee ({_eth(one_tx)}"
                    f" = {settings.relay_gas_cap} gas × {fee} wei); send it ETH and start again",
                )
            )
        else:
            findings.append(
                Finding(
                    True,
                    f"the {name} account {account.address} holds {_eth(balance)} (one capped "
                    f"transaction: {_eth(one_tx)})",
                )
            )
    return Preflight(tuple(findings))


def _validation_line(error: Any) -> str:
    text = str(error["msg"]).removeprefix("Value error, ")
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {text}" if where else text


def main() -> int:
    """Build the settings from the environment, run the checks, print one line each."""
    try:
        settings = Settings()
        settings.deployment()
    except (ConfigFileError, PlaceholderSecret, FileNotFoundError, ValueError) as exc:
        message = str(exc)
        if isinstance(exc, ValidationError):
            message = "; ".join(_validation_line(e) for e in exc.errors())
        print(f"error: the gateway settings are not usable: {message}", file=sys.stderr)
        return 2
    w3 = connect(settings.chain_url, timeout_s=settings.chain_timeout_s)
    result = check_chain(settings, w3)
    for finding in result.findings:
        if finding.ok:
            print(f"ok: {finding.line}")
        else:
            print(f"refused: {finding.line}", file=sys.stderr)
    if result.passed:
        print("every start-up check passed")
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
