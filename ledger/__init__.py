"""Consent Ledger, chain side: contract build, deployment, typed registry client, replay, audit."""

__version__ = "0.1.0"
