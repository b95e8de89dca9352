"""Error root of the gateway package.

Every domain error raised by ``gateway`` derives from :class:`GatewayError`, which carries a
stable machine-readable ``code`` and the ``http_status`` that the single FastAPI exception
handler maps it to. Errors carry the offending values as attributes (and in ``fields``, for the
JSON body), never only inside a message string.

The protocol's errors (envelope, Merkle, SIWE) are :class:`ledger.protocol.errors.DomainError`
subclasses with no HTTP status; :data:`PROTOCOL_STATUS` below gives them theirs, and
:func:`http_status_of` is the one lookup the handlers use.

The tree (``code`` and HTTP status after the name)::

    DomainError                                               (ledger.protocol.errors)

    GatewayError                    gateway_error 500
    ├── IpfsError                   ipfs_error 502            (gateway.ipfs)
    │   ├── IpfsUnavailable         ipfs_unavailable 503      connect error / transport timeout
    │   ├── IpfsNotFound            ipfs_not_found 502        node cannot produce the CID in time
    │   ├── IpfsApiError            ipfs_api_error 502        other error answer of the RPC API
    │   ├── IpfsProtocolError       ipfs_protocol_error 502   answer not of the documented shape
    │   └── InvalidCid              invalid_cid 400           text is not a CID we accept
    ├── EnvelopeError               envelope_error 400        (ledger.protocol.envelope)
    │   ├── MalformedEnvelope       malformed_envelope 400    bad blob / key / field encoding
    │   ├── DecryptionFailed        decryption_failed 400     AEAD tag: wrong key, AAD, tamper
    │   └── DigestMismatch          digest_mismatch 502       sha256(plaintext) != contentDigest
    ├── MerkleError                 merkle_error 400          (ledger.protocol.merkle)
    │   ├── InvalidTreeSize         invalid_tree_size 400
    │   └── LeafIndexOutOfRange     leaf_index_out_of_range 400
    ├── CustodyError                custody_error 502         (ledger.protocol.custody)
    │                                                         a stored manifest / share is bad
    └── SiweError                   siwe_error 401            (ledger.protocol.siwe)
        ├── MalformedMessage        siwe_malformed_message 400
        ├── DomainMismatch          siwe_domain_mismatch 401
        ├── UriMismatch             siwe_uri_mismatch 401
        ├── ChainMismatch           siwe_chain_mismatch 401
        ├── Expired                 siwe_expired 401
        ├── NotYetValid             siwe_not_yet_valid 401
        ├── BadSignature            siwe_bad_signature 401
        └── AddressMismatch         siwe_address_mismatch 401
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

from ledger.protocol.custody import CustodyError
from ledger.protocol.envelope import DigestMismatch, EnvelopeError
from ledger.protocol.errors import DomainError
from ledger.protocol.merkle import MerkleError
from ledger.protocol.siwe import MalformedMessage, SiweError

__all__ = ["PROTOCOL_STATUS", "DomainError", "GatewayError", "http_status_of"]


class GatewayError(DomainError):
    """Root of every gateway domain error: a :class:`DomainError` with the HTTP status the
    single FastAPI exception handler answers with. Subclasses override ``code`` and
    ``http_status`` and pass their offending values as keyword ``fields``."""

    code: ClassVar[str] = "gateway_error"
    http_status: ClassVar[int] = 500


# The protocol's errors carry no HTTP status; this is the one place that gives them one.
# The most specific class listed in an error's MRO wins.
PROTOCOL_STATUS: Mapping[type[DomainError], int] = MappingProxyType(
    {
        EnvelopeError: 400,
        DigestMismatch: 502,
        MerkleError: 400,
        SiweError: 401,
        MalformedMessage: 400,
        # A custody manifest or share this gateway read (from IPFS or its database) is bad.
        CustodyError: 502,
    }
)


def http_status_of(error: DomainError | type[DomainError]) -> int:
    """The HTTP status a domain error is answered with (500 for an unmapped one)."""
    if isinstance(error, GatewayError):
        return error.http_status  # an instance may carry its own (a contract error's)
    cls = error if isinstance(error, type) else type(error)
    if issubclass(cls, GatewayError):
        return cls.http_status
    for klass in cls.__mro__:
        status = PROTOCOL_STATUS.get(klass)
        if status is not None:
            return status
    return 500


# -- service errors (gateway.app, gateway.services) ---------------------------------------------
#
#    GatewayError
#    ├── Unauthenticated           [unauthenticated 401]       no/unknown/expired bearer token
#    ├── SiweNonceInvalid          [siwe_nonce_invalid 401]    unknown, used (replay) or expired
#    ├── Forbidden                 [forbidden 403]             signed in, but not allowed
#    ├── ConsentDenied             [consent_denied 403]        chain says no at the named block
#    ├── NotFound                  [not_found 404]             unknown route or resource
#    │   └── RecordNotFound        [record_not_found 404]
#    ├── Conflict                  [conflict 409]              e.g. same upload in progress
#    ├── PayloadTooLarge           [payload_too_large 413]     upload over max_upload_bytes
#    │   └── BodyTooLarge          [body_too_large 413]        JSON body over max_json_body_bytes
#    ├── RateLimited               [rate_limited 429]          per-IP limit on nonces / logins
#    ├── InvalidRequest            [invalid_request 422]       request fails validation
#    │   └── AttestationInvalid    [attestation_invalid 422]   bad signature / wrong signer
#    ├── ContractRejected          [contract_<error> 4xx/5xx]  registry reverted (custom error)
#    ├── RelayGasCapExceeded       [relay_gas_cap_exceeded 403] relay needs more than the cap
#    ├── TooManyRequests           [too_many_requests 429]     with a Retry-After header
#    │   ├── RelayQuotaExceeded    [relay_quota_exceeded 429]  the patient's hourly quota
#    │   └── RelayRateLimited      [relay_rate_limited 429]    the gateway's relay rate
#    ├── BlobTampered              [blob_tampered 502]         blob fails CID/decrypt/digest
#    ├── UpstreamFailed            [upstream_failed 502]       a transaction failed
#    └── ServiceUnavailable        [service_unavailable 503]
#        ├── ChainUnavailable      [chain_unavailable 503]     chain unreachable: fail closed
#        ├── ChainStale            [chain_stale 503]           evaluated chain time too old
#        ├── ChainIdMismatch       [chain_id_mismatch 503]     node is on another chain
#        └── DatabaseUnavailable   [database_unavailable 503]


class Unauthenticated(GatewayError):
    """No valid bearer session."""

    code: ClassVar[str] = "unauthenticated"
    http_status: ClassVar[int] = 401

    def __init__(self, *, reason: str) -> None:
        super().__init__(f"authentication required: {reason}", reason=reason)
        self.reason = reason


class SiweNonceInvalid(GatewayError):
    """The SIWE message's nonce was never issued, is used up (a replay) or has expired."""

    code: ClassVar[str] = "siwe_nonce_invalid"
    http_status: ClassVar[int] = 401

    def __init__(self, *, nonce: str) -> None:
        super().__init__(
            "the nonce is unknown, already used or expired; request a new one", nonce=nonce
        )
        self.nonce = nonce


