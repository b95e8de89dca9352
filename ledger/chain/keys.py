"""CLI identities: an encrypted keystore plus, on the local chain only, anvil's dev accounts.

Keystore files are standard Ethereum keyfiles (eth-account ``Account.encrypt``, scrypt), one per
name, under ``$CONSENT_HOME/keys/<name>.json`` with mode 0600. The password comes from a prompt
or ``$CONSENT_PASSWORD``. The local chain's development accounts have fixed names (``admin``,
``centre``, ``patient``, ...) and are refused on any other chain id.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from ledger.chain.node import ANVIL_CHAIN_ID, DevKeyOnPublicChain, dev_accounts

__all__ = [
    "DEV_NAMES",
    "Identity",
    "Keystore",
    "KeystoreError",
    "WrongPassword",
    "dev_account",
    "resolve_address",
]

#: Names of anvil's development accounts, by index (local chain only).
DEV_NAMES = (
    "admin",
    "gateway",
    "centre",
    "patient",
    "doctor",
    "insurer",
    "guardian",
    "emergency",
    "researcher",
    "auditor",
)

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class KeystoreError(Exception):
    """A keystore problem the user can fix."""


class WrongPassword(KeystoreError):
    def __init__(self, name: str) -> None:
        super().__init__(f"wrong password for key {name!r}")
        self.name = name


@dataclass(frozen=True)
class Identity:
    name: str
    address: str
    source: str  # "keystore" or "dev"


class Keystore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, name: str) -> Path:
        if not _NAME.match(name):
            raise KeystoreError(
                f"invalid key name {name!r}: use lower-case letters, digits, '.', '_' or '-'"
            )
        return self.directory / f"{name}.json"

    def create(self, name: str, password: str, *, private_key: bytes | None = None) -> Identity:
        if name in DEV_NAMES:
            raise KeystoreError(f"{name!r} is reserved for a local development account")
        path = self._path(name)
        if path.exists():
            raise KeystoreError(f"a key named {name!r} already exists ({path})")
        if not password:
            raise KeystoreError("an empty password is not allowed")
        account = Account.create() if private_key is None else Account.from_key(private_key)
        keyfile = Account.encrypt(account.key, password)
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(keyfile, f)
        return Identity(name, account.address, "keystore")

    def list(self) -> list[Identity]:
        found: list[Identity] = []
        if self.directory.is_dir():
            for path in sorted(self.directory.glob("*.json")):
                data = json.loads(path.read_text())
                found.append(
                    Identity(path.stem, "0x" + str(data["address"]).removeprefix("0x"), "keystore")
                )
        return found

    def has(self, name: str) -> bool:
        return self._path(name).is_file()

    def unlock(self, name: str, password: str) -> LocalAccount:
        path = self._path(name)
        if not path.is_file():
            raise KeystoreError(f"no key named {name!r}; create one with `consent key new {name}`")
        try:
            key = Account.decrypt(json.loads(path.read_text()), password)
        except ValueError:
            raise WrongPassword(name) from None
        account: LocalAccount = Account.from_key(key)
        return account


def dev_account(name: str, *, chain_id: int) -> LocalAccount:
    """A named development account; only on the local chain."""
    index = DEV_NAMES.index(name)
    account = dev_accounts()[index]
    if chain_id != ANVIL_CHAIN_ID:
        raise DevKeyOnPublicChain(account.address, chain_id)
    return account


def resolve_address(text: str, *, keystore: Keystore, chain_id: int) -> str:
    """An EIP-55 address from a 0x address, a keystore name or (local chain) a dev name.

    Nothing is unlocked. Raises ``KeystoreError`` naming what was tried.
    """
    from eth_utils.address import to_checksum_address

    text = text.strip()
    if re.fullmatch(r"0x[0-9a-fA-F]{40}", text):
        return str(to_checksum_address(text))
    if text in DEV_NAMES:
        return dev_account(text, chain_id=chain_id).address
    if _NAME.match(text):
        for identity in keystore.list():
            if identity.name == text:
                return str(to_checksum_address(identity.address))
    raise KeystoreError(
        f"{text!r} is neither a 0x address, a keystore name nor a dev name; see `consent key list`"
    )
