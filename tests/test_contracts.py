"""ConsentRegistry on a real anvil: every function's success path, every custom error with its
arguments, the events and their fields, expiry, signatures (replay, wrong domain, wrong signer,
expired deadline, ERC-1271 wallets), guardians, break-glass, checkpoints and the event digest.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak
from web3 import Web3

from ledger.chain.build import compile_contracts
from ledger.chain.node import TxSender, deploy
from ledger.chain.registry import ConsentRegistry, ConsentTerms
from ledger.protocol import eip712
from ledger.protocol.consent_types import (
    ALL_SCOPE_ID,
    BREAK_GLASS_COOLDOWN_S,
    CENTRE_ROLE,
    DEFAULT_ADMIN_ROLE,
    DEFAULT_CATEGORIES,
    EMERGENCY_ROLE,
    GATEWAY_ROLE,
    MAX_BREAK_GLASS_S,
    NO_EXPIRY,
    Basis,
    Purpose,
    ScopeKind,
    category_id,
    purposes_mask,
)
from ledger.protocol.contract_errors import (
    ERROR_CLASSES,
    AccessControlBadConfirmation,
    AccessControlUnauthorizedAccount,
    BreakGlassAlreadyOpen,
    BreakGlassCoolingDown,
    BreakGlassNotOpen,
    BreakGlassReasonReused,
    CategoryAlreadyListed,
    CategoryNotListed,
    CheckpointNotGrowing,
    ConsentNotFound,
    ConsentUnchanged,
    ContractError,
    ECDSAInvalidSignature,
    ECDSAInvalidSignatureLength,
    ECDSAInvalidSignatureS,
    ErrorDecoder,
    ExpiryInPast,
    GuardianUnchanged,
    InvalidAccountNonce,
    InvalidBreakGlassDuration,
    InvalidCid,
    InvalidGrantee,
    InvalidGuardian,
    InvalidPurpose,
    InvalidScope,
    InvalidSignature,
    MissingReason,
    NoGuardian,
    NoPurpose,
    NotACentre,
    NotPatientOrGuardian,
    Panic,
    RecordExists,
    RecordNotOwned,
    Reverted,
    RevertedWithReason,
    SignatureExpired,
    UnknownContractError,
    UnknownRecord,
    ZeroCategory,
    ZeroPatient,
)
from tests.helpers.registry import (
    CID,
    Actors,
    RegistryEnv,
    attestation_for,
    deploy_env,
    events,
    increase_time,
    latest_timestamp,
    mine_at,
    recompute_digest,
    register,
)

LAB = category_id("laboratory")
IMAGING = category_id("imaging")
FAR = 2**40
ZERO_ADDRESS = "0x" + "00" * 20
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
REASON = keccak(text="unconscious at the emergency ward")
REASON_2 = keccak(text="still unconscious, second day")


@pytest.fixture(scope="module")
def env(w3: Web3, anvil: Any) -> RegistryEnv:
    return deploy_env(w3, anvil.accounts)


@pytest.fixture
def reg(chain: Web3, env: RegistryEnv) -> ConsentRegistry:
    return env.client(chain)


@pytest.fixture
def a(env: RegistryEnv) -> Actors:
    return env.actors


@pytest.fixture
def record(reg: ConsentRegistry, env: RegistryEnv, a: Actors) -> bytes:
    return register(reg, env, a.patient.address)


@contextmanager
def reverts(cls: type[ContractError], **fields: Any) -> Iterator[Any]:
    """Expect ``cls``, then check the decoded arguments given as keywords."""
    with pytest.raises(cls) as info:
        yield info
    for name, expected in fields.items():
        actual = getattr(info.value, name)
        assert actual == expected, f"{cls.__name__}.{name}: {actual!r} != {expected!r}"


def deploy_wallet(w3: Web3, owner: Any) -> Any:
    artifact = compile_contracts()["MockERC1271Wallet"]
    sent = deploy(
        w3,
        abi=artifact.abi,
        bytecode=artifact.bytecode,
        args=[owner.address],
        sender=TxSender(w3, owner),
    )
    return w3.eth.contract(address=sent.receipt["contractAddress"], abi=artifact.abi)


def wallet_call(w3: Web3, wallet: Any, owner: Any, fn: Any) -> None:
    """Have the wallet itself call ``fn`` (a bound contract function) through execute()."""
    data = fn._encode_transaction_data()
    tx = wallet.functions.execute(fn.address, data).build_transaction({"from": owner.address})
    TxSender(w3, owner).send(tx)


def grant_request(
    reg: ConsentRegistry,
    *,
    signer: str,
    patient: str,
    grantee: str,
    scope_kind: ScopeKind = ScopeKind.CATEGORY,
    scope_id: bytes = LAB,
    purposes: int = Purpose.TREATMENT.bit,
    expires_at: int = FAR,
    nonce: int | None = None,
    deadline: int | None = None,
) -> eip712.GrantRequest:
    return eip712.GrantRequest(
        patient=Web3.to_checksum_address(patient),
        grantee=Web3.to_checksum_address(grantee),
        scope_kind=scope_kind,
        scope_id=scope_id,
        purposes=purposes,
        expires_at=expires_at,
        signer=Web3.to_checksum_address(signer),
        nonce=reg.nonce_of(signer) if nonce is None else nonce,
        deadline=latest_timestamp(reg.w3) + 3600 if deadline is None else deadline,
    )


def revoke_request(
    reg: ConsentRegistry,
    *,
    signer: str,
    patient: str,
    grantee: str,
    scope_kind: ScopeKind = ScopeKind.CATEGORY,
    scope_id: bytes = LAB,
) -> eip712.RevokeRequest:
    return eip712.RevokeRequest(
        patient=Web3.to_checksum_address(patient),
        grantee=Web3.to_checksum_address(grantee),
        scope_kind=scope_kind,
        scope_id=scope_id,
        signer=Web3.to_checksum_address(signer),
        nonce=reg.nonce_of(signer),
        deadline=latest_timestamp(reg.w3) + 3600,
    )


# ---------------------------------------------------------------- deployment and roles


def test_constructor_makes_the_admin_and_folds_its_role_granted(
    reg: ConsentRegistry, a: Actors
) -> None:
    assert reg.has_role(DEFAULT_ADMIN_ROLE, a.admin.address)
    assert not reg.has_role(DEFAULT_ADMIN_ROLE, a.gateway.address)
    # constructor RoleGranted, one CategoryAdded per default category, the fixture's three grants
    assert reg.event_digest().count == 1 + len(DEFAULT_CATEGORIES) + 3


# ---------------------------------------------------------------- categories


def test_the_deployment_lists_the_default_coarse_categories_with_an_event_each(
    reg: ConsentRegistry, env: RegistryEnv
) -> None:
    for name in DEFAULT_CATEGORIES:
        assert reg.is_category(category_id(name))
    assert not reg.is_category(category_id("hiv-test"))
    event = reg.contract.events.CategoryAdded()
    logs = event.get_logs(from_block=env.deploy_block, to_block=env.deploy_block)
    assert [bytes(log["args"]["category"]) for log in logs] == [
        category_id(n) for n in DEFAULT_CATEGORIES
    ]


def test_a_record_under_an_unlisted_category_is_refused_with_the_category(
    reg: ConsentRegistry, env: RegistryEnv, a: Actors
) -> None:
    attestation = attestation_for(reg.w3, a.patient.address, "hiv-test")
    signature = eip712.sign(a.centre, reg.domain, attestation)
    with reverts(CategoryNotListed, category=category_id("hiv-test")):
        reg.register_record(a.gateway, attestation, signature, CID)


def test_a_category_grant_naming_an_unlisted_category_is_refused(
    reg: ConsentRegistry, a: Actors
) -> None:
    psychiatry = category_id("psychiatry")
    with reverts(CategoryNotListed, category=psychiatry):
        reg.grant(a.patient, a.doctor.address, ScopeKind.CATEGORY, psychiatry, 1, FAR)
    request = grant_request(
        reg,
        signer=a.patient.address,
        patient=a.patient.address,
        grantee=a.doctor.address,
        scope_id=psychiatry,
    )
    signature = eip712.sign(a.patient, reg.domain, request)
    with reverts(CategoryNotListed, category=psychiatry):
        reg.grant_by_sig(a.relayer, request, signature)


def test_the_admin_adds_and_removes_a_category_with_a_folded_event_each(
    reg: ConsentRegistry, env: RegistryEnv, a: Actors
) -> None:
    dental = category_id("dental")
    before = reg.event_digest().count
    added = reg.add_category(a.admin, dental)
    assert events(reg, added, "CategoryAdded") == [{"category": dental}]
    assert reg.is_category(dental)
    register(reg, env, a.patient.address, "dental")
    reg.grant(a.patient, a.doctor.address, ScopeKind.CATEGORY, dental, 1, FAR)
    removed = reg.remove_category(a.admin, dental)
    assert events(reg, removed, "CategoryRemoved") == [{"category": dental}]
    assert not reg.is_category(dental)
    # add, record, grant, remove: four events folded
    assert reg.event_digest().count == before + 4
    logs = reg.w3.eth.get_logs({"address": reg.address, "fromBlock": env.deploy_block})
    assert recompute_digest(list(logs)) == (reg.event_digest().head, reg.event_digest().count)
    # no new record and no new Category grant under it; the stored grant stays in force, may
    # change its terms and can be revoked
    with reverts(CategoryNotListed, category=dental):
        register(reg, env, a.patient.address, "dental")
    with reverts(CategoryNotListed, category=dental):
        reg.grant(a.patient, a.relayer.address, ScopeKind.CATEGORY, dental, 1, FAR)
    assert reg.consent_of(
        a.patient.address, a.doctor.address, ScopeKind.CATEGORY, dental
    ) == ConsentTerms(1, FAR)
    reg.grant(a.patient, a.doctor.address, ScopeKind.CATEGORY, dental, 3, FAR)
    reg.revoke(a.patient, a.doctor.address, ScopeKind.CATEGORY, dental)


def test_category_changes_only_on_a_real_change_and_only_by_the_admin(
    reg: ConsentRegistry, a: Actors
) -> None:
    with reverts(CategoryAlreadyListed, category=LAB):
        reg.add_category(a.admin, LAB)
    with reverts(CategoryNotListed, category=category_id("dental")):
        reg.remove_category(a.admin, category_id("dental"))
    with reverts(ZeroCategory):
        reg.add_category(a.admin, bytes(32))
    with reverts(AccessControlUnauthorizedAccount, account=a.centre.address):
        reg.add_category(a.centre, category_id("dental"))
    with reverts(AccessControlUnauthorizedAccount, account=a.gateway.address):
        reg.remove_category(a.gateway, LAB)


def test_public_constants_match_their_names(reg: ConsentRegistry) -> None:
    f = reg.contract.functions
    assert f.CENTRE_ROLE().call() == CENTRE_ROLE == keccak(text="CENTRE_ROLE")
    assert f.GATEWAY_ROLE().call() == GATEWAY_ROLE
    assert f.EMERGENCY_ROLE().call() == EMERGENCY_ROLE
    assert f.MAX_BREAK_GLASS().call() == MAX_BREAK_GLASS_S == 24 * 3600
    for purpose in Purpose:
        assert getattr(f, purpose.name)().call() == purpose.value


def test_supports_the_registry_and_access_control_interfaces(reg: ConsentRegistry) -> None:
    interface = compile_contracts()["IConsentRegistry"]
    interface_id = 0
    for selector in interface.method_identifiers.values():
        interface_id ^= int(selector, 16)
    f = reg.contract.functions
    assert f.supportsInterface(interface_id.to_bytes(4, "big")).call()
    assert f.supportsInterface(bytes.fromhex("7965db0b")).call()  # IAccessControl
    assert f.supportsInterface(bytes.fromhex("01ffc9a7")).call()  # ERC-165
    assert not f.supportsInterface(bytes.fromhex("ffffffff")).call()


def test_admin_grants_and_revokes_roles_with_events(reg: ConsentRegistry, a: Actors) -> None:
    receipt = reg.grant_role(a.admin, CENTRE_ROLE, a.stranger.address)
    assert reg.has_role(CENTRE_ROLE, a.stranger.address)
    (granted,) = events(reg, receipt, "RoleGranted")
    assert granted == {
        "role": CENTRE_ROLE,
        "account": a.stranger.address,
        "sender": a.admin.address,
    }

    receipt = reg.revoke_role(a.admin, CENTRE_ROLE, a.stranger.address)
    assert not reg.has_role(CENTRE_ROLE, a.stranger.address)
    (revoked,) = events(reg, receipt, "RoleRevoked")
    assert revoked == {
        "role": CENTRE_ROLE,
        "account": a.stranger.address,
        "sender": a.admin.address,
    }


def test_granting_a_held_role_emits_and_folds_nothing(reg: ConsentRegistry, a: Actors) -> None:
    before = reg.event_digest()
    receipt = reg.grant_role(a.admin, CENTRE_ROLE, a.centre.address)
    assert receipt.raw["logs"] == []
    assert reg.event_digest() == before


def test_only_the_admin_grants_roles(reg: ConsentRegistry, a: Actors) -> None:
    with reverts(
        AccessControlUnauthorizedAccount, account=a.stranger.address, needed_role=DEFAULT_ADMIN_ROLE
    ):
        reg.grant_role(a.stranger, GATEWAY_ROLE, a.stranger.address)


def test_renouncing_for_another_account_is_refused(reg: ConsentRegistry, a: Actors) -> None:
    with reverts(AccessControlBadConfirmation):
        reg.renounce_role(a.gateway, GATEWAY_ROLE, a.admin.address)
    reg.renounce_role(a.gateway, GATEWAY_ROLE, a.gateway.address)
    assert not reg.has_role(GATEWAY_ROLE, a.gateway.address)


# ---------------------------------------------------------------- records


def test_register_record_stores_it_and_emits_the_cid(
    reg: ConsentRegistry, env: RegistryEnv, a: Actors
) -> None:
    attestation = attestation_for(reg.w3, a.patient.address, "imaging", b"chest x-ray")
    signature = eip712.sign(a.centre, reg.domain, attestation)
    receipt = reg.register_record(a.gateway, attestation, signature, CID)

    expected_id = eip712.record_id(reg.domain, attestation)
    assert receipt.record_id == expected_id == reg.attestation_digest(attestation)
    stored = reg.record_of(expected_id)
    assert stored.patient == a.patient.address
    assert stored.centre == a.centre.address
    assert stored.category == IMAGING
    assert stored.content_digest == attestation.content_digest
    assert stored.issued_at == attestation.issued_at
    (event,) = events(reg, receipt, "RecordRegistered")
    assert event == {
        "recordId": expected_id,
        "patient": a.patient.address,
        "centre": a.centre.address,
        "category": IMAGING,
        "contentDigest": attestation.content_digest,
        "issuedAt": attestation.issued_at,
        "cid": CID,
    }


def test_only_a_gateway_registers_records(reg: ConsentRegistry, a: Actors) -> None:
    attestation = attestation_for(reg.w3, a.patient.address)
    signature = eip712.sign(a.centre, reg.domain, attestation)
    with reverts(
        AccessControlUnauthorizedAccount, account=a.centre.address, needed_role=GATEWAY_ROLE
    ):
        reg.register_record(a.centre, attestation, signature, CID)


@pytest.mark.parametrize("cid", ["", "b" * 129])
def test_register_refuses_an_empty_or_long_cid(reg: ConsentRegistry, a: Actors, cid: str) -> None:
    attestation = attestation_for(reg.w3, a.patient.address)
    signature = eip712.sign(a.centre, reg.domain, attestation)
    with reverts(InvalidCid, length=len(cid)):
        reg.register_record(a.gateway, attestation, signature, cid)


def test_register_accepts_a_cid_of_128_bytes(reg: ConsentRegistry, a: Actors) -> None:
    attestation = attestation_for(reg.w3, a.patient.address)
    signature = eip712.sign(a.centre, reg.domain, attestation)
    reg.register_record(a.gateway, attestation, signature, "b" * 128)


def test_register_refuses_a_zero_patient(reg: ConsentRegistry, a: Actors) -> None:
    attestation = attestation_for(reg.w3, ZERO_ADDRESS)
    signature = eip712.sign(a.centre, reg.domain, attestation)
    with reverts(ZeroPatient):
        reg.register_record(a.gateway, attestation, signature, CID)


def test_register_refuses_an_attestation_not_signed_by_a_centre(
    reg: ConsentRegistry, a: Actors
) -> None:
    attestation = attestation_for(reg.w3, a.patient.address)
    signature = eip712.sign(a.stranger, reg.domain, attestation)
    with reverts(NotACentre, signer=a.stranger.address):
        reg.register_record(a.gateway, attestation, signature, CID)


def test_register_refuses_an_attestation_signed_for_another_chain(
    reg: ConsentRegistry, a: Actors
) -> None:
    attestation = attestation_for(reg.w3, a.patient.address)
    other_chain = eip712.Domain(chain_id=1, verifying_contract=reg.address)
    signature = eip712.sign(a.centre, other_chain, attestation)
    recovered = eip712.recover_signer(reg.domain, attestation, signature)
    assert recovered != a.centre.address
    with reverts(NotACentre, signer=recovered):
        reg.register_record(a.gateway, attestation, signature, CID)


def test_register_refuses_a_duplicate(reg: ConsentRegistry, a: Actors) -> None:
    attestation = attestation_for(reg.w3, a.patient.address)
    signature = eip712.sign(a.centre, reg.domain, attestation)
    record_id = reg.register_record(a.gateway, attestation, signature, CID).record_id
    with reverts(RecordExists, record_id=record_id):
        reg.register_record(a.gateway, attestation, signature, CID)


def test_register_maps_malformed_signatures_to_ecdsa_errors(
    reg: ConsentRegistry, a: Actors
) -> None:
    attestation = attestation_for(reg.w3, a.patient.address)
    signature = eip712.sign(a.centre, reg.domain, attestation)
    with reverts(ECDSAInvalidSignatureLength, length=64):
        reg.register_record(a.gateway, attestation, signature[:64], CID)

    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    high_s = (SECP256K1_N - s).to_bytes(32, "big")
    with reverts(ECDSAInvalidSignatureS, s=high_s):
        reg.register_record(a.gateway, attestation, r + high_s + bytes([55 - v]), CID)

    with reverts(ECDSAInvalidSignature):
        reg.register_record(a.gateway, attestation, signature[:64] + bytes([29]), CID)


def test_record_of_an_unknown_id_reverts(reg: ConsentRegistry) -> None:
    unknown = keccak(text="nothing")
    with reverts(UnknownRecord, record_id=unknown):
        reg.record_of(unknown)


# ---------------------------------------------------------------- grant and revoke


@pytest.mark.parametrize("kind", list(ScopeKind))
def test_grant_emits_and_allows_the_purposes_of_its_scope(
    reg: ConsentRegistry, a: Actors, record: bytes, kind: ScopeKind
) -> None:
    scope_id = {ScopeKind.RECORD: record, ScopeKind.CATEGORY: LAB, ScopeKind.ALL: ALL_SCOPE_ID}[
        kind
    ]
    purposes = purposes_mask([Purpose.TREATMENT, Purpose.INSURANCE])
    receipt = reg.grant(a.patient, a.doctor.address, kind, scope_id, purposes, FAR)

    (event,) = events(reg, receipt, "ConsentGranted")
    assert event == {
        "patient": a.patient.address,
        "grantee": a.doctor.address,
        "scopeKind": kind,
        "scopeId": scope_id,
        "purposes": purposes,
        "expiresAt": FAR,
        "actor": a.patient.address,
    }
    assert reg.consent_of(a.patient.address, a.doctor.address, kind, scope_id) == ConsentTerms(
        purposes, FAR
    )
    basis = {ScopeKind.RECORD: Basis.RECORD, ScopeKind.CATEGORY: Basis.CATEGORY}.get(
        kind, Basis.ALL
    )
    for purpose in Purpose:
        allowed = purpose in (Purpose.TREATMENT, Purpose.INSURANCE)
        assert reg.has_consent(a.patient.address, a.doctor.address, record, purpose) is allowed
        got = reg.access_basis(a.patient.address, a.doctor.address, record, purpose)
        assert (got.basis, got.until) == ((basis, FAR) if allowed else (Basis.NONE, 0))
    assert not reg.has_consent(a.patient.address, a.stranger.address, record, Purpose.TREATMENT)


def test_category_consent_does_not_cover_another_category(
    reg: ConsentRegistry, env: RegistryEnv, a: Actors, record: bytes
) -> None:
    imaging_record = register(reg, env, a.patient.address, "imaging")
    reg.grant(a.patient, a.doctor.address, ScopeKind.CATEGORY, IMAGING, 1, FAR)
    assert reg.has_consent(a.patient.address, a.doctor.address, imaging_record, 0)
    assert not reg.has_consent(a.patient.address, a.doctor.address, record, 0)


def test_consent_is_per_patient(reg: ConsentRegistry, env: RegistryEnv, a: Actors) -> None:
    mine = register(reg, env, a.patient.address)
    theirs = register(reg, env, a.patient2.address)
    reg.grant(a.patient, a.doctor.address, ScopeKind.ALL, ALL_SCOPE_ID, 1, FAR)
    assert reg.has_consent(a.patient.address, a.doctor.address, mine, 0)
    assert not reg.has_consent(a.patient2.address, a.doctor.address, theirs, 0)
    # naming the wrong patient for a record never allows, even the record's owner
    assert not reg.has_consent(a.patient.address, a.doctor.address, theirs, 0)
    assert not reg.has_consent(a.patient.address, a.patient.address, theirs, 0)


def test_the_owner_reads_own_records_only(reg: ConsentRegistry, a: Actors, record: bytes) -> None:
    got = reg.access_basis(a.patient.address, a.patient.address, record, Purpose.RESEARCH)
    assert (got.basis, got.until, got.allowed) == (Basis.OWNER, 0, True)
    unknown = keccak(text="unknown record")
    assert not reg.has_consent(a.patient.address, a.patient.address, unknown, 0)
    assert not reg.has_consent(ZERO_ADDRESS, ZERO_ADDRESS, unknown, 0)


def test_the_most_specific_basis_wins(reg: ConsentRegistry, a: Actors, record: bytes) -> None:
    reg.grant(a.patient, a.doctor.address, ScopeKind.ALL, ALL_SCOPE_ID, 1, FAR)
    reg.grant(a.patient, a.doctor.address, ScopeKind.CATEGORY, LAB, 1, FAR - 1)
    assert reg.access_basis(a.patient.address, a.doctor.address, record, 0).basis is Basis.CATEGORY
    reg.grant(a.patient, a.doctor.address, ScopeKind.RECORD, record, 1, FAR - 2)
    got = reg.access_basis(a.patient.address, a.doctor.address, record, 0)
    assert (got.basis, got.until) == (Basis.RECORD, FAR - 2)


def test_grant_overwrite_changes_purposes_and_expiry(
    reg: ConsentRegistry, a: Actors, record: bytes
) -> None:
    reg.grant(a.patient, a.doctor.address, ScopeKind.CATEGORY, LAB, Purpose.TREATMENT.bit, FAR)
    receipt = reg.grant(
        a.patient, a.doctor.address, ScopeKind.CATEGORY, LAB, Purpose.RESEARCH.bit, NO_EXPIRY
    )
    (event,) = events(reg, receipt, "ConsentGranted")
    assert (event["purposes"], event["expiresAt"]) == (Purpose.RESEARCH.bit, NO_EXPIRY)
    assert not reg.has_consent(a.patient.address, a.doctor.address, record, Purpose.TREATMENT)
    assert reg.has_consent(a.patient.address, a.doctor.address, record, Purpose.RESEARCH)


def test_an_identical_grant_is_refused(reg: ConsentRegistry, a: Actors) -> None:
    reg.grant(a.patient, a.doctor.address, ScopeKind.CATEGORY, LAB, 3, FAR)
    with reverts(
        ConsentUnchanged,
        patient=a.patient.address,
        grantee=a.doctor.address,
        scope_kind=ScopeKind.CATEGORY,
        scope_id=LAB,
    ):
        reg.grant(a.patient, a.doctor.address, ScopeKind.CATEGORY, LAB, 3, FAR)


@pytest.mark.parametrize("grantee", ["zero", "self"])
def test_grant_refuses_a_zero_or_self_grantee(
    reg: ConsentRegistry, a: Actors, grantee: str
) -> None:
    address = ZERO_ADDRESS if grantee == "zero" else a.patient.address
    with reverts(InvalidGrantee, grantee=Web3.to_checksum_address(address)):
        reg.grant(a.patient, address, ScopeKind.ALL, ALL_SCOPE_ID, 1, FAR)


@pytest.mark.parametrize(
    ("kind", "scope_id"),
    [(ScopeKind.CATEGORY, bytes(32)), (ScopeKind.ALL, LAB)],
)
def test_grant_refuses_a_malformed_scope(
    reg: ConsentRegistry, a: Actors, kind: ScopeKind, scope_id: bytes
) -> None:
    with reverts(InvalidScope, scope_kind=kind, scope_id=scope_id):
        reg.grant(a.patient, a.doctor.address, kind, scope_id, 1, FAR)


def test_grant_refuses_an_unknown_record(reg: ConsentRegistry, a: Actors) -> None:
    unknown = keccak(text="no such record")
    with reverts(UnknownRecord, record_id=unknown):
        reg.grant(a.patient, a.doctor.address, ScopeKind.RECORD, unknown, 1, FAR)


def test_grant_refuses_a_record_of_another_patient(
    reg: ConsentRegistry, a: Actors, record: bytes
) -> None:
    with reverts(
        RecordNotOwned, record_id=record, patient=a.patient2.address, owner=a.patient.address
    ):
        reg.grant(a.patient2, a.doctor.address, ScopeKind.RECORD, record, 1, FAR)


def test_grant_refuses_no_purpose(reg: ConsentRegistry, a: Actors) -> None:
    with reverts(NoPurpose):
        reg.grant(a.patient, a.doctor.address, ScopeKind.ALL, ALL_SCOPE_ID, 0, FAR)


def test_grant_refuses_an_expiry_that_is_not_in_the_future(reg: ConsentRegistry, a: Actors) -> None:
    now = latest_timestamp(reg.w3)
    with reverts(ExpiryInPast, expires_at=now) as info:
        reg.grant(a.patient, a.doctor.address, ScopeKind.ALL, ALL_SCOPE_ID, 1, now)
    assert info.value.now_timestamp >= now
    assert (
        str(info.value)
        == f"ExpiryInPast(expires_at={now}, now_timestamp={info.value.now_timestamp})"
    )


def test_consent_lapses_exactly_at_its_expiry(
    reg: ConsentRegistry, a: Actors, record: bytes
) -> None:
    now = latest_timestamp(reg.w3)
    expires_at = now + 1000
    reg.grant(a.patient, a.doctor.address, ScopeKind.RECORD, record, 1, expires_at)
    mine_at(reg.w3, expires_at - 1)
    assert reg.has_consent(a.patient.address, a.doctor.address, record, 0)
    block_before = reg.w3.eth.block_number
    mine_at(reg.w3, expires_at)
    assert not reg.has_consent(a.patient.address, a.doctor.address, record, 0)
    # reads at an older block see the consent that was in force then
    assert reg.has_consent(
        a.patient.address, a.doctor.address, record, 0, block_identifier=block_before
    )
    # still stored, as views promise
    stored = reg.consent_of(a.patient.address, a.doctor.address, ScopeKind.RECORD, record)
    assert stored == ConsentTerms(1, expires_at)
    assert stored.exists
    assert not stored.in_force_at(expires_at)


def test_consent_expires_with_evm_increase_time(
    reg: ConsentRegistry, a: Actors, record: bytes
) -> None:
    now = latest_timestamp(reg.w3)
    reg.grant(a.patient, a.doctor.address, ScopeKind.ALL, ALL_SCOPE_ID, 1, now + 3600)
    assert reg.has_consent(a.patient.address, a.doctor.address, record, 0)
    increase_time(reg.w3, 3600)
    assert not reg.has_consent(a.patient.address, a.doctor.address, record, 0)
    assert reg.access_basis(a.patient.address, a.doctor.address, record, 0).basis is Basis.NONE


def test_revoke_removes_consent_and_emits(reg: ConsentRegistry, a: Actors, record: bytes) -> None:
    reg.grant(a.patient, a.doctor.address, ScopeKind.RECORD, record, 1, FAR)
    receipt = reg.revoke(a.patient, a.doctor.address, ScopeKind.RECORD, record)
    (event,) = events(reg, receipt, "ConsentRevoked")
    assert event == {
        "patient": a.patient.address,
        "grantee": a.doctor.address,
        "scopeKind": ScopeKind.RECORD,
        "scopeId": record,
        "actor": a.patient.address,
    }
    assert not reg.has_consent(a.patient.address, a.doctor.address, record, 0)
    assert reg.consent_of(a.patient.address, a.doctor.address, ScopeKind.RECORD, record) == (
        ConsentTerms(0, 0)
    )


def test_revoking_what_was_never_granted_is_refused(reg: ConsentRegistry, a: Actors) -> None:
    with reverts(
        ConsentNotFound,
        patient=a.patient.address,
        grantee=a.doctor.address,
        scope_kind=ScopeKind.CATEGORY,
        scope_id=LAB,
    ):
        reg.revoke(a.patient, a.doctor.address, ScopeKind.CATEGORY, LAB)


def test_an_expired_consent_can_still_be_revoked(reg: ConsentRegistry, a: Actors) -> None:
    now = latest_timestamp(reg.w3)
    reg.grant(a.patient, a.doctor.address, ScopeKind.CATEGORY, LAB, 1, now + 10)
    increase_time(reg.w3, 20)
    reg.revoke(a.patient, a.doctor.address, ScopeKind.CATEGORY, LAB)
    with reverts(ConsentNotFound):
        reg.revoke(a.patient, a.doctor.address, ScopeKind.CATEGORY, LAB)


def test_access_decision_names_the_state_it_was_evaluated_on(
    reg: ConsentRegistry, a: Actors, record: bytes
) -> None:
    p, d = a.patient.address, a.doctor.address
    now = latest_timestamp(reg.w3)
    receipt = reg.grant(a.patient, d, ScopeKind.RECORD, record, 1, now + 1000)
    granted = receipt.block_number
    revoked = reg.revoke(a.patient, d, ScopeKind.RECORD, record).block_number
    for block in (granted - 1, granted, revoked):
        header = reg.w3.eth.get_block(block)
        for purpose in (0, 1):
            got = reg.access_decision(p, d, record, purpose, block_identifier=block)
            basis = reg.access_basis(p, d, record, purpose, block_identifier=block)
            assert (got.basis, got.until) == (basis.basis, basis.until)
            assert got.event_count == reg.event_digest(block_identifier=block).count
            assert (got.block_number, got.timestamp) == (block, header["timestamp"])
    before = reg.access_decision(p, d, record, 0, block_identifier=granted - 1)
    during = reg.access_decision(p, d, record, 0, block_identifier=granted)
    after = reg.access_decision(p, d, record, 0, block_identifier=revoked)
    assert (before.basis, during.basis, after.basis) == (Basis.NONE, Basis.RECORD, Basis.NONE)
    assert during.until == now + 1000
    assert during.allowed
    assert (during.event_count, after.event_count) == (
        before.event_count + 1,
        before.event_count + 2,
    )
    # the owner reads without expiry; expiry is judged at the call's timestamp
    owner = reg.access_decision(p, p, record, 3)
    assert (owner.basis, owner.until) == (Basis.OWNER, 0)
    reg.grant(a.patient, d, ScopeKind.ALL, ALL_SCOPE_ID, 1, now + 2000)
    mine_at(reg.w3, now + 2000)
    lapsed = reg.access_decision(p, d, record, 0)
    assert (lapsed.basis, lapsed.timestamp) == (Basis.NONE, now + 2000)


@pytest.mark.parametrize("purpose", [32, 255])
def test_views_refuse_a_purpose_out_of_range(
    reg: ConsentRegistry, a: Actors, record: bytes, purpose: int
) -> None:
    with reverts(InvalidPurpose, purpose=purpose):
        reg.has_consent(a.patient.address, a.doctor.address, record, purpose)
    with reverts(InvalidPurpose, purpose=purpose):
        reg.access_basis(a.patient.address, a.doctor.address, record, purpose)
    with reverts(InvalidPurpose, purpose=purpose):
        reg.access_decision(a.patient.address, a.doctor.address, record, purpose)


def test_purpose_31_is_a_valid_bit(reg: ConsentRegistry, a: Actors, record: bytes) -> None:
    reg.grant(a.patient, a.doctor.address, ScopeKind.ALL, ALL_SCOPE_ID, 1 << 31, FAR)
    assert reg.has_consent(a.patient.address, a.doctor.address, record, 31)


def test_an_out_of_range_scope_kind_reverts_without_data(reg: ConsentRegistry, a: Actors) -> None:
    with pytest.raises(Reverted):
        reg.grant(a.patient, a.doctor.address, 3, ALL_SCOPE_ID, 1, FAR)  # type: ignore[arg-type]


# ---------------------------------------------------------------- guardian


def test_set_and_remove_guardian_emit(reg: ConsentRegistry, a: Actors) -> None:
    receipt = reg.set_guardian(a.patient, a.guardian.address)
    assert events(reg, receipt, "GuardianSet") == [
        {"patient": a.patient.address, "guardian": a.guardian.address}
    ]
    assert reg.guardian_of(a.patient.address) == a.guardian.address
    receipt = reg.remove_guardian(a.patient)
    assert events(reg, receipt, "GuardianRemoved") == [
        {"patient": a.patient.address, "guardian": a.guardian.address}
    ]
    assert reg.guardian_of(a.patient.address) is None


@pytest.mark.parametrize("who", ["zero", "self"])
def test_set_guardian_refuses_zero_or_self(reg: ConsentRegistry, a: Actors, who: str) -> None:
    address = ZERO_ADDRESS if who == "zero" else a.patient.address
    with reverts(InvalidGuardian, guardian=Web3.to_checksum_address(address)):
        reg.set_guardian(a.patient, address)


def test_setting_the_same_guardian_is_refused(reg: ConsentRegistry, a: Actors) -> None:
    reg.set_guardian(a.patient, a.guardian.address)
    with reverts(GuardianUnchanged, patient=a.patient.address, guardian=a.guardian.address):
        reg.set_guardian(a.patient, a.guardian.address)


def test_removing_no_guardian_is_refused(reg: ConsentRegistry, a: Actors) -> None:
    with reverts(NoGuardian, patient=a.patient.address):
        reg.remove_guardian(a.patient)


def test_guardian_grants_and_revokes_for_the_patient(
    reg: ConsentRegistry, a: Actors, record: bytes
) -> None:
    reg.set_guardian(a.patient, a.guardian.address)
    receipt = reg.grant_for(
        a.guardian, a.patient.address, a.doctor.address, ScopeKind.RECORD, record, 1, FAR
    )
    (event,) = events(reg, receipt, "ConsentGranted")
    assert (event["patient"], event["actor"]) == (a.patient.address, a.guardian.address)
    assert reg.has_consent(a.patient.address, a.doctor.address, record, 0)

    receipt = reg.revoke_for(
        a.guardian, a.patient.address, a.doctor.address, ScopeKind.RECORD, record
    )
    (event,) = events(reg, receipt, "ConsentRevoked")
    assert event["actor"] == a.guardian.address
    assert not reg.has_consent(a.patient.address, a.doctor.address, record, 0)


def test_the_patient_may_use_grant_for_too(reg: ConsentRegistry, a: Actors) -> None:
    reg.grant_for(a.patient, a.patient.address, a.doctor.address, ScopeKind.CATEGORY, LAB, 1, FAR)
    reg.revoke_for(a.patient, a.patient.address, a.doctor.address, ScopeKind.CATEGORY, LAB)


def test_a_stranger_cannot_act_for_a_patient(reg: ConsentRegistry, a: Actors) -> None:
    with reverts(NotPatientOrGuardian, account=a.stranger.address, patient=a.patient.address):
        reg.grant_for(
            a.stranger, a.patient.address, a.doctor.address, ScopeKind.ALL, ALL_SCOPE_ID, 1, FAR
        )
    reg.grant(a.patient, a.doctor.address, ScopeKind.ALL, ALL_SCOPE_ID, 1, FAR)
    with reverts(NotPatientOrGuardian, account=a.stranger.address, patient=a.patient.address):
        reg.revoke_for(a.stranger, a.patient.address, a.doctor.address, ScopeKind.ALL, ALL_SCOPE_ID)


def test_a_replaced_or_removed_guardian_loses_its_powers(
    reg: ConsentRegistry, a: Actors, record: bytes
) -> None:
    reg.set_guardian(a.patient, a.guardian.address)
    reg.set_guardian(a.patient, a.stranger.address)
    assert reg.guardian_of(a.patient.address) == a.stranger.address
    assert not reg.has_consent(a.patient.address, a.guardian.address, record, 0)
    with reverts(NotPatientOrGuardian, account=a.guardian.address):
        reg.grant_for(
            a.guardian, a.patient.address, a.doctor.address, ScopeKind.ALL, ALL_SCOPE_ID, 1, FAR
        )
    reg.grant_for(
        a.stranger, a.patient.address, a.doctor.address, ScopeKind.ALL, ALL_SCOPE_ID, 1, FAR
    )
    reg.remove_guardian(a.patient)
    with reverts(NotPatientOrGuardian, account=a.stranger.address):
        reg.revoke_for(a.stranger, a.patient.address, a.doctor.address, ScopeKind.ALL, ALL_SCOPE_ID)


def test_the_guardian_reads_the_patients_records(
    reg: ConsentRegistry, a: Actors, record: bytes
) -> None:
    assert not reg.has_consent(a.patient.address, a.guardian.address, record, Purpose.RESEARCH)
    reg.set_guardian(a.patient, a.guardian.address)
    got = reg.access_basis(a.patient.address, a.guardian.address, record, Purpose.RESEARCH)
    assert (got.basis, got.until) == (Basis.GUARDIAN, 0)
    # an explicit grant to the guardian is the more specific basis
    reg.grant(a.patient, a.guardian.address, ScopeKind.ALL, ALL_SCOPE_ID, Purpose.RESEARCH.bit, FAR)
    assert reg.access_basis(a.patient.address, a.guardian.address, record, 1).basis is Basis.ALL


ALL_PURPOSES = 2**32 - 1


def _denied_everything(reg: ConsentRegistry, patient: str, grantee: str, record: bytes) -> bool:
    return not any(reg.has_consent(patient, grantee, record, int(p)) for p in Purpose)


def test_removing_a_guardian_ends_every_grant_it_made(
    reg: ConsentRegistry, a: Actors, record: bytes
) -> None:
    # The attack: a guardian about to be removed front-runs the removal with a grant to an
    # accomplice of everything, every purpose, forever.
    p = a.patient.address
    reg.grant(a.patient, a.doctor.address, ScopeKind.RECORD, record, Purpose.TREATMENT.bit, FAR)
    reg.set_guardian(a.patient, a.guardian.address)
    reg.grant_for(a.guardian, p, a.stranger.address, ScopeKind.ALL, ALL_SCOPE_ID, ALL_PURPOSES,
                  NO_EXPIRY)  # fmt: skip
    signed = grant_request(
        reg, signer=a.guardian.address, patient=p, grantee=a.relayer.address,
        purposes=ALL_PURPOSES, expires_at=NO_EXPIRY,
    )  # fmt: skip
    reg.grant_by_sig(a.relayer, signed, eip712.sign(a.guardian, reg.domain, signed))
    assert reg.access_basis(p, a.stranger.address, record, Purpose.RESEARCH).basis is Basis.ALL
    assert reg.has_consent(p, a.relayer.address, record, Purpose.TREATMENT)

    reg.remove_guardian(a.patient)

    assert _denied_everything(reg, p, a.stranger.address, record)
    assert _denied_everything(reg, p, a.relayer.address, record)
    assert reg.consent_of(p, a.stranger.address, ScopeKind.ALL, ALL_SCOPE_ID) == ConsentTerms(0, 0)
    assert reg.consent_of(p, a.relayer.address, ScopeKind.CATEGORY, LAB) == ConsentTerms(0, 0)
    with reverts(ConsentNotFound, patient=p, grantee=a.stranger.address):
        reg.revoke(a.patient, a.stranger.address, ScopeKind.ALL, ALL_SCOPE_ID)
    # the patient's own grant is not the guardian's and stays
    assert reg.access_basis(p, a.doctor.address, record, Purpose.TREATMENT).basis is Basis.RECORD


def test_replacing_a_guardian_ends_its_grants_and_emits_its_removal(
    reg: ConsentRegistry, a: Actors, record: bytes
) -> None:
    p = a.patient.address
    reg.set_guardian(a.patient, a.guardian.address)
    reg.grant_for(a.guardian, p, a.stranger.address, ScopeKind.ALL, ALL_SCOPE_ID, 1, FAR)
    receipt = reg.set_guardian(a.patient, a.doctor.address)
    assert events(reg, receipt, "GuardianRemoved") == [
        {"patient": p, "guardian": a.guardian.address}
    ]
    assert events(reg, receipt, "GuardianSet") == [{"patient": p, "guardian": a.doctor.address}]
    topics = [bytes(log["topics"][0]) for log in receipt.raw["logs"]]
    # removal first, so a replay folding in order ends the old guardianship before the new one
    assert topics == [
        keccak(text="GuardianRemoved(address,address)"),
        keccak(text="GuardianSet(address,address)"),
    ]
    assert _denied_everything(reg, p, a.stranger.address, record)
    # the new guardian's own grants are in force
    reg.grant_for(a.doctor, p, a.stranger.address, ScopeKind.ALL, ALL_SCOPE_ID, 1, FAR)
    assert reg.has_consent(p, a.stranger.address, record, Purpose.TREATMENT)


def test_reappointing_the_same_guardian_does_not_revive_its_old_grants(
    reg: ConsentRegistry, a: Actors, record: bytes
) -> None:
    p = a.patient.address
    reg.set_guardian(a.patient, a.guardian.address)
    reg.grant_for(a.guardian, p, a.stranger.address, ScopeKind.ALL, ALL_SCOPE_ID, 1, FAR)
    reg.remove_guardian(a.patient)
    reg.set_guardian(a.patient, a.guardian.address)
    assert _denied_everything(reg, p, a.stranger.address, record)
    assert reg.consent_of(p, a.stranger.address, ScopeKind.ALL, ALL_SCOPE_ID) == ConsentTerms(0, 0)
    # the same terms again are a new grant of the new appointment, not ConsentUnchanged
    reg.grant_for(a.guardian, p, a.stranger.address, ScopeKind.ALL, ALL_SCOPE_ID, 1, FAR)
    assert reg.consent_of(p, a.stranger.address, ScopeKind.ALL, ALL_SCOPE_ID) == ConsentTerms(
        1, FAR
    )
    with reverts(ConsentUnchanged):
        reg.grant_for(a.guardian, p, a.stranger.address, ScopeKind.ALL, ALL_SCOPE_ID, 1, FAR)


def test_a_grants_owner_is_whoever_set_its_terms_last(
    reg: ConsentRegistry, a: Actors, record: bytes
) -> None:
    p = a.patient.address
    reg.set_guardian(a.patient, a.guardian.address)
    reg.grant_for(a.guardian, p, a.stranger.address, ScopeKind.ALL, ALL_SCOPE_ID, 1, FAR)
    # the patient's re-grant of the same terms takes the grant over (it is not unchanged) ...
    reg.grant(a.patient, a.stranger.address, ScopeKind.ALL, ALL_SCOPE_ID, 1, FAR)
    # ... and a guardian's re-grant over a patient grant makes it the guardian's
    reg.grant(a.patient, a.doctor.address, ScopeKind.RECORD, record, 1, FAR)
    reg.grant_for(a.guardian, p, a.doctor.address, ScopeKind.RECORD, record, 1, FAR)
    reg.remove_guardian(a.patient)
    assert reg.has_consent(p, a.stranger.address, record, Purpose.TREATMENT)
    assert not reg.has_consent(p, a.doctor.address, record, Purpose.TREATMENT)


# ---------------------------------------------------------------- break-glass


def test_break_glass_opens_emergency_access_for_treatment_and_emergency(
    reg: ConsentRegistry, a: Actors, record: bytes
) -> None:
    receipt = reg.open_break_glass(a.emergency, a.patient.address, 3600, REASON)
    until = reg.w3.eth.get_block(receipt.block_number)["timestamp"] + 3600
    (event,) = events(reg, receipt, "BreakGlassOpened")
    assert event == {
        "patient": a.patient.address,
        "institution": a.emergency.address,
        "until": until,
        "reasonHash": REASON,
    }
    assert reg.break_glass_until(a.patient.address, a.emergency.address) == until
    for purpose in Purpose:
        got = reg.access_basis(a.patient.address, a.emergency.address, record, purpose)
        if purpose in (Purpose.TREATMENT, Purpose.EMERGENCY):
            assert (got.basis, got.until) == (Basis.EMERGENCY, until)
        else:
            assert got.basis is Basis.NONE
    # only for that institution
    assert not reg.has_consent(a.patient.address, a.doctor.address, record, Purpose.TREATMENT)


def test_break_glass_lapses_and_may_then_be_reopened_with_a_fresh_reason(
    reg: ConsentRegistry, a: Actors, record: bytes
) -> None:
    receipt = reg.open_break_glass(a.emergency, a.patient.address, 600, REASON)
    until = reg.w3.eth.get_block(receipt.block_number)["timestamp"] + 600
    assert reg.break_glass_reopens_at(a.patient.address, a.emergency.address) == until
    mine_at(reg.w3, until - 1)
    assert reg.has_consent(a.patient.address, a.emergency.address, record, Purpose.EMERGENCY)
    mine_at(reg.w3, until)
    assert not reg.has_consent(a.patient.address, a.emergency.address, record, Purpose.EMERGENCY)
    reg.open_break_glass(a.emergency, a.patient.address, 600, REASON_2)
    assert reg.has_consent(a.patient.address, a.emergency.address, record, Purpose.EMERGENCY)


def test_a_lapsed_break_glass_is_not_renewed_on_the_same_reason(
    reg: ConsentRegistry, a: Actors, record: bytes
) -> None:
    # The attack: let the 24 h window lapse and reopen at once on the same justification, again
    # and again, so the cap caps nothing. Every renewal needs its own reason.
    receipt = reg.open_break_glass(a.emergency, a.patient.address, MAX_BREAK_GLASS_S, REASON)
    until = reg.w3.eth.get_block(receipt.block_number)["timestamp"] + MAX_BREAK_GLASS_S
    mine_at(reg.w3, until)
    with reverts(
        BreakGlassReasonReused,
        patient=a.patient.address,
        institution=a.emergency.address,
        reason_hash=REASON,
    ):
        reg.open_break_glass(a.emergency, a.patient.address, MAX_BREAK_GLASS_S, REASON)
    assert not reg.has_consent(a.patient.address, a.emergency.address, record, Purpose.TREATMENT)
    # another institution's reasons are its own
    reg.grant_role(a.admin, EMERGENCY_ROLE, a.stranger.address)
    reg.open_break_glass(a.stranger, a.patient.address, 600, REASON)


def test_a_first_opening_is_never_a_reused_reason(reg: ConsentRegistry, a: Actors) -> None:
    # only the reason's first 16 bytes are kept: zeroes there must not read as "the last reason"
    reason = bytes(16) + keccak(text="x")[:16]
    reg.open_break_glass(a.emergency, a.patient.address, 600, reason)
    increase_time(reg.w3, 600)
    with reverts(BreakGlassReasonReused, reason_hash=reason):
        reg.open_break_glass(a.emergency, a.patient.address, 600, reason)


def test_break_glass_closed_by_the_patient_cannot_be_reopened_at_once(
    reg: ConsentRegistry, a: Actors, record: bytes
) -> None:
    reg.open_break_glass(a.emergency, a.patient.address, 3600, REASON)
    closed = reg.close_break_glass(a.patient, a.patient.address, a.emergency.address)
    reopens_at = reg.w3.eth.get_block(closed.block_number)["timestamp"] + BREAK_GLASS_COOLDOWN_S
    assert reg.break_glass_reopens_at(a.patient.address, a.emergency.address) == reopens_at
    # the very next block, with a fresh reason: refused, naming when it may reopen
    with reverts(
        BreakGlassCoolingDown,
        patient=a.patient.address,
        institution=a.emergency.address,
        reopens_at=reopens_at,
    ):
        reg.open_break_glass(a.emergency, a.patient.address, 3600, REASON_2)
    assert not reg.has_consent(a.patient.address, a.emergency.address, record, Purpose.TREATMENT)
    # still refused a minute before the cool-down ends
    mine_at(reg.w3, reopens_at - 60)
    with reverts(BreakGlassCoolingDown, reopens_at=reopens_at):
        reg.open_break_glass(a.emergency, a.patient.address, 3600, REASON_2)
    # other emergency institutions are not held back by it
    reg.grant_role(a.admin, EMERGENCY_ROLE, a.stranger.address)
    reg.open_break_glass(a.stranger, a.patient.address, 600, REASON)
    assert reg.has_consent(a.patient.address, a.stranger.address, record, Purpose.TREATMENT)


def test_break_glass_reopens_once_the_cool_down_has_passed(
    reg: ConsentRegistry, a: Actors, record: bytes
) -> None:
    reg.set_guardian(a.patient, a.guardian.address)
    reg.open_break_glass(a.emergency, a.patient.address, 3600, REASON)
    closed = reg.close_break_glass(a.guardian, a.patient.address, a.emergency.address)
    reopens_at = reg.w3.eth.get_block(closed.block_number)["timestamp"] + BREAK_GLASS_COOLDOWN_S
    mine_at(reg.w3, reopens_at)
    reg.open_break_glass(a.emergency, a.patient.address, 3600, REASON_2)
    assert reg.has_consent(a.patient.address, a.emergency.address, record, Purpose.TREATMENT)
    # a reason is fresh against the previous opening only
    reg.close_break_glass(a.patient, a.patient.address, a.emergency.address)
    increase_time(reg.w3, BREAK_GLASS_COOLDOWN_S)
    reg.open_break_glass(a.emergency, a.patient.address, 3600, REASON)


def test_break_glass_cool_down_is_a_documented_public_constant(reg: ConsentRegistry) -> None:
    assert reg.contract.functions.BREAK_GLASS_COOLDOWN().call() == BREAK_GLASS_COOLDOWN_S
    assert BREAK_GLASS_COOLDOWN_S == 7 * 24 * 3600
    source = (Path(__file__).parents[1] / "contracts" / "IConsentRegistry.sol").read_text()
    assert re.search(r"/// @notice How long, after the patient or guardian closes", source)


def test_break_glass_cannot_be_silently_extended(reg: ConsentRegistry, a: Actors) -> None:
    receipt = reg.open_break_glass(a.emergency, a.patient.address, 600, REASON)
    until = reg.w3.eth.get_block(receipt.block_number)["timestamp"] + 600
    with reverts(
        BreakGlassAlreadyOpen,
        patient=a.patient.address,
        institution=a.emergency.address,
        until=until,
    ):
        reg.open_break_glass(a.emergency, a.patient.address, MAX_BREAK_GLASS_S, REASON)


def test_only_an_emergency_institution_breaks_the_glass(reg: ConsentRegistry, a: Actors) -> None:
    with reverts(
        AccessControlUnauthorizedAccount, account=a.doctor.address, needed_role=EMERGENCY_ROLE
    ):
        reg.open_break_glass(a.doctor, a.patient.address, 600, REASON)


@pytest.mark.parametrize("duration", [0, MAX_BREAK_GLASS_S + 1])
def test_break_glass_duration_is_bounded(reg: ConsentRegistry, a: Actors, duration: int) -> None:
    with reverts(InvalidBreakGlassDuration, duration=duration, max_duration=MAX_BREAK_GLASS_S):
        reg.open_break_glass(a.emergency, a.patient.address, duration, REASON)


def test_break_glass_for_the_full_24_hours_is_allowed(reg: ConsentRegistry, a: Actors) -> None:
    reg.open_break_glass(a.emergency, a.patient.address, MAX_BREAK_GLASS_S, REASON)


def test_break_glass_needs_a_patient_and_a_reason(reg: ConsentRegistry, a: Actors) -> None:
    with reverts(ZeroPatient):
        reg.open_break_glass(a.emergency, ZERO_ADDRESS, 600, REASON)
    with reverts(MissingReason):
        reg.open_break_glass(a.emergency, a.patient.address, 600, bytes(32))


@pytest.mark.parametrize("closer", ["patient", "guardian"])
def test_patient_or_guardian_closes_break_glass(
    reg: ConsentRegistry, a: Actors, record: bytes, closer: str
) -> None:
    reg.set_guardian(a.patient, a.guardian.address)
    reg.open_break_glass(a.emergency, a.patient.address, 600, REASON)
    account = a.patient if closer == "patient" else a.guardian
    receipt = reg.close_break_glass(account, a.patient.address, a.emergency.address)
    closed_at = reg.w3.eth.get_block(receipt.block_number)["timestamp"]
    assert events(reg, receipt, "BreakGlassClosed") == [
        {
            "patient": a.patient.address,
            "institution": a.emergency.address,
            "closedBy": account.address,
            "reopensAt": closed_at + BREAK_GLASS_COOLDOWN_S,
        }
    ]
    assert reg.break_glass_until(a.patient.address, a.emergency.address) == 0
    assert not reg.has_consent(a.patient.address, a.emergency.address, record, Purpose.TREATMENT)


def test_a_stranger_cannot_close_break_glass(reg: ConsentRegistry, a: Actors) -> None:
    reg.open_break_glass(a.emergency, a.patient.address, 600, REASON)
    with reverts(NotPatientOrGuardian, account=a.emergency.address, patient=a.patient.address):
        reg.close_break_glass(a.emergency, a.patient.address, a.emergency.address)


def test_closing_a_break_glass_that_is_not_open_is_refused(reg: ConsentRegistry, a: Actors) -> None:
    with reverts(BreakGlassNotOpen, patient=a.patient.address, institution=a.emergency.address):
        reg.close_break_glass(a.patient, a.patient.address, a.emergency.address)
    reg.open_break_glass(a.emergency, a.patient.address, 600, REASON)
    increase_time(reg.w3, 600)
    with reverts(BreakGlassNotOpen):
        reg.close_break_glass(a.patient, a.patient.address, a.emergency.address)


# ---------------------------------------------------------------- signed consent


def test_grant_by_sig_is_relayed_and_uses_the_nonce(
    reg: ConsentRegistry, a: Actors, record: bytes
) -> None:
    request = grant_request(
        reg, signer=a.patient.address, patient=a.patient.address, grantee=a.doctor.address
    )
    assert request.nonce == 0
    receipt = reg.grant_by_sig(a.relayer, request, eip712.sign(a.patient, reg.domain, request))
    (event,) = events(reg, receipt, "ConsentGranted")
    assert event["actor"] == a.patient.address
    assert receipt.raw["from"] == a.relayer.address
    assert reg.nonce_of(a.patient.address) == 1
    assert reg.has_consent(a.patient.address, a.doctor.address, record, Purpose.TREATMENT)

    revoke = revoke_request(
        reg, signer=a.patient.address, patient=a.patient.address, grantee=a.doctor.address
    )
    assert revoke.nonce == 1
    receipt = reg.revoke_by_sig(a.relayer, revoke, eip712.sign(a.patient, reg.domain, revoke))
    (event,) = events(reg, receipt, "ConsentRevoked")
    assert event["actor"] == a.patient.address
    assert reg.nonce_of(a.patient.address) == 2
    assert not reg.has_consent(a.patient.address, a.doctor.address, record, Purpose.TREATMENT)


def test_a_burned_nonce_voids_a_signed_grant_a_relayer_held_back(
    reg: ConsentRegistry, a: Actors, record: bytes
) -> None:
    # The attack: a relayer holds a signed grant and submits it after the patient's next
    # signed revoke was made, to use up the nonce that revoke carries. The patient burns it.
    p = a.patient.address
    held = grant_request(reg, signer=p, patient=p, grantee=a.doctor.address)
    held_signature = eip712.sign(a.patient, reg.domain, held)
    receipt = reg.burn_nonce(a.patient)
    assert events(reg, receipt, "NonceBurned") == [{"signer": p, "nonce": held.nonce}]
    assert reg.nonce_of(p) == held.nonce + 1
    with reverts(InvalidAccountNonce, account=p, current_nonce=held.nonce + 1):
        reg.grant_by_sig(a.relayer, held, held_signature)
    assert not reg.has_consent(p, a.doctor.address, record, Purpose.TREATMENT)
    # the next signature, on the next nonce, goes through
    fresh = grant_request(reg, signer=p, patient=p, grantee=a.doctor.address)
    reg.grant_by_sig(a.relayer, fresh, eip712.sign(a.patient, reg.domain, fresh))
    assert reg.has_consent(p, a.doctor.address, record, Purpose.TREATMENT)


def test_only_the_next_nonce_can_be_burned(reg: ConsentRegistry, a: Actors) -> None:
    with reverts(InvalidAccountNonce, account=a.patient.address, current_nonce=0):
        reg.burn_nonce(a.patient, 1)
    assert reg.nonce_of(a.patient.address) == 0
    # a burn is the signer's own: someone else burning uses up only their own nonce
    reg.burn_nonce(a.stranger)
    assert (reg.nonce_of(a.patient.address), reg.nonce_of(a.stranger.address)) == (0, 1)


def test_a_replayed_signature_is_refused(reg: ConsentRegistry, a: Actors) -> None:
    request = grant_request(
        reg, signer=a.patient.address, patient=a.patient.address, grantee=a.doctor.address
    )
    signature = eip712.sign(a.patient, reg.domain, request)
    reg.grant_by_sig(a.relayer, request, signature)
    reg.revoke(a.patient, a.doctor.address, ScopeKind.CATEGORY, LAB)
    with reverts(InvalidAccountNonce, account=a.patient.address, current_nonce=1):
        reg.grant_by_sig(a.relayer, request, signature)


def test_a_future_nonce_is_refused(reg: ConsentRegistry, a: Actors) -> None:
    request = grant_request(
        reg, signer=a.patient.address, patient=a.patient.address, grantee=a.doctor.address, nonce=5
    )
    with reverts(InvalidAccountNonce, account=a.patient.address, current_nonce=0):
        reg.grant_by_sig(a.relayer, request, eip712.sign(a.patient, reg.domain, request))


@pytest.mark.parametrize("wrong", ["chain", "contract", "name", "version"])
def test_a_signature_for_another_domain_is_refused(
    reg: ConsentRegistry, a: Actors, wrong: str
) -> None:
    domain = {
        "chain": eip712.Domain(chain_id=reg.domain.chain_id + 1, verifying_contract=reg.address),
        "contract": eip712.Domain(
            chain_id=reg.domain.chain_id, verifying_contract=a.stranger.address
        ),
        "name": eip712.Domain(reg.domain.chain_id, reg.address, name="Other"),
        "version": eip712.Domain(reg.domain.chain_id, reg.address, version="2"),
    }[wrong]
    request = grant_request(
        reg, signer=a.patient.address, patient=a.patient.address, grantee=a.doctor.address
    )
    with reverts(InvalidSignature, signer=a.patient.address):
        reg.grant_by_sig(a.relayer, request, eip712.sign(a.patient, domain, request))
    revoke = revoke_request(
        reg, signer=a.patient.address, patient=a.patient.address, grantee=a.doctor.address
    )
    with reverts(InvalidSignature, signer=a.patient.address):
        reg.revoke_by_sig(a.relayer, revoke, eip712.sign(a.patient, domain, revoke))
    assert reg.nonce_of(a.patient.address) == 0


def test_a_signature_by_someone_else_is_refused(reg: ConsentRegistry, a: Actors) -> None:
    request = grant_request(
        reg, signer=a.patient.address, patient=a.patient.address, grantee=a.doctor.address
    )
    with reverts(InvalidSignature, signer=a.patient.address):
        reg.grant_by_sig(a.relayer, request, eip712.sign(a.stranger, reg.domain, request))


def test_a_tampered_request_is_refused(reg: ConsentRegistry, a: Actors) -> None:
    request = grant_request(
        reg, signer=a.patient.address, patient=a.patient.address, grantee=a.doctor.address
    )
    signature = eip712.sign(a.patient, reg.domain, request)
    tampered = eip712.GrantRequest(**{**request.__dict__, "purposes": 0b11111})
    with reverts(InvalidSignature, signer=a.patient.address):
        reg.grant_by_sig(a.relayer, tampered, signature)


def test_a_malformed_signature_is_an_invalid_signature(reg: ConsentRegistry, a: Actors) -> None:
    request = grant_request(
        reg, signer=a.patient.address, patient=a.patient.address, grantee=a.doctor.address
    )
    for signature in (
        b"",
        b"\x01" * 64,
        eip712.sign(a.patient, reg.domain, request)[:64] + b"\x1d",
    ):
        with reverts(InvalidSignature, signer=a.patient.address):
            reg.grant_by_sig(a.relayer, request, signature)


def test_a_signer_who_is_not_patient_or_guardian_is_refused(
    reg: ConsentRegistry, a: Actors
) -> None:
    request = grant_request(
        reg, signer=a.stranger.address, patient=a.patient.address, grantee=a.doctor.address
    )
    with reverts(NotPatientOrGuardian, account=a.stranger.address, patient=a.patient.address):
        reg.grant_by_sig(a.relayer, request, eip712.sign(a.stranger, reg.domain, request))


def test_an_expired_deadline_is_refused(reg: ConsentRegistry, a: Actors) -> None:
    deadline = latest_timestamp(reg.w3) - 1
    request = grant_request(
        reg,
        signer=a.patient.address,
        patient=a.patient.address,
        grantee=a.doctor.address,
        deadline=deadline,
    )
    with reverts(SignatureExpired, deadline=deadline) as info:
        reg.grant_by_sig(a.relayer, request, eip712.sign(a.patient, reg.domain, request))
    assert info.value.now_timestamp > deadline


def test_the_deadline_second_itself_is_still_valid(reg: ConsentRegistry, a: Actors) -> None:
    deadline = latest_timestamp(reg.w3) + 100
    request = grant_request(
        reg,
        signer=a.patient.address,
        patient=a.patient.address,
        grantee=a.doctor.address,
        deadline=deadline,
    )
    signature = eip712.sign(a.patient, reg.domain, request)
    reg.w3.provider.make_request("evm_setNextBlockTimestamp", [deadline])  # type: ignore[arg-type]
    receipt = reg.grant_by_sig(a.relayer, request, signature)
    assert reg.w3.eth.get_block(receipt.block_number)["timestamp"] == deadline


def test_the_guardian_signs_for_the_patient(reg: ConsentRegistry, a: Actors, record: bytes) -> None:
    reg.set_guardian(a.patient, a.guardian.address)
    request = grant_request(
        reg, signer=a.guardian.address, patient=a.patient.address, grantee=a.doctor.address
    )
    receipt = reg.grant_by_sig(a.relayer, request, eip712.sign(a.guardian, reg.domain, request))
    (event,) = events(reg, receipt, "ConsentGranted")
    assert (event["patient"], event["actor"]) == (a.patient.address, a.guardian.address)
    assert reg.nonce_of(a.guardian.address) == 1
    assert reg.nonce_of(a.patient.address) == 0


def test_a_signed_grant_still_runs_the_grant_checks(reg: ConsentRegistry, a: Actors) -> None:
    request = grant_request(
        reg,
        signer=a.patient.address,
        patient=a.patient.address,
        grantee=a.doctor.address,
        purposes=0,
    )
    with reverts(NoPurpose):
        reg.grant_by_sig(a.relayer, request, eip712.sign(a.patient, reg.domain, request))
    revoke = revoke_request(
        reg, signer=a.patient.address, patient=a.patient.address, grantee=a.doctor.address
    )
    with reverts(ConsentNotFound):
        reg.revoke_by_sig(a.relayer, revoke, eip712.sign(a.patient, reg.domain, revoke))


def test_an_erc1271_wallet_patient_consents_by_signature(
    reg: ConsentRegistry, env: RegistryEnv, a: Actors
) -> None:
    owner = a.stranger
    wallet = deploy_wallet(reg.w3, owner)
    record = register(reg, env, wallet.address)
    request = grant_request(
        reg, signer=wallet.address, patient=wallet.address, grantee=a.doctor.address
    )
    # the wallet's owner signs the typed-data digest; the wallet vouches for it (ERC-1271)
    receipt = reg.grant_by_sig(a.relayer, request, eip712.sign(owner, reg.domain, request))
    (event,) = events(reg, receipt, "ConsentGranted")
    assert event["actor"] == wallet.address
    assert reg.has_consent(wallet.address, a.doctor.address, record, Purpose.TREATMENT)

    TxSender(reg.w3, owner).send(
        wallet.functions.setAccepting(False).build_transaction({"from": owner.address})
    )
    revoke = revoke_request(
        reg, signer=wallet.address, patient=wallet.address, grantee=a.doctor.address
    )
    with reverts(InvalidSignature, signer=wallet.address):
        reg.revoke_by_sig(a.relayer, revoke, eip712.sign(owner, reg.domain, revoke))


def test_an_erc1271_wallet_guardian_signs_and_acts_directly(
    reg: ConsentRegistry, a: Actors, record: bytes
) -> None:
    owner = a.stranger
    wallet = deploy_wallet(reg.w3, owner)
    reg.set_guardian(a.patient, wallet.address)
    request = grant_request(
        reg, signer=wallet.address, patient=a.patient.address, grantee=a.doctor.address
    )
    reg.grant_by_sig(a.relayer, request, eip712.sign(owner, reg.domain, request))
    assert reg.has_consent(a.patient.address, a.doctor.address, record, Purpose.TREATMENT)
    # a signature by someone else than the owner is not vouched for
    request = grant_request(
        reg, signer=wallet.address, patient=a.patient.address, grantee=a.relayer.address
    )
    with reverts(InvalidSignature, signer=wallet.address):
        reg.grant_by_sig(a.relayer, request, eip712.sign(a.doctor, reg.domain, request))
    # the wallet calls the registry itself; errors bubble up through it unchanged
    fn = reg.contract.functions.revokeFor(
        a.patient.address, a.doctor.address, ScopeKind.CATEGORY, LAB
    )
    wallet_call(reg.w3, wallet, owner, fn)
    assert not reg.has_consent(a.patient.address, a.doctor.address, record, Purpose.TREATMENT)
    with reverts(ConsentNotFound):
        try:
            wallet_call(reg.w3, wallet, owner, fn)
        except Exception as exc:
            data = getattr(exc, "data", None)
            raise reg.errors.decode(data if isinstance(data, str) else None) from exc


# ---------------------------------------------------------------- access-log checkpoints


def test_anchor_checkpoint_stores_and_emits(reg: ConsentRegistry, a: Actors) -> None:
    root = keccak(text="root 1")
    receipt = reg.anchor_checkpoint(a.gateway, 10, root)
    assert events(reg, receipt, "CheckpointAnchored") == [
        {"gateway": a.gateway.address, "treeSize": 10, "rootHash": root}
    ]
    assert (
        reg.checkpoint_of(a.gateway.address).tree_size,
        reg.checkpoint_of(a.gateway.address).root_hash,
    ) == (10, root)
    reg.anchor_checkpoint(a.gateway, 11, keccak(text="root 2"))
    assert reg.checkpoint_of(a.gateway.address).tree_size == 11


@pytest.mark.parametrize("size", [0, 9, 10])
def test_checkpoint_tree_size_must_grow(reg: ConsentRegistry, a: Actors, size: int) -> None:
    if size:
        reg.anchor_checkpoint(a.gateway, 10, keccak(text="root"))
    last = 10 if size else 0
    with reverts(
        CheckpointNotGrowing, gateway=a.gateway.address, tree_size=size, last_tree_size=last
    ):
        reg.anchor_checkpoint(a.gateway, size, keccak(text="other root"))


def test_checkpoints_are_per_gateway(reg: ConsentRegistry, a: Actors) -> None:
    reg.grant_role(a.admin, GATEWAY_ROLE, a.relayer.address)
    reg.anchor_checkpoint(a.gateway, 10, keccak(text="a"))
    reg.anchor_checkpoint(a.relayer, 5, keccak(text="b"))
    assert reg.checkpoint_of(a.relayer.address).tree_size == 5
    assert reg.checkpoint_of(a.stranger.address).tree_size == 0


def test_only_a_gateway_anchors(reg: ConsentRegistry, a: Actors) -> None:
    with reverts(
        AccessControlUnauthorizedAccount, account=a.doctor.address, needed_role=GATEWAY_ROLE
    ):
        reg.anchor_checkpoint(a.doctor, 1, keccak(text="root"))


# ---------------------------------------------------------------- event digest


def test_event_digest_equals_a_replay_of_the_raw_logs(
    reg: ConsentRegistry, env: RegistryEnv, a: Actors
) -> None:
    record = register(reg, env, a.patient.address)
    reg.grant(a.patient, a.doctor.address, ScopeKind.RECORD, record, 3, FAR)
    reg.grant(a.patient, a.doctor.address, ScopeKind.RECORD, record, 1, FAR)
    reg.set_guardian(a.patient, a.guardian.address)
    request = grant_request(
        reg, signer=a.guardian.address, patient=a.patient.address, grantee=a.relayer.address
    )
    reg.grant_by_sig(a.relayer, request, eip712.sign(a.guardian, reg.domain, request))
    reg.revoke(a.patient, a.doctor.address, ScopeKind.RECORD, record)
    reg.open_break_glass(a.emergency, a.patient.address, 600, REASON)
    reg.close_break_glass(a.guardian, a.patient.address, a.emergency.address)
    reg.remove_guardian(a.patient)
    reg.anchor_checkpoint(a.gateway, 1, keccak(text="root"))
    reg.grant_role(a.admin, CENTRE_ROLE, a.stranger.address)
    reg.revoke_role(a.admin, CENTRE_ROLE, a.stranger.address)
    with pytest.raises(ConsentNotFound):  # a refused call folds nothing
        reg.revoke(a.patient, a.doctor.address, ScopeKind.RECORD, record)

    logs = reg.w3.eth.get_logs(
        {"fromBlock": env.deploy_block, "toBlock": "latest", "address": reg.address}
    )
    head, count = recompute_digest(list(logs))
    digest = reg.event_digest()
    assert (digest.head, digest.count) == (head, count)
    assert count == 4 + len(DEFAULT_CATEGORIES) + 12  # the deployment's events, then these
    # and at any earlier block, the digest covers exactly the logs up to it
    middle = int(logs[8]["blockNumber"])
    earlier = [log for log in logs if log["blockNumber"] <= middle]
    at_middle = reg.event_digest(block_identifier=middle)
    assert (at_middle.head, at_middle.count) == recompute_digest(earlier)


def test_a_missing_or_reordered_log_changes_the_digest(
    reg: ConsentRegistry, env: RegistryEnv, a: Actors
) -> None:
    reg.set_guardian(a.patient, a.guardian.address)
    reg.remove_guardian(a.patient)
    logs = list(
        reg.w3.eth.get_logs(
            {"fromBlock": env.deploy_block, "toBlock": "latest", "address": reg.address}
        )
    )
    expected = reg.event_digest().head
    assert recompute_digest(logs)[0] == expected
    assert recompute_digest(logs[:-2] + logs[-1:])[0] != expected
    swapped = [dict(log) for log in logs]
    swapped[-1]["logIndex"], swapped[-2]["logIndex"] = (
        swapped[-2]["logIndex"],
        swapped[-1]["logIndex"],
    )
    swapped[-1]["blockNumber"], swapped[-2]["blockNumber"] = (
        swapped[-2]["blockNumber"],
        swapped[-1]["blockNumber"],
    )
    assert recompute_digest(swapped)[0] != expected


def _solidity_without_comments(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


CONTRACTS_DIR = Path(__file__).resolve().parents[1] / "contracts"
DIGEST_LIBRARY = CONTRACTS_DIR / "libraries" / "EventDigest.sol"
#: Events OpenZeppelin's AccessControl emits itself; the registry's overrides fold them.
OPENZEPPELIN_EVENTS = {"RoleGranted", "RoleRevoked", "RoleAdminChanged"}


def test_no_event_is_emitted_outside_the_digest_helper() -> None:
    sources = sorted(
        p for p in CONTRACTS_DIR.rglob("*.sol") if p.relative_to(CONTRACTS_DIR).parts[0] != "test"
    )
    assert DIGEST_LIBRARY in sources
    for path in sources:
        code = _solidity_without_comments(path)
        assert re.search(r"\bemit\s+[\w.]+\s*\(", code) is None, f"a bare emit in {path.name}"
        raw_logs = re.findall(r"\blog[0-4]\s*\(", code)
        if path == DIGEST_LIBRARY:
            assert len(raw_logs) == 4  # log1..log4, in emitAndFold
        else:
            assert raw_logs == [], f"a raw log in {path.name}"
    # fold alone (no log) only follows the events OpenZeppelin emits itself
    registry = _solidity_without_comments(CONTRACTS_DIR / "ConsentRegistry.sol")
    folded_only = re.findall(r"\.fold\(\s*abi\.encode\(\s*(\w+)\.selector", registry)
    assert sorted(folded_only) == sorted(OPENZEPPELIN_EVENTS)
    assert len(re.findall(r"\.fold\(", registry)) == len(folded_only)


def test_every_event_is_emitted_with_its_topic_count() -> None:
    abi = compile_contracts()["ConsentRegistry"].abi
    topics = {
        e["name"]: 1 + sum(1 for i in e["inputs"] if i["indexed"])
        for e in abi
        if e["type"] == "event"
    }
    registry = _solidity_without_comments(CONTRACTS_DIR / "ConsentRegistry.sol")
    calls = re.findall(
        r"emitAndFold\(\s*(\d+)\s*,\s*(?:bytes\.concat\(\s*)?abi\.encode\(\s*(\w+)\.selector",
        registry,
    )
    assert len(calls) == len(re.findall(r"emitAndFold\(", registry))
    for count, name in calls:
        assert int(count) == topics[name], f"{name} has {topics[name]} topics, emitted with {count}"
    # every event IConsentRegistry declares has a call site
    declared = compile_contracts()["IConsentRegistry"].abi
    assert {name for _, name in calls} == {e["name"] for e in declared if e["type"] == "event"}


# ---------------------------------------------------------------- Python side


def test_every_abi_error_has_a_python_class_with_the_same_arguments(reg: ConsentRegistry) -> None:
    abi_errors = {item["name"] for item in reg.contract.abi if item["type"] == "error"}
    assert abi_errors == set(ERROR_CLASSES)
    decoder = ErrorDecoder(reg.contract.abi)
    for selector, cls in decoder.selectors.items():
        (item,) = [
            i for i in reg.contract.abi if i["type"] == "error" and i["name"] == cls.__name__
        ]
        signature = f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
        assert keccak(text=signature)[:4] == selector


def test_the_decoder_refuses_an_abi_that_drifted(reg: ConsentRegistry) -> None:
    drifted = [
        {"type": "error", "name": "ExpiryInPast", "inputs": [{"name": "expiry", "type": "uint64"}]}
    ]
    with pytest.raises(ValueError, match="ExpiryInPast"):
        ErrorDecoder(drifted)
    with pytest.raises(ValueError, match="Brand"):
        ErrorDecoder([{"type": "error", "name": "BrandNew", "inputs": []}])


def test_the_decoder_handles_generic_reverts(reg: ConsentRegistry) -> None:
    decoder = reg.errors
    assert isinstance(decoder.decode(None), Reverted)
    assert isinstance(decoder.decode("0x"), Reverted)
    reason = keccak(text="Error(string)")[:4] + abi_encode(["string"], ["nope"])
    assert decoder.decode(reason).values() == ("nope",)
    assert isinstance(decoder.decode(reason), RevertedWithReason)
    panic = keccak(text="Panic(uint256)")[:4] + abi_encode(["uint256"], [0x11])
    assert isinstance(decoder.decode(panic), Panic)
    assert decoder.decode(panic).values() == (0x11,)
    unknown = decoder.decode("0xdeadbeef00")
    assert isinstance(unknown, UnknownContractError)
    assert unknown.values() == (
        bytes.fromhex("deadbeef"),
        bytes.fromhex("deadbeef00"),
    )


def test_eip712_type_strings_match_the_contract() -> None:
    source = Path(__file__).resolve().parent.parent / "contracts" / "ConsentRegistry.sol"
    declared = set(
        re.findall(
            r'"((?:RecordAttestation|GrantConsent|RevokeConsent)\([^"]*\))"', source.read_text()
        )
    )
    ours = {
        f"{name}({','.join(f['type'] + ' ' + f['name'] for f in fields)})"
        for name, fields in (
            ("RecordAttestation", eip712.RECORD_ATTESTATION_TYPE),
            ("GrantConsent", eip712.GRANT_CONSENT_TYPE),
            ("RevokeConsent", eip712.REVOKE_CONSENT_TYPE),
        )
    }
    assert declared == ours


def test_eip712_domain_matches_the_contract(reg: ConsentRegistry) -> None:
    _fields, name, version, chain_id, contract, _salt, _extensions = (
        reg.contract.functions.eip712Domain().call()
    )
    assert (name, version, chain_id, contract) == (
        eip712.DOMAIN_NAME,
        eip712.DOMAIN_VERSION,
        reg.domain.chain_id,
        reg.address,
    )
