"""The documented error answers of the API (OpenAPI ``responses``) and shared parameter schemas.

Every error answer is ``{"error": {"code", "message", "details"}}``. Each documented status
names, in its schema's ``code`` enum and in one example per code, the stable codes an operation
can answer with at that status (``code`` of the classes in ``gateway.errors``, the HTTP codes of
``gateway.app``, and ``contract_<snake_name>`` for the registry's custom errors), so a client
generated from the schema knows every code, and a response with an undocumented code fails the
schema.
"""

from __future__ import annotations

from typing import Any

from gateway.services.chain import contract_code, contract_status
from ledger.protocol.consent_types import DEFAULT_CATEGORIES, Purpose
from ledger.protocol.contract_errors import ERROR_CLASSES
from ledger.protocol.wire import BYTES32_PATTERN

__all__ = [
    "CATEGORY_SCHEMA",
    "CONTRACT",
    "INT64",
    "INT64_MAX",
    "PURPOSE_SCHEMA",
    "UNIX_SECONDS",
    "check_unix_seconds",
    "contract",
    "errors",
]

#: code -> an example message (the codes' own wording, with example values)
_MESSAGES: dict[str, str] = {
    "bad_request": "the body does not parse (JSON or multipart)",
    "siwe_malformed_message": "malformed SIWE message: too few lines",
    "unauthenticated": "authentication required: session expired",
    "siwe_nonce_invalid": "the nonce is unknown, already used or expired; request a new one",
    "siwe_error": "the SIWE message is not acceptable",
    "siwe_domain_mismatch": "the message's domain is not this gateway's",
    "siwe_uri_mismatch": "the message's URI is not this gateway's",
    "siwe_chain_mismatch": "the message's chain id is not this gateway's",
    "siwe_expired": "the message has expired",
    "siwe_not_yet_valid": "the message is not valid yet",
    "siwe_bad_signature": "the signature does not recover",
    "siwe_address_mismatch": "the signature recovers another address",
    "forbidden": "0x15d3... may not do this: not an auditor (CONSENT_AUDITORS)",
    "consent_denied": "0x15d3... holds no consent for record 0x1f... (purpose 1) at block 42",
    "relay_gas_cap_exceeded": "the relay needs more than the gas cap of 200000: the signer's "
    "ERC-1271 isValidSignature needs more gas than the cap",
    "not_found": "not found",
    "record_not_found": "no record 0x1f...",
    "conflict": "an upload of this attestation is in progress; retry shortly",
    "payload_too_large": "the upload exceeds 52428800 bytes",
    "body_too_large": "the request body exceeds 65536 bytes",
    "invalid_request": "request validation failed",
    "attestation_invalid": "attestation refused: signature does not recover",
    "rate_limited": "too many requests: /v1/auth/nonce: 60 at once, then 120 per minute, per "
    "client address; retry after 1 s",
    "relay_quota_exceeded": "0x90f7... has had 10 relayed transactions in the last 3600 s "
    "(relay_patient_quota_per_hour); retry in 1200 s or send it yourself",
    "relay_rate_limited": "the gateway relays at most 60 transactions per 60 s "
    "(relay_rate_per_minute); retry in 12 s",
    "blob_tampered": "the stored ciphertext of 0x1f... is corrupt: does not match its CID",
    "upstream_failed": "the transaction failed",
    "ipfs_error": "the IPFS node failed",
    "ipfs_not_found": "the IPFS node cannot produce the CID in time",
    "ipfs_api_error": "the IPFS node answered with an error",
    "ipfs_protocol_error": "the IPFS node's answer is not of the documented shape",
    "digest_mismatch": "sha256(plaintext) is not the record's content digest",
    "service_unavailable": "the service is unavailable",
    "chain_unavailable": "the chain node is unreachable: ConnectionError",
    "chain_stale": "the chain node's view is stale: block 42 has chain time 1767225600, 900 s "
    "old (max_head_age_s 120)",
    "chain_id_mismatch": "the chain node reports chain id 1, but the deployment names 31337",
    "database_unavailable": "the database is unavailable: OperationalError",
    "ipfs_unavailable": "the IPFS node is unreachable",
}

