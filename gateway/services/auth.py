"""Sign-in with Ethereum: single-use nonces, logins and bearer sessions (in the database, with
an in-memory cache of live sessions)."""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from sqlalchemy import Connection, Engine, Table, delete, insert, select

from gateway.errors import (
    SiweNonceInvalid,
    Unauthenticated,
)
from gateway.storage.engine import db_guard
from gateway.storage.tables import AUTH_NONCE, AUTH_SESSION
from ledger.protocol import siwe
from ledger.protocol.errors import DomainError
from ledger.protocol.wire import NoncePublic, SessionPublic

__all__ = ["PURGE_BATCH", "AuthService", "Principal"]

log = logging.getLogger("gateway")

#: Expired nonce / session rows deleted per issued nonce / login: more than each call adds,
#: so the tables stay bounded, and an index range scan, never a full one.
PURGE_BATCH = 32


@dataclass(frozen=True, slots=True)
class Principal:
    """A signed-in account, with the public key recovered from its login signature."""

    address: ChecksumAddress
    public_key: bytes
    expires_at: float


def _token_hash(token: str) -> str:
    return "0x" + hashlib.sha256(token.encode()).hexdigest()


def _purge_expired(conn: Connection, table: Table, key: Any, now: float) -> int:
    """Delete at most ``PURGE_BATCH`` rows of ``table`` expired before ``now`` (through the
    ``expires_at`` index); the number deleted."""
    oldest = select(key).where(table.c.expires_at < now).limit(PURGE_BATCH)
    return int(conn.execute(delete(table).where(key.in_(oldest.scalar_subquery()))).rowcount)


class AuthService:
    """SIWE nonces, logins and bearer sessions (single-use nonces and sessions in the DB)."""

    def __init__(
        self,
        engine: Engine,
        *,
        domain: str,
        uri: str,
        chain_id: Callable[[], int],
        nonce_ttl_s: int,
        session_ttl_s: int,
        max_age_s: int,
        clock: Callable[[], float] = time.time,
        cache_size: int = 10_000,
    ) -> None:
        self._engine = engine
        self.domain = domain
        self.uri = uri
        self._chain_id = chain_id
        self._nonce_ttl_s = nonce_ttl_s
        self._session_ttl_s = session_ttl_s
        self._max_age = timedelta(seconds=max_age_s)
        self._clock = clock
        self._cache: OrderedDict[str, Principal] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()

    def new_nonce(self) -> NoncePublic:
        nonce = secrets.token_hex(16)
        now = self._clock()
        expires = now + self._nonce_ttl_s
        with db_guard(), self._engine.begin() as conn:
            conn.execute(insert(AUTH_NONCE).values(nonce=nonce, expires_at=expires))
            _purge_expired(conn, AUTH_NONCE, AUTH_NONCE.c.nonce, now)
        try:
            chain_id: int | None = self._chain_id()
        except DomainError:
            chain_id = None
        return NoncePublic(
            nonce=nonce, expires_at=expires, domain=self.domain, uri=self.uri, chain_id=chain_id
        )

    def login(self, message: str, signature: str) -> SessionPublic:
        parsed = siwe.parse_message(message)
        now = self._clock()
        table = AUTH_NONCE
        with db_guard(), self._engine.begin() as conn:
            consumed = conn.execute(
                delete(table).where(table.c.nonce == parsed.nonce, table.c.expires_at >= now)
            ).rowcount
        if consumed != 1:
            raise SiweNonceInvalid(nonce=parsed.nonce)
        verified = siwe.verify(
            message,
            signature,
            expected_domain=self.domain,
            expected_uri=self.uri,
            expected_chain_id=self._chain_id(),
            now=datetime.fromtimestamp(now, tz=UTC),
            max_age=self._max_age,
        )
        expires = now + self._session_ttl_s
        if verified.message.expiration_time is not None:
            expires = min(expires, verified.message.expiration_time.timestamp())
        token = secrets.token_urlsafe(32)
        address = to_checksum_address(verified.address)
        with db_guard(), self._engine.begin() as conn:
            conn.execute(
                insert(AUTH_SESSION).values(
                    token_hash=_token_hash(token),
                    address=address,
                    public_key="0x" + verified.public_key.hex(),
                    expires_at=expires,
                    created_at=now,
                )
            )
            _purge_expired(conn, AUTH_SESSION, AUTH_SESSION.c.token_hash, now)
        log.info("login address=%s expires_at=%.0f", address, expires)
        return SessionPublic(token=token, address=address, expires_at=expires)

    def cached(self, token: str | None) -> Principal | None:
        """The session from memory if it is cached and unexpired (no I/O), else None."""
        if not token:
            return None
        with self._cache_lock:
            principal = self._cache.get(_token_hash(token))
        if principal is None or principal.expires_at <= self._clock():
            return None
        return principal

    def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise Unauthenticated(reason="missing bearer token")
        key = _token_hash(token)
        now = self._clock()
        with self._cache_lock:
            principal = self._cache.get(key)
        if principal is None:
            table = AUTH_SESSION
            with db_guard(), self._engine.connect() as conn:
                row = conn.execute(
                    select(table.c.address, table.c.public_key, table.c.expires_at).where(
                        table.c.token_hash == key
                    )
                ).first()
            if row is None:
                raise Unauthenticated(reason="unknown session")
            principal = Principal(
                address=to_checksum_address(row.address),
                public_key=bytes.fromhex(row.public_key[2:]),
                expires_at=float(row.expires_at),
            )
            with self._cache_lock:
                self._cache[key] = principal
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        if principal.expires_at <= now:
            with self._cache_lock:
                self._cache.pop(key, None)
            raise Unauthenticated(reason="session expired")
        return principal
