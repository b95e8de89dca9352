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
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from web3 import Web3

from gateway.openapi import document, dumps
from ledger.chain.node import dev_accounts
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


def run_schemathesis(
    stack: Stack, *, seed: int, max_examples: int, workdir: Path
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``schemathesis run`` against the stack's served schema; its result and the statuses the
    hooks saw per operation."""
    status_file = workdir / f"statuses-{seed}.json"
    base = str(stack.client.base_url)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SCHEMATHESIS_HOOKS": "tests.helpers.schemathesis_hooks",
        "CONSENT_API_URL": base,
        "CONSENT_API_CHAIN_URL": _session["chain_url"],
        "CONSENT_API_KEY": stack.centre.key.hex(),
        "CONSENT_API_STATUS_FILE": str(status_file),
    }
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(ROOT / "schemathesis.toml"),
        "run",
        f"{base}/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--seed",
        str(seed),
        "--max-examples",
        str(max_examples),
        "--workers",
        "1",
        "--no-color",
    ]
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    statuses = json.loads(status_file.read_text()) if status_file.exists() else {}
    return done, statuses


def summary_figures(output: str) -> dict[str, int]:
    """The figures of schemathesis' summary: operations selected and tested, test cases
    generated and passed, failures."""
    figures = {"failures": 0}
    patterns = {
        "operations_selected": r"Selected: (\d+)/\d+",
        "operations_tested": r"Tested: (\d+)",
        "test_cases": r"(\d+) generated",
        "passed": r"generated, (\d+) passed",
        "failures": r"(\d+) unique failures?",
    }
    for name, pattern in patterns.items():
        m = re.search(pattern, output)
        if m:
            figures[name] = int(m.group(1))
    return figures


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
    done, seen = run_schemathesis(
        api_gateway, seed=seed, max_examples=MAX_EXAMPLES, workdir=tmp_path
    )
    output = done.stdout + done.stderr
    figures = summary_figures(output)
    print(f"seed {seed}: {figures}")
    assert done.returncode == 0, output[-20_000:]
    assert figures["failures"] == 0
    assert figures["operations_tested"] == figures["operations_selected"] == 16, figures
    documented = {
        f"{method.upper()} {path}" for path, ops in DOCUMENT["paths"].items() for method in ops
    }
    # Also seen: the undocumented methods of each path (the unsupported_method check, 405).
    statuses = {op: counts for op, counts in seen["statuses"].items() if op in documented}
    assert set(statuses) == documented
    only_auth = [op for op, counts in statuses.items() if set(counts) <= {"401", "403"}]
    assert only_auth == [], only_auth
    for op in SIGNED:
        assert any(s.startswith("2") for s in statuses[op]), (op, statuses[op])
    assert any(s == "200" for s in statuses["GET /v1/records/{record_id}"]), statuses
    assert any(s == "200" for s in statuses["GET /v1/access-log/export"]), statuses


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
