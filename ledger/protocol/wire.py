"""The gateway API's wire models: request bodies and response shapes (pydantic).

Shared by the gateway, which serves them, and by clients (``ledger.client``), which parse what
a gateway answers with the same classes. Pure data: no I/O, no HTTP statuses.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.config import JsonDict

__all__ = [
    "ADDRESS_PATTERN",
    "BYTES32_PATTERN",
    "SIGNATURE_65_PATTERN",
    "AccessLogEntryPublic",
    "AccessLogPage",
    "CheckpointPublic",
    "ConsentPublic",
    "ConsentsPublic",
    "ConsistencyPublic",
    "CustodyBundlePublic",
    "CustodyInfoPublic",
    "HealthPublic",
    "LoginRequest",
    "NoncePublic",
    "RecordPublic",
    "RecordsPublic",
    "RelayPending",
    "RelayPolicyPublic",
    "RelayRequest",
    "RelayResult",
    "SessionPublic",
    "ShareRelease",
]

#: The patterns the gateway checks, also stated in the OpenAPI schema.
BYTES32_PATTERN = r"^0x[0-9a-fA-F]{64}$"
ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"
SIGNATURE_65_PATTERN = r"^(0x)?[0-9a-fA-F]{130}$"

_UINT: JsonDict = {
    "anyOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": r"^([0-9]{1,78}|0[xX][0-9a-fA-F]{1,64})$"},
    ]
}
#: A request field's name and value: a uint256 (a number, or decimal / 0x hex text), a bytes32,
#: an address or a scope kind's name. Bounded, so a relay body always fits the gateway's JSON
#: body limit; the service checks each field's form (422 invalid_request).
_RelayKey = Annotated[str, StringConstraints(max_length=16)]
_UINT256_MAX = 2**256 - 1
_RelayValue = (
    Annotated[int, Field(ge=0, le=_UINT256_MAX)] | Annotated[str, StringConstraints(max_length=80)]
)

_RELAY_FIELDS: JsonDict = {
    "patient": {"type": "string", "pattern": ADDRESS_PATTERN},
    "grantee": {"type": "string", "pattern": ADDRESS_PATTERN},
    "scopeKind": {
        "description": "0 record, 1 category, 2 all (or the name)",
        "anyOf": [
            {"type": "integer", "enum": [0, 1, 2]},
            {"type": "string", "enum": ["0", "1", "2", "record", "category", "all"]},
        ],
    },
    "scopeId": {"type": "string", "pattern": BYTES32_PATTERN},
    "purposes": {**_UINT, "description": "purpose bit mask (grant only), uint32"},
    "expiresAt": {**_UINT, "description": "UNIX seconds (grant only), uint64"},
    "signer": {"type": "string", "pattern": ADDRESS_PATTERN},
    "nonce": {**_UINT, "description": "the signer's registry nonce, uint256"},
    "deadline": {**_UINT, "description": "UNIX seconds after which the signature expires"},
}


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class NoncePublic(_Out):
    nonce: str = Field(examples=["f1c9a0d2b7e34e5c8a6d"])
    expires_at: float = Field(description="UNIX seconds", examples=[1767225600.0])
    domain: str = Field(examples=["127.0.0.1:8000"])
    uri: str = Field(examples=["http://127.0.0.1:8000"])
    chain_id: int | None = Field(examples=[31337])


class LoginRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "message": "127.0.0.1:8000 wants you to sign in with your Ethereum account:\n"
                    "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC\n\nSign in to Consent Ledger\n\n"
                    "URI: http://127.0.0.1:8000\nVersion: 1\nChain ID: 31337\n"
                    "Nonce: f1c9a0d2b7e34e5c8a6d\nIssued At: 2026-01-01T00:00:00.000Z",
                    "signature": "0x" + "ab" * 65,
                }
            ]
        },
    )

    message: str = Field(
        min_length=1,
        max_length=8192,
        # EIP-4361 text is ASCII (RFC 3986 characters, spaces, \n line ends): so bounded, the
        # body always fits the gateway's JSON body limit.
        pattern=r"^[\x20-\x7e\n]+$",
        description="EIP-4361 message (printable ASCII and \\n). Its grammar (header, EIP-55 "
        "address, URI, version 1, chain id, nonce of 8+ letters or digits, RFC 3339 times, "
        "lines ending in \\n) is "
        "checked by the gateway: text that does not parse is answered 400 "
        "siwe_malformed_message; a parsed message with the wrong domain, URI, chain id, nonce, "
        "times or signature is answered 401 (siwe_*).",
    )
    signature: str = Field(
        pattern=SIGNATURE_65_PATTERN, description="personal_sign of the message, 65 bytes hex"
    )


class SessionPublic(_Out):
    token: str = Field(description="Bearer token for the Authorization header")
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the scheme name, not a secret
    address: str = Field(examples=["0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"])
    expires_at: float


class RecordPublic(_Out):
    record_id: str = Field(examples=["0x" + "1f" * 32])
    patient: str
    centre: str
    category: str = Field(description="category name", examples=["laboratory"])
    category_id: str = Field(description="bytes32 category id, 0x hex")
    content_digest: str
    issued_at: int
    cid: str = Field(examples=["bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"])
    size: int
    tx_hash: str | None
    block_number: int | None


class CustodyInfoPublic(_Out):
    """A gateway's custody identity and the federation the registry lists."""

    gateway: str = Field(description="the gateway's account (its identity on-chain)")
    custody_key: str | None = Field(
        description="its custody public key, 33-byte compressed secp256k1, 0x hex (null: none)"
    )
    member_index: int | None = Field(description="its share index in the federation, or null")
    threshold: int
    custody_set: str
    members: list[str]


