"""EIP-4361 parser and verifier, including interop with the reference npm ``siwe`` + ethers."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import http_status_of
from ledger.protocol.errors import DomainError
from ledger.protocol.siwe import (
    AddressMismatch,
    BadSignature,
    ChainMismatch,
    DomainMismatch,
    Expired,
    MalformedMessage,
    NotYetValid,
    SiweError,
    SiweMessage,
    UriMismatch,
    parse_message,
    verify,
)

NODE_MODULES = Path(__file__).resolve().parent.parent / "hardhat_local" / "node_modules"
PRIVATE_KEY = "0x4f3edf983ac636a65a842ce7c78d9aa706d3b113bce9c46f30d7d21715b23b1d"
ACCOUNT = Account.from_key(PRIVATE_KEY)
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

# The example message of EIP-4361 (current text) and its earlier "service.invalid" form.
EIP_EXAMPLE = """example.com wants you to sign in with your Ethereum account:
0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2

I accept the ExampleOrg Terms of Service: https://example.com/tos

URI: https://example.com/login
Version: 1
Chain ID: 1
Nonce: 32891756
Issued At: 2021-09-30T16:25:24Z
Resources:
- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/
- https://example.com/my-web2-claim.json"""

EIP_EXAMPLE_SCHEME = """https://example.com:3388 wants you to sign in with your Ethereum account:
0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2

I accept the ExampleOrg Terms of Service: https://example.com/tos

URI: https://example.com/login
Version: 1
Chain ID: 1
Nonce: 32891756
Issued At: 2021-09-30T16:25:24Z
Resources:
- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/
- https://example.com/my-web2-claim.json"""

NODE_SCRIPT = r"""
const { SiweMessage } = require('siwe');
const { Wallet } = require('ethers');
(async () => {
  const wallet = new Wallet(process.env.SIWE_TEST_KEY);
  const base = {
    domain: 'ledger.example.org', address: wallet.address, uri: 'https://ledger.example.org/login',
    version: '1', chainId: 31337, nonce: 'abcdEFGH1234', issuedAt: '2030-01-01T00:00:00.000Z',
  };
  const cases = {
    minimal: base,
    statement: { ...base, statement: 'Sign in to Consent Ledger.' },
    full: {
      ...base, scheme: 'https', domain: 'ledger.example.org:8443',
      statement: 'I accept the ToS: https://x.org/tos?a=1&b=(2)',
      expirationTime: '2030-01-02T00:00:00.000Z', notBefore: '2029-12-31T23:00:00.000Z',
      requestId: 'req-42',
      resources: ['ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/',
                  'https://example.com/my-web2-claim.json'],
    },
    emptyResources: { ...base, resources: [] },
    offset: { ...base, issuedAt: '2030-01-01T08:00:00+08:00', chainId: 1 },
    localhost: { ...base, domain: 'localhost:8000', uri: 'http://localhost:8000/v1/auth',
                 expirationTime: '2030-01-01T00:10:00.000Z' },
  };
  const out = [];
  for (const [name, fields] of Object.entries(cases)) {
    const text = new SiweMessage(fields).prepareMessage();
    out.push({ name, fields, text, signature: await wallet.signMessage(text),
               address: wallet.address, publicKey: wallet.signingKey.publicKey });
  }
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
"""


