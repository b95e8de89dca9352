"""A typed HTTP client of the gateway (``/v1``), for the ``consent`` CLI and scripts.

:class:`Gateway` is the unauthenticated side (health, SIWE nonce, checkpoints, consistency
proofs); :meth:`Gateway.login` signs an EIP-4361 message with ``personal_sign`` and returns a
:class:`Session` for one account, which uploads, lists, fetches (and opens envelopes locally),
relays signed consent changes and reads the access log with its proofs.

Nothing returned by the gateway is trusted where it can be checked locally:

- the sign-in message is signed only for this connection's scheme and authority and the
  caller's pinned chain id (EIP-4361's wallet rule), whatever the nonce answer names;

- a fetched record is opened with the reader's key and its sha256 compared with the
  ``contentDigest`` the *chain* holds for the record (:meth:`Session.open_record`);
- each access-log entry's leaf hash is recomputed, its RFC 9162 inclusion proof verified against
  the gateway's checkpoint, and that checkpoint tied to the root the gateway anchored *on-chain*
  (equal, or proven an earlier state of it by a consistency proof): :func:`verify_access_log`.

Errors: every failure is a :class:`ClientError` with one readable ``message``, a ``hint`` (what to
do next) and the CLI's ``exit_code`` (1: refused or a check failed; 2: could not run).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from pydantic import BaseModel, ValidationError

from ledger.chain.registry import ConsentRegistry
from ledger.protocol.consent_types import GATEWAY_ROLE
from ledger.protocol.content_digest import new_salt, salted_digest
from ledger.protocol.eip712 import Domain, GrantRequest, RecordAttestation, RevokeRequest, sign
from ledger.protocol.envelope import Envelope, EnvelopeError, open_envelope
from ledger.protocol.merkle import leaf_hash, verify_consistency, verify_inclusion
from ledger.protocol.siwe import SiweMessage
from ledger.protocol.wire import (
    AccessLogEntryPublic,
    AccessLogPage,
    CheckpointPublic,
    ConsentsPublic,
    ConsistencyPublic,
    HealthPublic,
    NoncePublic,
    RecordPublic,
    RecordsPublic,
    RelayResult,
    SessionPublic,
)

__all__ = [
    "ClientError",
    "ConsentDenied",
    "EntryProof",
    "Gateway",
    "GatewayRefused",
    "GatewayUnavailable",
    "Opened",
    "ProgressFn",
    "RecordNotFound",
    "RelayResult",  # the relay answer, re-exported so the CLI speaks the API through this module
    "Session",
    "SiweSiteMismatch",
    "Uploaded",
    "VerificationFailed",
    "WhoRead",
    "verify_access_log",
]

ProgressFn = Callable[[int, int], None]
"""``progress(done_bytes, total_bytes)``."""

_SIWE_STATEMENT = "Sign in to Consent Ledger"
_SIWE_TTL = timedelta(minutes=10)


# ------------------------------------------------------------------------------------ errors


class ClientError(Exception):
    """Root of client failures: ``message`` (one line), ``hint`` (what to do), ``exit_code``
    (1: refused or a check failed; 2: could not run)."""

    def __init__(self, message: str, *, hint: str = "", exit_code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def line(self) -> str:
        """The one line a person reads."""
        return f"{self.message}; {self.hint}" if self.hint else self.message


class GatewayUnavailable(ClientError):
    """The gateway did not answer, or a service behind it (chain, IPFS, database) is down."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(
            f"the gateway at {url} is not answering ({reason})",
            hint="start the stack with `consent up` or point --gateway / CONSENT_GATEWAY_URL at it",
        )
        self.url = url
        self.reason = reason


class GatewayRefused(ClientError):
    """The gateway answered with an error (``code`` is its stable error code)."""

    def __init__(
        self, status: int, code: str, message: str, details: Mapping[str, Any], *, hint: str = ""
    ) -> None:
        refused = status in (403, 502) or code.startswith("contract_")
        super().__init__(
            message, hint=hint or _hint_for(status, code), exit_code=1 if refused else 2
        )
        self.status = status
        self.code = code
        self.details = dict(details)
        self.refused = refused  # a decision against the caller (no consent, no role, ...)


