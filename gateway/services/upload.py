"""Record upload: encrypt, pin and register a centre's attested record, all or nothing.

An upload is all or nothing: a ``pending`` row reserves the record id and names the CID
(computed locally), the ciphertext is pinned, the signed ``registerRecord``'s hash is stored
with the row *before* it is sent; a failure unpins and deletes the row unless that
transaction was mined (then the record is live) or may still be. A crash mid-upload leaves a
row that ``recover_pending`` (:mod:`gateway.services.recovery`) resolves from the chain (at
start, and on a retry once the row is older than the grace period).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError

from gateway.errors import (
    AttestationInvalid,
    ChainUnavailable,
    Conflict,
    Forbidden,
    InvalidRequest,
    PayloadTooLarge,
    ServiceUnavailable,
    UpstreamFailed,
)
from gateway.ipfs import compute_cid
from gateway.services.auth import Principal
from gateway.services.recovery import RecordRecovery
from gateway.services.rows import (
    BYTES32_RE,
    parse_address,
    parse_category,
    parse_signature,
    record_public,
)
from gateway.storage.engine import db_guard
from gateway.storage.tables import RECORD, Record
from ledger.protocol import envelope as env
from ledger.protocol.consent_types import CENTRE_ROLE
from ledger.protocol.eip712 import RecordAttestation
from ledger.protocol.eip712 import record_id as attestation_record_id
from ledger.protocol.eip712 import recover_signer as recover_typed_signer
from ledger.protocol.errors import DomainError
from ledger.protocol.wire import RecordPublic

__all__ = ["RecordUploads"]

log = logging.getLogger("gateway")

#: secp256k1's group order; OpenZeppelin's ECDSA refuses s above half of it (malleability).
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class RecordUploads(RecordRecovery):
    """Upload of attested records (and the reservation that makes it crash-safe)."""

    def upload(
        self,
        principal: Principal,
        *,
        data: bytes,
        patient: str,
        category: str,
        issued_at: int,
        signature: str,
        salt: str,
        content_digest: str | None = None,
    ) -> tuple[RecordPublic, bool]:
        """Encrypt, pin and register a centre's attested record; ``(record, created)``.

        The attested digest is ``sha256(salt || data)``; the salt goes into the encrypted blob
        (``ledger.protocol.envelope``) and nowhere else.

        Retrying the same attestation returns the existing record with ``created=False``.
        """
        if len(data) > self.max_upload_bytes:
            raise PayloadTooLarge(limit=self.max_upload_bytes)
        patient_addr = parse_address(patient, what="patient")
        if not 0 <= issued_at < 2**64:
            raise InvalidRequest("issued_at must be a uint64 (UNIX seconds)", field="issued_at")
        sig = parse_signature(signature)
        self._check_signature_s(principal, sig)
        if not BYTES32_RE.fullmatch(salt):
            raise InvalidRequest("salt must be 32 bytes, 0x hex", field="salt")
        salt_bytes = bytes.fromhex(salt[2:])
        digest = env.salted_digest(salt_bytes, data)
        if content_digest is not None and content_digest.lower() != "0x" + digest.hex():
            raise InvalidRequest(
                "content_digest is not sha256(salt || the uploaded file)",
                expected="0x" + digest.hex(),
                actual=content_digest,
            )
        attestation = RecordAttestation(
            patient=patient_addr,
            category=parse_category(category),
            content_digest=digest,
            issued_at=issued_at,
        )
        rid, existing = self._check_attested(principal, attestation, sig)
        if existing is not None:
            return existing, False
        blob, data_key = env.encrypt_record(
            data, record_id=rid, patient=patient_addr, salt=salt_bytes
        )
        wrapped = env.wrap_key(data_key, self._kek, record_id=rid)
        del data_key
        return self._pin_and_register(
            principal, attestation, sig, rid, blob=blob, key_material=wrapped
        )

    def _check_signature_s(self, principal: Principal, sig: bytes) -> None:
        if int.from_bytes(sig[32:64], "big") > _SECP256K1_N // 2:
            # eth-account recovers a high-s signature, the registry's ECDSA reverts on it: the
            # relayer would pay for the revert. Refused before anything is sent.
            self.metrics.uploads.labels("refused").inc()
            raise AttestationInvalid(
                expected=principal.address,
                recovered=None,
                reason="high-s signature (s > secp256k1n/2), which the registry refuses; "
                "sign again with a signer that normalises s (EIP-2)",
            )

    def _check_attested(
        self, principal: Principal, attestation: RecordAttestation, sig: bytes
    ) -> tuple[bytes, RecordPublic | None]:
        """The record id, after checking the attestation is the signed-in centre's; the
        existing record instead when this attestation was uploaded before (a retry)."""
        domain = self.chain.domain
        rid = bytes(attestation_record_id(domain, attestation))
        rid_hex = "0x" + rid.hex()
        try:
            signer = recover_typed_signer(domain, attestation, sig)
        except Exception:
            raise AttestationInvalid(
                expected=principal.address, recovered=None, reason="signature does not recover"
            ) from None
        if signer != principal.address:
            self.metrics.uploads.labels("refused").inc()
            log.warning(
                "attestation refused: signer=%s session=%s record=%s",
                signer,
                principal.address,
                rid_hex,
            )
            raise AttestationInvalid(
                expected=principal.address,
                recovered=signer,
                reason="the attestation was not signed by the signed-in centre",
            )
        existing = self._row(rid_hex)
        if existing is not None:
            return rid, self._existing(existing)
        is_centre = self.registrar.has_role_cached(CENTRE_ROLE, principal.address)
        if not is_centre:
            raise Forbidden(account=principal.address, reason="not a checkup centre (CENTRE_ROLE)")
        return rid, None

    def _pin_and_register(
        self,
        principal: Principal,
        attestation: RecordAttestation,
        sig: bytes,
        rid: bytes,
        *,
        blob: bytes,
        key_material: bytes,
        manifest: bytes | None = None,
    ) -> tuple[RecordPublic, bool]:
        """Reserve, pin, register and make live, all or nothing (see the module notes).

        Single-gateway mode: ``key_material`` is the wrapped data key and the registered CID is
        the blob's. Threshold custody: ``key_material`` is empty (this gateway holds no key),
        ``manifest`` is the custody manifest's bytes, and the registered CID is the manifest's
        (which names the blob's)."""
        rid_hex = "0x" + rid.hex()
        blob_cid = str(compute_cid(blob, chunk_size=self.blobs.chunk_size))
        # The CID is known before anything leaves the process, and stored with the pending row:
        # a crash at any later moment leaves a row that names everything it may have reached.
        cid = (
            blob_cid
            if manifest is None
            else str(compute_cid(manifest, chunk_size=self.blobs.chunk_size))
        )
        row_values: dict[str, Any] = {
            "record_id": rid_hex,
            "patient": attestation.patient.lower(),
            "centre": principal.address.lower(),
            "category": "0x" + attestation.category.hex(),
            "content_digest": "0x" + attestation.content_digest.hex(),
            "issued_at": attestation.issued_at,
            "cid": cid,
            "size": len(blob),
            "blob_sha256": "0x" + hashlib.sha256(blob).hexdigest(),
            "wrapped_key": key_material,
            "status": "pending",
        }
        existing_after = self._reserve(rid_hex, row_values)
        if existing_after is not None:
            return self._existing(existing_after), False
        created_at = float(row_values["created_at"])  # set by _reserve
        pinned: list[str] = []
        try:
            for content, expected in ((blob, blob_cid), (manifest, cid)):
                if content is None or (pinned and expected == pinned[-1]):
                    continue
                added = str(self.blobs.add(content, pin=True))
                if added != expected:  # add() checks the node's CID against the same computation
                    raise UpstreamFailed("the IPFS node stored it under another CID", cid=added)
                pinned.append(added)
            if manifest is not None:
                self._keep_manifest(rid_hex, attestation.patient, cid, manifest)
            registered = self.registrar.register(
                attestation,
                sig,
                cid,
                record_id=rid,
                on_signed=lambda tx_hash, previous: self._mark_sent(
                    rid_hex, cid, created_at, tx_hash, previous
                ),
                on_unsent=lambda tx_hash: self._mark_unsent(rid_hex, tx_hash),
            )
            with db_guard(), self._engine.begin() as conn:
                conn.execute(
                    update(RECORD)
                    .where(RECORD.c.record_id == rid_hex, RECORD.c.cid == cid)
                    .values(
                        status="live",
                        tx_hash=registered.tx_hash,
                        block_number=registered.block_number,
                    )
                )
        except BaseException as exc:
            outcome = self._abandon(rid_hex, cid)
            if outcome != "live" and manifest is not None and blob_cid in pinned:
                self._unpin_quietly(blob_cid)  # the manifest's blob; the row names the manifest
            self.metrics.uploads.labels("failed").inc()
            log.warning("upload of %s failed (%s): %s", rid_hex, outcome, type(exc).__name__)
            if isinstance(exc, ChainUnavailable):
                self.metrics.chain_errors.inc()
            raise
        self.metrics.uploads.labels("created").inc()
        log.info("record registered id=%s cid=%s tx=%s", rid_hex, cid, registered.tx_hash)
        row = self._row(rid_hex)
        if row is None:  # made live above; only a database restored meanwhile loses it
            raise Conflict("the uploaded record's row is gone; retry", record_id=rid_hex)
        return record_public(row), True

    def _keep_manifest(self, rid_hex: str, patient: str, cid: str, manifest: bytes) -> None:
        """Overridden by the custody service (stores the manifest beside the row)."""

    def _unpin_quietly(self, cid: str) -> None:
        try:
            self.blobs.pin_rm(cid)
        except Exception as exc:
            log.warning("could not unpin %s: %s", cid, type(exc).__name__)

    def _existing(self, row: Record) -> RecordPublic:
        return record_public(row)

    def _reserve(self, rid_hex: str, values: dict[str, Any]) -> Record | None:
        """Insert the pending row; a live row of the same record if one exists (a retry)."""
        for _ in range(3):
            values["created_at"] = self._clock()
            try:
                with db_guard(), self._engine.begin() as conn:
                    conn.execute(insert(RECORD).values(**values))
                return None
            except IntegrityError:
                existing = self._row(rid_hex, include_pending=True)
            if existing is None:
                continue  # rolled back meanwhile: try again
            if existing.status == "live":
                return existing
            if existing.status == "pending" and (
                self._clock() - existing.created_at < self.pending_grace_s
            ):
                break
            # Older than any upload may take: its uploader died. Resolve it, then look again.
            try:
                self._recover_row(existing)
            except DomainError as exc:
                log.warning("could not resolve pending upload %s: %s", rid_hex, exc.code)
                break
            again = self._row(rid_hex, include_pending=True)
            if again is not None and again.status == "live":
                return again
            if again is not None:
                break
        raise Conflict(
            "an upload of this attestation is in progress; retry shortly", record_id=rid_hex
        )

    def _mark_sent(
        self, rid_hex: str, cid: str, created_at: float, tx_hash: str, previous: str | None
    ) -> None:
        """Store the signed registration's hash before it is sent (or refuse to send)."""
        if self._clock() - created_at > self.pending_grace_s / 2:
            raise ServiceUnavailable(
                "the upload took too long to reach the chain; retry", record_id=rid_hex
            )
        table = RECORD
        same = table.c.tx_hash.is_(None) if previous is None else table.c.tx_hash == previous
        with db_guard(), self._engine.begin() as conn:
            done = conn.execute(
                update(table)
                .where(
                    table.c.record_id == rid_hex,
                    table.c.status == "pending",
                    table.c.cid == cid,
                    same,
                )
                .values(tx_hash=tx_hash)
            ).rowcount
        if done != 1:
            raise Conflict("the pending upload was reclaimed; retry", record_id=rid_hex)

    def _mark_unsent(self, rid_hex: str, tx_hash: str) -> None:
        """Forget a stored hash whose transaction certainly never reached the node."""
        table = RECORD
        with db_guard(), self._engine.begin() as conn:
            conn.execute(
                update(table)
                .where(
                    table.c.record_id == rid_hex,
                    table.c.status == "pending",
                    table.c.tx_hash == tx_hash,
                )
                .values(tx_hash=None)
            )

    def _abandon(self, rid_hex: str, cid: str) -> str:
        """After a failed upload: resolve its row now (roll back unless a transaction that may
        still be mined, or was, holds it)."""
        try:
            row = self._row(rid_hex, include_pending=True)
            if row is None or row.cid != cid:
                return "gone"
            if row.status == "pending" and row.tx_hash is None:
                return self._roll_back_row(row)  # nothing was sent: no need to ask the chain
            return self._recover_row(row)
        except Exception as exc:  # the sweep at the next start, or a retry, finishes it
            log.error("could not resolve failed upload %s: %s", rid_hex, type(exc).__name__)
            return "left pending"
