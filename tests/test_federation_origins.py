"""The federation's browser origins (``gateway.federation_origins``): read from the chain's
``federation()``, cached, kept when the chain cannot be read, and only http(s) origins."""

from __future__ import annotations

from eth_utils.address import to_checksum_address

from gateway.federation_origins import FederationOrigins, origin_of
from ledger.chain.registry import Federation, FederationMember

KEY = bytes([2]) + bytes(32)


def _fed(*urls: str) -> Federation:
    members = tuple(
        FederationMember(to_checksum_address(f"0x{i + 1:040x}"), KEY, url)
        for i, url in enumerate(urls)
    )
    return Federation(1, bytes(32), members)


def test_origin_of_keeps_scheme_host_and_port_only() -> None:
    assert origin_of("HTTPS://Gw.Example:8443/api/") == "https://gw.example:8443"
    assert origin_of("http://127.0.0.1:8000") == "http://127.0.0.1:8000"
    for bad in ("javascript:alert(1)", "ftp://gw.example", "https://user@gw.example", "gw.example"):
        assert origin_of(bad) is None, bad


def test_origins_are_cached_and_kept_when_the_chain_is_down() -> None:
    now = [0.0]
    answers: list[Federation | Exception] = [
        _fed("http://a.example:1/", "not a url"),
        RuntimeError("chain down"),
        _fed("http://b.example"),
    ]
    calls = []

    def read() -> Federation:
        calls.append(now[0])
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    origins = FederationOrigins(read, ttl_s=10, clock=lambda: now[0])
    assert origins() == {"http://a.example:1"}
    now[0] = 5
    assert origins() == {"http://a.example:1"}  # cached: the chain is not asked
    assert calls == [0.0]
    now[0] = 11
    assert origins() == {"http://a.example:1"}  # chain down: the last set read
    now[0] = 22
    assert origins() == {"http://b.example"}
    assert calls == [0.0, 11, 22]


def test_no_origin_before_the_chain_was_ever_read() -> None:
    def down() -> Federation:
        raise RuntimeError("chain down")

    assert FederationOrigins(down)() == frozenset()
