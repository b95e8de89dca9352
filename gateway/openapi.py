"""The gateway's OpenAPI document, without starting anything.

``python -m gateway.openapi`` prints it (sorted keys, two-space indent, a final newline): the
form committed at ``docs/openapi.json``. ``make openapi`` rewrites that file after an intended
change of the API; ``tests/test_api_schemathesis.py`` fails while the served schema differs
from the committed one.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from fastapi import FastAPI

__all__ = ["METADATA", "document", "dumps"]

#: The title, version and summary ``gateway.app.create_app`` gives the app.
METADATA: dict[str, str] = {
    "title": "Consent Ledger gateway",
    "version": "0.1.0",
    "summary": "Serves encrypted checkup results only when the chain says the reader holds "
    "consent.",
}


def document() -> dict[str, Any]:
    """The OpenAPI document the gateway serves at ``/openapi.json``."""
    from gateway.api import router

    app = FastAPI(**METADATA)  # type: ignore[arg-type]
    app.include_router(router)
    return app.openapi()


def dumps(doc: dict[str, Any]) -> str:
    """The committed form of a document."""
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(dumps(document()))
