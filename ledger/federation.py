"""The federation client: a centre encrypts and splits on its own machine; a reader combines
t shares released by t gateways, each of which decided alone (see DESIGN.md, "Data flow").

Trust anchors come from the chain and the caller's own configuration, never from a gateway:
the federation (threshold, members, custody keys, URLs) is read with ``federation()``, the
record (patient, category, content digest, issue time) with ``recordOf``. A manifest served by
a gateway is accepted only if, with the chain's record fields, it hashes to the record id (the
EIP-712 attestation binds its custody set and share commitments), so a share that does not
match its commitment is named with its gateway, and the ciphertext must decrypt under the
combined key and hash to the chain's digest.

Upload: draw the data key and salt, split and seal (``ledger.protocol.custody``), attest with
the custody set and the share commitments, encrypt with the record id as associated data, then
send ciphertext and manifest to one gateway. The plaintext and the whole key stay here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address

from ledger.chain.registry import ConsentRegistry, Federation, Record
from ledger.client import (
    ClientError,
    Gateway,
    GatewayRefused,
    GatewayUnavailable,
    Session,
    VerificationFailed,
    _parse,
)
from ledger.protocol import custody
from ledger.protocol import envelope as env
from ledger.protocol.cid import compute_cid, verify_cid
from ledger.protocol.eip712 import RecordAttestation, record_id, sign
from ledger.protocol.wire import CustodyBundlePublic, RecordPublic, ShareRelease

__all__ = [
    "FederatedOpened",
    "FederatedUpload",
    "FederationUnavailable",
    "ReaderState",
    "Released",
    "fetch_federated",
    "upload_sealed",
]

#: The exit code of a fetch that could not gather ``threshold`` shares (nothing written).
EXIT_NOT_ENOUGH_SHARES = 5


class FederationUnavailable(ClientError):
    """Fewer than ``threshold`` gateways released a valid share: nothing is decrypted.

    Exit code 1 when consent is what is missing (so many gateways said ``consent_denied`` that
    ``threshold`` can no longer be reached), else 5: gateways down or lying."""

    def __init__(
        self,
        message: str,
        *,
        refusals: dict[str, str],
        bad: Sequence[str],
        denied: bool = False,
    ) -> None:
        answers = "; ".join(f"{gateway}: {why}" for gateway, why in refusals.items())
        if not denied and answers:
            message = f"{message} ({answers})"
        super().__init__(
            message,
            hint=(
                "ask the patient to grant it (`consent grant --to YOU ...`); nothing was written"
                if denied
                else "nothing was written; fewer than the threshold of gateways answered with "
                "a valid share (each answer is listed)"
            ),
            exit_code=1 if denied else EXIT_NOT_ENOUGH_SHARES,
        )
        self.refusals = refusals
        self.bad = list(bad)
        self.denied = denied


@dataclass(frozen=True)
class FederatedUpload:
    record: RecordPublic
    created: bool
    content_digest: bytes
    manifest: custody.CustodyManifest


@dataclass(frozen=True)
class Released:
    """One gateway's answer: its share release, or why it gave none."""

    gateway: str
    url: str
    release: ShareRelease | None = None
    refusal: str | None = None


@dataclass(frozen=True)
class FederatedOpened:
    plaintext: bytes
    record_id: str
    releases: list[Released] = field(default_factory=list)
    bad_gateways: list[str] = field(default_factory=list)


def _custody_members(fed: Federation) -> list[custody.CustodyMember]:
    return [custody.CustodyMember(m.gateway, m.custody_key) for m in fed.members]


