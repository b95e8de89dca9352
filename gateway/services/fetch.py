"""Consent-checked fetch of a record. Fail-closed rules (see DESIGN.md, threat model):

- With ``decision_source = "index"`` (the default) the decision comes from the verified
  consent index (:mod:`gateway.services.decisions`): taken at an index position no older than
  a chain head observed after the request arrived, and named by that position (block, event
  count, chain time) in the response and the leaf; a head older than ``max_head_age_s`` is
  ``chain_stale``, an index that refuses to serve (the node's logs contradict the event
  digest) or cannot catch up is ``chain_unavailable``. The rest of this list is the
  ``"chain"`` source.
- A fetch reads the latest block number first and asks ``accessDecision`` *at that block*; the
  block is named in the response and in the access-log leaf, together with the ledger position
  the node actually evaluated (the event digest's count and ``block.timestamp``, returned by the
  same ``eth_call``): a node may answer "at block N" from a state that already holds block
  N+1's transactions, and the event count is what lets an auditor re-evaluate exactly the state
  the decision was taken on. A chain error is a 503 and nothing is served. With
  ``max_head_age_s`` set, a decision whose evaluated chain time is older than that by the
  gateway's clock is a 503 ``chain_stale`` (logged as such): a node that lost its peers
  answers from old state, so revokes mined elsewhere would stay invisible.
- The ciphertext must match its CID (recomputed locally) and the sha256 kept at upload, must
  decrypt under the record's data key with the record id and patient as associated data, and the
  plaintext must hash to the registered ``contentDigest``; otherwise 502. The plaintext never
  leaves the process and is dropped at once.
- Every decision on a known record (allowed, denied, or refused for an operational reason) is
  appended to the access log *before* the response is sent; if the log cannot be written the
  request fails (503) and nothing is served.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import re
from dataclasses import dataclass

from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address

from gateway.errors import (
    BlobTampered,
    ChainStale,
    ChainUnavailable,
    Conflict,
    ConsentDenied,
    InvalidRequest,
    RecordNotFound,
)
from gateway.ipfs import IpfsError, IpfsUnavailable, verify_cid
from gateway.services.auth import Principal
from gateway.services.decisions import IndexDecisions, StaleHead
from gateway.services.rows import RecordStore, parse_record_id
from gateway.storage.engine import db_guard
from gateway.storage.tables import Record
from ledger.chain.registry import AccessDecision
from ledger.protocol import envelope as env
from ledger.protocol.access_leaf import Decision
from ledger.protocol.consent_types import Basis, Purpose

__all__ = ["RecordFetches", "parse_purpose"]

log = logging.getLogger("gateway")

_PURPOSE_ID_RE = re.compile(r"[0-9]{1,10}")  # ASCII digits only: "²".isdigit() is True


def parse_purpose(value: str | int) -> int:
    """A purpose id from its number (0..31) or name (``treatment``, ``research`` ...)."""
    if isinstance(value, int) or (isinstance(value, str) and _PURPOSE_ID_RE.fullmatch(value)):
        number = int(value)
        if not 0 <= number <= 31:
            raise InvalidRequest("purpose id out of range 0..31", purpose=value)
        return number
    try:
        return int(Purpose[str(value).strip().upper().replace("-", "_")])
    except (KeyError, UnicodeError):
        names = ", ".join(p.name.lower() for p in Purpose)
        raise InvalidRequest(
            f"unknown purpose {value!r}; use one of {names} or an id 0..31", purpose=value
        ) from None


class RecordFetches(RecordStore):
    """Consent-checked fetch, with the access log written for every decision."""

    #: Decisions from the verified consent index (``decision_source = "index"``); ``None``:
    #: one ``eth_blockNumber`` and one ``eth_call`` of ``accessDecision`` per decision.
    decisions: IndexDecisions | None = None

    def fetch_json(self, principal: Principal, record_id: str, purpose: int) -> bytes:
        """The record's envelope for ``principal`` as JSON (the API's response body), if the
        chain allows it at the latest block.

        The fields of ``ledger.protocol.envelope.Envelope``: the ciphertext's base64 is made once
        per verified blob (the blob cache keeps it) and the body is assembled directly instead
        of validating and dumping a ~90 KB model per read.
        """
        c = self._checked_fetch(principal, record_id, purpose)
        sealed = base64.b64encode(env.seal_key_to(principal.public_key, c.data_key))
        encoded = self._blob_cache.encoded(c.cid) if c.cached else None
        if encoded is None:
            encoded = base64.b64encode(c.blob)
        return b"".join(
            (
                b'{"record_id":"0x',
                c.rid.hex().encode(),
                b'","patient":',
                json.dumps(c.patient).encode(),
                b',"cid":',
                json.dumps(c.cid).encode(),
                b',"ciphertext":"',
                encoded,
                b'","sealed_key":"',
                sealed,
                b'","content_digest":',
                json.dumps(c.content_digest.lower()).encode(),
                b',"block_number":%d,"event_count":%d,"chain_time":%d}'
                % (c.block, c.answer.event_count, c.answer.timestamp),
            )
        )

    def _checked_fetch(self, principal: Principal, record_id: str, purpose: int) -> _Checked:
        """The chain's decision at the latest block, logged; the verified blob if allowed."""
        rid = parse_record_id(record_id)
        rid_hex = "0x" + rid.hex()
        row = self._row(rid_hex)
        if row is None:
            raise RecordNotFound(record_id=rid_hex)
        if not row.wrapped_key:
            raise Conflict(
                "this record is under threshold custody: no gateway holds its key; ask the "
                "federation for its shares (GET /v1/custody/records/{id}/share)",
                record_id=rid_hex,
            )
        patient = _checksum(row.patient)
        block, answer, decide = self._decide(principal, rid, rid_hex, patient, purpose)
        try:
            blob, data_key, cached = self._verified_blob(row, rid)
        except IpfsUnavailable:
            self.metrics.ipfs_errors.inc()
            decide(False, "ipfs_unavailable", block, answer)
            raise
        except IpfsError as exc:  # the node answered but could not produce the blob
            log.error("blob unavailable record=%s cid=%s: %s", rid_hex, row.cid, exc.code)
            decide(False, "blob_missing", block, answer)
            raise BlobTampered(record_id=rid_hex, cid=row.cid or "", reason=exc.code) from exc
        except BlobTampered as exc:
            log.error("tampered blob record=%s cid=%s: %s", rid_hex, row.cid, exc.reason)
            decide(False, "blob_tampered", block, answer)
            raise
        decide(True, "owner" if principal.address == patient else "consent", block, answer)
        return _Checked(
            rid, patient, row.cid or "", row.content_digest, blob, data_key, cached, block, answer
        )

    def _decide(
        self, principal: Principal, rid: bytes, rid_hex: str, patient: ChecksumAddress, purpose: int
    ) -> tuple[int, AccessDecision, _DecisionLog]:
        """The chain's decision at the latest block, logged when it is not an allow (the caller
        logs the allow once what it releases is ready): ``(block, answer, decide)``."""
        decisions = self.decisions
        if decisions is not None:
            return self._decide_on_index(decisions, principal, rid, rid_hex, patient, purpose)
        decide = _DecisionLog(self, principal.address, patient, rid_hex, purpose)
        try:
            block = self.chain.block_number()
            # One eth_call answers the question and names the state it was answered on (event
            # count and block.timestamp): the node may have evaluated a later state than `block`.
            answer = self.chain.access_decision_at(
                patient, principal.address, rid, purpose, block=block
            )
        except ChainUnavailable:
            self.metrics.chain_errors.inc()
            decide(False, "chain_unavailable", None)
            raise
        limit = self.max_head_age_s
        if limit is not None:
            age = self._clock() - answer.timestamp
            if age > limit:
                # A node that lost its peers answers from old state (a revoke mined elsewhere is
                # invisible, expiries are judged at an old time): no decision, allowed or not.
                self.metrics.chain_errors.inc()
                decide(False, "chain_stale", block, answer)
                log.warning(
                    "stale chain view: block %d chain time %d is %.0f s old (limit %g s)",
                    block,
                    answer.timestamp,
                    age,
                    limit,
                )
                raise ChainStale(
                    block=block, chain_time=answer.timestamp, age_s=age, max_head_age_s=limit
                )
        _deny_unless_allowed(decide, answer, block, principal, patient, rid_hex, purpose)
        return block, answer, decide

    def _decide_on_index(
        self,
        decisions: IndexDecisions,
        principal: Principal,
        rid: bytes,
        rid_hex: str,
        patient: ChecksumAddress,
        purpose: int,
    ) -> tuple[int, AccessDecision, _DecisionLog]:
        """``_decide`` on the verified consent index: the decision names the index position it
        was taken at (block, event count, chain time), no older than a head observed after the
        request arrived; a stale head is ``chain_stale``, any other failure
        ``chain_unavailable``."""
        decide = _DecisionLog(self, principal.address, patient, rid_hex, purpose)
        try:
            answer = decisions.access_decision(patient, principal.address, rid, purpose)
        except StaleHead as exc:
            self.metrics.chain_errors.inc()
            # the index caught up to the stale head before judging it: the leaf names it
            stale = (
                AccessDecision(Basis.NONE, 0, exc.event_count, exc.block, exc.chain_time)
                if exc.event_count is not None
                else None
            )
            decide(False, "chain_stale", exc.block, stale)
            log.warning(
                "stale chain view: head %d chain time %d is %.0f s old (limit %g s)",
                exc.block,
                exc.chain_time,
                exc.age_s,
                exc.max_head_age_s,
            )
            raise
        except ChainUnavailable:
            self.metrics.chain_errors.inc()
            decide(False, "chain_unavailable", None)
            raise
        block = answer.block_number
        _deny_unless_allowed(decide, answer, block, principal, patient, rid_hex, purpose)
        return block, answer, decide

    def _verified_blob(self, row: Record, rid: bytes) -> tuple[bytes, bytes, bool]:
        """``(blob, data_key, from_cache)``."""
        cid = row.cid or ""
        data_key = env.unwrap_key(row.wrapped_key, self._kek, record_id=rid)
        cached = self._blob_cache.get(cid)
        if cached is not None:
            return cached, data_key, True
        blob = self.blobs.cat(cid)
        if "0x" + hashlib.sha256(blob).hexdigest() != row.blob_sha256 or not verify_cid(cid, blob):
            raise BlobTampered(
                record_id=row.record_id, cid=cid, reason="does not match its CID or upload digest"
            )
        try:
            salt, plaintext = env.open_record(
                blob, data_key=data_key, record_id=rid, patient=to_checksum_address(row.patient)
            )
        except env.EnvelopeError:
            raise BlobTampered(
                record_id=row.record_id, cid=cid, reason="does not decrypt"
            ) from None
        ok = "0x" + hashlib.sha256(salt + plaintext).hexdigest() == row.content_digest
        del plaintext, salt
        if not ok:
            raise BlobTampered(record_id=row.record_id, cid=cid, reason="content digest mismatch")
        self._blob_cache.put(cid, blob)
        return blob, data_key, False


