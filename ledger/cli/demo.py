"""``consent demo``: a guided story on the local chain, with real transactions.

The health commission admits a checkup centre; the centre uploads two checkup results (a FHIR R4
``DiagnosticReport`` with lab values and a small PDF summary); the patient grants a doctor
treatment access to the laboratory category (signed, relayed by the gateway: gasless); the
doctor fetches and decrypts; an insurer and the doctor (on the PDF) are refused; the patient
revokes and the doctor's next try is refused; the patient sees every decision with its verified
inclusion proof; the auditor replays the ledger and checks every decision against it.

Every step states an expectation; the demo exits 0 only if all of them held. It runs against a
running stack (``--gateway`` / ``--chain``) or, with ``--fresh``, one it starts on free ports in
a temporary directory and stops afterwards. It uses the local chain's dev accounts, so it
refuses any chain but the local one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eth_typing import ChecksumAddress
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from ledger.chain.keys import DEV_NAMES
from ledger.chain.node import ANVIL_CHAIN_ID, dev_accounts

__all__ = ["DemoConfig", "checkup_pdf", "diagnostic_report", "run_demo"]

DEMO_DATA = Path(__file__).resolve().parent / "demo_data"
LAB = "laboratory"
SUMMARY = "checkup"


@dataclass(frozen=True)
class DemoConfig:
    gateway_url: str = "http://127.0.0.1:8000"
    chain_url: str = "http://127.0.0.1:8545"
    fresh: bool = False
    home: Path | None = None
    pause: bool = False
    checkpoint_wait_s: float = 120.0


# ------------------------------------------------------------------------------ the documents


def diagnostic_report(*, patient: str, issued_at: int) -> bytes:
    """The demo's FHIR R4 DiagnosticReport (lipid panel, glucose, HbA1c, CBC; LOINC coded)."""
    text = (DEMO_DATA / "diagnostic_report.json").read_text(encoding="utf-8")
    when = datetime.fromtimestamp(issued_at, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = text.replace("PATIENT_ADDRESS", patient.lower()).replace("ISSUED_AT", when)
    return json.dumps(json.loads(text), indent=2).encode() + b"\n"


def _pdf_text(value: str) -> str:
    return value.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def checkup_pdf(lines: list[str]) -> bytes:
    """A small valid one-page PDF 1.4 with ``lines`` of Helvetica text (xref offsets computed)."""
    stream_lines = ["BT", "/F1 16 Tf", "56 780 Td", "20 TL"]
    for i, line in enumerate(lines):
        if i == 1:
            stream_lines.append("/F1 11 Tf")
            stream_lines.append("16 TL")
        stream_lines.append(f"({_pdf_text(line)}) '")
    stream_lines.append("ET")
    stream = "\n".join(stream_lines).encode("latin-1", errors="replace")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def _summary_pdf(*, patient: str, issued_at: int) -> bytes:
    when = datetime.fromtimestamp(issued_at, tz=UTC).strftime("%Y-%m-%d")
    return checkup_pdf(
        [
            "City Checkup Centre No. 3 - annual checkup summary",
            f"Patient: {patient}",
            f"Date: {when}",
            "",
            "Height 176 cm, weight 78 kg, BMI 25.2 kg/m2",
            "Blood pressure 128/82 mmHg, resting heart rate 66/min",
            "ECG: sinus rhythm, no abnormality detected",
            "Chest X-ray: no active lung disease",
            "Vision 1.0 / 0.9 (corrected); hearing normal",
            "",
            "Laboratory: see the attached DiagnosticReport (lipids mildly raised).",
            "Advice: lifestyle measures; repeat lipid panel in 6 months.",
        ]
    )


# ------------------------------------------------------------------------------- the story


@dataclass
class Expectation:
    label: str
    held: bool
    detail: str = ""


@dataclass
class _Story:
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


def _short(value: str, keep: int = 10) -> str:
    return value if len(value) <= 2 * keep + 1 else f"{value[:keep]}…{value[-6:]}"


@contextlib.contextmanager
def _fresh_stack(console: Console) -> Iterator[tuple[str, str, Path]]:
    """A throw-away stack on free ports in a temp dir (checkpoints anchored every second)."""
    from ledger.devstack.services import free_port
    from ledger.devstack.stack import StackConfig, start_stack
    from ledger.paths import state_paths

    with tempfile.TemporaryDirectory(prefix="consent-demo-", ignore_cleanup_errors=True) as tmp:
        paths = state_paths(Path(tmp) / "home")
        cache = state_paths().build_cache
        if cache.is_dir():  # reuse compiled contracts (the cache is keyed by sources + solc)
            shutil.copytree(cache, paths.build_cache, dirs_exist_ok=True)
        config = StackConfig(
            paths=paths,
            chain_port=free_port(),
            ipfs_port=free_port(),
            gateway_port=free_port(),
            gateway_env={"CONSENT_CHECKPOINT_INTERVAL_S": "1"},
        )
        console.print(f"[dim]starting a fresh stack in {paths.home} ...[/]", highlight=False)
        info = start_stack(config, say=lambda s: console.print(f"[dim]  {s}[/]"))
        try:
            yield info.gateway_url, info.anvil.url, paths.home
        finally:
            console.print("[dim]stopping the fresh stack ...[/]")
            info.stop()


def run_demo(config: DemoConfig, *, console: Console) -> int:
    """Run the story; 0 if every expectation held, 1 if one did not, 2 if it could not run."""
    if config.fresh:
        with _fresh_stack(console) as (gateway_url, chain_url, home):
            return _run(config, console, gateway_url, chain_url, home)
    return _run(config, console, config.gateway_url, config.chain_url, config.home)


def _run(
    config: DemoConfig, console: Console, gateway_url: str, chain_url: str, home: Path | None
) -> int:
    from ledger.chain.build import compile_contracts
    from ledger.chain.deployment import load_deployment
    from ledger.chain.node import connect
    from ledger.chain.registry import CENTRE_ROLE, REGISTRY_CONTRACT, ConsentRegistry
    from ledger.client import Gateway
    from ledger.paths import state_paths

    accounts = dict(zip(DEV_NAMES, dev_accounts(), strict=True))
    story = _Story(console, config.pause)
    paths = state_paths(home)
    with Gateway(gateway_url) as gw:
        health = gw.health()
        if health.status != "ok" or health.contract is None:
            from ledger.client import ClientError

            raise ClientError(
                f"the gateway at {gateway_url} is degraded: {health.details}",
                hint="check `consent status`",
            )
        w3 = connect(chain_url)
        chain_id = int(w3.eth.chain_id)
        if chain_id != ANVIL_CHAIN_ID or chain_id != health.chain_id:
            from ledger.client import ClientError

            raise ClientError(
                f"the demo uses the local chain's dev accounts; {chain_url} is chain {chain_id} "
                f"and the gateway's is {health.chain_id}",
                hint="run it against `consent up`, or with --fresh",
            )
        if not w3.eth.get_code(w3.to_checksum_address(health.contract)):
            from ledger.client import ClientError

            raise ClientError(
                f"the chain at {chain_url} has no registry at {health.contract}, the gateway's",
                hint="pass --chain / CONSENT_CHAIN_URL of the gateway's chain node",
            )
        deployment = load_deployment(paths.deployment)
        if deployment is None or deployment.address.lower() != health.contract.lower():
            from ledger.client import ClientError

            pinned = deployment.address if deployment is not None else "none"
            raise ClientError(
                f"the gateway at {gateway_url} names the registry {health.contract}, but the "
                f"deployment file {paths.deployment} names {pinned}; the demo trusts only its own",
                hint="pass the --home of the stack the gateway runs on, or use --fresh",
            )
        abi = compile_contracts(cache_dir=paths.build_cache)[REGISTRY_CONTRACT].abi
        registry = ConsentRegistry(w3, deployment.address, abi=abi)
        console.print(
            Panel.fit(
                f"gateway  {gateway_url}\nchain    {chain_url} (chain id {chain_id}, block "
                f"{w3.eth.block_number})\nregistry {registry.address}",
                title="Consent Ledger demo",
            ),
            highlight=False,
        )
        total = 7
        names = {a.address.lower(): n for n, a in accounts.items()}
        interface = compile_contracts(cache_dir=paths.build_cache)["IConsentRegistry"].abi
        ctx = _Demo(story, gw, registry, accounts, names, config, chain_url, interface)

        # 1 -------------------------------------------------------------------------------
        story.screen(
            1,
            total,
            "The health commission admits a checkup centre",
            "The registry admin grants CENTRE_ROLE: only centres may attest results.",
        )
        centre = accounts["centre"]
        if registry.has_role(CENTRE_ROLE, centre.address):
            story.say(f"centre {centre.address} already holds CENTRE_ROLE (stack reused)")
        else:
            receipt = registry.grant_role(accounts["admin"], CENTRE_ROLE, centre.address)
            story.say(
                f"admin grantRole(CENTRE_ROLE, centre)  tx {receipt.tx_hash}  "
                f"block {receipt.block_number}"
            )
        story.expect("the centre holds CENTRE_ROLE", registry.has_role(CENTRE_ROLE, centre.address))
        return ctx.rest(total)


@dataclass
class _Demo:
    story: _Story
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
        pdf_doc = _summary_pdf(patient=patient.address, issued_at=issued)
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
                f"doctor GET {_short(lab.record_id)}?purpose=treatment -> [green]allowed[/] "
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
                f"{who} GET {_short(record_id)}?purpose={purpose} -> [red]denied[/] "
                f"({exc.status} {exc.code}, block {block})"
            )
            self.story.expect(label, isinstance(exc, kind) and block >= min_block)
            return
        self.story.say(f"{who} GET {_short(record_id)}?purpose={purpose} -> allowed")
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
                self.names.get(str(d.get("requester")).lower(), _short(str(d.get("requester")))),
                _short(str(d.get("record"))),
                _purpose_name(int(d.get("purpose", 0))),
                f"[{colour}]{decision}[/] ({d.get('reason')})",
                str(d.get("block")),
                "[green]✓[/]" if e.verified else "[red]✗[/]",
            )
        self.story.console.print(table)
        cp = who.checkpoint
        if cp is not None:
            self.story.say(
                f"checkpoint: tree size {cp.tree_size}, root {_short(cp.root_hash)}, anchored in "
                f"tx {cp.tx_hash} (block {cp.block_number})"
            )

    def _audit(self, who: Any, uploads: dict[str, Any]) -> None:
        import httpx

        from ledger.audit.core import AccessLogExport, build_access_log_export, run_audit
        from ledger.audit.replay import BlockClock
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


def _purpose_name(pid: int) -> str:
    from ledger.protocol.consent_types import Purpose

    return Purpose(pid).name.lower() if pid in Purpose._value2member_map_ else str(pid)


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
