"""Threshold custody: the centre-encrypted upload and the consent-checked release of one share.

Under threshold custody no gateway holds a record's data key (``ledger.protocol.custody``):

- Upload. The centre's client encrypts, splits the data key t-of-n across the federation the
  registry lists and seals each share to its gateway's custody key; this gateway receives only
  ciphertext and the custody manifest. It checks the manifest is of the federation in force
  (its custody set), that the ciphertext is the one the manifest names (CID, size, sha256) and
  that the centre's attestation binds both (custody set and share commitments), then pins both
  and registers the manifest's CID, all or nothing (``RecordUploads._pin_and_register``).
- Release. Each member decides alone, on its own chain view, exactly as a single-gateway fetch
  decides (``RecordFetches._decide``): the decision is appended to this gateway's access log
  before the answer, and an allowed requester gets this gateway's share re-sealed to the public
  key its SIWE signature recovered to. A record uploaded through another member is found from
  the chain: ``recordOf`` for its patient and the ``RecordRegistered`` log for the manifest's
  CID, the manifest then read from IPFS, checked against that CID, and kept.
- The ciphertext and the manifest are public bytes (they are on IPFS): any signed-in caller may
  read them here; they open nothing without t shares.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from collections import OrderedDict

from eth_utils.address import to_checksum_address
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from gateway.errors import (
    BlobTampered,
    Conflict,
    ContractRejected,
    InvalidRequest,
    PayloadTooLarge,
    RecordNotFound,
    ServiceUnavailable,
)
from gateway.ipfs import IpfsError, IpfsUnavailable, verify_cid
from gateway.services.auth import Principal
from gateway.services.fetch import RecordFetches
from gateway.services.rows import parse_address, parse_category, parse_record_id, parse_signature
from gateway.services.upload import RecordUploads
from gateway.storage.engine import db_guard
from gateway.storage.tables import CUSTODY_MANIFEST
from ledger.chain.registry import Federation
from ledger.protocol import custody
from ledger.protocol import envelope as env
from ledger.protocol.contract_errors import UnknownRecord
from ledger.protocol.eip712 import RecordAttestation
from ledger.protocol.wire import CustodyBundlePublic, CustodyInfoPublic, RecordPublic, ShareRelease

__all__ = ["CIPHERTEXT_OVERHEAD", "MAX_MANIFEST_BYTES", "RecordCustody"]

log = logging.getLogger("gateway")

#: A manifest of 16 members is about 11 KB; anything far larger is not one.
MAX_MANIFEST_BYTES = custody.MAX_MANIFEST_SIZE
#: A record blob is its file plus the header, nonce, salt and tag (``ledger.protocol.envelope``).
CIPHERTEXT_OVERHEAD = 5 + 12 + 32 + 16


class RecordCustody(RecordUploads, RecordFetches):
    """Threshold-custody upload, manifest reads and share release (see the module notes)."""

    custody_key: bytes | None = None  # this gateway's custody private key (set by the app)
    _manifest_cache: _ManifestCache | None = None

    # -- this gateway's custody identity -------------------------------------------------------

    def custody_info(self) -> CustodyInfoPublic:
        """This gateway's account, custody public key, and the federation in force."""
        fed = self.federation()
        key = custody.custody_public_key(self.custody_key) if self.custody_key else None
        gateway = self.chain.gateway_account.address
        members = [m.gateway for m in fed.members]
        return CustodyInfoPublic(
            gateway=gateway,
            custody_key="0x" + key.hex() if key else None,
            member_index=members.index(gateway) if gateway in members else None,
            threshold=fed.threshold,
            custody_set="0x" + fed.custody_set.hex(),
            members=members,
        )

    def federation(self) -> Federation:
        return self.chain.call(lambda registry: registry.federation())

    # -- upload ---------------------------------------------------------------------------------

    def upload_sealed(
        self,
        principal: Principal,
        *,
        ciphertext: bytes,
        manifest: bytes,
        patient: str,
        category: str,
        issued_at: int,
        content_digest: str,
        signature: str,
    ) -> tuple[RecordPublic, bool]:
        """Pin and register a record the centre encrypted and split; ``(record, created)``."""
        if len(ciphertext) > self.max_upload_bytes + CIPHERTEXT_OVERHEAD:
            raise PayloadTooLarge(limit=self.max_upload_bytes + CIPHERTEXT_OVERHEAD)
        if len(manifest) > MAX_MANIFEST_BYTES:
            raise PayloadTooLarge(limit=MAX_MANIFEST_BYTES)
        patient_addr = parse_address(patient, what="patient")
        if not 0 <= issued_at < 2**64:
            raise InvalidRequest("issued_at must be a uint64 (UNIX seconds)", field="issued_at")
        digest = _bytes32(content_digest, "content_digest")
        sig = parse_signature(signature)
        self._check_signature_s(principal, sig)
        try:
            parsed = custody.CustodyManifest.parse(manifest)
        except custody.CustodyError as exc:
            raise InvalidRequest(f"custody manifest refused: {exc}", field="manifest") from None
        fed = self.federation()
        if fed.size == 0:
            raise InvalidRequest(
                "no custody federation is set on the registry: upload through the "
                "single-gateway endpoint (POST /v1/records)",
                field="manifest",
            )
        custody_set = parsed.custody_set()
        if custody_set != fed.custody_set:
            raise InvalidRequest(
                "the manifest's custody set is not the federation in force; read "
                "federation() from the registry and split again",
                field="manifest",
                expected="0x" + fed.custody_set.hex(),
                actual="0x" + custody_set.hex(),
            )
        blob_sha = "0x" + hashlib.sha256(ciphertext).hexdigest()
        if (
            len(ciphertext) != parsed.blob_size
            or blob_sha != parsed.blob_sha256.lower()
            or not verify_cid(parsed.blob_cid, ciphertext)
        ):
            raise InvalidRequest(
                "the ciphertext is not the one the manifest names (CID, size or sha256)",
                field="ciphertext",
            )
        attestation = RecordAttestation(
            patient=patient_addr,
            category=parse_category(category),
            content_digest=digest,
            issued_at=issued_at,
            custody_set=custody_set,
            share_commitments=parsed.shares_commitment(),
        )
        rid, existing = self._check_attested(principal, attestation, sig)
        if existing is not None:
            return existing, False
        return self._pin_and_register(
            principal, attestation, sig, rid, blob=ciphertext, key_material=b"", manifest=manifest
        )

    def _keep_manifest(self, rid_hex: str, patient: str, cid: str, manifest: bytes) -> None:
        self._store_manifest(rid_hex, patient, cid, manifest)

    def _store_manifest(self, rid_hex: str, patient: str, cid: str, manifest: bytes) -> None:
        try:
            with db_guard(), self._engine.begin() as conn:
                conn.execute(
                    CUSTODY_MANIFEST.insert().values(
                        record_id=rid_hex, patient=patient.lower(), cid=cid, manifest=manifest
                    )
                )
        except IntegrityError:
            pass  # kept already (a retry, or another request of the same record)

    # -- reads ----------------------------------------------------------------------------------

    def custody_record(self, rid_hex: str) -> tuple[str, str, custody.CustodyManifest, bytes]:
        """``(patient, manifest_cid, manifest, manifest_bytes)``: kept, else from the chain.
        A record's manifest never changes (the record id binds it): parsed ones are cached."""
        cache = self._manifest_cache
        if cache is None:
            cache = self._manifest_cache = _ManifestCache()
        hit = cache.get(rid_hex)
        if hit is not None:
            return hit
        found = self._custody_record(rid_hex)
        cache.put(rid_hex, found)
        return found

    def _custody_record(self, rid_hex: str) -> tuple[str, str, custody.CustodyManifest, bytes]:
        with db_guard(), self._engine.connect() as conn:
            found = (
                conn.execute(
                    select(CUSTODY_MANIFEST).where(CUSTODY_MANIFEST.c.record_id == rid_hex)
                )
                .mappings()
                .first()
            )
        if found is not None and found["patient"]:
            raw = bytes(found["manifest"])
            return str(found["patient"]), str(found["cid"]), custody.CustodyManifest.parse(raw), raw
        rid = bytes.fromhex(rid_hex[2:])
        try:
            record = self.chain.call(lambda registry: registry.record_of(rid))
        except ContractRejected as exc:
            if exc.error == UnknownRecord.__name__:
                raise RecordNotFound(record_id=rid_hex) from None
            raise
        registration = self.registrar.registration_of(rid)
        if registration is None:
            raise RecordNotFound(record_id=rid_hex)
        cid = registration[0]
        try:
            raw = self.blobs.cat(cid)
        except IpfsUnavailable:
            self.metrics.ipfs_errors.inc()
            raise
        except IpfsError as exc:
            raise BlobTampered(record_id=rid_hex, cid=cid, reason=exc.code) from exc
        if not verify_cid(cid, raw):
            raise BlobTampered(record_id=rid_hex, cid=cid, reason="does not match its CID")
        if raw.startswith(env.RECORD_MAGIC):  # a record blob: registered in the single-gateway mode
            raise Conflict(
                "this record is not under threshold custody: its uploading gateway holds its "
                "key; fetch it there (GET /v1/records/{id})",
                record_id=rid_hex,
            )
        try:
            parsed = custody.CustodyManifest.parse(raw)
        except custody.CustodyError:
            raise BlobTampered(
                record_id=rid_hex, cid=cid, reason="the registered CID holds no valid manifest"
            ) from None
        self._store_manifest(rid_hex, record.patient, cid, raw)
        return record.patient.lower(), cid, parsed, raw

    def custody_bundle(self, principal: Principal, record_id: str) -> CustodyBundlePublic:
        """The manifest and the ciphertext (public bytes; they open nothing without t shares)."""
        del principal  # signed in: the read is rate-limited per session, not consent-checked
        rid_hex = "0x" + parse_record_id(record_id).hex()
        patient, cid, parsed, raw = self.custody_record(rid_hex)
        blob = self._blob_cache.get(parsed.blob_cid)
        if blob is None:
            try:
                blob = self.blobs.cat(parsed.blob_cid)
            except IpfsUnavailable:
                self.metrics.ipfs_errors.inc()
                raise
            except IpfsError as exc:
                raise BlobTampered(
                    record_id=rid_hex, cid=parsed.blob_cid, reason=exc.code
                ) from exc
            if "0x" + hashlib.sha256(blob).hexdigest() != parsed.blob_sha256.lower():
                raise BlobTampered(
                    record_id=rid_hex, cid=parsed.blob_cid, reason="does not match its manifest"
                )
            self._blob_cache.put(parsed.blob_cid, blob)
        encoded = self._blob_cache.encoded(parsed.blob_cid) or base64.b64encode(blob)
        return CustodyBundlePublic(
            record_id=rid_hex,
            patient=to_checksum_address(patient),
            cid=cid,
            manifest=base64.b64encode(raw).decode(),
            ciphertext=encoded.decode(),
        )

    # -- release --------------------------------------------------------------------------------

    def release_share(self, principal: Principal, record_id: str, purpose: int) -> ShareRelease:
        """This gateway's share of the record, re-sealed to the caller, if the chain allows it."""
        rid = parse_record_id(record_id)
        rid_hex = "0x" + rid.hex()
        patient_lower, _cid, parsed, _raw = self.custody_record(rid_hex)
        patient = to_checksum_address(patient_lower)
        gateway = self.chain.gateway_account.address
        try:
            index = parsed.index_of(gateway)
        except custody.CustodyError:
            raise ServiceUnavailable(
                "this gateway holds no share of this record (not in its custody set)",
                record_id=rid_hex,
                gateway=gateway,
            ) from None
        block, answer, decide = self._decide(principal, rid, rid_hex, patient, purpose)
        if self.custody_key is None:
            decide(False, "custody_key_missing", block, answer)
            raise ServiceUnavailable("this gateway has no custody key configured")
        try:
            share = custody.unseal_share(parsed, index, self.custody_key)
            sealed = custody.reseal_share(share, principal.public_key)
        except custody.CustodyError as exc:
            log.error("cannot release share of %s: %s", rid_hex, exc.code)
            decide(False, "share_unavailable", block, answer)
            raise ServiceUnavailable(
                "this gateway cannot open its share of this record (custody key mismatch)",
                record_id=rid_hex,
            ) from None
        del share
        decide(True, "owner" if principal.address == patient else "consent", block, answer)
        return ShareRelease(
            record_id=rid_hex,
            gateway=gateway,
            index=index,
            sealed_share=base64.b64encode(sealed).decode(),
            block_number=block,
            event_count=answer.event_count,
            chain_time=answer.timestamp,
        )


class _ManifestCache:
    """The last ``size`` records' parsed manifests (immutable per record id)."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._items: OrderedDict[str, tuple[str, str, custody.CustodyManifest, bytes]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[str, str, custody.CustodyManifest, bytes] | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: str, item: tuple[str, str, custody.CustodyManifest, bytes]) -> None:
        with self._lock:
            self._items[key] = item
            while len(self._items) > self._size:
                self._items.popitem(last=False)


def _bytes32(value: str, what: str) -> bytes:
    text = value.strip()
    if len(text) != 66 or not text.startswith("0x"):
        raise InvalidRequest(f"{what} must be 32 bytes, 0x hex", field=what)
    try:
        return bytes.fromhex(text[2:])
    except ValueError:
        raise InvalidRequest(f"{what} must be 32 bytes, 0x hex", field=what) from None
