"""Access-log verification: a clean log audits clean; every kind of tampering is named."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from ledger.audit.export import (
    AccessLogError,
    AccessLogExport,
    ExportedCheckpoint,
    build_access_log_export,
    load_access_log,
)
from ledger.audit.replay import BlockClock
from ledger.audit.report import FindingKind, Severity
from ledger.audit.run import run_audit
from ledger.audit.verify_log import DEFAULT_ANCHOR_INTERVAL_S, DEFAULT_MAX_TIME_SKEW_S
from ledger.protocol.access_leaf import Decision, canonical_json, canonical_leaf
from ledger.protocol.consent_types import GATEWAY_ROLE, Purpose
from ledger.protocol.merkle import leaf_hash, root_hash
from tests.helpers.audit_world import Gateway, World, increase_time, self_named_export


def audit(world: World, export: AccessLogExport, **kw):
    rpc = world.rpc()
    try:
        return run_audit(
            rpc,
            registry=world.address,
            deploy_block=world.deploy_block,
            decoder=world.decoder(),
            access_logs=[export],
            **kw,
        )
    finally:
        rpc.close()


def kinds(report) -> set[FindingKind]:
    return {f.kind for f in report.findings}


def only(report, kind: FindingKind):
    found = [f for f in report.findings if f.kind is kind]
    assert found, f"no {kind} in {[(f.kind, f.message) for f in report.findings]}"
    return found


def test_clean_history_audits_clean(world) -> None:
    report = audit(world, world.export(), target_block=world.end_block)
    assert report.exit_code == 0, [f.message for f in report.findings]
    assert kinds(report) == {FindingKind.UNANCHORED_ENTRIES}
    (log,) = report.logs
    assert log.anchored_size == 11
    assert [v.anchored_by for v in log.verdicts] == [6] * 6 + [11] * 5 + [None, None]
    assert all(v.consistent for v in log.verdicts)
    bases = [v.basis.name for v in log.verdicts]
    assert bases == [
        "RECORD", "NONE", "CATEGORY", "ALL", "OWNER", "NONE",
        "NONE", "GUARDIAN", "EMERGENCY", "NONE", "NONE",
        "RECORD", "NONE",
    ]  # fmt: skip
    assert report.replay is not None
    assert report.replay.complete


def test_unanchored_entries_are_reported_with_their_range(world) -> None:
    report = audit(world, world.export(), target_block=world.end_block)
    (finding,) = only(report, FindingKind.UNANCHORED_ENTRIES)
    assert finding.severity is Severity.NOTICE
    assert finding.details == {"from": 11, "to": 13}


def test_changed_entry_is_detected(world) -> None:
    leaves = list(world.leaves)
    body = json.loads(leaves[1])
    body["decision"], body["reason"] = "allowed", "consent"  # hide a denial
    leaves[1] = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    report = audit(world, world.export(leaves), target_block=world.end_block)
    assert report.exit_code == 1
    (finding,) = only(report, FindingKind.LOG_ENTRIES_ALTERED)
    assert finding.details["window"] == [0, 6]
    # The changed leaf now also claims a read without consent.
    assert only(report, FindingKind.READ_WITHOUT_CONSENT)[0].details["index"] == 1


def test_changed_entry_with_stale_leaf_hash_is_pinpointed(world) -> None:
    doc = world.export_doc()
    body = json.loads(doc["entries"][3]["leaf"])
    body["purpose"] = int(Purpose.TREATMENT)
    doc["entries"][3]["leaf"] = json.dumps(body, sort_keys=True, separators=(",", ":"))
    report = audit(world, AccessLogExport.from_document(doc), target_block=world.end_block)
    malformed = only(report, FindingKind.LOG_MALFORMED)
    assert malformed[0].details["index"] == 3
    assert "leaf_hash" in malformed[0].message


def test_deleted_entry_is_detected_by_index_gap(world) -> None:
    doc = world.export_doc()
    del doc["entries"][2]
    report = audit(world, AccessLogExport.from_document(doc), target_block=world.end_block)
    assert report.exit_code == 1
    (gap,) = only(report, FindingKind.LOG_ENTRIES_DELETED)
    assert gap.details == {"first_missing": 2, "next_present": 3}


def test_deleted_entry_with_reindexing_is_detected(world) -> None:
    leaves = world.leaves[:4] + world.leaves[5:11]  # entry 4 dropped, the rest renumbered
    report = audit(world, world.export(leaves), target_block=world.end_block)
    assert report.exit_code == 1
    deleted = only(report, FindingKind.LOG_ENTRIES_DELETED)
    assert deleted[0].details["anchored_size"] == 11
    assert deleted[0].details["log_size"] == 10


def test_reordered_entries_are_named(world) -> None:
    leaves = list(world.leaves)
    leaves[7], leaves[8] = leaves[8], leaves[7]
    report = audit(world, world.export(leaves), target_block=world.end_block)
    assert report.exit_code == 1
    (finding,) = only(report, FindingKind.LOG_ENTRIES_REORDERED)
    assert finding.details["indices"] == [7, 8]
    assert finding.details["checkpoint"] == 11


def test_forged_checkpoint_claim_is_detected(world) -> None:
    forged = [
        world.checkpoints[0],
        ExportedCheckpoint(11, bytes.fromhex("ab" * 32), 999, "0x" + "00" * 32),
    ]
    report = audit(world, world.export(checkpoints=forged), target_block=world.end_block)
    assert report.exit_code == 1
    (finding,) = only(report, FindingKind.CHECKPOINT_FORGED)
    assert finding.details["tree_size"] == 11
    assert finding.details["anchored_root"] == world.checkpoints[1].root_hash


def test_checkpoint_that_was_never_anchored_is_forged(world) -> None:
    claims = [
        *world.checkpoints,
        ExportedCheckpoint(13, root_hash([leaf_hash(x) for x in world.leaves])),
    ]
    report = audit(world, world.export(checkpoints=claims), target_block=world.end_block)
    (finding,) = only(report, FindingKind.CHECKPOINT_FORGED)
    assert finding.details["anchored_root"] is None
    assert "never anchored" in finding.message


def test_read_without_consent_inserted_after_the_last_checkpoint(world) -> None:
    a = world.actors
    leaf = canonical_leaf(
        Decision(
            a.stranger.address,
            a.patient.address,
            "0x" + world.rec_lab.hex(),
            0,
            True,
            "consent",
            world.end_block,
            0.0,
        )
    )
    report = audit(world, world.export([*world.leaves, leaf]), target_block=world.end_block)
    assert report.exit_code == 1
    (finding,) = only(report, FindingKind.READ_WITHOUT_CONSENT)
    assert finding.details["index"] == 13
    assert finding.details["requester"] == a.stranger.address


def test_read_without_consent_inserted_in_the_middle_also_breaks_the_checkpoint(world) -> None:
    a = world.actors
    block = world.checkpoints[0].block_number
    leaf = canonical_leaf(
        Decision(
            a.insurer.address,
            a.patient.address,
            "0x" + world.rec_lab.hex(),
            int(Purpose.RESEARCH),
            True,
            "consent",
            block,
            0.0,
        )
    )
    leaves = [*world.leaves[:8], leaf, *world.leaves[8:]]
    report = audit(world, world.export(leaves), target_block=world.end_block)
    assert {FindingKind.READ_WITHOUT_CONSENT, FindingKind.LOG_ENTRIES_ALTERED} <= kinds(report)


def test_read_after_revoke_served_and_anchored_is_a_violation(world, chain) -> None:
    """The gateway itself logs and anchors a read the chain did not allow."""
    a = world.actors
    gw = Gateway(chain, world.registry(chain), a.gateway)
    gw.leaves = list(world.leaves)
    head = chain.eth.block_number  # after the revoke, and after every entry of the log
    assert head > world.revoke_block
    gw.append(
        Decision(
            a.insurer.address,
            a.patient.address,
            "0x" + world.rec_img.hex(),
            int(Purpose.INSURANCE),
            True,
            "consent",
            head,
            chain.eth.get_block(head)["timestamp"] + 0.25,
        )
    )
    cp = gw.anchor()
    report = audit(world, world.export(gw.leaves, checkpoints=[*world.checkpoints, cp]))
    assert kinds(report) == {FindingKind.READ_WITHOUT_CONSENT}
    (finding,) = only(report, FindingKind.READ_WITHOUT_CONSENT)
    assert finding.details["index"] == 13
    assert finding.details["block"] == head


def test_wrong_denial_is_a_finding(world) -> None:
    leaves = list(world.leaves)
    body = json.loads(leaves[0])  # the doctor's allowed read
    body["decision"], body["reason"] = "denied", "no_consent"
    leaves[0] = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    report = audit(world, world.export(leaves), target_block=world.end_block)
    (finding,) = only(report, FindingKind.WRONG_DENIAL)
    assert finding.details["index"] == 0
    assert finding.details["basis"].name == "RECORD"


def test_gateway_that_rewrote_history_between_checkpoints_is_detected(world, chain) -> None:
    a = world.actors
    gw = Gateway(chain, world.registry(chain), a.gateway)
    gw.leaves = list(world.leaves)
    gw.anchor()  # checkpoint 3 at 13 entries, honest
    rewritten = list(gw.leaves)
    body = json.loads(rewritten[12])
    body["requester"] = a.doctor.address.lower()  # blame someone else for the stranger's attempt
    rewritten[12] = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    gw.leaves = rewritten
    gw.read(a.doctor.address, a.patient.address, world.rec_lab, int(Purpose.TREATMENT))
    gw.anchor()  # checkpoint 4 over the rewritten history
    report = audit(world, world.export(gw.leaves, checkpoints=gw.checkpoints))
    assert report.exit_code == 1
    (finding,) = only(report, FindingKind.HISTORY_REWRITTEN)
    assert finding.details["old_size"] == 13
    assert finding.details["new_size"] == 14
    assert finding.details["window"] == [11, 13]
    assert finding.details["consistency_proof_verifies"] is False


def test_entry_dated_after_its_anchor_is_a_violation(world, chain) -> None:
    a = world.actors
    gw = Gateway(chain, world.registry(chain), a.gateway)
    gw.leaves = list(world.leaves)
    future = chain.eth.block_number + 5
    gw.append(
        Decision(
            a.stranger.address,
            a.patient.address,
            "0x" + world.rec_lab.hex(),
            0,
            False,
            "no_consent",
            future,
            0.0,
        )
    )
    cp = gw.anchor()
    for _ in range(6):
        chain.provider.make_request("evm_mine", [])
    report = audit(world, world.export(gw.leaves, checkpoints=[*world.checkpoints, cp]))
    assert FindingKind.ENTRY_BLOCK_AFTER_ANCHOR in kinds(report)


def test_entry_after_the_audited_block_cannot_be_verified(world) -> None:
    target = world.checkpoints[1].block_number  # entries 11, 12 come later? no: same block
    report = audit(world, world.export(), target_block=target - 3)
    assert FindingKind.ENTRY_AFTER_TARGET in kinds(report)
    assert report.exit_code in (1, 2)


def test_operational_denial_without_block_is_fine(world) -> None:
    a = world.actors
    leaf = canonical_leaf(
        Decision(
            a.doctor.address,
            a.patient.address,
            "0x" + world.rec_lab.hex(),
            0,
            False,
            "chain_unavailable",
            None,
            0.0,
        )
    )
    report = audit(world, world.export([*world.leaves, leaf]), target_block=world.end_block)
    assert report.exit_code == 0


def test_allowed_read_without_block_is_a_violation(world) -> None:
    a = world.actors
    leaf = canonical_leaf(
        Decision(
            a.doctor.address,
            a.patient.address,
            "0x" + world.rec_lab.hex(),
            0,
            True,
            "consent",
            None,
            0.0,
        )
    )
    report = audit(world, world.export([*world.leaves, leaf]), target_block=world.end_block)
    assert only(report, FindingKind.READ_WITHOUT_CONSENT)[0].details["index"] == 13


def test_non_canonical_leaf_is_malformed(world) -> None:
    leaves = list(world.leaves)
    leaves[5] = json.dumps(json.loads(leaves[5]), indent=1).encode()
    report = audit(world, world.export(leaves), target_block=world.end_block)
    assert any("canonical" in f.message for f in only(report, FindingKind.LOG_MALFORMED))


def test_export_file_round_trip(world, tmp_path) -> None:
    path = tmp_path / "log.json"
    path.write_text(json.dumps(world.export_doc()))
    loaded = load_access_log(path)
    assert [e.leaf for e in loaded.entries] == world.leaves
    assert loaded.to_document() == world.export_doc()


def test_bad_export_document_is_refused(tmp_path) -> None:
    path = tmp_path / "log.json"
    path.write_text(json.dumps({"format": "something-else", "version": 1}))
    with pytest.raises(AccessLogError):
        load_access_log(path)


# ------------------------------------------------------------------------------ which logs


def test_changed_entry_message_names_the_anchored_root_not_the_gateway_as_root(world) -> None:
    leaves = list(world.leaves)
    leaves[1] = leaves[0]
    report = audit(world, world.export(leaves), target_block=world.end_block)
    (finding,) = only(report, FindingKind.LOG_ENTRIES_ALTERED)
    root = world.checkpoints[0].root_hash
    assert f"root 0x{root.hex()[:16]}" in finding.message
    assert f"root {world.actors.gateway.address}" not in finding.message
    assert finding.details["anchored_root"] == root
    assert finding.details["log_root"] != root


def test_self_named_export_with_entries_dropped_cannot_be_verified(world) -> None:
    stranger = world.actors.stranger.address
    report = audit(world, self_named_export(world, name=stranger), target_block=world.end_block)
    assert report.exit_code == 2, [(f.kind, f.message) for f in report.findings]
    (named,) = only(report, FindingKind.LOG_NOT_A_GATEWAY)
    assert named.details["gateway"] == stranger
    assert named.severity is Severity.UNVERIFIABLE
    # The real gateway anchored 11 entries; its log was not supplied.
    (missing,) = only(report, FindingKind.LOG_NOT_SUPPLIED)
    assert missing.details["gateway"] == world.actors.gateway.address
    assert missing.details["anchored_size"] == 11
    by_address = {g.address: g for g in report.gateways}
    assert set(by_address) == {world.actors.gateway.address}
    assert not by_address[world.actors.gateway.address].supplied


def test_self_named_export_naming_another_role_holder_is_checked_against_its_anchors(
    world, chain
) -> None:
    """Naming a real but different gateway does not help: the one that anchored is missing."""
    registry = world.registry(chain)
    other = world.actors.researcher
    registry.grant_role(world.actors.admin, GATEWAY_ROLE, other.address)
    registry.reset_nonces()
    report = audit(world, self_named_export(world, name=other.address))
    assert report.exit_code == 2, [(f.kind, f.message) for f in report.findings]
    assert FindingKind.LOG_NOT_A_GATEWAY not in kinds(report)
    (missing,) = only(report, FindingKind.LOG_NOT_SUPPLIED)
    assert missing.details["gateway"] == world.actors.gateway.address


def test_a_withheld_log_of_a_role_holding_gateway_cannot_be_verified(world, chain) -> None:
    """A second gateway holds the role and anchors; only the first gateway's log is given."""
    a = world.actors
    registry = world.registry(chain)
    registry.grant_role(a.admin, GATEWAY_ROLE, a.centre.address)
    registry.reset_nonces()
    second = Gateway(chain, registry, a.centre)
    second.read(a.doctor.address, a.patient.address, world.rec_lab, int(Purpose.TREATMENT))
    second.anchor()
    report = audit(world, world.export())
    assert report.exit_code == 2, [(f.kind, f.message) for f in report.findings]
    (missing,) = only(report, FindingKind.LOG_NOT_SUPPLIED)
    assert missing.details["gateway"] == a.centre.address
    assert {g.address: g.supplied for g in report.gateways} == {
        a.gateway.address: True,
        a.centre.address: False,
    }
    # Given both logs, the audit is clean again.
    both = [
        world.export(),
        AccessLogExport.from_document(
            build_access_log_export(
                gateway=a.centre.address, leaves=second.leaves, checkpoints=second.checkpoints
            ),
            source="second",
        ),
    ]
    rpc = world.rpc()
    report = run_audit(
        rpc,
        registry=world.address,
        deploy_block=world.deploy_block,
        decoder=world.decoder(),
        access_logs=both,
    )
    assert report.exit_code == 0, [(f.kind, f.message) for f in report.findings]


