"""The custody federation on a real anvil: ``setFederation`` / ``federation()``, the custody set
an attestation must name, the refusals with their arguments, the event (decoded and folded into
the digest), and a member's GATEWAY_ROLE that cannot be taken while it holds shares.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import coincurve
import pytest
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak
from web3 import Web3

from ledger.chain.registry import ConsentRegistry, FederationMember
from ledger.protocol import eip712
from ledger.protocol.consent_types import GATEWAY_ROLE
from ledger.protocol.contract_errors import (
    AccessControlUnauthorizedAccount,
    ContractError,
    CustodySetNotCurrent,
    DuplicateCustodian,
    InvalidCustodyKey,
    InvalidFederation,
    InvalidThreshold,
    InvalidUrl,
    NotAGateway,
)
from ledger.protocol.contract_errors import (
    FederationMember as FederationMemberError,
)
from ledger.protocol.events import EventDecoder, FederationSet, RawLog, registry_event_abi
from tests.helpers.registry import (
    CID,
    Actors,
    RegistryEnv,
    attestation_for,
    deploy_env,
    recompute_digest,
)

ZERO = bytes(32)


@pytest.fixture(scope="module")
def env(w3: Web3, anvil: Any) -> RegistryEnv:
    return deploy_env(w3, anvil.accounts)


@pytest.fixture
def reg(chain: Web3, env: RegistryEnv) -> ConsentRegistry:
    return env.client(chain)


@pytest.fixture
def a(env: RegistryEnv) -> Actors:
    return env.actors


@contextmanager
def reverts(cls: type[ContractError], **fields: Any) -> Iterator[None]:
    with pytest.raises(cls) as info:
        yield
    for name, expected in fields.items():
        assert getattr(info.value, name) == expected, name


def custody_key() -> bytes:
    return coincurve.PrivateKey(os.urandom(32)).public_key.format(compressed=True)


def independent_custody_set(threshold: int, members: list[FederationMember]) -> bytes:
    """keccak256(abi.encode(uint8, address[], bytes[])), computed here without the client."""
    return keccak(
        abi_encode(
            ["uint8", "address[]", "bytes[]"],
            [threshold, [m.gateway for m in members], [m.custody_key for m in members]],
        )
    )


def three_gateways(reg: ConsentRegistry, a: Actors) -> list[FederationMember]:
    """The env's gateway plus two more accounts admitted as gateways."""
    accounts = [a.gateway, a.relayer, a.stranger]
    for acc in accounts[1:]:
        reg.grant_role(a.admin, GATEWAY_ROLE, acc.address)
    return [
        FederationMember(acc.address, custody_key(), f"http://127.0.0.1:{8000 + i}")
        for i, acc in enumerate(accounts)
    ]


def signed(reg: ConsentRegistry, a: Actors, **custody: bytes) -> tuple[Any, bytes]:
    attestation = dataclasses.replace(attestation_for(reg.w3, a.patient.address), **custody)
    return attestation, eip712.sign(a.centre, reg.domain, attestation)


def test_empty_federation_is_the_single_gateway_mode(reg: ConsentRegistry, a: Actors) -> None:
    fed = reg.federation()
    assert (fed.threshold, fed.custody_set, fed.members) == (0, ZERO, ())
    attestation, sig = signed(reg, a)
    assert reg.register_record(a.gateway, attestation, sig, CID).record_id


def test_set_federation_is_readable_in_one_call_and_hashes_as_documented(
    reg: ConsentRegistry, env: RegistryEnv, a: Actors
) -> None:
    members = three_gateways(reg, a)
    receipt = reg.set_federation(a.admin, 2, members)
    fed = reg.federation()
    assert fed.threshold == 2
    assert fed.members == tuple(members)
    assert fed.custody_set == independent_custody_set(2, members)
    # The event, decoded by the audit's decoder, carries the same federation.
    decoder = EventDecoder(registry_event_abi(reg.contract.abi))
    raw = reg.w3.provider.make_request(  # type: ignore[arg-type]
        "eth_getTransactionReceipt", [receipt.tx_hash]
    )["result"]["logs"]
    logs = [RawLog.from_rpc(log) for log in raw]
    (event,) = [decoder.decode(log) for log in logs]
    assert isinstance(event, FederationSet)
    assert event.threshold == 2
    assert event.custody_set == fed.custody_set
    assert event.gateways == tuple(m.gateway for m in members)
    assert event.custody_keys == tuple(m.custody_key for m in members)
    assert event.urls == tuple(m.url for m in members)
    # ... and it is folded into the event digest like every other event.
    all_logs = reg.w3.eth.get_logs({"address": reg.address, "fromBlock": env.deploy_block})
    digest = reg.event_digest()
    assert recompute_digest(list(all_logs)) == (digest.head, digest.count)


