"""The story ``consent demo`` tells, screen by screen, each step with its expectation.

``ledger.cli.demo`` checks the stack and runs screen 1; :class:`Steps` runs the rest: the
centre uploads, the patient grants (relayed, gasless), the doctor fetches, an insurer and the
doctor (on the PDF) are refused, the patient revokes and sees every decision verified, and the
auditor replays the ledger.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_typing import ChecksumAddress
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from ledger.cli.demo_docs import LAB, SUMMARY, diagnostic_report, summary_pdf
from ledger.cli.output import purpose_name, short

__all__ = ["DemoConfig", "Expectation", "Steps", "Story"]


@dataclass(frozen=True)
class DemoConfig:
    gateway_url: str = "http://127.0.0.1:8000"
    chain_url: str = "http://127.0.0.1:8545"
    fresh: bool = False
    home: Path | None = None
    pause: bool = False
    checkpoint_wait_s: float = 120.0


@dataclass
class Expectation:
    label: str
    held: bool
    detail: str = ""


@dataclass
class Story:
    console: Console
    pause: bool
    expectations: list[Expectation] = field(default_factory=list)

    def screen(self, number: int, total: int, title: str, why: str) -> None:
        if self.pause and number > 1:
            self.console.input("[dim]press Enter for the next screen[/] ")
        self.console.print()
        self.console.rule(f"[bold]{number}/{total}  {title}", align="left")
        self.console.print(f"[dim]{why}[/]", highlight=False, soft_wrap=True)

    def say(self, text: str) -> None:
        self.console.print(f"  {text}", highlight=False, soft_wrap=True)

    def expect(self, label: str, held: bool, detail: str = "") -> bool:
        self.expectations.append(Expectation(label, held, detail))
        mark = "[green]✓[/]" if held else "[bold red]✗[/]"
        extra = f"  [dim]{detail}[/]" if detail else ""
        self.console.print(f"  {mark} {label}{extra}", highlight=False, soft_wrap=True)
        return held

    @property
    def ok(self) -> bool:
        return bool(self.expectations) and all(e.held for e in self.expectations)


@dataclass
class Steps:
    story: Story
    gw: Any
    registry: Any
    accounts: dict[str, Any]
    names: dict[str, str]
    config: DemoConfig
    chain_url: str
    interface_abi: list[dict[str, Any]]

    def rest(self, total: int) -> int:
        from ledger.client import ConsentDenied, GatewayRefused
        from ledger.protocol.consent_types import Purpose, category_id

        story, gw, registry, accounts = self.story, self.gw, self.registry, self.accounts
        patient, doctor, insurer = accounts["patient"], accounts["doctor"], accounts["insurer"]
        domain = registry.domain

        # 2 -------------------------------------------------------------------------------
        story.screen(
            2,
            total,
            "The centre uploads two checkup results",
            "Each is attested by the centre's EIP-712 signature, encrypted by the gateway "
            "(AES-256-GCM), pinned on IPFS and registered on-chain.",
        )
        issued = int(time.time())
        lab_doc = diagnostic_report(patient=patient.address, issued_at=issued)
        pdf_doc = summary_pdf(patient=patient.address, issued_at=issued)
        centre = gw.login(accounts["centre"])
        uploads = {}
        for label, data, cat, fname in (
            ("FHIR DiagnosticReport (lab values)", lab_doc, LAB, "lab-report.json"),
            ("PDF checkup summary", pdf_doc, SUMMARY, "summary.pdf"),
        ):
            up = centre.upload(
                data,
                domain=domain,
                patient=patient.address,
                category=category_id(cat),
                filename=fname,
                issued_at=issued,
            )
            rec = up.record
            uploads[cat] = (rec, data)
            story.say(f"[bold]{label}[/], {len(data):,} bytes, category {cat}")
            story.say(f"    record {rec.record_id}")
            story.say(f"    cid    {rec.cid}")
            story.say(f"    tx     {rec.tx_hash}  block {rec.block_number}")
            onchain = registry.record_of(bytes.fromhex(rec.record_id[2:]))
            story.expect(
                f"the {cat} record is registered on-chain with a salted digest (not its sha256)",
                onchain.content_digest != hashlib.sha256(data).digest()
                and onchain.patient == patient.address,
            )
        lab, lab_data = uploads[LAB]
        summary, _ = uploads[SUMMARY]
        mine = {r.record_id for r in gw.login(patient).records()}
        story.expect(
            "the patient sees both records in `consent records`",
            {lab.record_id, summary.record_id} <= mine,
        )

        # 3 -------------------------------------------------------------------------------
        story.screen(
            3,
            total,
            "The patient grants the doctor treatment access to laboratory results",
            "An EIP-712 GrantConsent signed by the patient's key and relayed by the gateway, "
            "which pays the gas; scope: the 'laboratory' category; expires in 30 days.",
        )
        patient_session = gw.login(patient)
        balance = registry.w3.eth.get_balance(patient.address)
        grant = _grant_request(registry, patient, doctor.address, LAB, Purpose.TREATMENT)
        relayed = patient_session.relay(grant, domain=domain, signer=patient)
        story.say(
            f"grantBySig relayed  tx {relayed.tx_hash}  block {relayed.block_number}  "
            f"gas {relayed.gas_used:,} (paid by the gateway)"
        )
        story.expect(
            "the patient paid no gas",
            registry.w3.eth.get_balance(patient.address) == balance,
        )
        lab_id = bytes.fromhex(lab.record_id[2:])
        story.expect(
            "hasConsent(patient, doctor, lab record, treatment) is true on-chain",
            registry.has_consent(patient.address, doctor.address, lab_id, Purpose.TREATMENT),
        )

        # 4 -------------------------------------------------------------------------------
        story.screen(
            4,
            total,
            "The doctor reads the lab report; the insurer and the PDF stay closed",
            "The gateway checks consent on-chain at a block it names (accessDecision), seals the "
            "data key to the doctor's public key; the doctor decrypts locally and checks the "
            "on-chain digest.",
        )
        doctor_session = gw.login(doctor)
        digest = registry.record_of(lab_id).content_digest
        try:
            opened = doctor_session.open_record(lab.record_id, "treatment", expected_digest=digest)
            story.say(
                f"doctor GET {short(lab.record_id)}?purpose=treatment -> [green]allowed[/] "
                f"(consent checked at block {opened.envelope.block_number})"
            )
            story.expect(
                "the doctor decrypts the report and sha256(salt || report) matches the chain",
                opened.plaintext == lab_data,
            )
            self._show_lab_values(opened.plaintext)
        except GatewayRefused as exc:
            story.expect("the doctor reads the lab report", False, exc.line())
        self._expect_denied(
            doctor_session,
            summary.record_id,
            "treatment",
            "doctor",
            "the doctor is refused the PDF (its category was not granted)",
            ConsentDenied,
        )
        insurer_session = gw.login(insurer)
        self._expect_denied(
            insurer_session,
            lab.record_id,
            "insurance",
            "insurer",
            "the insurer is refused the lab report (no consent)",
            ConsentDenied,
        )

        # 5 -------------------------------------------------------------------------------
        story.screen(
            5,
            total,
            "The patient revokes; the doctor's next try is refused",
            "An EIP-712 RevokeConsent, relayed like the grant; the gateway answers with the "
            "mined receipt, so the very next request sees the revoke.",
        )
        revoke = _revoke_request(registry, patient, doctor.address, LAB)
        revoked = patient_session.relay(revoke, domain=domain, signer=patient)
        story.say(f"revokeBySig relayed  tx {revoked.tx_hash}  block {revoked.block_number}")
        self._expect_denied(
            doctor_session,
            lab.record_id,
            "treatment",
            "doctor",
            "the doctor is refused on the next request",
            ConsentDenied,
            min_block=revoked.block_number,
        )

        # 6 -------------------------------------------------------------------------------
        story.screen(
            6,
            total,
            "The patient asks: who read my records?",
            "Every decision is a leaf of an RFC 9162 Merkle log; the patient verifies each "
            "leaf's inclusion proof locally and ties the checkpoint to the root the gateway "
            "anchored on-chain.",
        )
        who = self._wait_for_proofs(patient_session, want=4)
        if who is not None:
            self._show_who_read(who)
            mine_entries = [e for e in who.entries if e.entry.get("record") in _ids(uploads)]
            story.expect(
                "4 decisions about this demo's records are logged (1 allowed, 3 denied)",
                len(mine_entries) == 4
                and sorted(str(e.entry.get("decision")) for e in mine_entries)
                == ["allowed", "denied", "denied", "denied"],
                f"{len(mine_entries)} found",
            )
            story.expect(
                "every entry's inclusion proof verifies",
                all(e.verified for e in who.entries),
            )
            story.expect(
                "the checkpoint is anchored on-chain",
                who.anchored,
                who.anchor_reason,
            )

        # 7 -------------------------------------------------------------------------------
        story.screen(
            7,
            total,
            "The auditor replays the ledger and checks every decision",
            "All registry events from the deploy block are replayed, folded into the consent "
            "state at every block, and checked against the on-chain event digest; each logged "
            "decision is re-judged against that state.",
        )
        self._audit(who, uploads)
        return self._summary()

    # -- steps -------------------------------------------------------------------------------

    def _expect_denied(
        self,
        session: Any,
        record_id: str,
        purpose: str,
        who: str,
        label: str,
        kind: type[Exception],
        *,
        min_block: int = 0,
    ) -> None:
        from ledger.client import GatewayRefused

        try:
            session.fetch_envelope(record_id, purpose)
        except GatewayRefused as exc:
            block = int(exc.details.get("block_number") or 0)
            self.story.say(
                f"{who} GET {short(record_id)}?purpose={purpose} -> [red]denied[/] "
                f"({exc.status} {exc.code}, block {block})"
            )
            self.story.expect(label, isinstance(exc, kind) and block >= min_block)
            return
        self.story.say(f"{who} GET {short(record_id)}?purpose={purpose} -> allowed")
        self.story.expect(label, False, "the gateway served it")

    def _show_lab_values(self, plaintext: bytes) -> None:
        report = json.loads(plaintext)
        table = Table(title="  what the doctor decrypted", title_justify="left", box=None)
        for col in ("LOINC", "test", "value", "flag"):
            table.add_column(col)
        for obs in report.get("contained", []):
            if obs.get("resourceType") != "Observation":
                continue
            q = obs.get("valueQuantity", {})
            flag = ""
            for interp in obs.get("interpretation", []):
                flag = interp["coding"][0].get("display", "")
            table.add_row(
                obs["code"]["coding"][0]["code"],
                obs["code"].get("text", ""),
                f"{q.get('value')} {q.get('unit')}",
                flag,
            )
        self.story.console.print(table)

    def _wait_for_proofs(self, session: Any, *, want: int) -> Any:
        deadline = time.monotonic() + self.config.checkpoint_wait_s
        who = session.who_read(self.registry)
        with self.story.console.status("waiting for the gateway to anchor a checkpoint ..."):
            while time.monotonic() < deadline and (
                len(who.entries) < want or any(e.included is None for e in who.entries)
            ):
                time.sleep(0.5)
                who = session.who_read(self.registry)
        if any(e.included is None for e in who.entries):
            self.story.expect(
                "a checkpoint covering every entry is anchored",
                False,
                f"none after {self.config.checkpoint_wait_s:.0f} s",
            )
        return who

    def _show_who_read(self, who: Any) -> None:
        table = Table(box=None)
        for col in ("#", "requester", "record", "purpose", "decision", "block", "proof"):
            table.add_column(col)
        for e in who.entries:
            d = e.entry
            decision = str(d.get("decision"))
            colour = "green" if decision == "allowed" else "red"
            table.add_row(
                str(e.index),
                self.names.get(str(d.get("requester")).lower(), short(str(d.get("requester")))),
                short(str(d.get("record"))),
                purpose_name(int(d.get("purpose", 0))),
                f"[{colour}]{decision}[/] ({d.get('reason')})",
                str(d.get("block")),
                "[green]✓[/]" if e.verified else "[red]✗[/]",
            )
        self.story.console.print(table)
        cp = who.checkpoint
        if cp is not None:
            self.story.say(
                f"checkpoint: tree size {cp.tree_size}, root {short(cp.root_hash)}, anchored in "
                f"tx {cp.tx_hash} (block {cp.block_number})"
            )

    def _audit(self, who: Any, uploads: dict[str, Any]) -> None:
        import httpx

        from ledger.audit.export import AccessLogExport, build_access_log_export
        from ledger.audit.replay import BlockClock
        from ledger.audit.run import run_audit
        from ledger.chain.rpc import RpcClient
        from ledger.protocol.consent_types import Basis
        from ledger.protocol.events import EventDecoder, registry_event_abi

        story, registry = self.story, self.registry
        decoder = EventDecoder(registry_event_abi(self.interface_abi))
        rpc = RpcClient(self.chain_url, client=httpx.Client(timeout=120.0))
        try:
            exports = []
            complete = who is not None and [e.index for e in who.entries] == list(
                range(who.log_size)
            )
            if complete and who.checkpoint is not None:
                doc = build_access_log_export(
                    gateway=who.checkpoint.gateway,
                    leaves=[e.leaf.encode() for e in who.entries],
                    chain_id=registry.domain.chain_id,
                    registry=registry.address,
                )
                exports.append(AccessLogExport.from_document(doc, source="gateway access log"))
            report = run_audit(
                rpc,
                registry=registry.address,
                deploy_block=_deploy_block(registry),
                decoder=decoder,
                access_logs=exports,
            )
            replayed = report.replay
            if replayed is not None:
                story.say(
                    f"replayed {len(replayed.events)} events from block {replayed.from_block} to "
                    f"{replayed.target_block}; digest {replayed.computed.count} events / "
                    f"0x{replayed.computed.head.hex()[:16]}… (on-chain: {replayed.onchain.count})"
                )
            story.expect(
                "the replay is complete (event digest and count match the chain)",
                replayed is not None and replayed.complete,
            )
            if exports:
                story.say(
                    f"verified the whole access log ({who.log_size} entries) against the "
                    f"on-chain checkpoints"
                )
            else:
                story.say(
                    "the gateway's log holds other patients' entries too and the gateway has no "
                    "export endpoint; re-judging this patient's entries only"
                )
            clock = BlockClock(rpc)
            judged = 0
            wrong: list[str] = []
            for e in who.entries if who is not None else []:
                d = e.entry
                if d.get("reason") not in ("consent", "owner", "no_consent"):
                    continue
                block = int(d["block"])
                who_args = (
                    registry.w3.to_checksum_address(str(d["patient"])),
                    registry.w3.to_checksum_address(str(d["requester"])),
                    bytes.fromhex(str(d["record"])[2:]),
                    int(d["purpose"]),
                )
                if d.get("events") is not None:  # the exact state the node evaluated
                    basis, _ = report.timeline.access_basis_after_events(
                        *who_args, events=int(d["events"]), timestamp=int(d["chain_time"])
                    )
                else:
                    basis, _ = report.timeline.access_basis_at(
                        *who_args, block_number=block, block_timestamp=clock.timestamp(block)
                    )
                judged += 1
                if (basis is not Basis.NONE) != (d.get("decision") == "allowed"):
                    wrong.append(f"entry {e.index}")
            story.expect(
                f"each of the {judged} logged decisions matches the consent state at its block",
                judged > 0 and not wrong,
                ", ".join(wrong),
            )
            violations = [f"{f.kind}: {f.message}" for f in report.violations]
            story.expect(
                f"the audit finds no violation (verdict: {report.verdict})",
                not violations and report.exit_code == 0,
                "; ".join(violations[:3]),
            )
        finally:
            rpc.close()
        del uploads

    def _summary(self) -> int:
        story = self.story
        held = sum(e.held for e in story.expectations)
        total = len(story.expectations)
        story.console.print()
        if story.ok:
            story.console.print(
                Panel.fit(f"[green]all {total} expectations held[/]", title="demo result")
            )
            return 0
        failed = [e.label for e in story.expectations if not e.held]
        story.console.print(
            Panel.fit(
                f"[red]{total - held} of {total} expectations failed:[/]\n" + "\n".join(failed),
                title="demo result",
            )
        )
        return 1


def _ids(uploads: dict[str, Any]) -> set[str]:
    return {rec.record_id.lower() for rec, _ in uploads.values()}


def _deploy_block(registry: Any) -> int:
    """The registry's deploy block (binary search on the code; 0 if it cannot tell)."""
    w3 = registry.w3
    lo, hi = 0, int(w3.eth.block_number)
    try:
        while lo < hi:
            mid = (lo + hi) // 2
            if w3.eth.get_code(registry.address, block_identifier=mid):
                hi = mid
            else:
                lo = mid + 1
    except Exception:
        return 0
    return lo


def _grant_request(
    registry: Any, patient: Any, grantee: ChecksumAddress, category: str, purpose: int
) -> Any:
    from ledger.protocol.consent_types import ScopeKind, category_id, purposes_mask
    from ledger.protocol.eip712 import GrantRequest

    now = int(time.time())
    return GrantRequest(
        patient=patient.address,
        grantee=grantee,
        scope_kind=ScopeKind.CATEGORY,
        scope_id=category_id(category),
        purposes=purposes_mask([purpose]),
        expires_at=now + 30 * 86400,
        signer=patient.address,
        nonce=registry.nonce_of(patient.address),
        deadline=now + 3600,
    )


def _revoke_request(registry: Any, patient: Any, grantee: ChecksumAddress, category: str) -> Any:
    from ledger.protocol.consent_types import ScopeKind, category_id
    from ledger.protocol.eip712 import RevokeRequest

    return RevokeRequest(
        patient=patient.address,
        grantee=grantee,
        scope_kind=ScopeKind.CATEGORY,
        scope_id=category_id(category),
        signer=patient.address,
        nonce=registry.nonce_of(patient.address),
        deadline=int(time.time()) + 3600,
    )