def test_no_log_at_all_for_a_gateway_that_anchored_cannot_be_verified(world) -> None:
    rpc = world.rpc()
    report = run_audit(
        rpc,
        registry=world.address,
        deploy_block=world.deploy_block,
        decoder=world.decoder(),
        target_block=world.end_block,
    )
    assert report.exit_code == 2
    assert kinds(report) == {FindingKind.LOG_NOT_SUPPLIED}


def test_a_role_holder_that_anchored_nothing_is_listed_without_its_log(world, chain) -> None:
    a = world.actors
    registry = world.registry(chain)
    registry.grant_role(a.admin, GATEWAY_ROLE, a.researcher.address)
    registry.revoke_role(a.admin, GATEWAY_ROLE, a.researcher.address)
    registry.reset_nonces()
    report = audit(world, world.export(), target_block=chain.eth.block_number)
    assert report.exit_code == 0, [(f.kind, f.message) for f in report.findings]
    (idle,) = [g for g in report.gateways if g.address == a.researcher.address]
    assert not idle.supplied
    assert idle.checkpoints == 0
    ((granted, revoked),) = idle.role_blocks
    assert revoked is not None
    assert revoked > granted


# ------------------------------------------------------------------------------ the tail


def test_an_unanchored_tail_older_than_the_anchoring_interval_cannot_be_verified(
    world, chain
) -> None:
    increase_time(chain, int(DEFAULT_ANCHOR_INTERVAL_S) + 10)
    report = audit(world, world.export())
    assert report.exit_code == 2, [(f.kind, f.message) for f in report.findings]
    (stale,) = only(report, FindingKind.UNANCHORED_STALE)
    assert (stale.details["from"], stale.details["to"]) == (11, 13)
    assert stale.details["age_s"] > DEFAULT_ANCHOR_INTERVAL_S
    assert FindingKind.UNANCHORED_ENTRIES not in kinds(report)
    # An auditor who knows the gateways anchor less often says so.
    relaxed = audit(world, world.export(), anchor_interval_s=3600)
    assert kinds(relaxed) == {FindingKind.UNANCHORED_ENTRIES}
    assert relaxed.exit_code == 0


