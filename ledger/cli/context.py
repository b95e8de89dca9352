"""What a ``consent`` command talks to, made on first use: the state dir, the gateway, the
chain node, the pinned registry and the acting identity.

One :class:`Ctx` per invocation lives in ``typer.Context.obj`` (see ``ledger.cli.app``); the
shared options (``--home``, ``--gateway``, ``--chain``, ``--registry``, ``--json``, ``--debug``)
fill it. Trust anchors come from the client's own configuration, never from a gateway.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ledger.paths import StatePaths, state_paths

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from eth_typing import ChecksumAddress
    from web3 import Web3

    from ledger.chain.keys import Keystore
    from ledger.chain.registry import ConsentRegistry
    from ledger.client import Gateway, Session
    from ledger.protocol.eip712 import Domain
    from ledger.protocol.wire import HealthPublic

__all__ = ["DEFAULT_CHAIN", "DEFAULT_GATEWAY", "Anchors", "CliError", "Ctx", "password"]

DEFAULT_GATEWAY = "http://127.0.0.1:8000"
DEFAULT_CHAIN = "http://127.0.0.1:8545"


class CliError(Exception):
    """A failure the user can act on: one line, an exit code."""

    def __init__(self, message: str, *, code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Anchors:
    """What a client trusts about the ledger, from its own configuration, never a gateway's."""

    registry: ChecksumAddress
    chain_id: int | None  # None: the client's own chain node (--chain) says
    deploy_block: int | None
    source: str  # where the anchors came from, to name in errors


