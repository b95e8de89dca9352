"""The API contract: the committed OpenAPI schema is the one the gateway serves, and schemathesis,
run as an integrator runs it, finds nothing.

The gateway is a real one (uvicorn thread, real anvil / IPFS / SQLite, a fresh relayer). The
schemathesis command line runs against it with ``schemathesis.toml``: every check (``--checks
all``, positive and negative data acceptance included), every phase (examples, coverage, fuzzing,
stateful, following the schema's links login → upload → list → fetch → relay → outcome) and one
seed per test, bounded by ``--max-examples``. The hooks (``tests.helpers.schemathesis_hooks``)
sign in with SIWE for real and put real logins, uploads and grants among the generated cases;
schemathesis still sends every unauthenticated variant. Each seed must end with exit status 0
(no failure, no ``missing_auth`` warning), and every operation must have answered something
other than 401/403, each signed operation a success.

``make api-contract`` runs the same with a larger budget (``bench/api_contract.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from web3 import Web3

from gateway.openapi import document, dumps
from ledger.chain.node import dev_accounts
from tests.helpers import api_contract
from tests.helpers.gateway import (
    Stack,
    build_stack,
    close_stack,
    fresh_relayer,
    login,
    quiet_logs,
)

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "docs" / "openapi.json"
DOCUMENT: dict[str, Any] = json.loads(COMMITTED.read_text(encoding="utf-8"))

#: Three seeds in every suite run; test cases per operation and phase for each.
SEEDS = (1, 2, 3)
MAX_EXAMPLES = 12
#: The operations whose success needs a real signature (the hooks provide one).
SIGNED = ("POST /v1/auth/login", "POST /v1/records", "POST /v1/consents")

_session: dict[str, str] = {}


@pytest.fixture(scope="module")
def api_gateway(
    tmp_path_factory: pytest.TempPathFactory,
    anvil: Any,
    w3: Web3,
    ipfs_node: Any,
    gateway_registry: Any,
) -> Iterator[Stack]:
    quiet_logs()
    registry, deployment = gateway_registry
    home: Path = tmp_path_factory.mktemp("schemathesis-gw")
    stack = build_stack(
        home=home,
        w3=w3,
        chain_url=anvil.url,
        ipfs_url=ipfs_node.url,
        registry=registry,
        deployment=deployment,
        relayer=fresh_relayer(w3, registry),
        auditors=dev_accounts()[2].address,  # the centre, so the export runs too
    )
    try:
        _session["token"] = login(stack, stack.centre)["Authorization"].split(" ", 1)[1]
        _session["chain_url"] = anvil.url
        yield stack
    finally:
        _session.clear()
        close_stack(stack)


# ------------------------------------------------------------------------------ the schema


def test_the_committed_schema_is_the_one_the_gateway_serves(api_gateway: Stack) -> None:
    served = api_gateway.client.get("/openapi.json")
    assert served.status_code == 200
    assert dumps(served.json()) == dumps(DOCUMENT), (
        "the served schema differs from docs/openapi.json: if the change is intended, run "
        "`make openapi` and commit docs/openapi.json"
    )
    assert dumps(document()) == COMMITTED.read_text(encoding="utf-8")


def test_no_operation_documents_an_error_shape_the_gateway_never_sends() -> None:
    text = json.dumps(DOCUMENT)
    assert (
        "HTTPValidationError" not in text
    )  # FastAPI's {"detail": ...}: the gateway's is {"error"}
    for path, operations in DOCUMENT["paths"].items():
        for method, operation in operations.items():
            for status, answer in operation["responses"].items():
                if int(status) < 400 or (path, status) == ("/healthz", "503"):
                    continue
                schema = answer["content"]["application/json"]["schema"]
                codes = schema["properties"]["error"]["properties"]["code"]["enum"]
                examples = answer["content"]["application/json"]["examples"]
                assert codes, (method, path, status)
                assert sorted(examples) == sorted(codes), (method, path, status)


# ------------------------------------------------------------------------------ schemathesis


@pytest.mark.parametrize("seed", SEEDS)
def test_schemathesis_all_checks_all_phases_finds_nothing(
    api_gateway: Stack, seed: int, tmp_path: Path
) -> None:
    run = api_contract.run(
        str(api_gateway.client.base_url),
        chain_url=_session["chain_url"],
        key=api_gateway.centre.key.hex(),
        seed=seed,
        max_examples=MAX_EXAMPLES,
        workdir=tmp_path,
        timeout_s=240,
    )
    print(f"seed {seed}: {run.figures}, real bodies {run.real_bodies}")
    assert run.returncode == 0, run.output[-20_000:]
    assert run.figures["failures"] == 0
    assert run.figures["operations_tested"] == run.figures["operations_selected"] == 20
    documented = {
        f"{method.upper()} {path}" for path, ops in DOCUMENT["paths"].items() for method in ops
    }
    # Also seen: the undocumented methods of each path (the unsupported_method check, 405).
    assert documented <= set(run.statuses)
    assert api_contract.only_auth_refusals(run, documented) == []
    for op in SIGNED:
        assert any(s.startswith("2") for s in run.statuses[op]), (op, run.statuses[op])
    assert "200" in run.statuses["GET /v1/records/{record_id}"], run.statuses
    assert "200" in run.statuses["GET /v1/access-log/export"], run.statuses


# ------------------------------------------------- findings of earlier runs, kept as regressions


def test_a_malformed_siwe_message_is_answered_with_a_documented_status(
    api_gateway: Stack,
) -> None:
    r = api_gateway.client.post(
        "/v1/auth/login", json={"message": "0" * 100, "signature": "0x" + "ab" * 65}
    )
    assert r.json()["error"]["code"] == "siwe_malformed_message"
    documented = DOCUMENT["paths"]["/v1/auth/login"]["post"]["responses"]
    assert str(r.status_code) in documented, (r.status_code, sorted(documented))


def test_a_body_that_is_not_json_is_answered_with_a_documented_status(api_gateway: Stack) -> None:
    r = api_gateway.client.post(
        "/v1/consents",
        content=b"\x1d*\xff\xfe",
        headers={
            "content-type": "application/json",
            "authorization": f"Bearer {_session['token']}",
        },
    )
    assert r.json()["error"]["code"] == "bad_request"
    documented = DOCUMENT["paths"]["/v1/consents"]["post"]["responses"]
    assert str(r.status_code) in documented, (r.status_code, sorted(documented))


@pytest.mark.parametrize("path", ["/v1/records", "/v1/consents"])
def test_a_405_lists_every_method_of_the_path_in_allow(api_gateway: Stack, path: str) -> None:
    r = api_gateway.client.request("OPTIONS", path)
    assert r.status_code == 405
    assert {m.strip() for m in r.headers["allow"].split(",")} == {"GET", "POST"}


@pytest.mark.parametrize(
    "path", ["/v1/records?offset=9223372036854775808", "/v1/access-log/entries?after=2e100"]
)
def test_a_query_integer_beyond_int64_is_refused_with_422(api_gateway: Stack, path: str) -> None:
    path = path.replace("2e100", str(10**100))
    with httpx.Client(base_url=str(api_gateway.client.base_url), timeout=30) as client:
        r = client.get(path, headers={"authorization": f"Bearer {_session['token']}"})
    assert r.status_code == 422, r.text