def test_record_must_attest_the_current_custody_set(reg: ConsentRegistry, a: Actors) -> None:
    members = three_gateways(reg, a)
    reg.set_federation(a.admin, 2, members)
    current = reg.federation().custody_set
    # The single-gateway attestation (zero custody set) is refused once a federation is set.
    attestation, sig = signed(reg, a)
    with reverts(CustodySetNotCurrent, attested=ZERO, current=current):
        reg.register_record(a.gateway, attestation, sig, CID)
    # So is a custody set of another threshold over the same keys.
    other = independent_custody_set(3, members)
    attestation, sig = signed(reg, a, custody_set=other)
    with reverts(CustodySetNotCurrent, attested=other, current=current):
        reg.register_record(a.gateway, attestation, sig, CID)
    commitments = keccak(b"the manifest's commitments")
    attestation, sig = signed(reg, a, custody_set=current, share_commitments=commitments)
    rid = reg.register_record(a.gateway, attestation, sig, CID).record_id
    assert bytes(rid) == bytes(reg.attestation_digest(attestation))
    # After a key rotation the old custody set is no longer current.
    rotated = [dataclasses.replace(members[0], custody_key=custody_key()), *members[1:]]
    reg.set_federation(a.admin, 2, rotated)
    attestation, sig = signed(reg, a, custody_set=current)
    with reverts(CustodySetNotCurrent, attested=current):
        reg.register_record(a.gateway, attestation, sig, CID)


def test_share_commitments_are_bound_by_the_record_id(reg: ConsentRegistry, a: Actors) -> None:
    base = attestation_for(reg.w3, a.patient.address)
    one = dataclasses.replace(base, share_commitments=keccak(b"one"))
    two = dataclasses.replace(base, share_commitments=keccak(b"two"))
    assert reg.attestation_digest(one) != reg.attestation_digest(two)
    assert bytes(reg.attestation_digest(one)) == bytes(eip712.record_id(reg.domain, one))


def test_federation_refusals(reg: ConsentRegistry, a: Actors) -> None:
    members = three_gateways(reg, a)
    with reverts(InvalidThreshold, threshold=0, members=3):
        reg.set_federation(a.admin, 0, members)
    with reverts(InvalidThreshold, threshold=4, members=3):
        reg.set_federation(a.admin, 4, members)
    with reverts(InvalidThreshold, threshold=1, members=0):
        reg.set_federation(a.admin, 1, [])
    with reverts(NotAGateway, account=a.doctor.address):
        reg.set_federation(a.admin, 1, [FederationMember(a.doctor.address, custody_key(), "u")])
    uncompressed = coincurve.PrivateKey().public_key.format(compressed=False)
    bad_keys = [uncompressed[:33], b"\x02" + bytes(31), b"\x05" + bytes(32)]
    for key in bad_keys:
        with reverts(InvalidCustodyKey, gateway=a.gateway.address):
            reg.set_federation(a.admin, 1, [dataclasses.replace(members[0], custody_key=key)])
    with reverts(DuplicateCustodian, gateway=members[0].gateway):
        reg.set_federation(a.admin, 1, [members[0], members[0]])
    same_key = dataclasses.replace(members[1], custody_key=members[0].custody_key)
    with reverts(DuplicateCustodian, gateway=members[1].gateway):
        reg.set_federation(a.admin, 1, [members[0], same_key])
    for url in ("", "h" * 201):
        with reverts(InvalidUrl, gateway=members[0].gateway, length=len(url)):
            reg.set_federation(a.admin, 1, [dataclasses.replace(members[0], url=url)])
    with reverts(InvalidFederation, gateways=17):
        reg.set_federation(a.admin, 1, [members[0]] * 17)
    with reverts(AccessControlUnauthorizedAccount, account=a.stranger.address):
        reg.set_federation(a.stranger, 1, members)
    assert reg.federation().members == ()


def test_a_member_keeps_its_gateway_role_until_replaced(reg: ConsentRegistry, a: Actors) -> None:
    members = three_gateways(reg, a)
    reg.set_federation(a.admin, 2, members)
    with reverts(FederationMemberError, gateway=members[2].gateway):
        reg.revoke_role(a.admin, GATEWAY_ROLE, members[2].gateway)
    reg.set_federation(a.admin, 2, members[:2])
    reg.revoke_role(a.admin, GATEWAY_ROLE, members[2].gateway)
    assert not reg.has_role(GATEWAY_ROLE, members[2].gateway)
    # An empty federation returns to the single-gateway mode and frees every member.
    reg.set_federation(a.admin, 0, [])
    assert reg.federation().custody_set == ZERO
    reg.revoke_role(a.admin, GATEWAY_ROLE, members[1].gateway)
