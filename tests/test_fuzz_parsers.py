"""Hostile input to the parsers: each raises only its documented errors, never anything else.

- ``ledger.protocol.envelope.open_envelope``: only ``MalformedEnvelope``, ``DecryptionFailed`` and
  ``DigestMismatch``; a tampered ciphertext or sealed key never opens.
- ``ledger.protocol.siwe.parse_message`` / ``verify``: only ``SiweError`` subclasses
  (``parse_message``: only ``MalformedMessage``); a signature verifies only for the exact text it
  signed.
- ``ledger.protocol.eip712`` (the gateway's attestation check): building a
  ``RecordAttestation`` from malformed fields and recovering a signer from random bytes raise
  only ``ValueError``.
- ``ledger.protocol.contract_errors.ErrorDecoder.decode``: never raises; any revert data gives a
  ``ContractError``, and well-formed data round-trips to its class and values.
"""

from __future__ import annotations

import base64
import contextlib
import json
import string
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

import coincurve
import pytest
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ledger.chain.build import compile_contracts
from ledger.protocol import eip712
from ledger.protocol.consent_types import ScopeKind
from ledger.protocol.contract_errors import (
    ContractError,
    ErrorDecoder,
    Panic,
    Reverted,
    RevertedWithReason,
    UnknownContractError,
)
from ledger.protocol.envelope import (
    DecryptionFailed,
    DigestMismatch,
    MalformedEnvelope,
    encrypt_record,
    open_envelope,
    salted_digest,
    seal_envelope,
)
from ledger.protocol.siwe import MalformedMessage, SiweError, SiweMessage, parse_message, verify
from tests.helpers.build import session_build_cache

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- envelopes ------------------------------------------------------------------------------

READER_SK = bytes.fromhex("5c" * 32)
READER_PK = coincurve.PublicKey.from_secret(READER_SK).format(compressed=False)
PATIENT = "0x" + "ab" * 20
RECORD_ID = bytes(range(32))
PLAINTEXT = b"checkup 2030-01-01: blood pressure 120/80"
SALT = bytes.fromhex("c3" * 32)
_BLOB, _DATA_KEY = encrypt_record(PLAINTEXT, record_id=RECORD_ID, patient=PATIENT, salt=SALT)
GOOD_DIGEST = salted_digest(SALT, PLAINTEXT)
GOOD_BODY: dict[str, Any] = seal_envelope(
    record_id=RECORD_ID,
    patient=PATIENT,
    cid="bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
    blob=_BLOB,
    data_key=_DATA_KEY,
    reader_public_key=READER_PK,
    content_digest=GOOD_DIGEST,
    block_number=7,
).model_dump()
ENVELOPE_ERRORS = (MalformedEnvelope, DecryptionFailed, DigestMismatch)
FIELDS = ["record_id", "patient", "cid", "ciphertext", "sealed_key", "content_digest"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)
hex_strings = st.text("0123456789abcdefABCDEFxg", max_size=70).map(lambda s: "0x" + s)
b64_strings = st.binary(max_size=300).map(lambda b: base64.b64encode(b).decode())
field_values = json_values | hex_strings | b64_strings | st.integers(-(2**70), 2**70)


def _open(candidate: object, **kwargs: Any) -> bytes | None:
    """``open_envelope``'s plaintext, or None when it raised one of its documented errors.

    Any other exception (another ``EnvelopeError`` subclass included) propagates: a failure.
    """
    try:
        plaintext = open_envelope(candidate, **kwargs)  # type: ignore[arg-type]
    except ENVELOPE_ERRORS:
        return None
    assert plaintext == PLAINTEXT  # AES-GCM: whatever opens is the one real plaintext
    return plaintext


def test_the_fuzz_baseline_envelope_opens() -> None:
    assert open_envelope(GOOD_BODY, private_key=READER_SK, expected_digest=GOOD_DIGEST) == (
        PLAINTEXT
    )


