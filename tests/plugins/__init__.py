"""Fixture plugins, named in ``tests/conftest.py``'s ``pytest_plugins``."""
