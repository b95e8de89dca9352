"""Gateway settings (pydantic-settings, environment prefix ``CONSENT_``).

``consent up`` starts the gateway with exactly these variables: ``CONSENT_HOME``,
``CONSENT_CHAIN_URL``, ``CONSENT_IPFS_URL``, ``CONSENT_DATABASE_URL``,
``CONSENT_DEPLOYMENT_FILE``, ``CONSENT_KEK_FILE``, ``CONSENT_GATEWAY_KEY``,
``CONSENT_REGISTRAR_KEY``, ``CONSENT_RELAYER_KEY``, ``CONSENT_SIWE_DOMAIN`` and
``CONSENT_SIWE_URI``. Every other field has a default.

An operator may instead write the settings in a TOML file, the ``[gateway]`` table of the file
named by ``CONSENT_CONFIG_FILE`` (what ``consent gateway serve --config FILE`` sets), one key
per field (``chain_url = "https://..."``). A ``CONSENT_*`` variable overrides the file's value;
a key the gateway does not know is refused, so a typo never silently falls back to a default.
``docs/operations.md`` lists every setting with its default (a test holds the two equal).

The gateway sends from three accounts, so that draining one cannot stop the others: the
*gateway* account (``GATEWAY_ROLE``; anchors access-log checkpoints, and its address names the
gateway), the *registrar* (``GATEWAY_ROLE``; sends ``registerRecord``) and the *relayer* (no
role; pays for relayed ``grantBySig`` / ``revokeBySig``, under the relayer policy ``relay_*``).

Secrets are checked when the settings are built, so a gateway with a missing or placeholder
key-encryption key (all zeros, ``changeme``, a repeated pattern ...), a missing account key, or
two roles on one key refuses to start with a message that says what to fix; so does a KEK file
that group or others may read or write (the message names the ``chmod 600`` to run).
``get_settings()`` is cached; tests build a :class:`Settings` themselves and hand it to
``create_app(settings)``.
"""

from __future__ import annotations

import json
import os
import stat
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from eth_typing import ChecksumAddress
from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from web3 import Web3

from ledger.config_file import ConfigFileError, read_config_file
from ledger.paths import state_paths

__all__ = [
    "CONFIG_FILE_ENV",
    "PlaceholderSecret",
    "Settings",
    "get_settings",
    "parse_secret_hex",
]

#: The environment variable naming the TOML settings file (its ``[gateway]`` table).
CONFIG_FILE_ENV = "CONSENT_CONFIG_FILE"

_PLACEHOLDERS = frozenset(
    {
        "",
        "changeme",
        "change-me",
        "change_me",
        "placeholder",
        "secret",
        "password",
        "todo",
        "xxx",
        "test",
        "dummy",
        "example",
        "default",
        "none",
        "null",
    }
)
_MIN_DISTINCT_BYTES = 16  # 32 random bytes have ~30 distinct values; patterns have few


class PlaceholderSecret(ValueError):
    """A secret is missing, malformed or an obvious placeholder."""


def _config_file_values(known: set[str], paths: set[str]) -> dict[str, Any]:
    """The ``[gateway]`` table of the file ``$CONSENT_CONFIG_FILE`` names (empty without one);
    a relative path among ``paths`` is taken relative to the file's directory."""
    name = os.environ.get(CONFIG_FILE_ENV, "").strip()
    if not name:
        return {}
    path = Path(name)
    data = read_config_file(path)
    table = data.get("gateway", {})
    if not isinstance(table, dict):
        raise ConfigFileError(f"[gateway] in {path} must be a table of settings")
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigFileError(
            f"the config file {path} names unknown gateway settings {unknown}; fix the "
            f"spelling (docs/operations.md lists every setting)"
        )
    values = dict(table)
    for key in paths & set(values):
        if isinstance(values[key], str) and not Path(values[key]).is_absolute():
            values[key] = str(path.parent.resolve() / values[key])
    return values