def _deny_unless_allowed(
    decide: _DecisionLog,
    answer: AccessDecision,
    block: int,
    principal: Principal,
    patient: ChecksumAddress,
    rid_hex: str,
    purpose: int,
) -> None:
    """A denial is logged, then raised as ``ConsentDenied`` naming the state it was taken on."""
    if not answer.allowed:
        decide(False, "no_consent", block, answer)
        raise ConsentDenied(
            requester=principal.address,
            patient=patient,
            record_id=rid_hex,
            purpose=purpose,
            block=block,
            event_count=answer.event_count,
            chain_time=answer.timestamp,
        )


@functools.lru_cache(maxsize=65_536)
def _checksum(address: str) -> ChecksumAddress:
    """``to_checksum_address`` memoised (a keccak per call; the fetch path asks it per read)."""
    return to_checksum_address(address)


@dataclass(frozen=True, slots=True)
class _Checked:
    """An allowed, logged fetch decision and the verified ciphertext it releases."""

    rid: bytes
    patient: ChecksumAddress
    cid: str
    content_digest: str
    blob: bytes
    data_key: bytes
    cached: bool  # the blob came from the blob cache (whose base64 is then cached too)
    block: int
    answer: AccessDecision


class _DecisionLog:
    """Appends one fetch decision; a log that cannot be written fails the request."""

    __slots__ = ("_patient", "_purpose", "_record", "_requester", "_svc")

    def __init__(
        self, svc: RecordFetches, requester: str, patient: str, record: str, purpose: int
    ) -> None:
        self._svc = svc
        self._requester = requester
        self._patient = patient
        self._record = record
        self._purpose = purpose

    def __call__(
        self, allowed: bool, reason: str, block: int | None, answer: AccessDecision | None = None
    ) -> None:
        svc = self._svc
        decision = Decision(
            requester=self._requester,
            patient=self._patient,
            record_id=self._record,
            purpose=self._purpose,
            allowed=allowed,
            reason=reason,
            block_number=block,
            time=svc._clock(),
            event_count=answer.event_count if answer is not None else None,
            chain_time=answer.timestamp if answer is not None else None,
        )
        with db_guard():
            appended = svc.access_log.append(decision)
        svc.metrics.decisions.labels("allowed" if allowed else "denied", reason).inc()
        svc.metrics.log_size.set(appended.index + 1)
