"""The fetch fast path (gateway.fastpath) answers exactly as the FastAPI route does.

A well-formed ``GET /v1/records/{id}?purpose=...`` with a bearer token is served by the fast
path; the same request with an extra query parameter falls through to the FastAPI route. Both
must give the same statuses, error bodies and envelopes (the sealed key differs: it is sealed
afresh per read), and both must be logged and counted under the route template.
"""

from __future__ import annotations

import os

from ledger.protocol.envelope import Envelope, open_envelope
from tests.helpers.gateway import (
    Stack,
    login,
    new_account,
    relay,
    signed_grant,
    upload,
)


def test_fast_path_and_route_give_the_same_answers(gateway: Stack) -> None:
    patient, doctor, stranger = new_account(), new_account(), new_account()
    data = b"fast path " + os.urandom(8).hex().encode()
    r = upload(gateway, login(gateway, gateway.centre), patient=patient.address, data=data)
    assert r.status_code == 201, r.text
    record_id = r.json()["record_id"]
    relay(
        gateway,
        login(gateway, patient),
        signed_grant(
            gateway, patient, doctor.address, scope_id=bytes.fromhex(record_id[2:]), purposes=(0,)
        ),
    )
    doctor_h, stranger_h = login(gateway, doctor), login(gateway, stranger)
    fast_url = f"/v1/records/{record_id}?purpose=treatment"
    slow_url = fast_url + "&unused=1"  # not the fast path's shape: FastAPI serves it

    fast, slow = (gateway.client.get(u, headers=doctor_h) for u in (fast_url, slow_url))
    assert fast.status_code == slow.status_code == 200, (fast.text, slow.text)
    assert fast.headers["content-type"] == slow.headers["content-type"] == "application/json"
    a, b = Envelope.model_validate_json(fast.content), Envelope.model_validate_json(slow.content)
    assert list(fast.json()) == list(slow.json())
    keep = {"sealed_key", "block_number", "event_count", "chain_time"}
    assert a.model_dump(exclude=keep) == b.model_dump(exclude=keep)
    for envelope in (a, b):
        assert open_envelope(envelope, private_key=doctor.key) == data

    for headers, url, status, code in (
        (stranger_h, "/v1/records/{}?purpose=treatment", 403, "consent_denied"),
        (doctor_h, "/v1/records/{}?purpose=research", 403, "consent_denied"),
        (doctor_h, "/v1/records/{}?purpose=astrology", 422, "invalid_request"),
        (doctor_h, "/v1/records/{}?purpose=99", 422, "invalid_request"),
        ({"Authorization": "Bearer nope"}, "/v1/records/{}?purpose=treatment", 401, None),
    ):
        target = url.format(record_id)
        fast, slow = (gateway.client.get(u, headers=headers) for u in (target, target + "&x=1"))
        assert fast.status_code == slow.status_code == status, (target, fast.text, slow.text)
        f_err, s_err = fast.json()["error"], slow.json()["error"]
        assert f_err["code"] == s_err["code"]
        if code is not None:
            assert f_err["code"] == code
        assert set(f_err["details"]) == set(s_err["details"])
    unknown = "/v1/records/0x" + "ab" * 32 + "?purpose=treatment"
    r = gateway.client.get(unknown, headers=doctor_h)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "record_not_found"

    metrics = gateway.client.get("/metrics").text
    assert 'route="/v1/records/{record_id}",status="200"' in metrics
    assert 'route="/v1/records/{record_id}",status="403"' in metrics
