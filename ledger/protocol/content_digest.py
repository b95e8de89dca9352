"""The salted content digest a centre attests (pure, no I/O; shared by clients and gateways).

``contentDigest = sha256(salt || document)`` with a fresh 32-byte salt per record. The salt
travels only inside the encrypted record, so only a reader who can decrypt can recompute the
digest; a chain observer cannot confirm a guessed document by hashing it.
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["SALT_SIZE", "new_salt", "salted_digest"]

SALT_SIZE = 32


def new_salt() -> bytes:
    """A fresh random 32-byte content-digest salt (one per record)."""
    return os.urandom(SALT_SIZE)


def salted_digest(salt: bytes, document: bytes) -> bytes:
    """The content digest a centre attests: ``sha256(salt || document)``."""
    if not isinstance(salt, bytes) or len(salt) != SALT_SIZE:
        raise ValueError(f"a content-digest salt is {SALT_SIZE} bytes")
    return hashlib.sha256(salt + document).digest()