class Forbidden(GatewayError):
    """Signed in, but this account may not do this."""

    code: ClassVar[str] = "forbidden"
    http_status: ClassVar[int] = 403

    def __init__(self, *, account: str, reason: str) -> None:
        super().__init__(f"{account} may not do this: {reason}", account=account, reason=reason)
        self.account = account
        self.reason = reason


class ConsentDenied(GatewayError):
    """The registry says the requester holds no consent for this record and purpose."""

    code: ClassVar[str] = "consent_denied"
    http_status: ClassVar[int] = 403

    def __init__(
        self,
        *,
        requester: str,
        patient: str,
        record_id: str,
        purpose: int,
        block: int,
        event_count: int | None = None,
        chain_time: int | None = None,
    ) -> None:
        position: dict[str, object] = {}
        if event_count is not None:
            position["event_count"] = event_count
        if chain_time is not None:
            position["chain_time"] = chain_time
        super().__init__(
            f"{requester} holds no consent for record {record_id} "
            f"(purpose {purpose}) at block {block}",
            requester=requester,
            patient=patient,
            record_id=record_id,
            purpose=purpose,
            block_number=block,
            **position,
        )
        self.requester = requester
        self.patient = patient
        self.record_id = record_id
        self.purpose = purpose
        self.block = block
        self.event_count = event_count
        self.chain_time = chain_time


