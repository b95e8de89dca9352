"""Export the audited ledger as FHIR: a ``Consent`` per grant, an ``AuditEvent`` per logged read.

Resources are built as plain JSON and validated with ``fhir.resources`` (its ``R4B`` models:
``Consent`` and ``AuditEvent`` are unchanged from R4 in R4B, and fhir.resources 8 ships R4B, not
R4). Mapping:

- ``Consent``: one per grant episode (a ``ConsentGranted`` until it is revoked, replaced or
  lapses). ``status`` active / inactive at the audited block; ``scope`` patient-privacy;
  ``category`` LOINC 59284-0; ``patient`` / ``performer`` (the patient or guardian who signed)
  / ``provision.actor`` (the grantee, role IRCP) identified by CAIP-10 account ids
  (``eip155:<chain>:<address>``); ``provision.period`` from the grant's block time to its expiry
  (or the revoke / replacement); ``provision.purpose`` the purposes as HL7 v3 ActReason codes;
  ``provision.data`` the record (``DocumentReference/<record id>``) for a record scope,
  ``provision.code`` the category for a category scope, nothing for all records.
- ``AuditEvent``: one per access-log entry of every gateway's log (so one per release: under
  a custody federation each member that released its key share logged its own allowed entry):
  a RESTful ``read``, outcome 0 (allowed) or 4 (denied), ``purposeOfEvent`` the purpose,
  ``agent`` the requester (``requestor``) with ``policy`` = ``Consent/<id>`` of the grant that
  allowed the read, and the deciding gateway as the custodian agent (IHE BALP style: type
  ``custodian`` of provenance-participant-type, its CAIP-10 account id as identifier, and its
  share index when it released under a federation), ``entity`` the record and the patient,
  ``source.observer`` the gateway.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.consent import Consent

from ledger.audit.federation import member_of
from ledger.audit.report import AuditReport, EntryVerdict, LogVerification
from ledger.audit.state import ConsentTimeline, GrantInForce
from ledger.protocol.consent_types import (
    NO_EXPIRY,
    Basis,
    Purpose,
    ScopeKind,
    category_name,
    purposes_of,
)
from ledger.protocol.events import FederationSet

__all__ = [
    "ACT_REASON",
    "PURPOSE_CODES",
    "FhirExport",
    "audit_event_resources",
    "consent_id",
    "consent_resources",
    "export_fhir",
]

ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
CAIP10 = "https://chainagnostic.org/CAIPs/caip-10"
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
PURPOSE_CODES: Mapping[int, tuple[str, str]] = {
    Purpose.TREATMENT: ("TREAT", "treatment"),
    Purpose.RESEARCH: ("HRESCH", "healthcare research"),
    Purpose.INSURANCE: ("COVERAGE", "coverage under policy or program"),
    Purpose.PUBLIC_HEALTH: ("PUBHLTH", "public health"),
    Purpose.EMERGENCY: ("ETREAT", "emergency treatment"),
}
"""Our purpose ids as HL7 v3 ActReason codes (insurance: COVERAGE; CLMATTCH is a claim
attachment, narrower than what an insurer's consent covers)."""

BlockTimes = Callable[[Iterable[int]], Mapping[int, int]]
LAST_INSTANT = 253_402_300_799
"""9999-12-31T23:59:59Z, the last instant a FHIR ``dateTime`` (four-digit year) can state: a
consent's expiry set beyond it (any uint64 below the no-expiry sentinel is valid on-chain) is
exported as an open-ended period."""


def _instant(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _account(chain_id: int, address: str, display: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {
        "identifier": {"system": CAIP10, "value": f"eip155:{chain_id}:{address}"}
    }
    if display:
        ref["display"] = display
    return ref


def _purpose_coding(purpose: int) -> dict[str, Any]:
    code = PURPOSE_CODES.get(purpose)
    if code is None:
        return {"system": "urn:consent-ledger:purpose", "code": str(purpose)}
    return {"system": ACT_REASON, "code": code[0], "display": code[1]}


def consent_id(grant: GrantInForce) -> str:
    """The FHIR id of a grant episode: ``grant-<block>-<logIndex>``."""
    return f"grant-{grant.block_number}-{grant.log_index}"


def _record_ref(record_id: bytes) -> dict[str, Any]:
    return {
        "reference": f"DocumentReference/{record_id.hex()}",
        "display": f"record 0x{record_id.hex()}",
    }


def consent_resources(
    timeline: ConsentTimeline,
    *,
    chain_id: int,
    at_block: int,
    block_times: BlockTimes,
) -> list[Consent]:
    """A validated ``Consent`` per grant episode up to ``at_block``."""
    episodes: list[tuple[GrantInForce, tuple[int, int] | None]] = [
        (g, ended) for g, ended in timeline.all_grants() if g.block_number <= at_block
    ]
    blocks = (
        {g.block_number for g, _ in episodes}
        | {e[0] for _, e in episodes if e is not None}
        | {at_block}
    )
    times = block_times(sorted(blocks))
    now = times[at_block]
    resources: list[Consent] = []
    for grant, ended in sorted(episodes, key=lambda ge: (ge[0].block_number, ge[0].log_index)):
        ended_at = times[ended[0]] if ended is not None and ended[0] <= at_block else None
        lapsed = grant.expires_at <= now
        active = ended_at is None and not lapsed
        period: dict[str, Any] = {"start": _instant(times[grant.block_number])}
        ends = [
            t
            for t in (ended_at, grant.expires_at if grant.expires_at < NO_EXPIRY else None)
            if t is not None and t <= LAST_INSTANT  # an expiry past year 9999: open-ended
        ]
        if ends:
            period["end"] = _instant(min(ends))
        provision: dict[str, Any] = {
            "type": "permit",
            "period": period,
            "actor": [
                {
                    "role": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                "code": "IRCP",
                                "display": "information recipient",
                            }
                        ]
                    },
                    "reference": _account(chain_id, grant.grantee),
                }
            ],
            "action": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/consentaction",
                            "code": "access",
                        }
                    ]
                }
            ],
            "purpose": [
                _purpose_coding(int(p)) for p in sorted(purposes_of(grant.purposes), key=int)
            ],
        }
        if grant.scope_kind is ScopeKind.RECORD:
            provision["data"] = [{"meaning": "instance", "reference": _record_ref(grant.scope_id)}]
        elif grant.scope_kind is ScopeKind.CATEGORY:
            provision["code"] = [{"text": _category(grant.scope_id)}]
        body: dict[str, Any] = {
            "resourceType": "Consent",
            "id": consent_id(grant),
            "status": "active" if active else "inactive",
            "scope": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                        "code": "patient-privacy",
                    }
                ]
            },
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://loinc.org",
                            "code": "59284-0",
                            "display": "Patient Consent",
                        }
                    ]
                }
            ],
            "patient": _account(chain_id, grant.patient),
            "dateTime": _instant(times[grant.block_number]),
            "performer": [_account(chain_id, grant.actor)],
            "identifier": [
                {
                    "type": {"text": "ConsentGranted log (block:logIndex)"},
                    "value": f"{grant.block_number}:{grant.log_index}",
                }
            ],
            "policyRule": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}
                ]
            },
            "provision": provision,
        }
        resources.append(Consent.model_validate(body))
    return resources