class ConsentDenied(GatewayRefused):
    """403 ``consent_denied``: the chain says the caller holds no consent (logged)."""


class RecordNotFound(GatewayRefused):
    """404 ``record_not_found``."""


class VerificationFailed(ClientError):
    """A local check failed: envelope, content digest, leaf hash, inclusion or anchoring."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message, hint=hint, exit_code=1)


class SiweSiteMismatch(ClientError):
    """The sign-in message would be for a site other than the one this client talks to.

    EIP-4361's wallet rule: sign only for the scheme and authority of the connection. A gateway
    that hands out another site's nonce is relaying a login (phishing); a chain id other than
    the client's pinned one is refused the same way. Raised before anything is signed."""

    def __init__(self, message: str) -> None:
        super().__init__(
            message,
            hint="nothing was signed; check --gateway / CONSENT_GATEWAY_URL, or tell the "
            "gateway's operator that its SIWE domain and URI must be the address clients use",
            exit_code=1,
        )


_CONTRACT_HINTS = {
    "contract_consent_not_found": "there is no such consent to revoke; see `consent consents`",
    "contract_consent_unchanged": "that consent is already in force with the same terms",
    "contract_invalid_account_nonce": "the signature's nonce is used up; run the command again",
    "contract_signature_expired": "the signature's deadline passed; run the command again",
    "contract_expiry_in_past": "pick an expiry in the future (--expires 30d)",
    "contract_not_patient_or_guardian": "only the patient or their guardian may sign this",
    "contract_record_not_owned": "the record belongs to another patient",
    "contract_not_a_centre": "ask the registry admin to admit it (`consent admin add-centre`)",
}


_RELAY_WAIT_S = 120.0  # how long `relay` follows a pending relayed transaction


def _hint_for(status: int, code: str) -> str:
    if code.startswith("relay_"):
        return (
            "the gateway's relayer policy refused it (GET /v1/consents/policy): retry after "
            "the time it names, or send the transaction yourself, paying gas"
        )
    if code in _CONTRACT_HINTS:
        return _CONTRACT_HINTS[code]
    if code == "consent_denied":
        return "ask the patient to grant it (`consent grant --to YOU ...`)"
    if code == "record_not_found":
        return "check the id with `consent records`"
    if status == 401:
        return "sign in again (the session expired or the clock is off)"
    if status == 403:
        return "this identity may not do that (check --as, or ask the registry admin for a role)"
    if status == 503:
        return "a service behind the gateway is down; check `consent status`"
    if status == 413:
        return "the file is larger than the gateway accepts"
    if code.startswith("contract_"):
        return "the registry refused the transaction; nothing changed"
    return ""


# ------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class Uploaded:
    record: RecordPublic
    created: bool  # False: the same attestation had been uploaded before
    content_digest: bytes  # what this client attested: sha256(salt || data)


@dataclass(frozen=True)
class Opened:
    """A fetched, opened and digest-checked record."""

    plaintext: bytes
    envelope: Envelope


@dataclass(frozen=True)
class EntryProof:
    """One access-log entry and what was verified about it."""

    index: int
    entry: Mapping[str, Any]
    leaf: str  # the canonical JSON leaf, verbatim
    leaf_ok: bool  # the leaf hash is SHA-256(0x00 || leaf)
    included: bool | None  # inclusion proof verified against the checkpoint (None: not covered)

    @property
    def verified(self) -> bool:
        return self.leaf_ok and self.included is True


@dataclass(frozen=True)
class WhoRead:
    """Access-log entries about a patient, with their proofs and the checkpoint's anchoring."""

    checkpoint: CheckpointPublic | None
    anchored_tree_size: int  # the tree size anchored on-chain by the checkpoint's gateway
    anchored: bool  # the checkpoint is (a prefix of) what the gateway anchored on-chain
    anchor_reason: str
    log_size: int
    entries: list[EntryProof]


# ------------------------------------------------------------------------------------ client


