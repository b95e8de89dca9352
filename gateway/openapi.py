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

__all__ = ["METADATA", "document", "dumps", "exact_integer_bounds"]

_INT64_MAX = 2**63 - 1

#: The title, version and summary ``gateway.app.create_app`` gives the app.
METADATA: dict[str, str] = {
    "title": "Consent Ledger gateway",
    "version": "0.1.0",
    "summary": "Serves encrypted checkup results only when the chain says the reader holds "
    "consent.",
}


def exact_integer_bounds(app: FastAPI) -> None:
    """Make ``app.openapi()`` write an integer schema's bounds as integers.

    FastAPI writes the bounds of a form field (a multipart body) as doubles: ``2**63 - 1``
    becomes ``9.223372036854776e18``, which admits integers above the bound, so a schema-valid
    request would be refused. Each integral double bound of an ``integer`` schema is written
    back as the integer it stands for (the double nearest ``2**63 - 1`` as ``2**63 - 1``)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _fix_bounds(generate())
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _fix_bounds(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("type") == "integer":
            for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
                value = node.get(key)
                if isinstance(value, float) and value.is_integer():
                    node[key] = _INT64_MAX if value == float(_INT64_MAX) else int(value)
        for child in node.values():
            _fix_bounds(child)
    elif isinstance(node, list):
        for child in node:
            _fix_bounds(child)


def document() -> dict[str, Any]:
    """The OpenAPI document the gateway serves at ``/openapi.json``."""
    from gateway.api import router

    app = FastAPI(**METADATA)  # type: ignore[arg-type]
    app.include_router(router)
    exact_integer_bounds(app)
    return app.openapi()


def dumps(doc: dict[str, Any]) -> str:
    """The committed form of a document."""
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(dumps(document()))