def upload_sealed(
    session: Session,
    data: bytes,
    *,
    registry: ConsentRegistry,
    patient: str,
    category: bytes,
    issued_at: int | None = None,
    filename: str = "record",
    federation: Federation | None = None,
) -> FederatedUpload:
    """Encrypt and split ``data`` here, attest it, and upload ciphertext + manifest.

    ``federation``: the registry's ``federation()`` read once for a batch (``upload-dir``); a
    federation changed meanwhile makes the gateway refuse the upload (422), nothing is kept."""
    fed = registry.federation() if federation is None else federation
    if fed.size == 0:
        raise ClientError(
            "the registry lists no custody federation",
            hint="upload in single-gateway mode, or ask the registry admin to set the federation",
        )
    salt = env.new_salt()
    digest = env.salted_digest(salt, data)
    data_key = env.new_data_key()
    members = _custody_members(fed)
    sealed = custody.split_and_seal(data_key, threshold=fed.threshold, members=members)
    if sealed.custody_set() != fed.custody_set:  # our hash of the chain's members vs the chain's
        raise VerificationFailed("the federation's custody set does not hash as documented")
    attestation = RecordAttestation(
        patient=to_checksum_address(patient),
        category=category,
        content_digest=digest,
        issued_at=int(time.time()) if issued_at is None else issued_at,
        custody_set=sealed.custody_set(),
        share_commitments=sealed.shares_commitment(),
    )
    domain = registry.domain
    rid = bytes(record_id(domain, attestation))
    blob, _ = env.encrypt_record(
        data, record_id=rid, patient=attestation.patient, salt=salt, data_key=data_key
    )
    manifest = sealed.manifest(
        blob_cid=str(compute_cid(blob)),
        blob_size=len(blob),
        blob_sha256=hashlib.sha256(blob).digest(),
    )
    del data_key
    raw = manifest.to_bytes()
    signature = sign(session.account, domain, attestation)
    r = session._req(
        "POST",
        "/v1/custody/records",
        ok=(200, 201),
        data={
            "patient": attestation.patient,
            "category": "0x" + attestation.category.hex(),
            "issued_at": str(attestation.issued_at),
            "content_digest": "0x" + digest.hex(),
            "signature": "0x" + signature.hex(),
        },
        files={
            "ciphertext": (filename, blob, "application/octet-stream"),
            "manifest": ("manifest.json", raw, "application/json"),
        },
    )
    record: RecordPublic = _parse(RecordPublic, r.json(), "upload")
    if record.record_id.lower() != "0x" + rid.hex():
        raise VerificationFailed("the gateway registered another record id than attested")
    return FederatedUpload(record, r.status_code == 201, digest, manifest)


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise VerificationFailed(f"the {what} is not base64") from None