class _ProgressReader(io.BytesIO):
    """A BytesIO that reports how much of it was read (httpx streams multipart files)."""

    def __init__(self, data: bytes, progress: ProgressFn | None) -> None:
        super().__init__(data)
        self._total = len(data)
        self._progress = progress

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        if self._progress is not None:
            self._progress(self.tell(), self._total)
        return chunk


def _parse(model: type[BaseModel], body: Any, what: str) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise ClientError(
            f"the gateway's answer to {what} is not what the API documents: "
            f"{exc.errors()[0]['msg']}",
            hint="check that --gateway points at a Consent Ledger gateway of this version",
        ) from None


class Gateway:
    """The gateway at ``base_url`` (the HTTP client is passed in or made here)."""

    def __init__(
        self, base_url: str, *, http: httpx.Client | None = None, timeout_s: float = 60.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._own = http is None
        self.http = (
            http if http is not None else httpx.Client(base_url=self.base_url, timeout=timeout_s)
        )

    def close(self) -> None:
        if self._own:
            self.http.close()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        ok: tuple[int, ...] = (200,),
        **kwargs: Any,
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = self.http.request(method, self.base_url + path, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise GatewayUnavailable(self.base_url, type(exc).__name__) from None
        if response.status_code in ok:
            return response
        raise self._error(response)

    def _error(self, response: httpx.Response) -> ClientError:
        status = response.status_code
        try:
            body = response.json()
            err = body["error"]
            code, message, details = str(err["code"]), str(err["message"]), err.get("details", {})
        except (ValueError, KeyError, TypeError):
            code, message, details = f"http_{status}", f"HTTP {status} from the gateway", {}
        if status == 503:
            return GatewayRefused(status, code, f"the gateway is degraded: {message}", details)
        cls: type[GatewayRefused] = GatewayRefused
        if code == "consent_denied":
            cls = ConsentDenied
        elif code == "record_not_found":
            cls = RecordNotFound
        return cls(status, code, message, details if isinstance(details, dict) else {})

    # -- public endpoints --------------------------------------------------------------------

    def health(self) -> HealthPublic:
        """``/healthz`` (a degraded gateway answers 503 with the same body)."""
        r = self.request("GET", "/healthz", ok=(200, 503))
        health: HealthPublic = _parse(HealthPublic, r.json(), "/healthz")
        return health

    def nonce(self) -> NoncePublic:
        nonce: NoncePublic = _parse(
            NoncePublic, self.request("POST", "/v1/auth/nonce").json(), "nonce"
        )
        return nonce

    def siwe_message(self, account: LocalAccount, *, chain_id: int | None = None) -> str:
        """A fresh EIP-4361 message for ``account`` with a new server nonce.

        The message is for this connection's scheme and authority (``base_url``): a nonce naming
        another domain or URI origin, or a chain other than ``chain_id`` (the caller's pinned
        chain id), raises :class:`SiweSiteMismatch` and nothing is signed."""
        nonce = self.nonce()
        scheme, authority = _origin(self.base_url)
        site = f"{scheme}://{authority}"
        if _authority(scheme, nonce.domain) != authority:
            raise SiweSiteMismatch(
                f"refusing to sign in: connected to {site} but the gateway asks for a signature "
                f"for the domain {nonce.domain!r}"
            )
        try:
            uri_origin = _origin(nonce.uri)
        except ValueError:
            uri_origin = ("", "")
        if uri_origin != (scheme, authority):
            raise SiweSiteMismatch(
                f"refusing to sign in: connected to {site} but the gateway asks for a signature "
                f"for the URI {nonce.uri!r}"
            )
        if chain_id is not None and nonce.chain_id is not None and nonce.chain_id != chain_id:
            raise SiweSiteMismatch(
                f"refusing to sign in: this client is pinned to chain {chain_id} but the gateway "
                f"at {site} asks for a signature for chain {nonce.chain_id}"
            )
        cid = chain_id if chain_id is not None else nonce.chain_id
        if cid is None:
            raise GatewayRefused(
                503, "chain_unavailable", "the gateway does not know its chain id", {}
            )
        now = datetime.now(tz=UTC)
        return SiweMessage(
            scheme=scheme,
            domain=nonce.domain,
            address=to_checksum_address(account.address),
            statement=_SIWE_STATEMENT,
            uri=nonce.uri,
            version="1",
            chain_id=cid,
            nonce=nonce.nonce,
            issued_at=now,
            expiration_time=now + _SIWE_TTL,
        ).prepare_message()

    def login(self, account: LocalAccount, *, chain_id: int | None = None) -> Session:
        """Sign in with Ethereum (``personal_sign`` of the EIP-4361 text) as ``account``; with
        ``chain_id`` the gateway must name that chain (see :meth:`siwe_message`)."""
        message = self.siwe_message(account, chain_id=chain_id)
        signature = "0x" + bytes(account.sign_message(encode_defunct(text=message)).signature).hex()
        r = self.request(
            "POST", "/v1/auth/login", json={"message": message, "signature": signature}
        )
        session: SessionPublic = _parse(SessionPublic, r.json(), "login")
        return Session(self, account, session)

    def checkpoint(self) -> CheckpointPublic | None:
        """The latest checkpoint the gateway anchored (None before the first)."""
        r = self.request("GET", "/v1/access-log/checkpoint", ok=(200, 404))
        if r.status_code == 404:
            return None
        checkpoint: CheckpointPublic = _parse(CheckpointPublic, r.json(), "checkpoint")
        return checkpoint

    def consistency(self, first: int, second: int) -> ConsistencyPublic:
        r = self.request(
            "GET", "/v1/access-log/consistency", params={"first": first, "second": second}
        )
        proof: ConsistencyPublic = _parse(ConsistencyPublic, r.json(), "consistency")
        return proof


def _origin(url: str) -> tuple[str, str]:
    """``(scheme, authority)`` of an http(s) URL, lower-case, default ports dropped."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise ValueError(url) from None
    if parsed.scheme not in ("http", "https") or not parsed.host or parsed.userinfo:
        raise ValueError(url)
    return parsed.scheme, parsed.netloc.decode("ascii").lower()


def _authority(scheme: str, domain: str) -> str | None:
    """``domain`` (an RFC 3986 authority) normalised as :func:`_origin` does, else None."""
    if not domain or any(c in domain for c in "/?#@\\ "):
        return None
    try:
        return _origin(f"{scheme}://{domain}")[1]
    except ValueError:
        return None


class Session:
    """A signed-in account at a gateway."""

    def __init__(self, gateway: Gateway, account: LocalAccount, session: SessionPublic) -> None:
        self.gateway = gateway
        self.account = account
        self.address = to_checksum_address(account.address)
        self.token = session.token
        self.expires_at = session.expires_at

    def _req(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.gateway.request(method, path, token=self.token, **kwargs)

    # -- records -----------------------------------------------------------------------------

    def upload(
        self,
        data: bytes,
        *,
        domain: Domain,
        patient: str,
        category: bytes,
        filename: str = "record",
        issued_at: int | None = None,
        progress: ProgressFn | None = None,
    ) -> Uploaded:
        """Attest ``data`` for ``patient`` (EIP-712, signed by this centre) and upload it.

        The attested digest is ``sha256(salt || data)`` with a fresh 32-byte salt, sent to the
        gateway with the file and kept only inside the encrypted record."""
        salt = new_salt()
        digest = salted_digest(salt, data)
        attestation = RecordAttestation(
            patient=to_checksum_address(patient),
            category=category,
            content_digest=digest,
            issued_at=int(time.time()) if issued_at is None else issued_at,
        )
        signature = sign(self.account, domain, attestation)
        r = self._req(
            "POST",
            "/v1/records",
            ok=(200, 201),
            data={
                "patient": attestation.patient,
                "category": "0x" + attestation.category.hex(),
                "issued_at": str(attestation.issued_at),
                "signature": "0x" + signature.hex(),
                "salt": "0x" + salt.hex(),
                "content_digest": "0x" + digest.hex(),
            },
            files={"file": (filename, _ProgressReader(data, progress), "application/octet-stream")},
        )
        record: RecordPublic = _parse(RecordPublic, r.json(), "upload")
        return Uploaded(record, created=r.status_code == 201, content_digest=digest)

    def records(self, *, page_size: int = 1000) -> list[RecordPublic]:
        """My records (as patient) and my uploads (as centre)."""
        out: list[RecordPublic] = []
        offset = 0
        while True:
            r = self._req("GET", "/v1/records", params={"limit": page_size, "offset": offset})
            page: RecordsPublic = _parse(RecordsPublic, r.json(), "records")
            out += page.records
            if len(page.records) < page_size:
                return out
            offset += page_size

    def fetch_envelope(self, record_id: str, purpose: str | int) -> Envelope:
        r = self._req("GET", f"/v1/records/{record_id}", params={"purpose": str(purpose)})
        try:
            return Envelope.model_validate_json(r.content)
        except ValidationError as exc:
            raise VerificationFailed(
                f"the envelope of {record_id} is malformed: {exc.errors()[0]['msg']}",
                hint="nothing was written; report the gateway to its operator",
            ) from None

    def open_record(self, record_id: str, purpose: str | int, *, expected_digest: bytes) -> Opened:
        """Fetch and open a record; its sha256 must equal ``expected_digest`` (from the chain)."""
        envelope = self.fetch_envelope(record_id, purpose)
        return Opened(
            open_checked(envelope, self.account, expected_digest=expected_digest), envelope
        )

    # -- consent -----------------------------------------------------------------------------

    def relay(
        self, request: GrantRequest | RevokeRequest, *, domain: Domain, signer: LocalAccount
    ) -> RelayResult:
        """Sign ``request`` (EIP-712, by ``signer``) and have the gateway relay it (gasless)."""
        signature = sign(signer, domain, request)
        body = {
            "action": "grant" if isinstance(request, GrantRequest) else "revoke",
            "request": {
                k: ("0x" + v.hex() if isinstance(v, bytes) else v)
                for k, v in request.message().items()
            },
            "signature": "0x" + signature.hex(),
        }
        r = self._req("POST", "/v1/consents", json=body, ok=(200, 202))
        # 202: sent, not mined within the gateway's receipt wait; its outcome comes later.
        deadline, delay = time.monotonic() + _RELAY_WAIT_S, 0.2
        while r.status_code == 202:
            if time.monotonic() > deadline:
                raise ClientError(
                    f"the relayed transaction {r.json().get('tx_hash')} was not mined in "
                    f"{_RELAY_WAIT_S:.0f} s",
                    hint="check later with `consent consents`",
                )
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
            r = self._req("GET", str(r.json()["status_url"]), ok=(200, 202))
        result: RelayResult = _parse(RelayResult, r.json(), "relay")
        return result

    def consents(self) -> ConsentsPublic:
        consents: ConsentsPublic = _parse(
            ConsentsPublic, self._req("GET", "/v1/consents").json(), "consents"
        )
        return consents

    # -- access log --------------------------------------------------------------------------

    def access_log(self, *, page_size: int = 1000) -> AccessLogPage:
        """Every access-log entry about my records (all pages), with the latest checkpoint."""
        entries: list[AccessLogEntryPublic] = []
        after = -1
        while True:
            r = self._req(
                "GET", "/v1/access-log/entries", params={"after": after, "limit": page_size}
            )
            page: AccessLogPage = _parse(AccessLogPage, r.json(), "access-log entries")
            entries += page.entries
            if len(page.entries) < page_size:
                return AccessLogPage(
                    checkpoint=page.checkpoint, log_size=page.log_size, entries=entries
                )
            after = page.entries[-1].index

    def who_read(self, registry: ConsentRegistry) -> WhoRead:
        """My access-log entries, each verified, with the checkpoint tied to the chain."""
        return verify_access_log(self.access_log(), registry=registry, gateway=self.gateway)


# ------------------------------------------------------------------------------ verification


def open_checked(envelope: Envelope, account: LocalAccount, *, expected_digest: bytes) -> bytes:
    """Open ``envelope`` with ``account``'s key; sha256 must equal ``expected_digest``."""
    try:
        return open_envelope(
            envelope, private_key=bytes(account.key), expected_digest=expected_digest
        )
    except EnvelopeError as exc:
        raise VerificationFailed(
            f"record {envelope.record_id} failed verification: {exc}",
            hint="nothing was written; the ciphertext or key was altered in transit or at rest",
        ) from None


def _hex(value: str) -> bytes:
    return bytes.fromhex(value[2:] if value.startswith("0x") else value)


def verify_access_log(
    page: AccessLogPage, *, registry: ConsentRegistry, gateway: Gateway
) -> WhoRead:
    """Verify every entry of ``page`` and anchor its checkpoint on-chain.

    - leaf: ``leaf_hash == SHA-256(0x00 || leaf)`` and the parsed entry is the leaf;
    - inclusion: the RFC 9162 proof leads from the leaf to the checkpoint's root;
    - anchoring: the checkpoint's gateway holds ``GATEWAY_ROLE``, and the checkpoint is the root
      it anchored on-chain, or (when it anchored again since) a consistency proof shows the
      checkpoint is a prefix of the anchored tree.
    """
    cp = page.checkpoint
    anchored, reason, anchored_size = False, "no checkpoint anchored yet", 0
    if cp is not None:
        anchored, reason, anchored_size = _anchor(cp, registry=registry, gateway=gateway)
    proofs: list[EntryProof] = []
    for e in page.entries:
        leaf = e.leaf.encode()
        leaf_ok = "0x" + leaf_hash(leaf).hex() == e.leaf_hash.lower()
        try:
            leaf_ok = leaf_ok and json.loads(leaf) == dict(e.entry)
        except ValueError:
            leaf_ok = False
        included: bool | None = None
        if cp is not None and e.inclusion_proof is not None and e.index < cp.tree_size:
            included = verify_inclusion(
                leaf_hash=leaf_hash(leaf),
                index=e.index,
                tree_size=cp.tree_size,
                proof=[_hex(h) for h in e.inclusion_proof],
                root=_hex(cp.root_hash),
            )
        elif cp is not None and e.index < cp.tree_size:
            included = False  # covered by the checkpoint but no proof given
        proofs.append(EntryProof(e.index, e.entry, e.leaf, leaf_ok, included))
    return WhoRead(cp, anchored_size, anchored, reason, page.log_size, proofs)


def _anchor(
    cp: CheckpointPublic, *, registry: ConsentRegistry, gateway: Gateway
) -> tuple[bool, str, int]:
    if not registry.has_role(GATEWAY_ROLE, cp.gateway):
        return False, f"{cp.gateway} does not hold GATEWAY_ROLE on-chain", 0
    onchain = registry.checkpoint_of(cp.gateway)
    root = _hex(cp.root_hash)
    if onchain.tree_size == cp.tree_size:
        if onchain.root_hash == root:
            return True, f"root anchored on-chain at tree size {cp.tree_size}", onchain.tree_size
        return False, "the checkpoint's root is not the root anchored on-chain", onchain.tree_size
    if onchain.tree_size < cp.tree_size:
        return False, "the checkpoint is larger than anything anchored on-chain", onchain.tree_size
    proof = gateway.consistency(cp.tree_size, onchain.tree_size)
    ok = verify_consistency(
        old_size=cp.tree_size,
        new_size=onchain.tree_size,
        old_root=root,
        new_root=onchain.root_hash,
        proof=[_hex(h) for h in proof.proof],
    )
    if ok:
        return (
            True,
            f"consistent with the root anchored on-chain at tree size {onchain.tree_size}",
            onchain.tree_size,
        )
    return False, "no valid consistency proof to the root anchored on-chain", onchain.tree_size


def read_file(path: Path) -> bytes:
    """A file's bytes, with a readable error."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ClientError(f"cannot read {path}: {exc.strerror}", hint="check the path") from None