def test_the_default_anchoring_interval_is_the_gateways() -> None:
    from gateway.settings import Settings

    assert Settings.model_fields["checkpoint_interval_s"].default == DEFAULT_ANCHOR_INTERVAL_S


# ------------------------------------------------------------------------------ order and time


def test_a_decision_backdated_before_a_revoke_is_a_finding(world, chain) -> None:
    """Minutes after the revoke, the gateway serves the insurer, logs the read at the block
    before the revoke (where consent held) with a time that fits that block, and anchors it.
    Judged at its block the read looks allowed: only the order of blocks gives it away."""
    a = world.actors
    gw = Gateway(chain, world.registry(chain), a.gateway)
    gw.leaves = list(world.leaves)
    increase_time(chain, int(DEFAULT_MAX_TIME_SKEW_S) + 60)
    gw.read(a.doctor.address, a.patient.address, world.rec_lab, int(Purpose.TREATMENT))
    before = world.revoke_block - 1
    gw.append(
        Decision(
            a.insurer.address,
            a.patient.address,
            "0x" + world.rec_img.hex(),
            int(Purpose.INSURANCE),
            True,
            "consent",
            before,
            chain.eth.get_block(before)["timestamp"] + 0.25,
        )
    )
    gw.anchor()
    report = audit(
        world, world.export(gw.leaves, checkpoints=[*world.checkpoints, *gw.checkpoints])
    )
    assert kinds(report) == {FindingKind.ENTRY_BLOCK_BACKWARDS}, [
        f.message for f in report.findings
    ]
    (finding,) = only(report, FindingKind.ENTRY_BLOCK_BACKWARDS)
    assert finding.severity is Severity.VIOLATION
    assert (finding.details["index"], finding.details["block"]) == (14, before)
    assert finding.details["previous_index"] == 13
    assert report.exit_code == 1