@FUZZ
@given(
    updates=st.dictionaries(
        st.sampled_from([*FIELDS, "block_number", "extra"]) | st.integers(), field_values
    ),
    dropped=st.sets(st.sampled_from([*FIELDS, "block_number"]), max_size=2),
    form=st.sampled_from(["dict", "mappingproxy", "json", "json-bytes"]),
    private_key=st.just(READER_SK) | st.binary(max_size=40) | st.text(max_size=70),
    expected_digest=st.none() | st.just(GOOD_DIGEST) | st.binary(max_size=40),
)
def test_envelope_with_fuzzed_fields_raises_only_documented_errors(
    updates: dict[Any, Any],
    dropped: set[str],
    form: str,
    private_key: bytes | str,
    expected_digest: bytes | None,
) -> None:
    body = {k: v for k, v in {**GOOD_BODY, **updates}.items() if k not in dropped}
    candidate: object
    if form == "dict":
        candidate = body
    elif form == "mappingproxy":
        candidate = MappingProxyType(body)
    else:
        text = json.dumps({str(k): v for k, v in body.items()})
        candidate = text if form == "json" else text.encode()
    _open(candidate, private_key=private_key, expected_digest=expected_digest)


@FUZZ
@given(raw=st.binary(max_size=400) | st.text(max_size=400) | json_values.map(json.dumps))
def test_random_bytes_and_text_are_malformed_envelopes(raw: bytes | str) -> None:
    with pytest.raises(MalformedEnvelope):
        open_envelope(raw, private_key=READER_SK)


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 3), st.text(max_size=3))))
def test_mutated_envelope_json_raises_only_documented_errors(
    edits: list[tuple[int, int, str]],
) -> None:
    text = json.dumps(GOOD_BODY)
    for pos, cut, insert in edits:
        pos %= len(text) + 1
        text = text[:pos] + insert + text[pos + cut :]
    _open(text, private_key=READER_SK)


@FUZZ
@given(
    field=st.sampled_from(["ciphertext", "sealed_key"]),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1),
    truncate=st.none() | st.integers(0, 200),
)
def test_tampered_ciphertext_or_sealed_key_never_opens(
    field: str, flips: list[tuple[int, int]], truncate: int | None
) -> None:
    raw = bytearray(base64.b64decode(GOOD_BODY[field]))
    for pos, mask in flips:
        raw[pos % len(raw)] ^= mask
    if truncate is not None:
        raw = raw[:truncate]
    assume(bytes(raw) != base64.b64decode(GOOD_BODY[field]))
    body = {**GOOD_BODY, field: base64.b64encode(bytes(raw)).decode()}
    with pytest.raises(ENVELOPE_ERRORS):
        open_envelope(body, private_key=READER_SK)


# -- SIWE -----------------------------------------------------------------------------------

SIGNER = Account.from_key("0x" + "4f" * 32)
_UNRESERVED = string.ascii_letters + string.digits + "-._~"
_SUB_DELIMS = "!$&'()*+,;="
_OFFSETS = [
    UTC,
    timezone(timedelta(hours=5, minutes=30)),
    timezone(-timedelta(hours=23, minutes=59)),
]

domains = st.from_regex(r"[a-z0-9][a-z0-9.-]{0,20}(:[0-9]{1,5})?", fullmatch=True)
datetimes = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from(_OFFSETS),
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
uris = st.builds(
    lambda scheme, host, path: f"{scheme}://{host}/{path}",
    st.sampled_from(["https", "http", "ipfs", "did+x"]),
    domains,
    st.text(_UNRESERVED + _SUB_DELIMS + ":@/?#", max_size=20),
)
siwe_messages = st.builds(
    SiweMessage,
    domain=domains,
    address=st.just(SIGNER.address)
    | st.binary(min_size=20, max_size=20).map(lambda b: to_checksum_address(b)),
    uri=uris,
    version=st.just("1"),
    chain_id=st.integers(0, 2**256),
    nonce=st.text(string.ascii_letters + string.digits, min_size=8, max_size=24),
    issued_at=datetimes,
    scheme=st.none() | st.sampled_from(["https", "http"]),
    statement=st.none() | st.text(_UNRESERVED + _SUB_DELIMS + ":/?#[]@ ", min_size=1, max_size=40),
    expiration_time=st.none() | datetimes,
    not_before=st.none() | datetimes,
    request_id=st.none() | st.text(_UNRESERVED + _SUB_DELIMS + ":@", max_size=12),
    resources=st.none() | st.lists(uris, max_size=3).map(tuple),
)


def _line_edit(text: str, op: str, i: int, j: int, junk: str) -> str:
    lines = text.split("\n")
    i, j = i % len(lines), j % len(lines)
    if op == "delete":
        del lines[i]
    elif op == "duplicate":
        lines.insert(i, lines[i])
    elif op == "swap":
        lines[i], lines[j] = lines[j], lines[i]
    elif op == "replace":
        lines[i] = junk
    elif op == "append":
        lines[i] += junk
    elif op == "crlf":
        return text.replace("\n", "\r\n")
    else:  # "chars": overwrite characters anywhere
        pos = (i * 31 + j) % (len(text) + 1)
        return text[:pos] + junk + text[pos + len(junk) :]
    return "\n".join(lines)


