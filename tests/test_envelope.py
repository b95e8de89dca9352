"""Record encryption, key wrapping/sealing and the envelope opener."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json

import coincurve
import pytest
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import http_status_of
from ledger.protocol.envelope import (
    SALT_SIZE,
    DecryptionFailed,
    DigestMismatch,
    Envelope,
    EnvelopeError,
    MalformedEnvelope,
    decrypt_record,
    encrypt_record,
    new_data_key,
    open_envelope,
    open_record,
    record_aad,
    salted_digest,
    seal_envelope,
    seal_key_to,
    unseal_key,
    unwrap_key,
    wrap_key,
)
from ledger.protocol.errors import DomainError

PATIENT = "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1"
OTHER = "0xFFcf8FDEE72ac11b5c542428B35EEF5769C409f0"
RECORD_ID = bytes.fromhex("11" * 32)
READER_SK = bytes.fromhex("4f3edf983ac636a65a842ce7c78d9aa706d3b113bce9c46f30d7d21715b23b1d")
READER_PK = coincurve.PrivateKey(READER_SK).public_key.format(compressed=False)

record_ids = st.binary(min_size=32, max_size=32)
addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())


SALT = bytes.fromhex("5a" * 32)


def make_envelope(plaintext: bytes = b"checkup: all fine") -> Envelope:
    blob, key = encrypt_record(plaintext, record_id=RECORD_ID, patient=PATIENT, salt=SALT)
    return seal_envelope(
        record_id=RECORD_ID,
        patient=PATIENT,
        cid="bafkreide2kiiwdna7d4hevzgpcxikolyeztzbzmls7dcdazhmrlcu3m7dy",
        blob=blob,
        data_key=key,
        reader_public_key=READER_PK,
        content_digest=salted_digest(SALT, plaintext),
        block_number=42,
    )


# -- record blobs ---------------------------------------------------------------------------


def test_the_salt_travels_inside_the_blob_and_salts_the_digest() -> None:
    document = b"blood type: O+"
    salt = bytes(range(32))
    blob, key = encrypt_record(document, record_id=RECORD_ID, patient=PATIENT, salt=salt)
    assert salt not in blob  # encrypted, not beside the ciphertext
    assert open_record(blob, data_key=key, record_id=RECORD_ID, patient=PATIENT) == (
        salt,
        document,
    )
    assert salted_digest(salt, document) == hashlib.sha256(salt + document).digest()
    assert salted_digest(salt, document) != hashlib.sha256(document).digest()
    with pytest.raises(MalformedEnvelope):
        salted_digest(b"short", document)


def test_a_version_1_blob_is_refused() -> None:
    blob, key = encrypt_record(b"x", record_id=RECORD_ID, patient=PATIENT)
    old = blob[:4] + b"\x01" + blob[5:]
    with pytest.raises(MalformedEnvelope, match="unsupported version 1"):
        decrypt_record(old, data_key=key, record_id=RECORD_ID, patient=PATIENT)


@settings(max_examples=100, deadline=None)
@given(plaintext=st.binary(max_size=4096), record_id=record_ids, patient=addresses)
def test_encrypt_decrypt_round_trip(plaintext: bytes, record_id: bytes, patient: str) -> None:
    blob, key = encrypt_record(plaintext, record_id=record_id, patient=patient)
    assert len(key) == 32
    assert blob[:5] == b"CLRE\x02"
    assert len(blob) == 5 + 12 + SALT_SIZE + len(plaintext) + 16
    assert decrypt_record(blob, data_key=key, record_id=record_id, patient=patient) == plaintext
    # the patient address is compared as bytes: checksum case does not matter
    assert (
        decrypt_record(
            blob, data_key=key, record_id=record_id, patient=patient.upper().replace("0X", "0x")
        )
        == plaintext
    )


def test_each_encryption_draws_a_new_key_and_nonce() -> None:
    a, ka = encrypt_record(b"same", record_id=RECORD_ID, patient=PATIENT)
    b, kb = encrypt_record(b"same", record_id=RECORD_ID, patient=PATIENT)
    assert ka != kb
    assert a != b
    c, _ = encrypt_record(b"same", record_id=RECORD_ID, patient=PATIENT, data_key=ka)
    assert c[5:17] != a[5:17]


def test_aad_layout_is_documented() -> None:
    aad = record_aad(record_id=RECORD_ID, patient=PATIENT)
    assert aad == b"CLRE\x02" + RECORD_ID + bytes.fromhex(PATIENT[2:])


@settings(max_examples=100, deadline=None)
@given(plaintext=st.binary(max_size=300), data=st.data())
def test_tampering_any_byte_fails(plaintext: bytes, data: st.DataObject) -> None:
    blob, key = encrypt_record(plaintext, record_id=RECORD_ID, patient=PATIENT)
    i = data.draw(st.integers(0, len(blob) - 1))
    bit = data.draw(st.integers(0, 7))
    bad = bytearray(blob)
    bad[i] ^= 1 << bit
    with pytest.raises((DecryptionFailed, MalformedEnvelope)) as exc:
        decrypt_record(bytes(bad), data_key=key, record_id=RECORD_ID, patient=PATIENT)
    # the header is checked first and reported as malformed; everything else fails auth
    assert isinstance(exc.value, MalformedEnvelope) == (i < 5)


def test_wrong_record_id_patient_or_key_fails() -> None:
    blob, key = encrypt_record(b"result", record_id=RECORD_ID, patient=PATIENT)
    with pytest.raises(DecryptionFailed):
        decrypt_record(blob, data_key=key, record_id=bytes(32), patient=PATIENT)
    with pytest.raises(DecryptionFailed):
        decrypt_record(blob, data_key=key, record_id=RECORD_ID, patient=OTHER)
    with pytest.raises(DecryptionFailed):
        decrypt_record(blob, data_key=new_data_key(), record_id=RECORD_ID, patient=PATIENT)
    with pytest.raises(DecryptionFailed):
        decrypt_record(blob + b"x", data_key=key, record_id=RECORD_ID, patient=PATIENT)
    with pytest.raises(DecryptionFailed):
        decrypt_record(blob[:-1], data_key=key, record_id=RECORD_ID, patient=PATIENT)


def test_bad_arguments_are_malformed() -> None:
    blob, key = encrypt_record(b"result", record_id=RECORD_ID, patient=PATIENT)
    for kwargs in (
        {"data_key": key[:31], "record_id": RECORD_ID, "patient": PATIENT},
        {"data_key": key, "record_id": RECORD_ID[:31], "patient": PATIENT},
        {"data_key": key, "record_id": RECORD_ID, "patient": "0x1234"},
        {"data_key": key, "record_id": RECORD_ID, "patient": PATIENT[2:]},
    ):
        with pytest.raises(MalformedEnvelope):
            decrypt_record(blob, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(MalformedEnvelope, match="too short"):
        decrypt_record(blob[:20], data_key=key, record_id=RECORD_ID, patient=PATIENT)
    with pytest.raises(MalformedEnvelope, match="version"):
        decrypt_record(b"CLRE\x03" + blob[5:], data_key=key, record_id=RECORD_ID, patient=PATIENT)
    with pytest.raises(MalformedEnvelope):
        encrypt_record(b"x", record_id=b"short", patient=PATIENT)


# -- wrapping -------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(record_id=record_ids)
def test_wrap_unwrap_round_trip(record_id: bytes) -> None:
    kek, key = new_data_key(), new_data_key()
    wrapped = wrap_key(key, kek, record_id=record_id)
    assert len(wrapped) == 65
    assert wrapped[:5] == b"CLKW\x01"
    assert unwrap_key(wrapped, kek, record_id=record_id) == key


def test_wrapped_key_is_bound_to_record_and_kek() -> None:
    kek, key = new_data_key(), new_data_key()
    wrapped = wrap_key(key, kek, record_id=RECORD_ID)
    with pytest.raises(DecryptionFailed):
        unwrap_key(wrapped, kek, record_id=bytes(32))
    with pytest.raises(DecryptionFailed):
        unwrap_key(wrapped, new_data_key(), record_id=RECORD_ID)
    for i in range(5, len(wrapped)):
        bad = bytearray(wrapped)
        bad[i] ^= 0x80
        with pytest.raises(DecryptionFailed):
            unwrap_key(bytes(bad), kek, record_id=RECORD_ID)
    with pytest.raises(MalformedEnvelope):
        unwrap_key(wrapped[:-1], kek, record_id=RECORD_ID)
    with pytest.raises(MalformedEnvelope):
        unwrap_key(b"XXXX" + wrapped[4:], kek, record_id=RECORD_ID)
    with pytest.raises(MalformedEnvelope):
        wrap_key(key, kek[:16], record_id=RECORD_ID)


# -- sealing --------------------------------------------------------------------------------


def test_seal_unseal_with_every_public_key_encoding() -> None:
    key = new_data_key()
    pub = coincurve.PrivateKey(READER_SK).public_key
    for encoding in (pub.format(compressed=False), pub.format(compressed=False)[1:], pub.format()):
        sealed = seal_key_to(encoding, key)
        assert len(sealed) == 65 + 16 + 16 + 32
        assert unseal_key(sealed, private_key=READER_SK) == key
        assert unseal_key(sealed, private_key="0x" + READER_SK.hex()) == key
        assert unseal_key(sealed, private_key=READER_SK.hex()) == key


def test_seal_to_eth_account_key_opens_with_its_private_key() -> None:
    acct = Account.create()
    pub = coincurve.PrivateKey(bytes(acct.key)).public_key.format(compressed=False)
    key = new_data_key()
    assert unseal_key(seal_key_to(pub, key), private_key=bytes(acct.key)) == key


def test_unseal_with_wrong_key_or_tampered_fails() -> None:
    key = new_data_key()
    sealed = seal_key_to(READER_PK, key)
    with pytest.raises(DecryptionFailed):
        unseal_key(sealed, private_key=bytes(Account.create().key))
    for i in (0, 1, 70, 90, len(sealed) - 1):
        bad = bytearray(sealed)
        bad[i] ^= 1
        with pytest.raises(DecryptionFailed):
            unseal_key(bytes(bad), private_key=READER_SK)
    with pytest.raises(DecryptionFailed):
        unseal_key(b"", private_key=READER_SK)
    with pytest.raises(MalformedEnvelope):
        unseal_key(sealed, private_key=b"\x01" * 31)
    with pytest.raises(MalformedEnvelope):
        unseal_key(sealed, private_key="zz")


def test_seal_rejects_bad_public_keys() -> None:
    key = new_data_key()
    for bad in (b"", b"\x04" + b"\x00" * 64, b"\x05" + READER_PK[1:], READER_PK[:40]):
        with pytest.raises(MalformedEnvelope):
            seal_key_to(bad, key)


# -- envelopes ------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(plaintext=st.binary(max_size=2048))
def test_open_envelope_round_trip(plaintext: bytes) -> None:
    env = make_envelope(plaintext)
    digest = salted_digest(SALT, plaintext)
    assert open_envelope(env, private_key=READER_SK) == plaintext
    assert (
        open_envelope(env.model_dump(), private_key=READER_SK, expected_digest=digest) == plaintext
    )
    assert open_envelope(env.model_dump_json(), private_key=READER_SK) == plaintext


def test_envelope_shape() -> None:
    env = make_envelope()
    body = json.loads(env.model_dump_json())
    assert set(body) == {
        "record_id",
        "patient",
        "cid",
        "ciphertext",
        "sealed_key",
        "content_digest",
        "block_number",
        "event_count",  # the ledger position the consent check was answered on
        "chain_time",
    }
    assert body["record_id"] == "0x" + "11" * 32
    assert body["patient"] == PATIENT
    assert base64.b64decode(body["ciphertext"])[:5] == b"CLRE\x02"
    assert env.record_id_bytes == RECORD_ID
    # lower-case input comes out checksummed
    assert Envelope.model_validate({**body, "patient": PATIENT.lower()}).patient == PATIENT


def test_digest_mismatch_is_reported() -> None:
    plaintext = b"checkup: all fine"
    env = make_envelope(plaintext)
    wrong = "0x" + hashlib.sha256(b"other").hexdigest()
    forged = env.model_copy(update={"content_digest": wrong})
    with pytest.raises(DigestMismatch) as exc:
        open_envelope(forged, private_key=READER_SK)
    assert exc.value.actual == salted_digest(SALT, plaintext)
    with pytest.raises(DigestMismatch):
        open_envelope(env, private_key=READER_SK, expected_digest=hashlib.sha256(b"chain").digest())


def test_envelope_for_another_reader_fails() -> None:
    with pytest.raises(DecryptionFailed):
        open_envelope(make_envelope(), private_key=bytes(Account.create().key))


def test_envelope_moved_to_another_record_or_patient_fails() -> None:
    env = make_envelope()
    with pytest.raises(DecryptionFailed):
        open_envelope(env.model_copy(update={"record_id": "0x" + "22" * 32}), private_key=READER_SK)
    with pytest.raises(DecryptionFailed):
        open_envelope(env.model_copy(update={"patient": OTHER}), private_key=READER_SK)


def test_malformed_envelopes() -> None:
    body = make_envelope().model_dump()
    for update in (
        {"record_id": "0x11"},
        {"patient": "bob"},
        {"ciphertext": "not base64!"},
        {"sealed_key": "@@"},
        {"content_digest": "11" * 32},
        {"block_number": -1},
        {"block_number": "7"},
        {"cid": ""},
        {"extra": 1},
    ):
        with pytest.raises(MalformedEnvelope):
            open_envelope({**body, **update}, private_key=READER_SK)
    with pytest.raises(MalformedEnvelope):
        open_envelope("{not json", private_key=READER_SK)
    with pytest.raises(MalformedEnvelope):
        open_envelope({k: v for k, v in body.items() if k != "cid"}, private_key=READER_SK)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    updates=st.dictionaries(
        st.sampled_from(
            [
                "record_id",
                "patient",
                "cid",
                "ciphertext",
                "sealed_key",
                "content_digest",
                "block_number",
                "x",
            ]
        ),
        json_values | st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()),
        max_size=4,
    ),
    raw=st.one_of(st.text(max_size=100), st.binary(max_size=100)),
)
def test_fuzzed_envelopes_raise_only_documented_errors(
    updates: dict[str, object], raw: str | bytes
) -> None:
    body = {**make_envelope().model_dump(), **updates}
    for candidate in (body, raw):
        with contextlib.suppress(MalformedEnvelope, DecryptionFailed, DigestMismatch):
            open_envelope(candidate, private_key=READER_SK)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(blob=st.binary(max_size=100), key=st.binary(max_size=40), sealed=st.binary(max_size=200))
def test_fuzzed_blobs_and_keys_raise_only_documented_errors(
    blob: bytes, key: bytes, sealed: bytes
) -> None:
    with pytest.raises(EnvelopeError):
        decrypt_record(blob, data_key=key, record_id=RECORD_ID, patient=PATIENT)
    with pytest.raises(EnvelopeError):
        unwrap_key(blob, key, record_id=RECORD_ID)
    with pytest.raises(EnvelopeError):
        unseal_key(sealed, private_key=READER_SK)


def test_error_tree_and_codes() -> None:
    assert issubclass(EnvelopeError, DomainError)
    assert not hasattr(EnvelopeError, "http_status")  # a protocol error names no HTTP status
    err = DigestMismatch(expected=b"\x01", actual=b"\x02")
    assert err.to_dict() == {
        "code": "digest_mismatch",
        "message": str(err),
        "expected": "0x01",
        "actual": "0x02",
    }
    assert http_status_of(DecryptionFailed) == 400
    assert http_status_of(DigestMismatch) == 502
