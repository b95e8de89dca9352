"""Consent Ledger gateway: FastAPI service (auth, upload, fetch, consent relay, access log)."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.app import create_app
    from gateway.envelope import Envelope, open_envelope
    from gateway.errors import GatewayError
    from gateway.settings import Settings, get_settings

__all__ = ["Envelope", "GatewayError", "Settings", "create_app", "get_settings", "open_envelope"]

# Lazy, so that importing a light submodule (gateway.merkle, gateway.accesslog) does not pull
# in FastAPI, web3 and the database layer.
_EXPORTS = {
    "Envelope": "gateway.envelope",
    "GatewayError": "gateway.errors",
    "Settings": "gateway.settings",
    "create_app": "gateway.app",
    "get_settings": "gateway.settings",
    "open_envelope": "gateway.envelope",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gateway' has no attribute {name!r}")
    return getattr(import_module(module), name)