class NotFound(GatewayError):
    code: ClassVar[str] = "not_found"
    http_status: ClassVar[int] = 404

    def __init__(self, message: str = "not found", **fields: object) -> None:
        super().__init__(message, **fields)


class RecordNotFound(NotFound):
    code: ClassVar[str] = "record_not_found"

    def __init__(self, *, record_id: str) -> None:
        super().__init__(f"no record {record_id}", record_id=record_id)
        self.record_id = record_id


class Conflict(GatewayError):
    code: ClassVar[str] = "conflict"
    http_status: ClassVar[int] = 409

    def __init__(self, message: str, **fields: object) -> None:
        super().__init__(message, **fields)


class PayloadTooLarge(GatewayError):
    code: ClassVar[str] = "payload_too_large"
    http_status: ClassVar[int] = 413

    def __init__(self, *, limit: int) -> None:
        super().__init__(f"the upload exceeds {limit} bytes", limit=limit)
        self.limit = limit


class BodyTooLarge(PayloadTooLarge):
    """A request body other than an upload exceeds the (small) JSON body limit."""

    code: ClassVar[str] = "body_too_large"

    def __init__(self, *, limit: int) -> None:
        GatewayError.__init__(self, f"the request body exceeds {limit} bytes", limit=limit)
        self.limit = limit


class RateLimited(GatewayError):
    """Too many requests of one kind from one client address; ``limit`` names the limit."""

    code: ClassVar[str] = "rate_limited"
    http_status: ClassVar[int] = 429

    def __init__(self, *, limit: str, retry_after_s: int) -> None:
        super().__init__(
            f"too many requests: {limit}; retry after {retry_after_s} s",
            limit=limit,
            retry_after_s=retry_after_s,
        )
        self.limit = limit
        self.retry_after_s = retry_after_s


class InvalidRequest(GatewayError):
    code: ClassVar[str] = "invalid_request"
    http_status: ClassVar[int] = 422

    def __init__(self, message: str, **fields: object) -> None:
        super().__init__(message, **fields)


class AttestationInvalid(InvalidRequest):
    """The centre's attestation signature does not verify for the signed-in centre."""

    code: ClassVar[str] = "attestation_invalid"

    def __init__(self, *, expected: str, recovered: str | None, reason: str) -> None:
        super().__init__(
            f"attestation refused: {reason}", expected=expected, recovered=recovered, reason=reason
        )
        self.expected = expected
        self.recovered = recovered
        self.reason = reason


class ContractRejected(GatewayError):
    """The registry reverted with a custom error; ``code`` is ``contract_<snake_name>``."""

    code: ClassVar[str] = "contract_rejected"
    http_status: ClassVar[int] = 422

    def __init__(self, *, error: str, status: int, message: str, **fields: object) -> None:
        super().__init__(message, error=error, **fields)
        self.error = error
        self.status = status


class BlobTampered(GatewayError):
    """The ciphertext from IPFS does not match its CID or fails to decrypt."""

    code: ClassVar[str] = "blob_tampered"
    http_status: ClassVar[int] = 502

    def __init__(self, *, record_id: str, cid: str, reason: str) -> None:
        super().__init__(
            f"the stored ciphertext of {record_id} is corrupt: {reason}",
            record_id=record_id,
            cid=cid,
            reason=reason,
        )
        self.record_id = record_id
        self.cid = cid
        self.reason = reason


class UpstreamFailed(GatewayError):
    code: ClassVar[str] = "upstream_failed"
    http_status: ClassVar[int] = 502

    def __init__(self, message: str, **fields: object) -> None:
        super().__init__(message, **fields)


class ServiceUnavailable(GatewayError):
    code: ClassVar[str] = "service_unavailable"
    http_status: ClassVar[int] = 503

    def __init__(self, message: str, **fields: object) -> None:
        super().__init__(message, **fields)


class ChainUnavailable(ServiceUnavailable):
    """The chain node did not answer: nothing is served (fail closed).

    ``url`` is kept for the server's own log only: an RPC URL often carries a provider's API
    key, so it is not one of the error's fields and never reaches a caller."""

    code: ClassVar[str] = "chain_unavailable"

    def __init__(self, *, url: str, reason: str) -> None:
        super().__init__(f"the chain node is unreachable: {reason}", reason=reason)
        self.url = url
        self.reason = reason