def test_requests_in_flight_across_one_block_are_not_backdating(world) -> None:
    """One request observed block N, another N + 1 and was logged first: within the skew."""
    a = world.actors
    rpc = world.rpc()
    ts = BlockClock(rpc).timestamps([world.end_block - 1, world.end_block])
    late = canonical_leaf(
        Decision(
            a.stranger.address,
            a.patient.address,
            "0x" + world.rec_lab.hex(),
            int(Purpose.TREATMENT),
            False,
            "no_consent",
            world.end_block - 1,
            ts[world.end_block] + 0.5,
        )
    )
    report = audit(world, world.export([*world.leaves, late]), target_block=world.end_block)
    assert report.exit_code == 0, [(f.kind, f.message) for f in report.findings]
    assert FindingKind.ENTRY_BLOCK_BACKWARDS not in kinds(report)


@pytest.mark.parametrize("shift", [-3600, +3600])
def test_a_leaf_time_far_from_its_block_is_a_finding(world, chain, shift: int) -> None:
    """The last (unanchored) entry redated an hour before its block, or an hour after the
    next block was mined."""
    chain.provider.make_request("evm_mine", [])
    target = chain.eth.block_number
    rpc = world.rpc()
    ts = BlockClock(rpc).timestamps([world.end_block, world.end_block + 1])
    body = json.loads(world.leaves[12])
    assert body["block"] == world.end_block
    base = ts[world.end_block] if shift < 0 else ts[world.end_block + 1]
    body["time"] = datetime.fromtimestamp(base + shift, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    leaves = [*world.leaves[:12], canonical_json(body)]
    report = audit(world, world.export(leaves), target_block=target)
    assert kinds(report) == {FindingKind.UNANCHORED_ENTRIES, FindingKind.ENTRY_TIME_INCONSISTENT}
    (finding,) = only(report, FindingKind.ENTRY_TIME_INCONSISTENT)
    assert finding.details["index"] == 12
    assert finding.severity is Severity.VIOLATION
    assert report.exit_code == 1
    # The honest time audits clean at the same block.
    assert audit(world, world.export(), target_block=target).exit_code == 0