@pytest.fixture(scope="module")
def npm_messages() -> dict[str, dict[str, Any]]:
    node = shutil.which("node")
    assert node is not None, "node is required (hardhat_local)"
    assert (NODE_MODULES / "siwe").is_dir(), "run npm ci in hardhat_local"
    result = subprocess.run(
        [node, "-e", NODE_SCRIPT],
        env={**os.environ, "NODE_PATH": str(NODE_MODULES), "SIWE_TEST_KEY": PRIVATE_KEY},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return {case["name"]: case for case in json.loads(result.stdout)}


def sign(text: str) -> bytes:
    return bytes(ACCOUNT.sign_message(encode_defunct(text=text)).signature)


def make_message(**changes: Any) -> SiweMessage:
    base = SiweMessage(
        domain="ledger.example.org",
        address=ACCOUNT.address,
        uri="https://ledger.example.org/login",
        version="1",
        chain_id=31337,
        nonce="abcdEFGH1234",
        issued_at=datetime(2030, 1, 1, tzinfo=UTC),
        statement="Sign in to Consent Ledger.",
    )
    return replace(base, **changes)


def check(text: str, signature: bytes | str, **overrides: Any) -> Any:
    kwargs: dict[str, Any] = {
        "expected_domain": "ledger.example.org",
        "expected_chain_id": 31337,
        "now": NOW,
    }
    kwargs.update(overrides)
    return verify(text, signature, **kwargs)


# -- the EIP's own example ------------------------------------------------------------------


def test_eip_example_parses() -> None:
    msg = parse_message(EIP_EXAMPLE)
    assert msg.domain == "example.com"
    assert msg.scheme is None
    assert msg.address == "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2"
    assert msg.statement == "I accept the ExampleOrg Terms of Service: https://example.com/tos"
    assert msg.uri == "https://example.com/login"
    assert (msg.version, msg.chain_id, msg.nonce) == ("1", 1, "32891756")
    assert msg.issued_at == datetime(2021, 9, 30, 16, 25, 24, tzinfo=UTC)
    assert msg.expiration_time is None
    assert msg.not_before is None
    assert msg.request_id is None
    assert msg.resources == (
        "ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/",
        "https://example.com/my-web2-claim.json",
    )


def test_eip_example_with_scheme_and_port_parses() -> None:
    msg = parse_message(EIP_EXAMPLE_SCHEME)
    assert msg.scheme == "https"
    assert msg.domain == "example.com:3388"


# -- interop with the reference implementation ----------------------------------------------


def test_npm_siwe_messages_parse_to_the_same_fields(
    npm_messages: dict[str, dict[str, Any]],
) -> None:
    for name, case in npm_messages.items():
        msg = parse_message(case["text"])
        fields = case["fields"]
        assert msg.domain == fields["domain"], name
        assert msg.scheme == fields.get("scheme"), name
        assert msg.address == case["address"], name
        assert msg.statement == fields.get("statement"), name
        assert msg.uri == fields["uri"], name
        assert msg.chain_id == fields["chainId"], name
        assert msg.nonce == fields["nonce"], name
        assert msg.request_id == fields.get("requestId"), name
        resources = fields.get("resources")
        assert msg.resources == (tuple(resources) if resources is not None else None), name
        issued = datetime.fromisoformat(fields["issuedAt"].replace("Z", "+00:00"))
        assert msg.issued_at == issued, name
        # our serialisation is the reference's (JS toISOString timestamps)
        if name != "offset":
            assert msg.prepare_message() == case["text"], name
        assert parse_message(msg.prepare_message()) == msg, name


def test_npm_siwe_signatures_verify(npm_messages: dict[str, dict[str, Any]]) -> None:
    for name, case in npm_messages.items():
        msg = parse_message(case["text"])
        login = verify(
            case["text"],
            case["signature"],
            expected_domain=msg.domain,
            expected_chain_id=msg.chain_id,
            expected_uri=msg.uri,
            now=datetime(2030, 1, 1, 0, 5, tzinfo=UTC),
        )
        assert login.address == case["address"], name
        assert login.public_key == bytes.fromhex(case["publicKey"][2:]), name
        assert len(login.public_key) == 65
        assert login.message == msg


def test_tampered_npm_messages_are_rejected(npm_messages: dict[str, dict[str, Any]]) -> None:
    case = npm_messages["full"]
    text, sig = case["text"], case["signature"]
    now = datetime(2030, 1, 1, 0, 5, tzinfo=UTC)
    kwargs = {"expected_domain": "ledger.example.org:8443", "expected_chain_id": 31337, "now": now}
    verify(text, sig, **kwargs)
    for old, new in [
        ("Nonce: abcdEFGH1234", "Nonce: abcdEFGH1235"),
        ("req-42", "req-43"),
        ("my-web2-claim", "my-web3-claim"),
        ("Issued At: 2030-01-01T00:00:00.000Z", "Issued At: 2030-01-01T00:00:01.000Z"),
        ("ToS", "TOS"),
        ("2030-01-02", "2031-01-02"),
    ]:
        tampered = text.replace(old, new)
        assert tampered != text, f"{old!r} is not in the message: the probe tampers nothing"
        with pytest.raises(AddressMismatch) as exc:
            verify(tampered, sig, **kwargs)
        assert exc.value.message_address == case["address"]
    sig_bytes = bytearray(bytes.fromhex(sig[2:]))
    sig_bytes[10] ^= 1
    with pytest.raises((AddressMismatch, BadSignature)):
        verify(text, bytes(sig_bytes), **kwargs)
    with pytest.raises(DomainMismatch):
        verify(text, sig, **{**kwargs, "expected_domain": "ledger.example.org"})
    with pytest.raises(Expired):
        verify(text, sig, **{**kwargs, "now": datetime(2030, 1, 2, tzinfo=UTC)})
    with pytest.raises(NotYetValid):
        verify(text, sig, **{**kwargs, "now": datetime(2029, 12, 31, 22, tzinfo=UTC)})


# -- python-side signing and every check ----------------------------------------------------


def test_round_trip_with_eth_account_signature() -> None:
    text = make_message().prepare_message()
    login = check(text, sign(text))
    assert login.address == ACCOUNT.address
    # v as 0/1 works as well as 27/28, and hex text as well as bytes
    sig = sign(text)
    assert check(text, sig[:64] + bytes([sig[64] - 27])).address == ACCOUNT.address
    assert check(text, "0x" + sig.hex()).address == ACCOUNT.address


def test_domain_uri_chain_mismatches_carry_values() -> None:
    text = make_message().prepare_message()
    sig = sign(text)
    with pytest.raises(DomainMismatch) as d:
        check(text, sig, expected_domain="evil.example")
    assert (d.value.expected, d.value.actual) == ("evil.example", "ledger.example.org")
    assert check(text, sig, expected_domain="LEDGER.example.org").address == ACCOUNT.address
    with pytest.raises(UriMismatch) as u:
        check(text, sig, expected_uri="https://ledger.example.org/other")
    assert u.value.actual == "https://ledger.example.org/login"
    with pytest.raises(ChainMismatch) as c:
        check(text, sig, expected_chain_id=1)
    assert (c.value.expected, c.value.actual) == (1, 31337)
    assert c.value.to_dict()["code"] == "siwe_chain_mismatch"


def test_time_window() -> None:
    msg = make_message(
        expiration_time=datetime(2030, 1, 1, 13, tzinfo=UTC),
        not_before=datetime(2030, 1, 1, 11, tzinfo=UTC),
    )
    text = msg.prepare_message()
    sig = sign(text)
    check(text, sig)
    with pytest.raises(Expired) as e:
        check(text, sig, now=datetime(2030, 1, 1, 13, tzinfo=UTC))
    assert e.value.expired_at == msg.expiration_time
    with pytest.raises(NotYetValid) as n:
        check(text, sig, now=datetime(2030, 1, 1, 10, 59, tzinfo=UTC))
    assert n.value.valid_from == msg.not_before
    with pytest.raises(Expired):
        check(text, sig, max_age=timedelta(hours=1))
    # issued in the future beyond the allowed skew
    future = make_message(issued_at=NOW + timedelta(minutes=5)).prepare_message()
    with pytest.raises(NotYetValid):
        check(future, sign(future))
    check(future, sign(future), clock_skew=timedelta(minutes=10))
    with pytest.raises(ValueError, match="timezone"):
        check(text, sig, now=datetime(2030, 1, 1, 12))


def test_signature_by_someone_else_is_address_mismatch() -> None:
    text = make_message().prepare_message()
    other = Account.create()
    sig = bytes(other.sign_message(encode_defunct(text=text)).signature)
    with pytest.raises(AddressMismatch) as exc:
        check(text, sig)
    assert exc.value.recovered_address == other.address
    assert exc.value.message_address == ACCOUNT.address


@pytest.mark.parametrize(
    "signature",
    [b"", b"\x00" * 64, b"\x00" * 66, b"\x00" * 65, bytes(64) + b"\x1d", "0xzz", "12" * 65],
)
def test_bad_signatures(signature: bytes | str) -> None:
    text = make_message().prepare_message()
    with pytest.raises(BadSignature):
        check(text, signature)


# -- strictness -----------------------------------------------------------------------------

GOOD = make_message(
    expiration_time=datetime(2030, 1, 2, tzinfo=UTC), request_id="r1", resources=("https://a.b/c",)
).prepare_message()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (ACCOUNT.address, ACCOUNT.address.lower()),  # not EIP-55
        (ACCOUNT.address, ACCOUNT.address[:-1]),
        ("\n", "\r\n"),
        ("Nonce: abcdEFGH1234", "Nonce: abcdEFG"),  # < 8 chars
        ("Nonce: abcdEFGH1234", "Nonce: abcd-EFGH1234"),
        ("Version: 1", "Version: 2"),
        ("Chain ID: 31337", "Chain ID: 0x7a69"),
        ("Chain ID: 31337", "Chain ID: "),
        ("Issued At: 2030-01-01T00:00:00.000Z", "Issued At: 2030-01-01 00:00:00"),
        ("Issued At: 2030-01-01T00:00:00.000Z", "Issued At: 2030-01-01T00:00:00"),
        ("Issued At: 2030-01-01T00:00:00.000Z", "Issued At: 2030-02-30T00:00:00Z"),
        ("URI: https://ledger.example.org/login", "URI: not a uri"),
        ("URI: ", "Uri: "),
        (" wants you", " want you"),
        ("ledger.example.org wants", "ledger example.org wants"),
        ("ledger.example.org wants", " wants"),
        ("Sign in to Consent Ledger.", "Sign in\tto Consent Ledger."),
        ("Sign in to Consent Ledger.", 'Say "hi"'),
        ("Request ID: r1", "Request ID: r 1"),
        ("- https://a.b/c", "- no uri"),
        ("- https://a.b/c", "-https://a.b/c"),
        (
            "Expiration Time: 2030-01-02T00:00:00.000Z\nRequest ID: r1",
            "Request ID: r1\nExpiration Time: 2030-01-02T00:00:00.000Z",
        ),
        ("Sign in to Consent Ledger.\n", "Sign in\nto Consent Ledger.\n"),
        ("Sign in to Consent Ledger.\n\n", "Sign in to Consent Ledger.\n"),
    ],
)
def test_malformed_messages_are_rejected(old: str, new: str) -> None:
    parse_message(GOOD)
    bad = GOOD.replace(old, new, 1)
    assert bad != GOOD
    with pytest.raises(MalformedMessage):
        parse_message(bad)


