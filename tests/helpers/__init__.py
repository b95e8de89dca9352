"""Plain helper functions and types for the tests (no fixtures: those live in ``tests.plugins``)."""