_RECORD = "0x" + "1f" * 32
_PATIENT = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
_READER = "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65"
#: code -> example ``details`` (the error's fields)
_DETAILS: dict[str, dict[str, Any]] = {
    "siwe_malformed_message": {"reason": "too few lines"},
    "unauthenticated": {"reason": "session expired"},
    "siwe_nonce_invalid": {"nonce": "f1c9a0d2b7e34e5c8a6d"},
    "forbidden": {"account": _READER, "reason": "not an auditor (CONSENT_AUDITORS)"},
    "consent_denied": {
        "requester": _READER,
        "patient": _PATIENT,
        "record_id": _RECORD,
        "purpose": 1,
        "block_number": 42,
        "event_count": 118,
        "chain_time": 1767225600,
    },
    "relay_gas_cap_exceeded": {
        "limit": "relay_gas_cap",
        "gas_cap": 200000,
        "reason": "the signer's ERC-1271 isValidSignature needs more gas than the cap",
        "signer": _PATIENT,
    },
    "record_not_found": {"record_id": _RECORD},
    "payload_too_large": {"limit": 52428800},
    "body_too_large": {"limit": 65536},
    "invalid_request": {
        "errors": [
            {
                "loc": ["path", "record_id"],
                "msg": "String should match pattern '^0x[0-9a-fA-F]{64}$'",
                "type": "string_pattern_mismatch",
            }
        ]
    },
    "rate_limited": {
        "limit": "/v1/auth/nonce: 60 at once, then 120 per minute, per client address",
        "retry_after_s": 1,
    },
    "relay_quota_exceeded": {
        "retry_after_s": 1200,
        "limit": "relay_patient_quota_per_hour",
        "patient": _PATIENT.lower(),
        "quota": 10,
        "window_s": 3600,
    },
    "relay_rate_limited": {
        "retry_after_s": 12,
        "limit": "relay_rate_per_minute",
        "rate": 60,
        "window_s": 60,
    },
    "blob_tampered": {
        "record_id": _RECORD,
        "cid": "bafkrei...",
        "reason": "does not match its CID",
    },
    "chain_unavailable": {"reason": "ConnectionError"},
    "contract_signature_expired": {
        "error": "SignatureExpired",
        "deadline": 1767225600,
        "now_timestamp": 1767229200,
    },
}

#: the registry's custom errors: code -> status
CONTRACT: dict[str, int] = {contract_code(n): contract_status(n) for n in ERROR_CLASSES}
for _name in ("Panic", "Reverted", "UnknownContractError"):
    CONTRACT.setdefault(contract_code(_name), contract_status(_name))


def contract(*names: str) -> tuple[str, ...]:
    """The codes of these registry errors, plus those any transaction can end in."""
    every = (
        *names,
        "AccessControlUnauthorizedAccount",
        "Panic",
        "Reverted",
        "UnknownContractError",
    )
    return tuple(contract_code(n) for n in every)


_DESCRIPTIONS = {
    400: "The body does not parse",
    401: "Not signed in, or the sign-in is refused",
    403: "Signed in, but not allowed",
    404: "Not found",
    409: "Conflicts with the current state",
    413: "The body is too large",
    422: "The request is not valid",
    429: "Too many requests",
    502: "An upstream service (chain, IPFS) failed or answered wrongly",
    503: "A service the gateway needs is unavailable (fail closed)",
}

_UNAVAILABLE = ("chain_unavailable", "chain_id_mismatch", "database_unavailable")

#: the codes every operation that documents the status can answer with
_DEFAULT_CODES: dict[int, tuple[str, ...]] = {
    400: ("bad_request",),
    401: ("unauthenticated",),
    403: ("forbidden",),
    404: ("not_found",),
    409: ("conflict",),
    413: ("body_too_large",),
    422: ("invalid_request",),
    429: ("rate_limited",),
    502: ("upstream_failed",),
    503: _UNAVAILABLE,
}

_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds until the next request is accepted",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}


def _message(code: str) -> str:
    if code in _MESSAGES:
        return _MESSAGES[code]
    return f"the registry refused: {code.removeprefix('contract_')}"