def parse_secret_hex(text: str, *, what: str) -> bytes:
    """32 bytes from hex text (``0x`` optional), refusing placeholders and patterns."""
    stripped = text.strip()
    if stripped.lower() in _PLACEHOLDERS or "changeme" in stripped.lower().replace("-", ""):
        raise PlaceholderSecret(f"{what} is a placeholder ({stripped!r}); generate a real one")
    hexpart = stripped[2:] if stripped[:2] in ("0x", "0X") else stripped
    try:
        raw = bytes.fromhex(hexpart)
    except ValueError:
        raise PlaceholderSecret(f"{what} is not hex (expected 64 hex digits)") from None
    if len(raw) != 32:
        raise PlaceholderSecret(f"{what} must be 32 bytes (64 hex digits), got {len(raw)} bytes")
    if len(set(raw)) < _MIN_DISTINCT_BYTES:
        raise PlaceholderSecret(
            f"{what} looks like a placeholder (all zeros or a repeated pattern); "
            f"generate one with `python -c 'import secrets; print(secrets.token_hex(32))'`"
        )
    return raw


def _check_owner_only(path: Path) -> None:
    """Refuse a secret file that anyone but its owner may read or write (POSIX modes)."""
    if os.name != "posix":
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise PlaceholderSecret(
            f"the key-encryption key file {path} is open to group or others (mode {mode:04o}); "
            f"the gateway refuses to start: run `chmod 600 {path}`"
        )