line_edits = st.lists(
    st.tuples(
        st.sampled_from(["delete", "duplicate", "swap", "replace", "append", "crlf", "chars"]),
        st.integers(0, 40),
        st.integers(0, 40),
        st.text(max_size=12),
    ),
    min_size=1,
    max_size=3,
)


def _sign(text: str) -> bytes:
    return bytes(SIGNER.sign_message(encode_defunct(text=text)).signature)


@FUZZ
@given(message=siwe_messages)
def test_prepared_siwe_messages_parse_back_to_the_same_text(message: SiweMessage) -> None:
    text = message.prepare_message()
    assert parse_message(text).prepare_message() == text


@FUZZ
@given(message=siwe_messages, edits=line_edits)
def test_mutated_siwe_messages_raise_only_malformed(
    message: SiweMessage, edits: list[tuple[str, int, int, str]]
) -> None:
    text = message.prepare_message()
    for edit in edits:
        text = _line_edit(text, *edit)
    with contextlib.suppress(MalformedMessage):  # anything else propagates: a failure
        parse_message(text)


@FUZZ
@given(
    message=siwe_messages,
    edits=st.lists(line_edits.map(lambda e: e[0]), max_size=1),
    signature=st.sampled_from(["good", "v-shifted"])
    | st.binary(max_size=70)
    | st.text("0123456789abcdefx", max_size=132),
    domain_is_right=st.booleans(),
    chain_is_right=st.booleans(),
    now=st.datetimes(timezones=st.sampled_from(_OFFSETS)),
    max_age=st.none() | st.timedeltas(min_value=timedelta(microseconds=1)),
    clock_skew=st.timedeltas(min_value=timedelta(0)),  # verify() refuses negative skew
)
def test_verify_raises_only_siwe_errors_and_binds_the_exact_text(
    message: SiweMessage,
    edits: list[tuple[str, int, int, str]],
    signature: bytes | str,
    domain_is_right: bool,
    chain_is_right: bool,
    now: datetime,
    max_age: timedelta | None,
    clock_skew: timedelta,
) -> None:
    signed = message.prepare_message()
    text = signed
    for edit in edits:
        text = _line_edit(text, *edit)
    good = _sign(signed)
    if signature == "good":
        signature = good
    elif signature == "v-shifted":
        signature = good[:64] + bytes([good[64] - 27])
    if message.address == SIGNER.address:
        # The control: the untouched text and its own signature, at a moment the message is
        # valid, verify; so the refusals below are the edits' and the wrong inputs' doing.
        valid_at = max(message.issued_at, message.not_before or message.issued_at)
        if message.expiration_time is None or message.expiration_time > valid_at:
            control = verify(
                signed,
                good,
                expected_domain=message.domain,
                expected_chain_id=message.chain_id,
                now=valid_at,
            )
            assert control.address == SIGNER.address
    try:
        login = verify(
            text,
            signature,
            expected_domain=message.domain if domain_is_right else "other.example",
            expected_chain_id=message.chain_id if chain_is_right else message.chain_id + 1,
            now=now,
            max_age=max_age,
            clock_skew=clock_skew,
        )
    except SiweError:
        return
    assert text == signed
    assert message.address == SIGNER.address
    assert login.address == SIGNER.address


def test_siwe_issued_in_year_9999_is_refused_cleanly() -> None:
    """Regression: ``issued_at + max_age`` overflowed (OverflowError, a 500 in the gateway)."""
    message = SiweMessage(
        domain="ledger.example",
        address=SIGNER.address,
        uri="https://ledger.example/login",
        version="1",
        chain_id=31337,
        nonce="abcdEFGH1234",
        issued_at=datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
    )
    text = message.prepare_message()
    with pytest.raises(SiweError):
        verify(
            text,
            _sign(text),
            expected_domain="ledger.example",
            expected_chain_id=31337,
            now=datetime(2030, 1, 1, tzinfo=UTC),
            max_age=timedelta(minutes=5),
        )


# -- EIP-712 attestations -------------------------------------------------------------------

DOMAIN = eip712.Domain(
    chain_id=31337,
    verifying_contract=to_checksum_address("0x5fbdb2315678afecb367f032d93f642f64180aa3"),
)
CENTRE = Account.from_key("0x" + "c3" * 32)

