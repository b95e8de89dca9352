"""Consent receipts (``ledger.audit.receipts``): FHIR R5 ``Consent`` validated with
``fhir.resources`` (R5 models), and the Kantara Consent Receipt v1.1 fields."""

from __future__ import annotations

from typing import Any

import pytest

from ledger.audit.receipts import consent_r5, kantara_receipt, receipt_id, validate_r5
from ledger.protocol.consent_types import NO_EXPIRY, category_id

PATIENT = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
GRANTEE = "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65"
REGISTRY = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
RECORD = "0x" + "1f" * 32


def _consent(kind: str, scope_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "patient": PATIENT,
        "grantee": GRANTEE,
        "scope_kind": kind,
        "scope_id": scope_id,
        "purposes": [1, 0],
        "purpose_names": ["research", "treatment"],
        "expires_at": 1_800_000_000,
        "active": True,
        **extra,
    }


SCOPES = [
    ("record", RECORD),
    ("category", "0x" + category_id("laboratory").hex()),
    ("all", "0x" + bytes(32).hex()),
]


@pytest.mark.parametrize(("kind", "scope_id"), SCOPES)
def test_r5_consent_validates_for_every_scope(kind: str, scope_id: str) -> None:
    body = consent_r5(_consent(kind, scope_id), chain_id=31337, registry=REGISTRY, block_number=7)
    model = validate_r5(body)
    assert model.status == "active"
    assert model.decision == "permit"
    (provision,) = body["provision"]
    assert [p["code"] for p in provision["purpose"]] == ["TREAT", "HRESCH"]
    assert provision["period"] == {"end": "2027-01-15T08:00:00Z"}
    assert body["grantee"][0]["identifier"]["value"] == f"eip155:31337:{GRANTEE}"
    if kind == "record":
        assert provision["data"][0]["reference"]["reference"] == f"DocumentReference/{'1f' * 32}"
    elif kind == "category":
        assert provision["documentType"] == [
            {"system": "urn:consent-ledger:category", "code": "laboratory"}
        ]
    else:
        assert "data" not in provision
        assert "documentType" not in provision


def test_r5_without_expiry_has_no_end_and_an_ended_consent_is_inactive() -> None:
    consent = _consent("all", "0x" + bytes(32).hex(), expires_at=NO_EXPIRY, active=False)
    body = consent_r5(consent, chain_id=1, registry=REGISTRY, block_number=1)
    assert validate_r5(body).status == "inactive"
    assert "period" not in body["provision"][0]


def test_an_r4_shaped_or_incomplete_consent_is_refused_by_the_r5_model() -> None:
    body = consent_r5(_consent(*SCOPES[0]), chain_id=1, registry=REGISTRY, block_number=1)
    r4_shaped = {**body, "patient": body["subject"]}  # R4's Consent.patient is R5's subject
    with pytest.raises(ValueError, match="patient"):
        validate_r5(r4_shaped)
    without_status = {k: v for k, v in body.items() if k != "status"}
    with pytest.raises(ValueError, match="status"):
        validate_r5(without_status)


def test_kantara_receipt_has_the_v1_1_fields() -> None:
    consent = _consent(*SCOPES[1])
    receipt = kantara_receipt(
        consent, chain_id=31337, registry=REGISTRY, block_number=7, block_time=1, language="en"
    )
    required = {
        "version", "jurisdiction", "consentTimestamp", "collectionMethod", "consentReceiptID",
        "language", "piiPrincipalId", "piiControllers", "policyUrl", "services", "sensitive",
        "spiCat",
    }  # fmt: skip
    assert required <= set(receipt)
    assert receipt["version"] == "KI-CR-v1.1.0"
    assert receipt["consentReceiptID"] == receipt_id(consent, chain_id=31337, registry=REGISTRY)
    (service,) = receipt["services"]
    assert [p["purpose"] for p in service["purposes"]] == ["treatment", "research"]
    assert service["purposes"][0]["piiCategory"] == ["category laboratory"]
    assert receipt["evidence"]["status"] == "active"
