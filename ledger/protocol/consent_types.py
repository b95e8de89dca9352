"""Value types shared by the registry client, its error types and its EIP-712 builders.

They mirror ``contracts/IConsentRegistry.sol``: ``ScopeKind`` and ``Basis`` are the Solidity
enums (same order), ``Purpose`` the purpose bit ids of ``ConsentRegistry`` (public constants
there), ``RecordId`` the 32-byte EIP-712 digest of a record's attestation.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum
from typing import NewType

from eth_utils.crypto import keccak

__all__ = [
    "ALL_SCOPE_ID",
    "BREAK_GLASS_COOLDOWN_S",
    "BREAK_GLASS_PURPOSES",
    "CENTRE_ROLE",
    "DEFAULT_ADMIN_ROLE",
    "DEFAULT_CATEGORIES",
    "EMERGENCY_ROLE",
    "GATEWAY_ROLE",
    "MAX_BREAK_GLASS_S",
    "NO_EXPIRY",
    "Basis",
    "Purpose",
    "RecordId",
    "ScopeKind",
    "category_id",
    "category_name",
    "purposes_mask",
    "purposes_of",
]

RecordId = NewType("RecordId", bytes)
"""A record id: the 32-byte EIP-712 digest of the centre's attestation."""

ALL_SCOPE_ID = bytes(32)
"""The scope id of a ``ScopeKind.All`` consent (must be zero)."""

NO_EXPIRY = 2**64 - 1
"""``expiresAt`` for a consent that does not lapse by itself."""

MAX_BREAK_GLASS_S = 24 * 60 * 60
"""The longest break-glass access (``MAX_BREAK_GLASS``), in seconds."""

BREAK_GLASS_COOLDOWN_S = 7 * 24 * 60 * 60
"""How long after a close the same institution cannot reopen (``BREAK_GLASS_COOLDOWN``), in s."""

DEFAULT_CATEGORIES: tuple[str, ...] = ("checkup", "laboratory", "imaging", "prescription")
"""The categories a new deployment lists. Coarse on purpose: every chain observer sees a
record's category beside its patient's address, so a category names a kind of document, never
a condition, a test or a specialty; finer classification stays inside the encrypted record."""


class ScopeKind(IntEnum):
    """What a consent covers (``IConsentRegistry.ScopeKind``)."""

    RECORD = 0
    CATEGORY = 1
    ALL = 2


class Basis(IntEnum):
    """On which basis an access is allowed (``IConsentRegistry.Basis``)."""

    NONE = 0
    OWNER = 1
    RECORD = 2
    CATEGORY = 3
    ALL = 4
    GUARDIAN = 5
    EMERGENCY = 6


class Purpose(IntEnum):
    """Purpose-of-use bit ids (``ConsentRegistry.TREATMENT`` ...)."""

    TREATMENT = 0
    RESEARCH = 1
    INSURANCE = 2
    PUBLIC_HEALTH = 3
    EMERGENCY = 4

    @property
    def bit(self) -> int:
        return 1 << int(self)


BREAK_GLASS_PURPOSES = frozenset({Purpose.TREATMENT, Purpose.EMERGENCY})
"""The purposes an open break-glass covers."""


def purposes_mask(purposes: Iterable[int]) -> int:
    """The uint32 bit set of purpose ids (0..31)."""
    mask = 0
    for purpose in purposes:
        if not 0 <= int(purpose) <= 31:
            raise ValueError(f"purpose id {purpose} is out of range 0..31")
        mask |= 1 << int(purpose)
    return mask


# The registry's roles (``IConsentRegistry`` declares them): OpenZeppelin AccessControl ids.
DEFAULT_ADMIN_ROLE = bytes(32)
CENTRE_ROLE = keccak(text="CENTRE_ROLE")
GATEWAY_ROLE = keccak(text="GATEWAY_ROLE")
EMERGENCY_ROLE = keccak(text="EMERGENCY_ROLE")


def purposes_of(mask: int) -> frozenset[int]:
    """The purpose ids in a bit set (known ones as ``Purpose``)."""
    ids: set[int] = set()
    for bit in range(32):
        if mask >> bit & 1:
            ids.add(Purpose(bit) if bit in Purpose._value2member_map_ else bit)
    return frozenset(ids)


def category_id(name: str) -> bytes:
    """A category's bytes32 id: its ASCII name, left-aligned and zero-padded."""
    raw = name.encode("ascii")
    if not raw or len(raw) > 32 or b"\x00" in raw:
        raise ValueError(f"a category is 1..32 ASCII characters without NUL, not {name!r}")
    return raw.ljust(32, b"\x00")


def category_name(category: bytes) -> str:
    """The ASCII name of a bytes32 category id."""
    return bytes(category).rstrip(b"\x00").decode("ascii")