addresses_or_junk = (
    st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
    | hex_strings
    | st.text(max_size=44)
)
bytes32_or_junk = st.binary(min_size=32, max_size=32) | st.binary(max_size=64)
uint_or_junk = st.integers(0, 2**64 - 1) | st.integers(-(2**300), 2**300)


@FUZZ
@given(
    patient=addresses_or_junk,
    category=bytes32_or_junk,
    content_digest=bytes32_or_junk,
    issued_at=uint_or_junk,
    signature=st.binary(max_size=70)
    | st.binary(min_size=64, max_size=64).flatmap(
        lambda rs: st.integers(0, 255).map(lambda v: rs + bytes([v]))
    ),
)
def test_attestation_from_fuzzed_fields_raises_only_value_error(
    patient: str, category: bytes, content_digest: bytes, issued_at: int, signature: bytes
) -> None:
    try:
        attestation = eip712.RecordAttestation(
            patient=patient,  # type: ignore[arg-type]
            category=category,
            content_digest=content_digest,
            issued_at=issued_at,
        )
    except ValueError:
        return
    try:
        eip712.recover_signer(DOMAIN, attestation, signature)
    except ValueError:
        return


@FUZZ
@given(
    issued_at=st.integers(0, 2**64 - 1),
    digest=st.binary(min_size=32, max_size=32),
    flips=st.lists(st.tuples(st.integers(0, 63), st.integers(1, 255)), min_size=1, max_size=3),
)
def test_attestation_signature_recovers_the_centre_and_a_tampered_one_does_not(
    issued_at: int, digest: bytes, flips: list[tuple[int, int]]
) -> None:
    attestation = eip712.RecordAttestation(
        patient=to_checksum_address(PATIENT),
        category=b"blood".ljust(32, b"\0"),
        content_digest=digest,
        issued_at=issued_at,
    )
    signature = eip712.sign(CENTRE, DOMAIN, attestation)
    assert eip712.recover_signer(DOMAIN, attestation, signature) == CENTRE.address
    tampered = bytearray(signature)
    for pos, mask in flips:  # r || s only: v = 27/0 and 28/1 are the same recovery id
        tampered[pos] ^= mask
    assume(bytes(tampered) != signature)
    with contextlib.suppress(ValueError):
        assert eip712.recover_signer(DOMAIN, attestation, bytes(tampered)) != CENTRE.address


@FUZZ
@given(
    scope_kind=st.integers(-1, 4),
    purposes=uint_or_junk,
    expires_at=uint_or_junk,
    nonce=st.integers(-(2**300), 2**300),
    deadline=st.integers(-(2**300), 2**300),
    scope_id=bytes32_or_junk,
    grantee=addresses_or_junk,
)
def test_grant_and_revoke_requests_from_fuzzed_fields_raise_only_value_error(
    scope_kind: int,
    purposes: int,
    expires_at: int,
    nonce: int,
    deadline: int,
    scope_id: bytes,
    grantee: str,
) -> None:
    common = {
        "patient": SIGNER.address,
        "grantee": grantee,
        "scope_kind": scope_kind,
        "scope_id": scope_id,
        "signer": SIGNER.address,
        "nonce": nonce,
        "deadline": deadline,
    }
    for build in (
        lambda: eip712.GrantRequest(**common, purposes=purposes, expires_at=expires_at),
        lambda: eip712.RevokeRequest(**common),
    ):
        try:
            request = build()
        except ValueError:
            continue
        assert len(eip712.digest(DOMAIN, request)) == 32  # whatever builds also encodes


# -- revert data ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def decoder() -> ErrorDecoder:
    return ErrorDecoder(compile_contracts(cache_dir=session_build_cache())["ConsentRegistry"].abi)


@pytest.fixture(scope="module")
def error_abis() -> list[dict[str, Any]]:
    abi = compile_contracts(cache_dir=session_build_cache())["ConsentRegistry"].abi
    return sorted((item for item in abi if item["type"] == "error"), key=lambda e: e["name"])


def _selector(item: dict[str, Any]) -> bytes:
    types = ",".join(p["type"] for p in item["inputs"])
    return keccak(text=f"{item['name']}({types})")[:4]


_ERROR_STRING = keccak(text="Error(string)")[:4]
_PANIC = keccak(text="Panic(uint256)")[:4]