class CustodyBundlePublic(_Out):
    """A threshold-custody record's public bytes: the custody manifest and the ciphertext."""

    record_id: str
    patient: str
    cid: str = Field(description="the manifest's CID (the one registered on-chain)")
    manifest: str = Field(description="the custody manifest's exact bytes, standard base64")
    ciphertext: str = Field(description="the record blob, standard base64")


class ShareRelease(_Out):
    """One gateway's share of a record's data key, re-sealed to the requester (ECIES)."""

    record_id: str
    gateway: str
    index: int = Field(description="the share's index in the record's custody manifest")
    sealed_share: str = Field(description="ECIES to the requester's key, standard base64")
    block_number: int
    event_count: int
    chain_time: int


class RecordsPublic(_Out):
    records: list[RecordPublic]


class ConsentPublic(_Out):
    patient: str
    grantee: str
    scope_kind: Literal["record", "category", "all"]
    scope_id: str
    purposes: list[int] = Field(description="purpose ids (0 treatment, 1 research, ...)")
    purpose_names: list[str]
    expires_at: int
    active: bool = Field(description="in force at the block named in the response")


class ConsentsPublic(_Out):
    block_number: int
    granted: list[ConsentPublic] = Field(description="consents the caller granted as patient")
    received: list[ConsentPublic] = Field(description="consents granted to the caller")


class RelayRequest(BaseModel):
    """A patient's signed EIP-712 ``GrantConsent`` or ``RevokeConsent``, for the gateway to
    relay (it pays the gas)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "action": "grant",
                    "request": {
                        "patient": "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
                        "grantee": "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
                        "scopeKind": 0,
                        "scopeId": "0x" + "1f" * 32,
                        "purposes": 1,
                        "expiresAt": 1767225600,
                        "signer": "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
                        "nonce": 0,
                        "deadline": 1767225600,
                    },
                    "signature": "0x" + "ab" * 65,
                }
            ]
        },
    )

    action: Literal["grant", "revoke"]
    request: dict[_RelayKey, _RelayValue] = Field(
        max_length=12,
        description="GrantRequest (patient, grantee, scopeKind, scopeId, purposes, expiresAt, "
        "signer, nonce, deadline) or RevokeRequest (the same without purposes and expiresAt) "
        "fields as the contract names them (scope_kind, scope_id, expires_at also accepted). "
        "Exactly the fields of the action are required (422 invalid_request otherwise).",
        json_schema_extra={"properties": _RELAY_FIELDS},
    )
    signature: str = Field(
        pattern=r"^(0x)?([0-9a-fA-F]{2})+$",
        max_length=60_000,  # with the request, within the gateway's 64 KiB JSON body limit
        description="the signer's EIP-712 signature (65 bytes from a key; any length from an "
        "ERC-1271 contract)",
    )


class RelayResult(_Out):
    """The mined receipt of a relayed grant or revoke."""

    action: Literal["grant", "revoke"]
    tx_hash: str
    block_number: int
    status: Literal["mined"] = "mined"
    gas_used: int


class RelayPending(_Out):
    """A relayed transaction sent but not mined within the policy's receipt wait (202)."""

    action: Literal["grant", "revoke"]
    tx_hash: str
    status: Literal["pending"] = "pending"
    status_url: str = Field(
        description="GET it for the outcome: 200 with the receipt once mined, 202 while "
        "pending, the registry's error once it reverted",
        examples=["/v1/consents/relays/0x" + "ab" * 32],
    )


class RelayPolicyPublic(_Out):
    """The published relayer policy: what this gateway pays for, and the limits it applies."""

    relayer: str = Field(description="the account that sends and pays for relayed consents")
    gas_cap: int = Field(
        description="the gas limit of every relayed transaction; a relay whose estimate or "
        "whose signer's ERC-1271 check needs more is refused (403 relay_gas_cap_exceeded)",
        examples=[200_000],
    )
    patient_quota_per_hour: int = Field(
        description="relayed transactions per patient in any rolling hour (429 "
        "relay_quota_exceeded)",
        examples=[10],
    )
    rate_per_minute: int = Field(
        description="relayed transactions of all patients in any rolling minute (429 "
        "relay_rate_limited)",
        examples=[60],
    )
    receipt_wait_s: float = Field(
        description="how long POST /v1/consents waits for the receipt before answering 202",
        examples=[5.0],
    )


class CheckpointPublic(_Out):
    tree_size: int
    root_hash: str
    gateway: str
    tx_hash: str
    block_number: int
    anchored_at: float


class AccessLogEntryPublic(_Out):
    index: int
    leaf: str = Field(description="the canonical JSON leaf, verbatim")
    leaf_hash: str = Field(description="SHA-256(0x00 || leaf), 0x hex")
    entry: dict[str, object]
    inclusion_proof: list[str] | None = Field(
        description="RFC 9162 PATH against the checkpoint; null until a checkpoint covers it"
    )


class AccessLogPage(_Out):
    checkpoint: CheckpointPublic | None
    log_size: int
    entries: list[AccessLogEntryPublic]


class ConsistencyPublic(_Out):
    first: int
    second: int
    first_root: str
    second_root: str
    proof: list[str]


class HealthPublic(_Out):
    status: Literal["ok", "degraded"]
    chain_id: int | None
    latest_block: int | None
    contract: str | None
    ipfs_node_id: str | None
    database: str
    details: dict[str, str]