@dataclass
class Ctx:
    """What a command talks to: the state dir, the gateway, the chain, the registry, keys.

    Everything is made on first use, so a command touches only what it needs. Trust anchors
    (registry address, chain id, deploy block) come from ``--registry`` / ``$CONSENT_REGISTRY``
    (with ``$CONSENT_CHAIN_ID`` / ``$CONSENT_DEPLOY_BLOCK``) or ``$CONSENT_HOME/deployment.json``;
    a gateway whose ``/healthz`` names another registry or chain is refused.
    """

    home: Path | None = None
    gateway_url: str = DEFAULT_GATEWAY
    chain_url: str = field(
        default_factory=lambda: os.environ.get("CONSENT_CHAIN_URL", DEFAULT_CHAIN)
    )
    registry_address: str | None = None
    as_json: bool = False  # --json: print JSON instead of a table
    debug: bool = False  # --debug: show tracebacks instead of one line
    given: frozenset[str] = frozenset()  # shared options given before the command's name
    _gateway: Gateway | None = None
    _health: HealthPublic | None = None
    _anchors: Anchors | None = None
    _w3: Web3 | None = None
    _registry: ConsentRegistry | None = None
    _sessions: dict[str, Session] = field(default_factory=dict)
    _accounts: dict[str, LocalAccount] = field(default_factory=dict)

    def close(self) -> None:
        if self._gateway is not None:
            self._gateway.close()

    @property
    def paths(self) -> StatePaths:
        return state_paths(self.home)

    # -- trust anchors -----------------------------------------------------------------------

    def anchors(self) -> Anchors:
        """The pinned registry, chain id and deploy block (see the class docstring)."""
        if self._anchors is None:
            self._anchors = self._load_anchors()
        return self._anchors

    def _load_anchors(self) -> Anchors:
        from eth_utils.address import to_checksum_address

        from ledger.chain.deployment import load_deployment

        path = self.paths.deployment
        try:
            deployment = load_deployment(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CliError(
                f"cannot read the deployment file {path} ({type(exc).__name__}); fix or remove "
                f"it, or pass --registry / CONSENT_REGISTRY"
            ) from None
        explicit = (self.registry_address or os.environ.get("CONSENT_REGISTRY") or "").strip()
        if explicit:
            if not re.fullmatch(r"0x[0-9a-fA-F]{40}", explicit):
                raise CliError(f"--registry {explicit!r} is not an address (0x + 40 hex digits)")
            address = to_checksum_address(explicit)
            if deployment is not None and deployment.address == address:
                return Anchors(address, deployment.chain_id, deployment.block, str(path))
            return Anchors(
                address,
                _env_int("CONSENT_CHAIN_ID"),
                _env_int("CONSENT_DEPLOY_BLOCK"),
                "--registry / CONSENT_REGISTRY",
            )
        if deployment is not None:
            return Anchors(deployment.address, deployment.chain_id, deployment.block, str(path))
        raise CliError(
            f"cannot tell which registry to trust: pass --registry ADDRESS (or set "
            f"CONSENT_REGISTRY), or keep the deployment file at {path}; a gateway's word is "
            f"not taken for it"
        )

    def _pinned_chain_id(self) -> int | None:
        try:
            return self.anchors().chain_id
        except CliError:
            return _env_int("CONSENT_CHAIN_ID")

    # -- services ----------------------------------------------------------------------------

    def gateway(self) -> Gateway:
        """The gateway, once its ``/healthz`` agrees with the pinned registry and chain id."""
        from ledger.client import Gateway

        if self._gateway is None:
            gateway = Gateway(self.gateway_url)
            try:
                self._check_gateway(gateway)
            except BaseException:
                gateway.close()
                raise
            self._gateway = gateway
        return self._gateway

    def _check_gateway(self, gateway: Gateway) -> None:
        health = gateway.health()
        anchors = self.anchors()
        if health.contract is not None and health.contract.lower() != anchors.registry.lower():
            raise CliError(
                f"the gateway at {self.gateway_url} names the registry {health.contract}, but "
                f"this client trusts {anchors.registry} (from {anchors.source}); refusing to use "
                f"that gateway, nothing was signed or written",
                code=1,
            )
        if health.chain_id is not None and int(health.chain_id) != self.chain_id():
            raise CliError(
                f"the gateway at {self.gateway_url} names chain {health.chain_id}, but this "
                f"client's chain is {self.chain_id()}; refusing to use that gateway, nothing was "
                f"signed or written",
                code=1,
            )
        self._health = health

    def health(self) -> HealthPublic:
        if self._health is None:
            self._health = self.gateway().health()
        return self._health

    def w3(self) -> Web3:
        """The client's own chain node (``--chain``), checked against the pinned chain id."""
        from ledger.chain.node import ChainUnavailable, connect

        if self._w3 is None:
            w3 = connect(self.chain_url)
            try:
                node_chain = int(w3.eth.chain_id)
            except Exception as exc:
                raise ChainUnavailable(self.chain_url, type(exc).__name__) from None
            pinned = self._pinned_chain_id()
            if pinned is not None and node_chain != pinned:
                raise CliError(
                    f"the chain node at {self.chain_url} is chain {node_chain}, but this client "
                    f"is pinned to chain {pinned}; pass the --chain / CONSENT_CHAIN_URL of "
                    f"chain {pinned}"
                )
            self._w3 = w3
        return self._w3

    def chain_id(self) -> int:
        """The pinned chain id, else the client's own chain node's (never the gateway's)."""
        pinned = self._pinned_chain_id()
        if pinned is not None:
            return pinned
        return int(self.w3().eth.chain_id)

    def registry(self) -> ConsentRegistry:
        """The pinned registry on the client's own chain node."""
        from ledger.chain.abi import registry_abi
        from ledger.chain.registry import ConsentRegistry

        if self._registry is None:
            anchors = self.anchors()
            w3 = self.w3()
            if not bytes(w3.eth.get_code(anchors.registry)):
                raise CliError(
                    f"there is no contract at {anchors.registry} (the registry from "
                    f"{anchors.source}) on the chain at {self.chain_url}; check --chain and "
                    f"--registry"
                )
            self._registry = ConsentRegistry(w3, anchors.registry, abi=registry_abi())
        return self._registry

    def domain(self) -> Domain:
        return self.registry().domain

    # -- identities --------------------------------------------------------------------------

    def keystore(self) -> Keystore:
        from ledger.chain.keys import Keystore

        return Keystore(self.paths.keys)

    def account(self, name: str | None) -> LocalAccount:
        """The acting identity (unlocks a keystore key with the password)."""
        from ledger.chain.keys import DEV_NAMES, dev_account

        if not name:
            raise CliError("say who acts with --as NAME (or CONSENT_AS); see `consent key list`")
        if name in self._accounts:
            return self._accounts[name]
        keystore = self.keystore()
        if name in DEV_NAMES:
            account = dev_account(name, chain_id=self.chain_id())
        elif _is_key_name(name) and keystore.has(name):
            account = keystore.unlock(name, password(f"Password for key {name!r}"))
        else:
            raise CliError(
                f"no identity named {name!r}: not in the keystore ({self.paths.keys}) and not a "
                f"dev account ({', '.join(DEV_NAMES)}); create it with `consent key new {name}`"
            )
        self._accounts[name] = account
        return account

    def address(self, who: str, *, what: str = "account") -> ChecksumAddress:
        """An address from a 0x address, a keystore name or a dev name (no unlocking)."""
        from eth_utils.address import to_checksum_address

        from ledger.chain.keys import KeystoreError, resolve_address

        try:
            found = resolve_address(who, keystore=self.keystore(), chain_id=self.chain_id())
        except KeystoreError as exc:
            raise CliError(f"{what} {exc}") from None
        return to_checksum_address(found)

    def session(self, account: LocalAccount) -> Session:
        if account.address not in self._sessions:
            self._sessions[account.address] = self.gateway().login(
                account, chain_id=self.chain_id()
            )
        return self._sessions[account.address]

    def names(self) -> dict[str, str]:
        """Lower-case address -> a name to show (dev names and keystore names)."""
        from ledger.chain.keys import DEV_NAMES
        from ledger.chain.node import dev_accounts

        out = {a.address.lower(): n for n, a in zip(DEV_NAMES, dev_accounts(), strict=True)}
        try:
            for identity in self.keystore().list():
                out[identity.address.lower()] = identity.name
        except (OSError, ValueError, KeyError):
            pass
        return out


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    if not value.isascii() or not value.isdigit():
        raise CliError(f"${name} must be a whole number, not {value!r}")
    return int(value)


def _is_key_name(text: str) -> bool:
    return re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,63}", text) is not None


def password(prompt: str, *, confirm: bool = False) -> str:
    env = os.environ.get("CONSENT_PASSWORD")
    if env is not None:
        return env
    value: str = typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
    return value
