"""Database tables (sqlmodel); the API's request / response models are in ``ledger.protocol.wire``.

Tables keep no plaintext: a record row holds the CID and the data key wrapped under the KEK;
session rows hold the sha256 of the bearer token, never the token. Byte strings of the chain
(record ids, digests, addresses) are stored as lowercase ``0x`` hex so they compare and index
the same on SQLite and PostgreSQL; times are UNIX seconds (float).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, LargeBinary, Table
from sqlmodel import Field as DbField
from sqlmodel import SQLModel

__all__ = [
    "ACCESS_LOG",
    "AUTH_NONCE",
    "AUTH_SESSION",
    "CHECKPOINT",
    "LOG_SEQUENCER",
    "RECORD",
    "RELAYED_TX",
    "TABLES",
    "AccessLogEntry",
    "AuthNonce",
    "AuthSession",
    "Checkpoint",
    "LogSequencer",
    "Record",
    "RecordBase",
    "RelayedTx",
]

# --------------------------------------------------------------------------------- tables


class AuthNonce(SQLModel, table=True):
    """A single-use SIWE nonce; deleted when a login consumes it."""

    __tablename__ = "auth_nonce"

    nonce: str = DbField(primary_key=True, max_length=64)
    expires_at: float = DbField(index=True)  # bounded purges scan the index, not the table


class AuthSession(SQLModel, table=True):
    """A bearer session: who logged in, with which public key, until when."""

    __tablename__ = "auth_session"

    token_hash: str = DbField(primary_key=True, max_length=66)
    address: str = DbField(index=True, max_length=42)
    public_key: str = DbField(max_length=132, description="uncompressed secp256k1, 0x04...")
    expires_at: float = DbField(index=True)
    created_at: float


class RecordBase(SQLModel):
    """What is known of a record (all public on-chain)."""

    record_id: str = DbField(primary_key=True, max_length=66)
    patient: str = DbField(index=True, max_length=42)
    centre: str = DbField(index=True, max_length=42)
    category: str = DbField(max_length=66, description="bytes32 category id, 0x hex")
    content_digest: str = DbField(max_length=66)
    issued_at: int = DbField(sa_type=BigInteger)
    cid: str | None = DbField(default=None, max_length=256)
    size: int = DbField(default=0, sa_type=BigInteger, description="ciphertext bytes")
    blob_sha256: str = DbField(default="", max_length=66, description="sha256 of the ciphertext")


class Record(RecordBase, table=True):
    """A record row. ``status`` is ``pending`` while an upload is in progress, ``live`` once the
    registerRecord receipt is in; only live rows are served."""

    __tablename__ = "record"

    wrapped_key: bytes = DbField(sa_column=Column(LargeBinary, nullable=False))
    status: str = DbField(default="pending", max_length=16)
    tx_hash: str | None = DbField(default=None, max_length=66)
    block_number: int | None = DbField(default=None, sa_type=BigInteger)
    created_at: float


class AccessLogEntry(SQLModel, table=True):
    """One access decision: leaf ``idx`` of the RFC 9162 log. ``leaf`` is the canonical JSON."""

    __tablename__ = "access_log"
    __table_args__ = (Index("ix_access_log_patient_idx", "patient", "idx"),)

    idx: int = DbField(primary_key=True, sa_type=BigInteger)
    leaf: bytes = DbField(sa_column=Column(LargeBinary, nullable=False))
    leaf_hash: bytes = DbField(sa_column=Column(LargeBinary, nullable=False))
    patient: str = DbField(max_length=42)
    requester: str = DbField(index=True, max_length=42)


class LogSequencer(SQLModel, table=True):
    """The single row that serialises appends (``SELECT ... FOR UPDATE`` on PostgreSQL)."""

    __tablename__ = "access_log_sequencer"

    id: int = DbField(primary_key=True)
    next_idx: int = DbField(sa_type=BigInteger)


class Checkpoint(SQLModel, table=True):
    """An access-log checkpoint anchored on-chain (tree size, root, transaction)."""

    __tablename__ = "access_log_checkpoint"

    tree_size: int = DbField(primary_key=True, sa_type=BigInteger)
    root_hash: str = DbField(max_length=66)
    gateway: str = DbField(max_length=42)
    tx_hash: str = DbField(max_length=66)
    block_number: int = DbField(sa_type=BigInteger)
    anchored_at: float


class RelayedTx(SQLModel, table=True):
    """A transaction the relayer sent for a patient (the row is written before it is sent):
    what the relayer policy's quota and rate count, and where a pending relay's outcome is
    looked up. ``status``: ``sending``, ``pending`` (in the node's pool), ``mined``,
    ``reverted``."""

    __tablename__ = "relayed_tx"
    __table_args__ = (Index("ix_relayed_tx_patient_created", "patient", "created_at"),)

    id: int | None = DbField(default=None, primary_key=True)
    tx_hash: str | None = DbField(default=None, index=True, max_length=66)
    action: str = DbField(max_length=8)
    patient: str = DbField(max_length=42, description="lowercase 0x hex")
    signer: str = DbField(max_length=42)
    status: str = DbField(default="sending", max_length=16)
    block_number: int | None = DbField(default=None, sa_type=BigInteger)
    gas_used: int | None = DbField(default=None, sa_type=BigInteger)
    created_at: float = DbField(index=True)


class CustodyManifest(SQLModel, table=True):
    """A threshold-custody record this gateway holds a share of: its patient and the custody
    manifest pinned at ``cid`` (the registered CID), kept so a release needs no IPFS read.
    Written at upload by the uploading gateway, and on first use by every other member (from
    the chain's RecordRegistered and the manifest's CID)."""

    __tablename__ = "custody_manifest"

    record_id: str = DbField(primary_key=True, max_length=66)
    patient: str = DbField(max_length=42, description="lowercase 0x hex")
    cid: str = DbField(max_length=256)
    manifest: bytes = DbField(sa_column=Column(LargeBinary, nullable=False))


# Typed handles on the tables, for SQLAlchemy Core statements on the hot paths.
AUTH_NONCE: Table = SQLModel.metadata.tables["auth_nonce"]
AUTH_SESSION: Table = SQLModel.metadata.tables["auth_session"]
RECORD: Table = SQLModel.metadata.tables["record"]
ACCESS_LOG: Table = SQLModel.metadata.tables["access_log"]
LOG_SEQUENCER: Table = SQLModel.metadata.tables["access_log_sequencer"]
CHECKPOINT: Table = SQLModel.metadata.tables["access_log_checkpoint"]
RELAYED_TX: Table = SQLModel.metadata.tables["relayed_tx"]
CUSTODY_MANIFEST: Table = SQLModel.metadata.tables["custody_manifest"]
TABLES: tuple[Table, ...] = (
    AUTH_NONCE,
    AUTH_SESSION,
    RECORD,
    ACCESS_LOG,
    LOG_SEQUENCER,
    CHECKPOINT,
    RELAYED_TX,
    CUSTODY_MANIFEST,
)