@pytest.mark.parametrize("suffix", ["\n", "\nExtra: field", "\nResources:", " "])
def test_trailing_content_is_rejected(suffix: str) -> None:
    with pytest.raises(MalformedMessage):
        parse_message(GOOD + suffix)


def test_statement_is_optional_and_resources_may_be_empty() -> None:
    msg = make_message(statement=None, resources=())
    text = msg.prepare_message()
    assert "\n\n\nURI:" in text
    assert text.endswith("\nResources:")
    assert parse_message(text) == msg


# -- fuzz -----------------------------------------------------------------------------------


def test_siwe_errors_are_gateway_errors() -> None:
    for cls in (MalformedMessage, DomainMismatch, UriMismatch, ChainMismatch, Expired):
        assert issubclass(cls, SiweError)
    assert issubclass(SiweError, DomainError)
    assert not hasattr(SiweError, "http_status")  # a protocol error names no HTTP status
    assert http_status_of(MalformedMessage) == 400
    assert http_status_of(BadSignature) == 401


@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=400))
def test_random_text_only_raises_malformed(text: str) -> None:
    with contextlib.suppress(MalformedMessage):
        parse_message(text)


edit = st.tuples(st.integers(0, len(GOOD)), st.integers(0, 3), st.text(max_size=4))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(edit, min_size=1, max_size=3), sig=st.binary(min_size=60, max_size=70))
def test_mutated_messages_only_raise_siwe_errors(
    edits: list[tuple[int, int, str]], sig: bytes
) -> None:
    text = GOOD
    for pos, cut, insert in edits:
        text = text[:pos] + insert + text[pos + cut :]
    for signature in (sig, sign(GOOD)):
        with contextlib.suppress(SiweError):
            check(text, signature)
