"""Consent Ledger gateway: FastAPI service (auth, upload, fetch, consent relay, access log).

Import what you need from its modules (``gateway.app.create_app``, ``gateway.settings``).
"""
