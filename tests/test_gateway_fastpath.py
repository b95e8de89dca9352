"""The fetch fast path (gateway.fastpath) answers exactly as the FastAPI route does.

A well-formed ``GET /v1/records/{id}?purpose=...`` with a bearer token is served by the fast
path; the same request with an extra query parameter falls through to the FastAPI route. Both
must give the same statuses, error bodies and envelopes (the sealed key differs: it is sealed
afresh per read), and both must be logged and counted under the route template. The fast path
marks what it served (``X-Fast-Path: served``, ``gateway_fast_path_responses_total``), so these
tests fail when it stops serving: switched off, or no longer matching the fetch route.
"""

from __future__ import annotations

import os
import re

from gateway.fastpath import FAST_PATH_HEADER
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
    assert fast.headers.get(FAST_PATH_HEADER) == "served"
    assert FAST_PATH_HEADER not in slow.headers
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
        assert fast.headers.get(FAST_PATH_HEADER) == "served", target
        assert FAST_PATH_HEADER not in slow.headers
        f_err, s_err = fast.json()["error"], slow.json()["error"]
        assert f_err["code"] == s_err["code"]
        if code is not None:
            assert f_err["code"] == code
        assert set(f_err["details"]) == set(s_err["details"])
    unknown = "/v1/records/0x" + "ab" * 32 + "?purpose=treatment"
    r = gateway.client.get(unknown, headers=doctor_h)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "record_not_found"
    assert r.headers.get(FAST_PATH_HEADER) == "served"

    metrics = gateway.client.get("/metrics").text
    assert 'route="/v1/records/{record_id}",status="200"' in metrics
    assert 'route="/v1/records/{record_id}",status="403"' in metrics
    for status in ("200", "401", "403", "404", "422"):
        assert _fast_path_count(metrics, status) >= 1, status


def _fast_path_count(metrics: str, status: str) -> float:
    line = re.escape(f'gateway_fast_path_responses_total{{status="{status}"}}') + r" (\S+)"
    found = re.search(f"^{line}$", metrics, re.M)
    return float(found.group(1)) if found else 0.0


def test_the_fast_path_serves_the_fetch_route_wherever_it_is(gateway: Stack) -> None:
    """The fetch is asked at the URL the app itself gives its fetch route, in the shape the
    client sends (``?purpose=<name>``, a bearer token): the fast path must be on and serve it.
    A route moved, renamed or re-parameterised without the fast path following fails here."""
    metrics = gateway.client.get("/metrics").text
    assert re.search(r"^gateway_fast_path_active 1\.0$", metrics, re.M), "fast path is off"
    patient = new_account()
    data = b"mine " + os.urandom(8).hex().encode()
    r = upload(gateway, login(gateway, gateway.centre), patient=patient.address, data=data)
    assert r.status_code == 201, r.text
    url = gateway.app.url_path_for("fetch_record", record_id=r.json()["record_id"])
    before = _fast_path_count(metrics, "200")
    got = gateway.client.get(url, params={"purpose": "treatment"}, headers=login(gateway, patient))
    assert got.status_code == 200, got.text
    assert got.headers.get(FAST_PATH_HEADER) == "served", "the fetch route is not fast-pathed"
    assert open_envelope(Envelope.model_validate_json(got.content), private_key=patient.key) == data
    after = _fast_path_count(gateway.client.get("/metrics").text, "200")
    assert after == before + 1
