"""What a chain observer learns: salted digests, read from the real chain after an upload."""

from __future__ import annotations

import hashlib
from typing import Any

from ledger.client import Gateway
from ledger.protocol.consent_types import category_id
from tests.helpers.gateway import (
    Stack,
    attest,
    login,
    new_account,
    salt_for,
)

# A templated result has few possible values: an observer hashes every one of them.
CANDIDATES = [
    f"blood type: {group}{rh}\n".encode() for group in ("A", "B", "AB", "O") for rh in "+-"
] + [f"HIV-1/2 antibody: {answer}\n".encode() for answer in ("positive", "negative")]
REAL = b"blood type: O-\n"


def _chain_words(stack: Stack) -> set[bytes]:
    """Every 32-byte word the registry's logs and recordOf expose (topics and data words)."""
    logs = stack.w3.eth.get_logs({"address": stack.registry.address, "fromBlock": 0})
    words: set[bytes] = set()
    for log in logs:
        words.update(bytes(t) for t in log["topics"])
        data = bytes(log["data"])
        words.update(data[i : i + 32] for i in range(0, len(data), 32))
    return words


def test_no_candidate_plaintext_matches_an_on_chain_digest(gateway: Stack) -> None:
    assert REAL in CANDIDATES
    patient = new_account()
    centre = Gateway(str(gateway.client.base_url), http=gateway.client).login(gateway.centre)
    uploaded = centre.upload(
        REAL,
        domain=gateway.domain,
        patient=patient.address,
        category=category_id("laboratory"),
    )
    record_id = bytes.fromhex(uploaded.record.record_id[2:])
    on_chain = gateway.registry.record_of(record_id)

    registered = gateway.registry.contract.events.RecordRegistered().get_logs(from_block=0)
    mine = [e for e in registered if bytes(e["args"]["recordId"]) == record_id]
    assert len(mine) == 1
    assert bytes(mine[0]["args"]["contentDigest"]) == on_chain.content_digest

    exposed = _chain_words(gateway)
    assert on_chain.content_digest in exposed  # the scan reads where a digest would show
    for candidate in CANDIDATES:
        assert hashlib.sha256(candidate).digest() not in exposed, candidate
    # the reader who can decrypt recomputes it: sha256(salt || document), salt from the blob
    opened = Gateway(str(gateway.client.base_url), http=gateway.client).login(patient)
    got = opened.open_record(
        uploaded.record.record_id, "treatment", expected_digest=on_chain.content_digest
    )
    assert got.plaintext == REAL


def test_two_uploads_of_the_same_document_get_unrelated_digests(gateway: Stack) -> None:
    patient = new_account()
    centre = Gateway(str(gateway.client.base_url), http=gateway.client).login(gateway.centre)
    digests = set()
    for issued in (1_700_000_000, 1_700_000_001):
        up = centre.upload(
            REAL,
            domain=gateway.domain,
            patient=patient.address,
            category=category_id("laboratory"),
            issued_at=issued,
        )
        digests.add(
            gateway.registry.record_of(bytes.fromhex(up.record.record_id[2:])).content_digest
        )
    assert len(digests) == 2


def test_an_upload_whose_salt_is_not_the_attested_one_is_refused(gateway: Stack) -> None:
    patient = new_account()
    data = b"blood type: A+\n"
    attestation, signature = attest(gateway, gateway.centre, patient=patient.address, data=data)
    headers = login(gateway, gateway.centre)

    def post(salt: str) -> Any:
        return gateway.client.post(
            "/v1/records",
            headers=headers,
            files={"file": ("result.txt", data, "text/plain")},
            data={
                "patient": patient.address,
                "category": "laboratory",
                "issued_at": str(attestation.issued_at),
                "signature": signature,
                "salt": salt,
            },
        )

    other = post("0x" + "00" * 32)  # the digest it gives is not the one the centre signed
    assert other.status_code == 422, other.text
    assert other.json()["error"]["code"] == "attestation_invalid"
    short = post("0x1234")
    assert short.status_code == 422, short.text
    assert short.json()["error"]["code"] == "invalid_request"
    good = post("0x" + salt_for(patient.address, data, attestation.issued_at).hex())
    assert good.status_code == 201, good.text