def _category(category: bytes) -> str:
    try:
        return category_name(category)
    except UnicodeDecodeError:
        return "0x" + category.hex()


def audit_event_resources(
    logs: Sequence[LogVerification], timeline: ConsentTimeline, *, chain_id: int
) -> list[AuditEvent]:
    """A validated ``AuditEvent`` per parsed access-log entry."""
    out: list[AuditEvent] = []
    federations = timeline.federations()
    for log in logs:
        for v in log.verdicts:
            resource = _audit_event(v, log, timeline, chain_id, federations)
            if resource is not None:
                out.append(resource)
    return out


def _custodian_agent(
    chain_id: int, gateway: str, block: int | None, federations: Sequence[FederationSet]
) -> dict[str, Any]:
    """The gateway that decided (and, if allowed, released): BALP's custodian agent."""
    display = "consent gateway"
    membership = member_of(federations, gateway, block) if block is not None else None
    if membership is not None:
        fed, index = membership
        display = (
            f"custody federation member, share {index} of a {fed.threshold}-of-"
            f"{len(fed.gateways)} federation (set at block {fed.block_number})"
        )
    return {
        "type": {
            "coding": [{"system": PARTICIPANT_TYPE, "code": "custodian", "display": "Custodian"}]
        },
        "who": _account(chain_id, gateway, display),
        "requestor": False,
    }