class ChainStale(ServiceUnavailable):
    """The chain time a decision was evaluated at is older than ``max_head_age_s``: the node
    may have lost its peers and answer from old state, so the decision fails closed."""

    code: ClassVar[str] = "chain_stale"

    def __init__(self, *, block: int, chain_time: int, age_s: float, max_head_age_s: float) -> None:
        super().__init__(
            f"the chain node's view is stale: block {block} has chain time {chain_time}, "
            f"{age_s:.0f} s old (max_head_age_s {max_head_age_s:g})",
            block_number=block,
            chain_time=chain_time,
            age_s=round(age_s, 3),
            max_head_age_s=max_head_age_s,
        )
        self.block = block
        self.chain_time = chain_time
        self.age_s = age_s
        self.max_head_age_s = max_head_age_s


class ChainIdMismatch(ServiceUnavailable):
    """The chain node reports another chain id than the deployment names."""

    code: ClassVar[str] = "chain_id_mismatch"

    def __init__(self, *, node: int, expected: int) -> None:
        super().__init__(
            f"the chain node reports chain id {node}, but the deployment names {expected}",
            node_chain_id=node,
            expected_chain_id=expected,
        )
        self.node = node
        self.expected = expected


class DatabaseUnavailable(ServiceUnavailable):
    code: ClassVar[str] = "database_unavailable"

    def __init__(self, *, reason: str) -> None:
        super().__init__(f"the database is unavailable: {reason}", reason=reason)
        self.reason = reason


class RelayGasCapExceeded(GatewayError):
    """A relayed transaction would need more gas than the relayer policy's cap (the call's
    estimate, or the signer's ERC-1271 ``isValidSignature``): refused before anything is sent."""

    code: ClassVar[str] = "relay_gas_cap_exceeded"
    http_status: ClassVar[int] = 403

    def __init__(self, *, gas_cap: int, reason: str, signer: str) -> None:
        super().__init__(
            f"the relay needs more than the gas cap of {gas_cap}: {reason}",
            limit="relay_gas_cap",
            gas_cap=gas_cap,
            reason=reason,
            signer=signer,
        )
        self.gas_cap = gas_cap
        self.reason = reason
        self.signer = signer


class TooManyRequests(GatewayError):
    """A rate or quota is used up; ``Retry-After`` says when to try again."""

    code: ClassVar[str] = "too_many_requests"
    http_status: ClassVar[int] = 429

    def __init__(self, message: str, *, retry_after_s: int, **fields: object) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **fields)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class RelayQuotaExceeded(TooManyRequests):
    """The patient's relayed transactions in the last hour reached the quota."""

    code: ClassVar[str] = "relay_quota_exceeded"

    def __init__(self, *, patient: str, quota: int, window_s: int, retry_after_s: int) -> None:
        super().__init__(
            f"{patient} has had {quota} relayed transactions in the last {window_s} s "
            f"(relay_patient_quota_per_hour); retry in {retry_after_s} s or send it yourself",
            retry_after_s=retry_after_s,
            limit="relay_patient_quota_per_hour",
            patient=patient,
            quota=quota,
            window_s=window_s,
        )
        self.patient = patient
        self.quota = quota
        self.window_s = window_s


class RelayRateLimited(TooManyRequests):
    """The gateway relayed as many transactions as its rate allows in the last minute."""

    code: ClassVar[str] = "relay_rate_limited"

    def __init__(self, *, rate: int, window_s: int, retry_after_s: int) -> None:
        super().__init__(
            f"the gateway relays at most {rate} transactions per {window_s} s "
            f"(relay_rate_per_minute); retry in {retry_after_s} s",
            retry_after_s=retry_after_s,
            limit="relay_rate_per_minute",
            rate=rate,
            window_s=window_s,
        )
        self.rate = rate
        self.window_s = window_s


__all__ += [
    "AttestationInvalid",
    "BlobTampered",
    "BodyTooLarge",
    "ChainIdMismatch",
    "ChainStale",
    "ChainUnavailable",
    "Conflict",
    "ConsentDenied",
    "ContractRejected",
    "DatabaseUnavailable",
    "Forbidden",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "RecordNotFound",
    "RelayGasCapExceeded",
    "RelayQuotaExceeded",
    "RelayRateLimited",
    "ServiceUnavailable",
    "SiweNonceInvalid",
    "TooManyRequests",
    "Unauthenticated",
    "UpstreamFailed",
]
