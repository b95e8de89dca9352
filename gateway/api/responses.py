"""The documented error answers of the API (OpenAPI ``responses``), one example per status."""

from __future__ import annotations

from typing import Any

__all__ = ["ERROR_RESPONSES", "JSON_413", "error_example", "pick"]


def error_example(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {
        "description": message,
        "content": {
            "application/json": {
                "example": {"error": {"code": code, "message": message, "details": details}}
            }
        },
    }


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: error_example(
        "siwe_malformed_message",
        "malformed SIWE message: too few lines (or a body that does not parse: bad_request)",
        reason="too few lines",
    ),
    401: error_example(
        "unauthenticated", "authentication required: session expired", reason="session expired"
    ),
    403: error_example(
        "consent_denied",
        "0x15d3... holds no consent for record 0x1f... (purpose 1) at block 42",
        requester="0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
        record_id="0x" + "1f" * 32,
        purpose=1,
        block_number=42,
        event_count=118,
        chain_time=1767225600,
    ),
    404: error_example("record_not_found", "no record 0x1f...", record_id="0x" + "1f" * 32),
    409: error_example("conflict", "an upload of this attestation is in progress; retry shortly"),
    413: error_example("payload_too_large", "the upload exceeds 52428800 bytes", limit=52428800),
    "413_json": error_example(
        "body_too_large", "the request body exceeds 65536 bytes", limit=65536
    ),
    429: {
        **error_example(
            "rate_limited",
            "too many requests: /v1/auth/nonce: 60 at once, then 120 per minute, per client "
            "address; retry after 1 s",
            limit="/v1/auth/nonce: 60 at once, then 120 per minute, per client address",
            retry_after_s=1,
        ),
        "headers": {
            "Retry-After": {
                "description": "seconds until the next request is accepted",
                "required": True,
                "schema": {"type": "integer", "minimum": 1},
            }
        },
    },
    422: error_example("invalid_request", "request validation failed", errors=[]),
    502: error_example(
        "blob_tampered",
        "the stored ciphertext of 0x1f... is corrupt: does not match its CID",
        reason="does not match its CID",
    ),
    503: error_example(
        "chain_unavailable",
        "the chain node is unreachable: ConnectionError",
        reason="ConnectionError",
    ),
}


def pick(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: ERROR_RESPONSES[c] for c in codes}


#: a JSON body over ``max_json_body_bytes``
JSON_413: dict[int | str, dict[str, Any]] = {413: ERROR_RESPONSES["413_json"]}