def _response(
    status: int,
    codes: tuple[str, ...],
    *,
    description: str | None = None,
    details: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    unique = tuple(dict.fromkeys(codes))
    schema = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {"type": "string", "enum": list(unique)},
                    "message": {"type": "string"},
                    "details": {"type": "object"},
                },
            }
        },
    }
    examples = {
        code: {
            "summary": code,
            "value": {
                "error": {
                    "code": code,
                    "message": _message(code),
                    "details": (details or _DETAILS).get(code, {}),
                }
            },
        }
        for code in unique
    }
    answer: dict[str, Any] = {
        "description": description or f"{_DESCRIPTIONS.get(status, 'Error')}: " + ", ".join(unique),
        "content": {"application/json": {"schema": schema, "examples": examples}},
    }
    if status == 429:
        answer["headers"] = _RETRY_AFTER
    return answer


def errors(*statuses: int, extra: tuple[str, ...] = ()) -> dict[int | str, Any]:
    """The documented answers for ``statuses``: each with its default codes plus those of
    ``extra`` that belong to it (a code's status from ``gateway.errors`` or the registry)."""
    out: dict[int | str, Any] = {}
    for status in statuses:
        codes = _DEFAULT_CODES.get(status, ()) + tuple(
            c for c in extra if _STATUS_OF.get(c, CONTRACT.get(c)) == status
        )
        out[status] = _response(status, codes)
    missing = [c for c in extra if _STATUS_OF.get(c, CONTRACT.get(c)) not in statuses]
    if missing:
        raise ValueError(f"codes whose status is not documented: {missing}")
    return out


_STATUS_OF: dict[str, int] = {
    "bad_request": 400,
    "siwe_malformed_message": 400,
    "invalid_cid": 400,
    "envelope_error": 400,
    "malformed_envelope": 400,
    "decryption_failed": 400,
    "merkle_error": 400,
    "invalid_tree_size": 400,
    "leaf_index_out_of_range": 400,
    **{c: 401 for c in _MESSAGES if c.startswith("siwe_") and c != "siwe_malformed_message"},
    "unauthenticated": 401,
    "forbidden": 403,
    "consent_denied": 403,
    "relay_gas_cap_exceeded": 403,
    "not_found": 404,
    "record_not_found": 404,
    "conflict": 409,
    "payload_too_large": 413,
    "body_too_large": 413,
    "invalid_request": 422,
    "attestation_invalid": 422,
    "rate_limited": 429,
    "too_many_requests": 429,
    "relay_quota_exceeded": 429,
    "relay_rate_limited": 429,
    "blob_tampered": 502,
    "upstream_failed": 502,
    "ipfs_error": 502,
    "ipfs_not_found": 502,
    "ipfs_api_error": 502,
    "ipfs_protocol_error": 502,
    "digest_mismatch": 502,
    "service_unavailable": 503,
    "chain_unavailable": 503,
    "chain_stale": 503,
    "chain_id_mismatch": 503,
    "database_unavailable": 503,
    "ipfs_unavailable": 503,
}

PURPOSE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "type": "string",
            "enum": [p.name.lower() for p in Purpose]
            + [p.name.lower().replace("_", "-") for p in Purpose if "_" in p.name],
        },
        {"type": "string", "pattern": r"^(0{0,9}[0-9]|0{0,8}[12][0-9]|0{0,8}3[01])$"},
    ]
}

CATEGORY_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "enum": list(DEFAULT_CATEGORIES)},
        {"type": "string", "pattern": BYTES32_PATTERN},
        {"type": "string", "pattern": r"^[!-~]([ -~]{0,30}[!-~])?$"},
    ]
}

INT64_MAX = 2**63 - 1
#: the schema's maximum for a database integer, as an integer (``le`` alone gives a float,
#: 2**63, one more than the largest accepted value)
INT64: dict[str, Any] = {"maximum": INT64_MAX}
#: A form field's bounds, stated in its schema (``gateway.openapi.exact_integer_bounds`` writes
#: them as integers) and checked by the route (``check_unix_seconds``).
UNIX_SECONDS: dict[str, Any] = {"minimum": 0, "maximum": INT64_MAX}


def check_unix_seconds(value: int, *, field: str = "issued_at") -> None:
    """The bound ``UNIX_SECONDS`` states, as the 422 the schema promises."""
    from gateway.errors import InvalidRequest

    if not 0 <= value <= INT64_MAX:
        raise InvalidRequest(f"{field} must be 0 .. 2**63 - 1 (UNIX seconds)", field=field)
