"""Root of the protocol's domain errors.

Every error raised by ``ledger.protocol`` (envelope, Merkle, SIWE) derives from
:class:`DomainError`: a stable machine-readable ``code`` plus the offending values as keyword
``fields``. Protocol errors carry no HTTP status; a server maps them to one at its boundary
(the gateway does so once, in ``gateway.errors.http_status_of``).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

__all__ = ["DomainError"]


class DomainError(Exception):
    """A refusal with a stable ``code`` and the values that caused it."""

    code: ClassVar[str] = "domain_error"

    def __init__(self, message: str, **fields: object) -> None:
        super().__init__(message)
        self.message = message
        self.fields: Mapping[str, object] = MappingProxyType(dict(fields))

    def headers(self) -> dict[str, str]:
        """HTTP headers a response for this error carries (``Retry-After`` on a 429); none by
        default."""
        return {}

    def to_dict(self) -> dict[str, object]:
        """JSON-ready body: ``{"code", "message", **fields}`` (fields rendered with ``str``
        when not a JSON scalar)."""
        body: dict[str, object] = {"code": self.code, "message": self.message}
        for key, value in self.fields.items():
            if value is None or isinstance(value, (bool, int, float, str)):
                body[key] = value
            elif isinstance(value, bytes):
                body[key] = "0x" + value.hex()
            else:
                body[key] = str(value)
        return body