def _value(param: dict[str, Any]) -> st.SearchStrategy[Any]:
    kind, internal = param["type"], param.get("internalType", "")
    if internal.endswith(".ScopeKind"):
        return st.sampled_from(list(ScopeKind))
    if kind == "address":
        return st.binary(min_size=20, max_size=20).map(to_checksum_address)
    if kind == "bytes32":
        return st.binary(min_size=32, max_size=32)
    if kind == "string":
        return st.text(max_size=40)
    bits = int(kind.removeprefix("uint"))
    return st.integers(0, 2**bits - 1)


def _encode(item: dict[str, Any], values: list[Any]) -> bytes:
    types = [p["type"] for p in item["inputs"]]
    return abi_encode(types, [int(v) if isinstance(v, ScopeKind) else v for v in values])


@FUZZ
@given(data=st.data())
def test_well_formed_revert_data_round_trips(
    decoder: ErrorDecoder, error_abis: list[dict[str, Any]], data: st.DataObject
) -> None:
    item = data.draw(st.sampled_from(error_abis))
    values = [data.draw(_value(p)) for p in item["inputs"]]
    raw = _selector(item) + _encode(item, values)
    decoded = decoder.decode("0x" + raw.hex() if data.draw(st.booleans()) else raw)
    assert type(decoded).__name__ == item["name"]
    assert decoded.values() == tuple(values)


@FUZZ
@given(
    data=st.data(),
    prefix=st.sampled_from(["known", "Error", "Panic", "random"]),
    payload=st.binary(max_size=200),
    edits=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=3),
    truncate=st.none() | st.integers(0, 300),
)
def test_malformed_revert_data_decodes_to_some_contract_error(
    decoder: ErrorDecoder,
    error_abis: list[dict[str, Any]],
    data: st.DataObject,
    prefix: str,
    payload: bytes,
    edits: list[tuple[int, int]],
    truncate: int | None,
) -> None:
    if prefix == "known":
        item = data.draw(st.sampled_from(error_abis))
        values = [data.draw(_value(p)) for p in item["inputs"]]
        raw = bytearray(_selector(item) + _encode(item, values) + payload)
    elif prefix == "Error":
        raw = bytearray(_ERROR_STRING + abi_encode(["string"], [data.draw(st.text())]) + payload)
    elif prefix == "Panic":
        raw = bytearray(_PANIC + payload)
    else:
        raw = bytearray(payload)
    for pos, value in edits:  # overwrite payload bytes (the selector stays when there is one)
        if len(raw) > 4:
            raw[4 + pos % (len(raw) - 4)] = value
    if truncate is not None:
        raw = raw[:truncate]
    decoded = decoder.decode(bytes(raw))
    assert isinstance(decoded, ContractError)
    if len(raw) < 4:
        assert isinstance(decoded, Reverted)
    if isinstance(decoded, UnknownContractError):
        assert decoded.data == bytes(raw)


@FUZZ
@given(text=st.none() | st.text(max_size=80) | hex_strings)
def test_revert_data_as_any_text_decodes_to_some_contract_error(
    decoder: ErrorDecoder, text: str | None
) -> None:
    assert isinstance(decoder.decode(text), ContractError)


def test_revert_data_whose_arguments_do_not_decode_is_an_unknown_error(
    decoder: ErrorDecoder, error_abis: list[dict[str, Any]]
) -> None:
    """Regression: these raised eth_abi / ValueError / OverflowError out of ``decode``."""
    by_name = {item["name"]: _selector(item) for item in error_abis}
    word = (32).to_bytes(32, "big")
    cases = [
        by_name["InvalidScope"] + (7).to_bytes(32, "big") + bytes(32),  # no ScopeKind 7
        by_name["InvalidScope"] + bytes(10),  # truncated
        by_name["NotACentre"] + b"\xff" * 32,  # dirty address padding
        _ERROR_STRING + word + (2).to_bytes(32, "big") + b"\xff\xfe" + bytes(30),  # not UTF-8
        _PANIC,  # no code
        by_name["StringTooLong"] + word + (2**200).to_bytes(32, "big"),  # absurd length
    ]
    for raw in cases:
        decoded = decoder.decode(raw)
        assert isinstance(decoded, UnknownContractError), (raw.hex(), decoded)
        assert decoded.data == raw
    reason = decoder.decode(_ERROR_STRING + abi_encode(["string"], ["no"]))
    assert isinstance(reason, RevertedWithReason)
    assert reason.reason == "no"
    assert isinstance(decoder.decode(_PANIC + (0x11).to_bytes(32, "big")), Panic)
