"""Consent receipts for one consent as the chain holds it: a FHIR R5 ``Consent`` and a receipt
in the Kantara Consent Receipt v1.1 / ISO/IEC 27560 shape.

The portal builds the same two documents in the browser (``gateway/portal/src/receipts.ts``)
from the same inputs, and a test holds the two equal; this module is the reference, and the
one validated with ``fhir.resources`` (its default models are R5; ``ledger.audit.fhir`` is the
R4B export of the whole ledger). Input: one entry of ``GET /v1/consents`` (``granted``), the
chain id, the registry address, and the block (number and time) the list was read at.

Mapping (R5 ``Consent``): ``subject`` and ``grantor`` the patient, ``grantee`` the grantee,
``controller`` the registry, all as CAIP-10 account ids (``eip155:<chain>:<address>``);
``decision`` permit; ``status`` active / inactive at the block; one ``provision`` with the
grantee as information recipient (IRCP), the purposes as HL7 v3 ActReason codes, ``period.end``
the expiry (none for no expiry), and the scope: ``data`` the record
(``DocumentReference/<record id>``), ``documentType`` the category, nothing for all records.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fhir.resources.consent import Consent

from ledger.audit.fhir import ACT_REASON, CAIP10, PURPOSE_CODES
from ledger.protocol.consent_types import NO_EXPIRY, category_name

__all__ = [
    "CATEGORY_SYSTEM",
    "KANTARA_VERSION",
    "consent_r5",
    "kantara_receipt",
    "receipt_id",
    "validate_r5",
]

KANTARA_VERSION = "KI-CR-v1.1.0"
CATEGORY_SYSTEM = "urn:consent-ledger:category"
_PURPOSE_SYSTEM = "urn:consent-ledger:purpose"
_IRCP = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
    "code": "IRCP",
    "display": "information recipient",
}
_ACCESS = {"system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "access"}
_LOINC_CONSENT = {"system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent"}
_PURPOSE_NAMES = {0: "treatment", 1: "research", 2: "insurance", 3: "public health", 4: "emergency"}


def _instant(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _caip10(chain_id: int, address: str) -> str:
    return f"eip155:{chain_id}:{address}"


def _account(chain_id: int, address: str, display: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"identifier": {"system": CAIP10, "value": _caip10(chain_id, address)}}
    if display:
        ref["display"] = display
    return ref


def receipt_id(consent: Mapping[str, Any], *, chain_id: int, registry: str) -> str:
    """A stable id of one consent slot: ``cl-`` + 40 hex of sha256 over chain, registry,
    patient, grantee, scope kind and scope id (lowercase)."""
    key = "|".join(
        (
            str(chain_id),
            registry.lower(),
            str(consent["patient"]).lower(),
            str(consent["grantee"]).lower(),
            str(consent["scope_kind"]),
            str(consent["scope_id"]).lower(),
        )
    )
    return "cl-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def _purpose_coding(purpose: int) -> dict[str, Any]:
    code = PURPOSE_CODES.get(purpose)
    if code is None:
        return {"system": _PURPOSE_SYSTEM, "code": str(purpose)}
    return {"system": ACT_REASON, "code": code[0], "display": code[1]}


def _category(scope_id: str) -> str:
    return category_name(bytes.fromhex(scope_id.removeprefix("0x")))


def consent_r5(
    consent: Mapping[str, Any], *, chain_id: int, registry: str, block_number: int
) -> dict[str, Any]:
    """The FHIR R5 ``Consent`` of one consent (plain JSON; :func:`validate_r5` checks it)."""
    patient, grantee = str(consent["patient"]), str(consent["grantee"])
    provision: dict[str, Any] = {
        "actor": [{"role": {"coding": [_IRCP]}, "reference": _account(chain_id, grantee)}],
        "action": [{"coding": [_ACCESS]}],
        "purpose": [_purpose_coding(int(p)) for p in sorted(consent["purposes"])],
    }
    expires = int(consent["expires_at"])
    if expires < NO_EXPIRY:
        provision["period"] = {"end": _instant(expires)}
    scope_id = str(consent["scope_id"]).lower()
    if consent["scope_kind"] == "record":
        provision["data"] = [
            {
                "meaning": "instance",
                "reference": {
                    "reference": f"DocumentReference/{scope_id.removeprefix('0x')}",
                    "display": f"record {scope_id}",
                },
            }
        ]
    elif consent["scope_kind"] == "category":
        provision["documentType"] = [{"system": CATEGORY_SYSTEM, "code": _category(scope_id)}]
    return {
        "resourceType": "Consent",
        "id": receipt_id(consent, chain_id=chain_id, registry=registry),
        "identifier": [
            {
                "system": "urn:consent-ledger:consent-slot",
                "value": f"{_caip10(chain_id, registry)}/{patient}/{grantee}/"
                f"{consent['scope_kind']}/{scope_id}",
            }
        ],
        "status": "active" if consent["active"] else "inactive",
        "category": [{"coding": [_LOINC_CONSENT]}],
        "subject": _account(chain_id, patient),
        "grantor": [_account(chain_id, patient)],
        "grantee": [_account(chain_id, grantee)],
        "controller": [_account(chain_id, registry, "Consent Ledger registry")],
        "decision": "permit",
        "provision": [provision],
        "meta": {"tag": [{"system": "urn:consent-ledger:block", "code": str(block_number)}]},
    }


def validate_r5(body: Mapping[str, Any]) -> Consent:
    """The ``fhir.resources`` R5 model of ``body`` (raises on an invalid resource)."""
    return Consent.model_validate(dict(body))


def kantara_receipt(
    consent: Mapping[str, Any],
    *,
    chain_id: int,
    registry: str,
    block_number: int,
    block_time: int,
    language: str,
) -> dict[str, Any]:
    """A Kantara Consent Receipt v1.1 (ISO/IEC 27560 record fields under ``evidence``)."""
    patient, grantee = str(consent["patient"]), str(consent["grantee"])
    scope_id = str(consent["scope_id"]).lower()
    kind = str(consent["scope_kind"])
    if kind == "record":
        scope = f"record {scope_id}"
    elif kind == "category":
        scope = f"category {_category(scope_id)}"
    else:
        scope = "all records"
    expires = int(consent["expires_at"])
    termination = (
        "until revoked"
        if expires >= NO_EXPIRY
        else f"until {_instant(expires)} or until revoked, whichever is first"
    )
    purposes = sorted(int(p) for p in consent["purposes"])
    return {
        "version": KANTARA_VERSION,
        "jurisdiction": "CN",
        "consentTimestamp": block_time,
        "collectionMethod": "EIP-712 signature by the patient, held by the Consent Ledger "
        "registry on chain",
        "consentReceiptID": receipt_id(consent, chain_id=chain_id, registry=registry),
        "language": language,
        "piiPrincipalId": _caip10(chain_id, patient),
        "piiControllers": [
            {
                "piiController": "Consent Ledger registry",
                "contact": "the registry administrator",
                "address": _caip10(chain_id, registry),
                "email": "",
                "phone": "",
            }
        ],
        "policyUrl": f"urn:consent-ledger:registry:{_caip10(chain_id, registry)}",
        "services": [
            {
                "service": "checkup results",
                "purposes": [
                    {
                        "purpose": _PURPOSE_NAMES.get(p, f"purpose {p}"),
                        "purposeCategory": [_purpose_coding(p)["code"]],
                        "consentType": "EXPLICIT",
                        "piiCategory": [scope],
                        "primaryPurpose": i == 0,
                        "termination": termination,
                        "thirdPartyDisclosure": True,
                        "thirdPartyName": _caip10(chain_id, grantee),
                    }
                    for i, p in enumerate(purposes)
                ],
            }
        ],
        "sensitive": True,
        "spiCat": ["health"],
        "evidence": {
            "chainId": chain_id,
            "registry": registry,
            "blockNumber": block_number,
            "patient": patient,
            "grantee": grantee,
            "scopeKind": kind,
            "scopeId": scope_id,
            "purposes": purposes,
            "expiresAt": expires,
            "status": "active" if consent["active"] else "inactive",
        },
    }
