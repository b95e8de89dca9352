"""The documents ``consent demo`` uploads: a FHIR R4 ``DiagnosticReport`` with lab values
(LOINC coded, from ``demo_data/``) and a small, well-formed PDF checkup summary."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["LAB", "SUMMARY", "checkup_pdf", "diagnostic_report", "summary_pdf"]

DEMO_DATA = Path(__file__).resolve().parent / "demo_data"
LAB = "laboratory"
SUMMARY = "checkup"


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


def summary_pdf(*, patient: str, issued_at: int) -> bytes:
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