def _audit_event(
    v: EntryVerdict,
    log: LogVerification,
    timeline: ConsentTimeline,
    chain_id: int,
    federations: Sequence[FederationSet] = (),
) -> AuditEvent | None:
    d = v.decision
    if d is None:
        return None
    agent: dict[str, Any] = {
        "who": _account(chain_id, d.requester),
        "requestor": True,
        "purposeOfUse": [{"coding": [_purpose_coding(d.purpose)]}],
    }
    if d.allowed and d.block is not None and v.basis in (Basis.RECORD, Basis.CATEGORY, Basis.ALL):
        grant = timeline.grant_for_access(d.patient, d.requester, d.record, v.basis, d.block)
        if grant is not None:
            agent["policy"] = [f"Consent/{consent_id(grant)}"]
    timestamp = d.timestamp
    recorded = _instant(timestamp) if timestamp is not None else _instant(v.block_timestamp or 0)
    body: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": f"access-{log.gateway[2:10].lower()}-{v.index}",
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        },
        "subtype": [
            {"system": "http://hl7.org/fhir/restful-interaction", "code": "read", "display": "read"}
        ],
        "action": "R",
        "recorded": recorded,
        "outcome": "0" if d.allowed else "4",
        "outcomeDesc": f"{'allowed' if d.allowed else 'denied'}: {d.reason}"
        + (
            f" (block {d.block}, chain basis {v.basis.name.lower()})" if v.basis is not None else ""
        ),
        "purposeOfEvent": [{"coding": [_purpose_coding(d.purpose)]}],
        "agent": [agent, _custodian_agent(chain_id, log.gateway, d.block, federations)],
        "source": {
            "observer": _account(chain_id, log.gateway, "consent gateway"),
            "site": f"access log entry {v.index}",
        },
        "entity": [
            {
                "what": _record_ref(d.record),
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "2",
                    "display": "System Object",
                },
            },
            {
                "what": _account(chain_id, d.patient),
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "1",
                    "display": "Person",
                },
                "role": {
                    "system": "http://terminology.hl7.org/CodeSystem/object-role",
                    "code": "1",
                    "display": "Patient",
                },
            },
        ],
    }
    return AuditEvent.model_validate(body)


@dataclass(frozen=True)
class FhirExport:
    directory: Path
    consents: int
    audit_events: int
    bundle: Path


def export_fhir(report: AuditReport, directory: Path, *, block_times: BlockTimes) -> FhirExport:
    """Write ``Consent/<id>.json``, ``AuditEvent/<id>.json`` and a collection ``bundle.json``."""
    if report.target_block is None or report.chain_id is None:
        raise ValueError("the audit did not replay the ledger; nothing to export")
    consents = consent_resources(
        report.timeline,
        chain_id=report.chain_id,
        at_block=report.target_block,
        block_times=block_times,
    )
    events = audit_event_resources(report.logs, report.timeline, chain_id=report.chain_id)
    entries = []
    for resource in [*consents, *events]:
        kind = resource.get_resource_type()
        folder = directory / kind
        folder.mkdir(parents=True, exist_ok=True)
        text = resource.model_dump_json(indent=2, exclude_none=True)
        (folder / f"{resource.id}.json").write_text(text + "\n", encoding="utf-8")
        entries.append({"fullUrl": f"{kind}/{resource.id}", "resource": json.loads(text)})
    bundle = Bundle.model_validate(
        {"resourceType": "Bundle", "type": "collection", "entry": entries}
    )
    path = directory / "bundle.json"
    path.write_text(bundle.model_dump_json(indent=2, exclude_none=True) + "\n", encoding="utf-8")
    return FhirExport(directory, len(consents), len(events), path)