@dataclass
class ReaderState:
    """What a reader keeps across fetches: its sign-ins (gateway address -> session), the
    federation it read from the chain (where to reach the members), and the chain's record
    fields it read (immutable once registered). The caller owns it and closes the sessions."""

    sessions: dict[str, Session] = field(default_factory=dict)
    federation: Federation | None = None
    records: dict[bytes, Record] = field(default_factory=dict)
    _pool: ThreadPoolExecutor | None = None

    def pool(self, workers: int) -> ThreadPoolExecutor:
        """The threads a fetch asks the gateways on (kept: starting threads per fetch costs
        more than the requests' own client work)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=max(workers, 2))
        return self._pool

    def close(self) -> None:
        for s in self.sessions.values():
            s.gateway.close()
        self.sessions.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _checked_bundle(
    bundle: CustodyBundlePublic, *, rid: bytes, registry: ConsentRegistry, state: ReaderState
) -> tuple[custody.CustodyManifest, bytes, str, bytes]:
    """``(manifest, ciphertext, patient, digest)`` once both match what the chain says."""
    record = state.records.get(rid)
    if record is None:
        record = state.records[rid] = registry.record_of(rid)
    try:
        manifest = custody.CustodyManifest.parse(_b64(bundle.manifest, "manifest"))
    except custody.CustodyError as exc:
        raise VerificationFailed(f"the custody manifest is malformed: {exc}") from None
    attestation = RecordAttestation(
        patient=record.patient,
        category=record.category,
        content_digest=record.content_digest,
        issued_at=record.issued_at,
        custody_set=manifest.custody_set(),
        share_commitments=manifest.shares_commitment(),
    )
    if bytes(record_id(registry.domain, attestation)) != rid:
        raise VerificationFailed("the custody manifest is not the one the centre attested")
    blob = _b64(bundle.ciphertext, "ciphertext")
    if hashlib.sha256(blob).digest() != bytes.fromhex(manifest.blob_sha256[2:]) or not verify_cid(
        manifest.blob_cid, blob
    ):
        raise VerificationFailed("the ciphertext is not the one the manifest names")
    return manifest, blob, record.patient, record.content_digest


GatewayOpener = Callable[[str], Gateway]


def fetch_federated(
    account: LocalAccount,
    record: str,
    *,
    registry: ConsentRegistry,
    purpose: str | int,
    open_gateway: GatewayOpener | None = None,
    state: ReaderState | None = None,
) -> FederatedOpened:
    """Gather ``threshold`` valid shares from the record's custodians, combine, decrypt, check.

    The custodians and their URLs come from the chain (the record's manifest names who holds
    which share; ``federation()`` where to reach them). Each gateway is asked once, in share
    order, until ``threshold`` valid shares are in: one down or lying costs one more request.

    ``state`` keeps sign-ins, the federation and the record fields across fetches (the caller
    owns it and closes it), so a reader signs in once per gateway and session.
    """
    rid = bytes.fromhex(record.removeprefix("0x"))
    open_gateway = open_gateway or Gateway
    owned = state is None
    state = ReaderState() if state is None else state
    if state.federation is None:
        state.federation = registry.federation()
    fed = state.federation
    urls: dict[str, str] = {str(m.gateway): m.url for m in fed.members}
    sessions = state.sessions
    lock = threading.Lock()
    refusals: dict[str, str] = {}
    denials: set[str] = set()

    def session_at(gateway: str) -> Session | None:
        with lock:
            if gateway in sessions:
                return sessions[gateway]
        url = urls.get(gateway)
        if url is None:
            with lock:
                refusals[gateway] = "not in the federation the registry lists now (no URL)"
            return None
        client = open_gateway(url)
        try:
            session = client.login(account)
        except ClientError as exc:
            client.close()
            with lock:
                refusals[gateway] = exc.line()
            return None
        with lock:
            if gateway in sessions:  # signed in meanwhile by another thread of this fetch
                client.close()
                return sessions[gateway]
            sessions[gateway] = session
        return session

    def bundle() -> tuple[custody.CustodyManifest, bytes, str, bytes] | None:
        """The manifest and ciphertext, from the first member that serves valid ones."""
        for member in fed.members:
            s = session_at(member.gateway)
            if s is None:
                continue
            try:
                r = s._req("GET", f"/v1/custody/records/0x{rid.hex()}")
                got = _parse(CustodyBundlePublic, r.json(), "custody record")
                return _checked_bundle(got, rid=rid, registry=registry, state=state)
            except (GatewayRefused, GatewayUnavailable, VerificationFailed) as exc:
                with lock:
                    refusals[member.gateway] = exc.line()
        return None

    def ask(gateway: str) -> Released:
        """One gateway's release, opened (its share in ``Released.release``'s place)."""
        url = urls.get(gateway, "")
        s = session_at(gateway)
        if s is None:
            return Released(gateway, url, refusal=refusals.get(gateway, "unreachable"))
        try:
            r = s._req(
                "GET", f"/v1/custody/records/0x{rid.hex()}/share", params={"purpose": str(purpose)}
            )
            release = _parse(ShareRelease, r.json(), "share release")
            share = custody.open_released_share(
                _b64(release.sealed_share, "sealed share"), account.key
            )
        except (ClientError, custody.CustodyError) as exc:
            text = exc.line() if isinstance(exc, ClientError) else str(exc)
            with lock:
                if isinstance(exc, GatewayRefused) and exc.code == "consent_denied":
                    denials.add(gateway)
                refusals[gateway] = text
            return Released(gateway, url, refusal=text)
        opened[gateway] = share
        return Released(gateway, url, release)

    opened: dict[str, bytes] = {}
    try:
        # The manifest, and shares from the first `threshold` members, asked at the same time;
        # more members are asked only if some of those fail or lie.
        first = [str(m.gateway) for m in fed.members[: max(fed.threshold, 1)]]
        pool = state.pool(len(first) + 1)
        pending_bundle = pool.submit(bundle)
        answers = list(pool.map(ask, first))
        checked = pending_bundle.result()
        if checked is None:
            raise FederationUnavailable(
                "no gateway served this record's manifest and ciphertext",
                refusals=refusals,
                bad=[],
            )
        manifest, blob, patient, digest = checked
        custodians = [m.gateway for m in manifest.members]
        shares: dict[int, bytes] = {}
        bad: list[str] = []
        releases: list[Released] = []

        def take(answer: Released) -> None:
            releases.append(answer)
            share = opened.get(answer.gateway)
            if answer.release is None or share is None:
                return
            index = answer.release.index
            if answer.gateway not in custodians or custodians[index] != answer.gateway:
                bad.append(answer.gateway)
                refusals[answer.gateway] = "released a share under another member's index"
                return
            try:
                custody.verify_share(manifest, index, share)
            except custody.BadShare:
                bad.append(answer.gateway)
                refusals[answer.gateway] = "released a share that does not match its commitment"
                return
            shares[index] = share

        for answer in answers:
            take(answer)
        for gateway in custodians:
            if len(shares) >= manifest.threshold:
                break
            if gateway not in {a.gateway for a in releases}:
                take(ask(gateway))
        if len(shares) < manifest.threshold:
            denied = manifest.n - len(denials) < manifest.threshold
            raise FederationUnavailable(
                f"{account.address} holds no consent for record 0x{rid.hex()} (purpose "
                f"{purpose}): {len(denials)} of the {manifest.n} gateways refused, each deciding "
                f"on its own chain view"
                if denied
                else f"{len(shares)} of the {manifest.threshold} shares needed were released"
                + (f"; bad shares from {', '.join(bad)}" if bad else ""),
                refusals=refusals,
                bad=bad,
                denied=denied,
            )
        recovered = custody.recover_key(shares, manifest=manifest)
        salt, document = env.open_record(
            blob, data_key=recovered.data_key, record_id=rid, patient=patient
        )
        if env.salted_digest(salt, document) != bytes(digest):
            raise VerificationFailed("the decrypted record does not hash to the chain's digest")
        return FederatedOpened(document, "0x" + rid.hex(), releases, bad)
    finally:
        if owned:
            state.close()