class Settings(BaseSettings):
    """Everything the gateway reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="CONSENT_", env_file=None, extra="ignore", validate_default=True
    )

    home: Path = Field(
        default_factory=lambda: state_paths().home,
        description="State directory (CONSENT_HOME); defaults below live under it.",
    )
    chain_url: str = Field(
        default="http://127.0.0.1:8545", description="The chain node's JSON-RPC URL."
    )
    ipfs_url: str = Field(
        default="http://127.0.0.1:5001",
        description="The Kubo RPC API (an IPFS Cluster proxy endpoint answers the same calls).",
    )
    database_url: str = Field(
        default="",
        description="sqlite:///path or postgresql+psycopg://...; default <home>/gateway.sqlite3",
    )
    deployment_file: Path | None = Field(
        default=None, description="deployment.json of `consent up`; default <home>/deployment.json"
    )
    registry_address: str | None = Field(
        default=None, description="The registry address, instead of a deployment file."
    )
    chain_id: int | None = Field(
        default=None, description="Expected chain id; from the deployment file when absent."
    )
    kek_file: Path | None = Field(
        default=None, description="32-byte key-encryption key, hex; default <home>/gateway-kek.key"
    )
    kek: SecretStr | None = Field(
        default=None, description="The KEK itself (hex), instead of a file."
    )
    custody_key_file: Path | None = Field(
        default=None,
        description="The gateway's custody private key (secp256k1, 32 bytes hex): opens its share "
        "of every threshold-custody record; default <home>/gateway-custody.key when that exists. "
        "Its public key is what the registry's federation lists for this gateway.",
    )
    custody_key: SecretStr | None = Field(
        default=None, description="The custody key itself (hex), instead of a file."
    )
    gateway_key: SecretStr | None = Field(
        default=None,
        description="Hex private key of the gateway account (holds GATEWAY_ROLE, anchors "
        "checkpoints; its address names the gateway).",
    )
    gateway_key_file: Path | None = None
    registrar_key: SecretStr | None = Field(
        default=None,
        description="Hex private key of the account that registers records (holds GATEWAY_ROLE).",
    )
    registrar_key_file: Path | None = None
    relayer_key: SecretStr | None = Field(
        default=None,
        description="Hex private key of the account that pays for relayed consent changes "
        "(needs no role).",
    )
    relayer_key_file: Path | None = None
    relay_gas_cap: int = Field(
        default=200_000,
        ge=50_000,
        le=30_000_000,
        description="Gas limit of every relayed transaction; a relay whose estimate (or whose "
        "signer's ERC-1271 check) needs more is refused (403 relay_gas_cap_exceeded).",
    )
    relay_patient_quota_per_hour: int = Field(
        default=10,
        gt=0,
        description="Relayed transactions per patient per rolling hour (429 relay_quota_exceeded).",
    )
    relay_rate_per_minute: int = Field(
        default=60,
        gt=0,
        description="Relayed transactions per rolling minute, all patients together (429 "
        "relay_rate_limited).",
    )
    relay_receipt_wait_s: float = Field(
        default=5.0,
        ge=0,
        le=60,
        description="How long POST /v1/consents waits for the receipt (without holding a "
        "worker thread) before answering 202 with the pending transaction.",
    )
    public_base_url: str | None = Field(
        default=None,
        description="The URL clients reach the gateway at (behind a proxy: the proxy's, e.g. "
        "https://gateway.example.org); siwe_domain and siwe_uri default from it.",
    )
    siwe_domain: str = Field(
        default="127.0.0.1:8000",
        description="The host[:port] sign-in messages must name (default: public_base_url's).",
    )
    siwe_uri: str = Field(
        default="http://127.0.0.1:8000",
        description="The URI sign-in messages must name (default: public_base_url).",
    )
    siwe_nonce_ttl_s: int = Field(default=300, gt=0)
    siwe_max_age_s: int = Field(
        default=600, gt=0, description="Oldest accepted SIWE issued-at (replay window)."
    )
    session_ttl_s: int = Field(default=3600, gt=0)
    checkpoint_every: int = Field(default=16, gt=0, description="Anchor after N new log entries.")
    checkpoint_interval_s: float = Field(
        default=30.0, gt=0, description="... or after T seconds with any new entry."
    )
    checkpoint_min_gap_s: float = Field(
        default=1.0,
        ge=0,
        description="At most one anchoring transaction per this many seconds (under load, a "
        "checkpoint then covers every entry appended meanwhile).",
    )
    anchor_enabled: bool = True
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, gt=0)
    max_json_body_bytes: int = Field(
        default=64 * 1024,
        gt=0,
        description="Largest accepted body of every request but an upload (413 body_too_large).",
    )
    max_head_age_s: float | None = Field(
        default=None,
        gt=0,
        description="Per network: a decision whose evaluated chain time (block.timestamp in "
        "accessDecision) is older than this, by the gateway's clock, fails closed (503 "
        "chain_stale). Off (unset) for an automining local chain, whose head only moves "
        "when a transaction arrives; for a chain with a fixed block time, a few block times "
        "plus propagation (e.g. 12 s blocks: 60).",
    )
    decision_source: Literal["index", "chain"] = Field(
        default="index",
        description="Where fetch decisions come from: the verified consent index (logs checked "
        "against the registry's event digest block by block, snapshot <home>/consent-index.json; "
        "one head observation shared by concurrent requests, no eth_call per decision), or one "
        "eth_call of accessDecision per decision.",
    )
    auth_rate_per_minute: float = Field(
        default=120.0,
        gt=0,
        description="Per client IP: POST /v1/auth/nonce and /v1/auth/login together refill "
        "at this rate (429 rate_limited beyond it).",
    )
    auth_rate_burst: int = Field(
        default=60, gt=0, description="Per client IP: nonce + login requests allowed at once."
    )
    chain_timeout_s: float = Field(default=10.0, gt=0)
    ipfs_timeout_s: float = Field(default=30.0, gt=0)
    max_in_flight_tx: int = Field(default=64, gt=0)
    tx_timeout_s: float = Field(default=60.0, gt=0)
    upload_grace_s: float = Field(
        default=300.0,
        gt=0,
        description="A pending upload row older than this has no live uploader: the gateway "
        "resolves it (on a retry of the same upload, and at start). Must exceed an upload's "
        "longest run (IPFS add + tx_timeout_s); an upload refuses to send its transaction once "
        "older than half of it.",
    )
    blob_cache_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="In-memory cache of CID-verified ciphertext (content-addressed, immutable).",
    )
    db_pool_size: int = Field(default=16, gt=0)
    auditors: str = Field(
        default="",
        description="Comma-separated 0x addresses whose sessions may download the whole access "
        "log (GET /v1/access-log/export); CONSENT_AUDITORS.",
    )
    portal_dir: Path | None = Field(
        default=None,
        description="The built portal served at /portal/; default gateway/portal/dist.",
    )
    portal_chain_url: str | None = Field(
        default=None,
        description="The chain JSON-RPC URL the portal's browsers read the chain at (public, "
        "no API key; allowed in its connect-src); default chain_url on a loopback host.",
    )

    _kek_bytes: bytes = PrivateAttr(default=b"")
    _custody_bytes: bytes | None = PrivateAttr(default=None)
    _gateway_bytes: bytes = PrivateAttr(default=b"")
    _registrar_bytes: bytes = PrivateAttr(default=b"")
    _relayer_bytes: bytes = PrivateAttr(default=b"")
    _deployment: dict[str, Any] = PrivateAttr(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then ``CONSENT_*`` variables, then the TOML file (the first wins)."""
        from_file = InitSettingsSource(
            settings_cls,
            init_kwargs=_config_file_values(
                set(cls.model_fields),
                {n for n, f in cls.model_fields.items() if "Path" in str(f.annotation)},
            ),
        )
        return (init_settings, env_settings, from_file, dotenv_settings, file_secret_settings)

    @field_validator("chain_url", "ipfs_url", "siwe_uri", "public_base_url", "portal_chain_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return None if value is None else value.rstrip("/")

    @field_validator("public_base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"public_base_url {value!r} must be an http(s) URL")
        if value is not None and not urlsplit(value).netloc:
            raise ValueError(f"public_base_url {value!r} names no host")
        return value

    @field_validator("auditors")
    @classmethod
    def _check_auditors(cls, value: str) -> str:
        for part in value.split(","):
            text = part.strip()
            if text and not Web3.is_address(text):
                raise ValueError(f"CONSENT_AUDITORS: {text!r} is not a 0x address")
        return value

    @model_validator(mode="after")
    def _resolve(self) -> Settings:
        home = self.home.resolve()
        self.home = home
        if self.public_base_url is not None:
            if "siwe_uri" not in self.model_fields_set:
                self.siwe_uri = self.public_base_url
            if "siwe_domain" not in self.model_fields_set:
                self.siwe_domain = urlsplit(self.public_base_url).netloc
        if not self.database_url:
            self.database_url = f"sqlite:///{home / 'gateway.sqlite3'}"
        if self.deployment_file is None and self.registry_address is None:
            self.deployment_file = home / "deployment.json"
        if self.kek_file is None and self.kek is None:
            self.kek_file = home / "gateway-kek.key"
        self._kek_bytes = self._load_kek()
        self._relayer_bytes = self._load_account_key(
            "relayer", self.relayer_key, self.relayer_key_file, "that pays for relayed consents"
        )
        self._gateway_bytes = self._load_account_key(
            "gateway", self.gateway_key, self.gateway_key_file, "holding GATEWAY_ROLE"
        )
        self._registrar_bytes = self._load_account_key(
            "registrar", self.registrar_key, self.registrar_key_file, "holding GATEWAY_ROLE"
        )
        keys = (self._gateway_bytes, self._registrar_bytes, self._relayer_bytes)
        if len(set(keys)) != len(keys):
            raise PlaceholderSecret(
                "CONSENT_GATEWAY_KEY, CONSENT_REGISTRAR_KEY and CONSENT_RELAYER_KEY must be three "
                "different accounts (draining one must not stop the others)"
            )
        self._custody_bytes = self._load_custody_key(home)
        if self._custody_bytes is not None and self._custody_bytes in keys:
            raise PlaceholderSecret(
                "CONSENT_CUSTODY_KEY must not be one of the transaction keys: a custody key "
                "opens shares and never signs a transaction"
            )
        return self

    def _load_kek(self) -> bytes:
        if self.kek is not None:
            return parse_secret_hex(self.kek.get_secret_value(), what="CONSENT_KEK")
        if self.kek_file is None:
            raise PlaceholderSecret(
                "no key-encryption key: set CONSENT_KEK_FILE (or CONSENT_KEK); the gateway "
                "refuses to start without one"
            )
        if not self.kek_file.is_file():
            raise PlaceholderSecret(
                f"the key-encryption key file {self.kek_file} does not exist; the gateway refuses "
                f"to start without one (CONSENT_KEK_FILE; `consent up` creates it)"
            )
        text = self.kek_file.read_text(encoding="utf-8", errors="replace")
        kek = parse_secret_hex(text, what=f"the key-encryption key in {self.kek_file}")
        _check_owner_only(self.kek_file)
        return kek

    def _load_custody_key(self, home: Path) -> bytes | None:
        if self.custody_key is not None:
            return parse_secret_hex(self.custody_key.get_secret_value(), what="CONSENT_CUSTODY_KEY")
        path = self.custody_key_file
        if path is None:
            default = home / "gateway-custody.key"
            if not default.is_file():
                return None  # no custody key: this gateway releases no share (says so per request)
            path = default
        if not path.is_file():
            raise PlaceholderSecret(
                f"the custody key file {path} does not exist (CONSENT_CUSTODY_KEY_FILE; "
                f"`consent up` creates one per gateway)"
            )
        text = path.read_text(encoding="utf-8", errors="replace")
        key = parse_secret_hex(text, what=f"the custody key in {path}")
        _check_owner_only(path)
        return key

    @property
    def custody_key_bytes(self) -> bytes | None:
        """The custody private key (validated), or None when none is configured."""
        return self._custody_bytes

    @staticmethod
    def _load_account_key(
        name: str, key: SecretStr | None, key_file: Path | None, role: str
    ) -> bytes:
        env = f"CONSENT_{name.upper()}_KEY"
        if key is not None:
            text = key.get_secret_value()
            what = env
        elif key_file is not None:
            if not key_file.is_file():
                raise PlaceholderSecret(f"{name} key file {key_file} does not exist")
            text = key_file.read_text(encoding="utf-8", errors="replace")
            what = f"the {name} key in {key_file}"
        else:
            raise PlaceholderSecret(
                f"no {name} key: set {env} (hex private key of an account {role}) or {env}_FILE"
            )
        return parse_secret_hex(text, what=what)

    @property
    def kek_bytes(self) -> bytes:
        """The 32-byte key-encryption key (validated)."""
        return self._kek_bytes

    @property
    def gateway_key_bytes(self) -> bytes:
        """The gateway account's 32-byte private key (validated)."""
        return self._gateway_bytes

    @property
    def registrar_key_bytes(self) -> bytes:
        """The registrar's 32-byte private key (validated)."""
        return self._registrar_bytes

    @property
    def relayer_key_bytes(self) -> bytes:
        """The relayer's 32-byte private key (validated)."""
        return self._relayer_bytes

    @property
    def auditor_addresses(self) -> frozenset[ChecksumAddress]:
        """The checksummed addresses of ``auditors``."""
        return frozenset(
            Web3.to_checksum_address(part.strip())
            for part in self.auditors.split(",")
            if part.strip()
        )

    def deployment(self) -> dict[str, Any]:
        """The deployment record (chain_id, address, block, ...), read once."""
        if not self._deployment:
            if self.registry_address is not None:
                self._deployment = {
                    "address": self.registry_address,
                    "chain_id": self.chain_id,
                    "block": 0,
                }
            else:
                if self.deployment_file is None:
                    raise FileNotFoundError(
                        "no deployment: set CONSENT_DEPLOYMENT_FILE or CONSENT_REGISTRY_ADDRESS"
                    )
                if not self.deployment_file.is_file():
                    raise FileNotFoundError(
                        f"deployment file {self.deployment_file} does not exist; run `consent up` "
                        f"or set CONSENT_DEPLOYMENT_FILE / CONSENT_REGISTRY_ADDRESS"
                    )
                self._deployment = json.loads(self.deployment_file.read_text(encoding="utf-8"))
        return self._deployment

    def registry(self) -> ChecksumAddress:
        return Web3.to_checksum_address(self.deployment()["address"])

    def deployment_block(self) -> int:
        return int(self.deployment().get("block") or 0)

    def expected_chain_id(self) -> int | None:
        value = self.chain_id if self.chain_id is not None else self.deployment().get("chain_id")
        return int(value) if value is not None else None


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings from the environment (cached)."""
    return Settings()
