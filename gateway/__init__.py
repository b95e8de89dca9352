"""Consent Ledger gateway: FastAPI service (auth, upload, fetch, consent relay, access log)."""
