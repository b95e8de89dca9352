"""The story ``consent demo`` tells when the registry lists a custody federation (t of n).

The centre encrypts on its own machine and splits the data key t-of-n, each share sealed to a
gateway's custody key read from the chain: no gateway ever sees the plaintext or the whole key.
A reader gathers t shares, each released by a gateway that checked consent on-chain on its own
and logged its decision; one gateway killed mid-story does not stop the doctor (when the demo
started the stack itself); the auditor verifies every gateway's log against the chain.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from ledger.cli.demo_docs import LAB, SUMMARY, diagnostic_report, summary_pdf
from ledger.cli.demo_story import Steps, _deploy_block, _grant_request, _revoke_request
from ledger.cli.output import short

__all__ = ["FederatedSteps"]

#: One decision a gateway answered: (gateway, record, requester, "allowed" | "denied").
Decision = tuple[str, str, str, str]


@dataclass
class FederatedSteps(Steps):
    """Screens 2.. of the federated story. ``processes``: gateway address (lower case) -> the
    ``Member`` of a stack this demo started (empty: it does not kill anyone's gateways)."""

    processes: dict[str, Any]

    def rest(self, total: int) -> int:
        from ledger.protocol.consent_types import Purpose

        story, registry, accounts = self.story, self.registry, self.accounts
        patient, doctor, insurer = accounts["patient"], accounts["doctor"], accounts["insurer"]
        fed = registry.federation()
        self.fed = fed
        self.decisions: list[Decision] = []

        # 2 -------------------------------------------------------------------------------
        story.screen(
            2,
            total,
            f"The centre encrypts and splits the key {fed.threshold} of {fed.size} on its machine",
            "The centre's client draws the data key, encrypts the record (AES-256-GCM), splits "
            "the key with SLIP-39 Shamir and seals share i to gateway i's custody key, read from "
            "the chain; a gateway receives only ciphertext and sealed shares.",
        )
        table = Table(title="  the federation the registry lists", title_justify="left", box=None)
        for col in ("#", "gateway", "url", "custody key"):
            table.add_column(col)
        for i, m in enumerate(fed.members):
            table.add_row(str(i), m.gateway, m.url, "0x" + m.custody_key.hex()[:16] + "…")
        story.console.print(table)
        story.say(
            f"threshold {fed.threshold} of {fed.size}; custody set (from the chain) "
            f"0x{fed.custody_set.hex()}"
        )
        uploads = self._upload(patient.address)
        lab, lab_data = uploads[LAB]
        summary, _ = uploads[SUMMARY]
        self._expect_ciphertext_only(lab, lab_data)
        mine = {r.record_id for r in self.gw.login(patient).records()}
        story.expect(
            "the patient sees both records in `consent records`",
            {lab.record.record_id, summary.record.record_id} <= mine,
        )

        # 3 -------------------------------------------------------------------------------
        story.screen(
            3,
            total,
            "The patient grants the doctor treatment access to laboratory results",
            "An EIP-712 GrantConsent signed by the patient's key and relayed by a gateway, which "
            "pays the gas; every gateway reads the same consent from the chain.",
        )
        patient_session = self.gw.login(patient)
        balance = registry.w3.eth.get_balance(patient.address)
        grant = _grant_request(registry, patient, doctor.address, LAB, Purpose.TREATMENT)
        relayed = patient_session.relay(grant, domain=registry.domain, signer=patient)
        story.say(
            f"grantBySig relayed  tx {relayed.tx_hash}  block {relayed.block_number}  "
            f"gas {relayed.gas_used:,} (paid by the gateway)"
        )
        story.expect(
            "the patient paid no gas", registry.w3.eth.get_balance(patient.address) == balance
        )
        lab_id = lab.record.record_id
        story.expect(
            "hasConsent(patient, doctor, lab record, treatment) is true on-chain",
            registry.has_consent(
                patient.address, doctor.address, bytes.fromhex(lab_id[2:]), Purpose.TREATMENT
            ),
        )

        # 4 -------------------------------------------------------------------------------
        story.screen(
            4,
            total,
            "The doctor reads: each gateway decides alone",
            f"The doctor asks {fed.threshold} gateways for their share; each checks consent "
            "on-chain at a block it names, logs its decision and re-seals its share to the "
            "doctor's key. The doctor combines the shares, decrypts and checks the chain's digest.",
        )
        opened = self._read(lab_id)
        story.expect(
            f"{fed.threshold} gateways released a share; the doctor decrypts the report and "
            "sha256(salt || report) matches the chain",
            opened is not None
            and opened.plaintext == lab_data
            and len(_released(opened)) == fed.threshold,
        )
        if opened is not None:
            self._show_lab_values(opened.plaintext)
        self._expect_refused_by_all(
            doctor, summary.record.record_id, "treatment", "doctor",
            "every gateway refuses the doctor the PDF (its category was not granted)",
        )  # fmt: skip
        self._expect_refused_by_all(
            insurer, lab_id, "insurance", "insurer",
            "every gateway refuses the insurer the lab report (no consent)",
        )  # fmt: skip
        insurer_logged = [
            self._logged(m.url, want=("insurer", lab_id, "denied")) for m in fed.members
        ]
        story.expect(
            f"each of the {fed.size} gateways logged its own denial of the insurer",
            all(blocks for blocks in insurer_logged),
            ", ".join(f"gateway {i}: block {b[0]}" for i, b in enumerate(insurer_logged) if b),
        )

        # 5 -------------------------------------------------------------------------------
        story.screen(
            5,
            total,
            "One gateway goes down; the doctor still reads",
            f"Any {fed.threshold} of the {fed.size} gateways release a record: with one killed "
            "the doctor's client asks the next; restarted, it serves again from its own state.",
        )
        self._outage(lab_id, lab_data)

        # 6 -------------------------------------------------------------------------------
        story.screen(
            6,
            total,
            "The patient revokes; every gateway refuses the doctor's next try",
            "An EIP-712 RevokeConsent, relayed like the grant; each gateway reads the revoke from "
            "the chain by itself.",
        )
        patient_session = self.gw.login(patient)  # the first gateway may have been restarted
        revoke = _revoke_request(registry, patient, doctor.address, LAB)
        revoked = patient_session.relay(revoke, domain=registry.domain, signer=patient)
        story.say(f"revokeBySig relayed  tx {revoked.tx_hash}  block {revoked.block_number}")
        self._expect_refused_by_all(
            doctor, lab_id, "treatment", "doctor", "every gateway refuses the doctor now"
        )
        after = [self._logged(m.url, want=("doctor", lab_id, "denied")) for m in fed.members]
        story.expect(
            "each gateway logged that denial at or after the revoke's block",
            all(b and max(b) >= revoked.block_number for b in after),
            ", ".join(f"gateway {i}: block {max(b)}" for i, b in enumerate(after) if b),
        )

        # 7 -------------------------------------------------------------------------------
        story.screen(
            7,
            total,
            f"The patient asks all {fed.size} gateways: who read my records?",
            "Each gateway keeps its own RFC 9162 Merkle log and anchors its root on-chain; the "
            "patient verifies every entry's inclusion proof against each gateway's checkpoint.",
        )
        self._who_read(patient, _ids(uploads))

        # 8 -------------------------------------------------------------------------------
        story.screen(
            8,
            total,
            f"The auditor verifies all {fed.size} logs against the chain",
            "All registry events are replayed and proven complete; each gateway's exported log is "
            "checked against its on-chain checkpoints and every decision re-judged against the "
            "consent state at its block.",
        )
        self._audit_all()
        return self._summary()

    # -- screens -------------------------------------------------------------------------------

    def _upload(self, patient: str) -> dict[str, Any]:
        from ledger.federation import upload_sealed
        from ledger.protocol.consent_types import category_id

        story, registry, fed = self.story, self.registry, self.fed
        issued = int(time.time())
        centre = self.gw.login(self.accounts["centre"])
        uploads: dict[str, Any] = {}
        for label, data, cat, fname in (
            ("FHIR DiagnosticReport (lab values)", diagnostic_report(patient=patient,
                                                                     issued_at=issued),
             LAB, "lab-report.json"),
            ("PDF checkup summary", summary_pdf(patient=patient, issued_at=issued), SUMMARY,
             "summary.pdf"),
        ):  # fmt: skip
            up = upload_sealed(
                centre, data, registry=registry, patient=patient, category=category_id(cat),
                issued_at=issued, filename=fname,
            )  # fmt: skip
            rec, manifest = up.record, up.manifest
            uploads[cat] = (up, data)
            story.say(f"[bold]{label}[/], {len(data):,} bytes, category {cat}")
            story.say(f"    record   {rec.record_id}")
            story.say(
                f"    manifest {rec.cid} ({manifest.n} sealed shares, t = {manifest.threshold})"
            )
            story.say(f"    tx       {rec.tx_hash}  block {rec.block_number}")
            onchain = registry.record_of(bytes.fromhex(rec.record_id[2:]))
            story.expect(
                f"the {cat} record is on-chain with a salted digest, its key split "
                f"{fed.threshold} of {fed.size} under the chain's custody set",
                onchain.content_digest == up.content_digest != hashlib.sha256(data).digest()
                and onchain.patient == patient
                and manifest.custody_set() == fed.custody_set
                and (manifest.threshold, manifest.n) == (fed.threshold, fed.size),
            )
        return uploads

    def _expect_ciphertext_only(self, lab: Any, data: bytes) -> None:
        """What another gateway serves of the record: ciphertext, and shares sealed to others."""
        from ledger.client import ClientError, Gateway
        from ledger.protocol.wire import CustodyBundlePublic

        fed, rid = self.fed, lab.record.record_id
        other = fed.members[-1]
        try:
            with Gateway(other.url) as gw:
                r = gw.login(self.accounts["doctor"])._req("GET", f"/v1/custody/records/{rid}")
                bundle = CustodyBundlePublic.model_validate(r.json())
        except ClientError as exc:
            self.story.expect("a gateway serves the record's ciphertext", False, exc.line())
            return
        blob = base64.b64decode(bundle.ciphertext)
        members = lab.manifest.members
        self.story.say(
            f"gateway {fed.size - 1} ({other.url}) holds {len(blob):,} bytes of ciphertext and "
            f"{len(members)} sealed shares; it can unseal only share {fed.size - 1}"
        )
        self.story.expect(
            "the gateways hold only ciphertext: the blob does not contain the report, and "
            "share i is sealed to gateway i's custody key on the chain",
            data not in blob
            and data[:64] not in blob
            and "0x" + hashlib.sha256(blob).hexdigest() == lab.manifest.blob_sha256.lower()
            and [(m.gateway, m.custody_key_bytes) for m in members]
            == [(g.gateway, g.custody_key) for g in fed.members]
            and len({m.sealed_share for m in members}) == fed.size,
        )

    def _fetch(self, account: Any, record_id: str, purpose: str) -> Any:
        """``fetch_federated``'s answer (or the ``FederationUnavailable``), noting decisions."""
        from ledger.federation import FederationUnavailable, fetch_federated

        who = self.names.get(account.address.lower(), account.address).lower()
        try:
            opened = fetch_federated(account, record_id, registry=self.registry, purpose=purpose)
        except FederationUnavailable as exc:
            if exc.denied:
                for gateway in exc.refusals:
                    self.decisions.append((gateway.lower(), record_id.lower(), who, "denied"))
            return exc
        for r in _released(opened):
            self.decisions.append((r.gateway.lower(), record_id.lower(), who, "allowed"))
        return opened

    def _read(self, record_id: str) -> Any:
        from ledger.federation import FederatedOpened

        got = self._fetch(self.accounts["doctor"], record_id, "treatment")
        if not isinstance(got, FederatedOpened):
            self.story.say(f"doctor -> [red]refused[/]: {got.line()}")
            return None
        index = {m.gateway.lower(): i for i, m in enumerate(self.fed.members)}
        for r in got.releases:
            where = f"gateway {index.get(r.gateway.lower(), '?')} {r.url}"
            if r.release is not None:
                self.story.say(
                    f"  {where} -> [green]released share {r.release.index}[/] (consent checked "
                    f"at block {r.release.block_number})"
                )
            else:
                self.story.say(f"  {where} -> [red]no share[/]: {r.refusal}")
        return got

    def _expect_refused_by_all(
        self, account: Any, record_id: str, purpose: str, who: str, label: str
    ) -> None:
        from ledger.federation import FederationUnavailable

        got = self._fetch(account, record_id, purpose)
        if not isinstance(got, FederationUnavailable):
            self.story.say(f"{who} {short(record_id)}?purpose={purpose} -> allowed")
            self.story.expect(label, False, "a share was released")
            return
        self.story.say(
            f"{who} {short(record_id)}?purpose={purpose} -> [red]denied[/] by "
            f"{len(got.refusals)} gateways (exit code {got.exit_code}, nothing decrypted)"
        )
        gateways = {m.gateway.lower() for m in self.fed.members}
        self.story.expect(
            label,
            got.denied and got.exit_code == 1 and {g.lower() for g in got.refusals} == gateways,
        )

    def _logged(self, url: str, *, want: tuple[str, str, str]) -> list[int]:
        """The blocks of the patient's log entries at ``url`` matching (requester, record,
        decision)."""
        from ledger.client import Gateway

        requester = self.accounts[want[0]].address.lower()
        with Gateway(url) as gw:
            page = gw.login(self.accounts["patient"]).access_log()
        return [
            int(str(e.entry.get("block")))
            for e in page.entries
            if str(e.entry.get("requester")).lower() == requester
            and str(e.entry.get("record")).lower() == want[1].lower()
            and e.entry.get("decision") == want[2]
        ]

    def _outage(self, record_id: str, data: bytes) -> None:
        from ledger.devstack.stack import wait_healthy
        from ledger.federation import FederatedOpened

        story, fed = self.story, self.fed
        down = fed.members[0]
        member = self.processes.get(down.gateway.lower())
        if member is None:
            story.say(
                "[yellow]skipped[/]: this demo did not start the stack, so it does not kill "
                "one of its gateways (run `consent demo --fresh` to see it)"
            )
            return
        member.process.kill()
        story.say(f"killed gateway 0 ({down.url}, SIGKILL): the doctor reads again")
        try:
            got = self._read(record_id)
            others = {m.gateway.lower() for m in fed.members[1:]}
            released = {r.gateway.lower() for r in _released(got)} if got else set()
            story.expect(
                "with gateway 0 down, the other gateways release and the doctor still reads",
                isinstance(got, FederatedOpened)
                and got.plaintext == data
                and len(released) == fed.threshold
                and released <= others,
            )
        finally:
            member.process.start()
            wait_healthy(member.process, member.url)
        story.say(f"restarted gateway 0 ({down.url}); the doctor reads once more")
        again = self._read(record_id)
        story.expect(
            "gateway 0 serves again after its restart (it released its share)",
            isinstance(again, FederatedOpened)
            and again.plaintext == data
            and down.gateway.lower() in {r.gateway.lower() for r in _released(again)},
        )

    def _who_read(self, patient: Any, ours: set[str]) -> None:
        from ledger.client import Gateway

        story = self.story
        proofs_ok, anchored, wrong = True, True, []
        for i, m in enumerate(self.fed.members):
            expected = Counter(
                (rec, who, decision)
                for gateway, rec, who, decision in self.decisions
                if gateway == m.gateway.lower()
            )
            with Gateway(m.url) as gw:
                who = self._wait_for_proofs(gw.login(patient), want=sum(expected.values()))
            story.say(f"[bold]gateway {i}[/] {m.url}: {len(who.entries)} entries about the patient")
            self._show_who_read(who)
            logged = Counter(
                (
                    str(e.entry.get("record")).lower(),
                    self.names.get(str(e.entry.get("requester")).lower(), "?").lower(),
                    str(e.entry.get("decision")),
                )
                for e in who.entries
                if str(e.entry.get("record")).lower() in ours
            )
            if logged != expected:
                wrong.append(f"gateway {i}: logged {sum(logged.values())}, answered "
                             f"{sum(expected.values())}")  # fmt: skip
            proofs_ok = proofs_ok and bool(who.entries) and all(e.verified for e in who.entries)
            anchored = anchored and who.anchored
        story.expect(
            f"the {self.fed.size} logs hold exactly the {len(self.decisions)} decisions the "
            "gateways answered about this demo's records, each in its own gateway's log",
            not wrong,
            "; ".join(wrong),
        )
        story.expect(f"every entry's inclusion proof verifies, on all {self.fed.size} logs",
                     proofs_ok)  # fmt: skip
        story.expect(f"each of the {self.fed.size} checkpoints is anchored on-chain", anchored)

    def _audit_all(self) -> None:
        import httpx

        from ledger.audit.export import load_access_log
        from ledger.audit.run import run_audit
        from ledger.chain.rpc import RpcClient
        from ledger.client import Gateway
        from ledger.protocol.events import EventDecoder, registry_event_abi

        story, registry, fed = self.story, self.registry, self.fed
        exports = []
        for m in fed.members:  # as `consent audit run --as auditor --access-log URL ...`
            with Gateway(m.url) as gw:
                token = gw.login(self.accounts["auditor"]).token
            with httpx.Client(timeout=120.0, headers={"Authorization": f"Bearer {token}"}) as http:
                exports.append(load_access_log(f"{m.url}/v1/access-log/export", client=http))
        rpc = RpcClient(self.chain_url, client=httpx.Client(timeout=120.0))
        try:
            report = run_audit(
                rpc,
                registry=registry.address,
                deploy_block=_deploy_block(registry),
                decoder=EventDecoder(registry_event_abi(self.interface_abi)),
                access_logs=exports,
            )
        finally:
            rpc.close()
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
        gateways = {m.gateway.lower() for m in fed.members}
        for log in report.logs:
            judged = sum(v.basis is not None for v in log.verdicts)
            story.say(
                f"{log.gateway}: {log.size} entries, {log.anchored_size} proven by on-chain "
                f"checkpoints, {judged} decisions re-judged"
            )
        story.expect(
            f"all {fed.size} logs are wholly anchored and every decision matches the chain",
            {log.gateway.lower() for log in report.logs} == gateways
            and all(
                log.size > 0
                and log.anchored_size == log.size
                and not log.findings
                and all(v.consistent for v in log.verdicts)
                for log in report.logs
            ),
        )
        problems = [f"{f.kind}: {f.message}" for f in report.findings]
        story.expect(
            f"the audit of the {fed.size} logs is clean (verdict: {report.verdict})",
            report.verdict == "clean" and report.exit_code == 0,
            "; ".join(problems[:3]),
        )


def _released(opened: Any) -> list[Any]:
    return [
        r for r in opened.releases if r.release is not None and r.gateway not in opened.bad_gateways
    ]


def _ids(uploads: dict[str, Any]) -> set[str]:
    return {up.record.record_id.lower() for up, _ in uploads.values()}
