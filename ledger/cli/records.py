"""Records, as a centre uploads them and a patient lists them: ``consent upload``,
``upload-dir`` and ``records``.

An upload is attested by the centre (EIP-712). Under threshold custody (the registry lists a
federation) this machine encrypts the file and splits its key across the federation, and the
gateway pins and registers ciphertext and sealed shares; in the single-gateway mode the gateway
encrypts, pins and registers it. The command then checks that the pinned registry holds the
record with the salted digest this client attested (:func:`confirm_record`). ``upload-dir``
confines every manifest row to its directory before anything is sent.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from ledger.cli.app import AsOpt, RoleApp, context_of
from ledger.cli.context import CliError, Ctx
from ledger.cli.output import console, echo_json, err, named, short, when
from ledger.cli.parsing import parse_category, parse_record_id

if TYPE_CHECKING:
    from ledger.chain.registry import Federation
    from ledger.client import Session, Uploaded
    from ledger.federation import FederatedUpload

__all__ = ["app"]

app = RoleApp()


def _progress() -> Any:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )


_BIG = 1024 * 1024


@app.command()
def upload(
    cli: typer.Context,
    file: Annotated[Path, typer.Argument(help="The result to upload (any format).")],
    patient: Annotated[str, typer.Option("--patient", help="Patient: address or name.")],
    category: Annotated[
        str, typer.Option("--category", help="Category, e.g. laboratory, imaging, summary.")
    ],
    who: AsOpt = None,
    issued_at: Annotated[
        int | None, typer.Option("--issued-at", help="UNIX seconds attested (default: now).")
    ] = None,
) -> None:
    """Centre: attest a result for a patient (EIP-712) and upload it, encrypted, to the gateway."""
    from ledger.client import read_file

    ctx = context_of(cli)
    data = read_file(file)
    centre = ctx.account(who)
    target = ctx.address(patient, what="patient")
    session = ctx.session(centre)
    if len(data) >= _BIG and not ctx.as_json:
        with _progress() as progress:
            task = progress.add_task(f"uploading {file.name}", total=len(data))
            result = send_record(
                ctx,
                session,
                data,
                patient=target,
                category=parse_category(category),
                filename=file.name,
                issued_at=issued_at,
                progress=_upload_progress(progress, task, file.name),
            )
    else:
        result = send_record(
            ctx,
            session,
            data,
            patient=target,
            category=parse_category(category),
            filename=file.name,
            issued_at=issued_at,
        )
    confirm_record(ctx, result, patient=target, centre=centre.address)
    rec = result.record
    if ctx.as_json:
        echo_json({**rec.model_dump(), "created": result.created})
        return
    console.print(
        f"{'uploaded' if result.created else 'already uploaded'} {file.name} "
        f"({len(data):,} bytes) for {named(ctx.names(), rec.patient)}",
        highlight=False,
    )
    console.print(f"  record  {rec.record_id}", highlight=False)
    manifest = getattr(result, "manifest", None)
    if manifest is not None:  # threshold custody: encrypted and split on this machine
        console.print(
            f"  custody {manifest.threshold} of {manifest.n} gateways, key split on this machine "
            f"(custody set 0x{manifest.custody_set().hex()[:16]}…); the gateway got ciphertext "
            f"and sealed shares",
            highlight=False,
        )
    console.print(f"  cid     {rec.cid}", highlight=False)
    console.print(f"  tx      {rec.tx_hash}  block {rec.block_number}", highlight=False)


@app.command("upload-dir")
def upload_dir(
    cli: typer.Context,
    directory: Annotated[Path, typer.Argument(help="Directory holding the files.")],
    manifest: Annotated[
        Path,
        typer.Option(
            "--manifest",
            help="CSV with a header: file,patient,category[,issued_at] (file relative to DIR).",
        ),
    ],
    who: AsOpt = None,
) -> None:
    """Centre: upload every file a manifest lists, with one progress bar and a summary.

    Every path must name a regular file inside DIR once symlinks are resolved: an absolute
    path, a `..` part or a symlink leading out of DIR is refused, and when any row is refused
    nothing is uploaded."""
    from ledger.client import ClientError

    rows = _read_manifest(manifest)
    jobs = _confine_manifest(directory, manifest, rows)  # every row, before anything is sent
    ctx = context_of(cli)
    centre = ctx.account(who)
    session = ctx.session(centre)
    federation = ctx.registry().federation()  # once for the whole manifest
    results: list[dict[str, Any]] = []
    total = sum(job.size for job in jobs)
    with _progress() as progress:
        task = progress.add_task(
            f"uploading {len(jobs)} files", total=total, visible=not ctx.as_json
        )
        base = 0
        for job in jobs:
            row, size = job.row, job.size
            entry: dict[str, Any] = {"file": row["file"]}
            try:
                issued = row.get("issued_at") or None
                data = job.read()
                target = ctx.address(row["patient"], what="patient")
                result = send_record(
                    ctx,
                    session,
                    data,
                    patient=target,
                    category=parse_category(row["category"]),
                    filename=PurePath(row["file"]).name,
                    issued_at=int(issued) if issued else None,
                    progress=_offset_progress(progress, task, base),
                    federation=federation,
                )
                confirm_record(ctx, result, patient=target, centre=centre.address)
                entry |= {
                    "status": "uploaded" if result.created else "existing",
                    "record_id": result.record.record_id,
                    "cid": result.record.cid,
                    "tx_hash": result.record.tx_hash,
                }
            except (ClientError, CliError, ValueError) as exc:
                text = exc.line() if isinstance(exc, ClientError) else str(exc)
                entry |= {"status": "failed", "error": text}
            results.append(entry)
            base += size
            progress.update(task, completed=base)
    failed = [r for r in results if r["status"] == "failed"]
    if ctx.as_json:
        echo_json(
            {"results": results, "uploaded": len(results) - len(failed), "failed": len(failed)}
        )
    else:
        table = Table(title="upload summary", title_justify="left")
        for col in ("file", "status", "record / error"):
            table.add_column(col, overflow="fold")
        for r in results:
            table.add_row(r["file"], r["status"], r.get("record_id") or r.get("error", ""))
        console.print(table)
        console.print(
            f"{len(results) - len(failed)} uploaded, {len(failed)} failed, {total:,} bytes",
            highlight=False,
        )
    if failed:
        raise typer.Exit(1)


def send_record(
    ctx: Ctx,
    session: Session,
    data: bytes,
    *,
    patient: str,
    category: bytes,
    filename: str,
    issued_at: int | None,
    progress: Callable[[int, int], None] | None = None,
    federation: Federation | None = None,
) -> Uploaded | FederatedUpload:
    """Upload under threshold custody when the registry lists a federation (this machine
    encrypts and splits; the gateway gets ciphertext and sealed shares), else in the
    single-gateway mode (the gateway encrypts and wraps the key)."""
    from ledger.federation import upload_sealed

    registry = ctx.registry()
    fed = registry.federation() if federation is None else federation
    if fed.size:
        return upload_sealed(
            session,
            data,
            registry=registry,
            patient=patient,
            category=category,
            issued_at=issued_at,
            filename=filename,
            federation=fed,
        )
    return session.upload(
        data,
        domain=ctx.domain(),
        patient=patient,
        category=category,
        filename=filename,
        issued_at=issued_at,
        progress=progress,
    )


def confirm_record(
    ctx: Ctx, result: Uploaded | FederatedUpload, *, patient: str, centre: str
) -> None:
    """The chain (pinned registry) holds the uploaded record for this patient, centre and the
    salted content digest this client attested."""
    from ledger.protocol.contract_errors import UnknownRecord

    record_id = result.record.record_id
    try:
        onchain = ctx.registry().record_of(bytes.fromhex(parse_record_id(record_id)[2:]))
    except UnknownRecord:
        onchain = None
    if (
        onchain is None
        or onchain.content_digest != result.content_digest
        or onchain.patient.lower() != patient.lower()
        or onchain.centre.lower() != centre.lower()
    ):
        raise CliError(
            f"the gateway's answer does not hold up: the registry holds no record {record_id} "
            f"of this file for this patient from this centre; upload it again, through another "
            f"gateway if this one keeps answering so",
            code=1,
        )


def _upload_progress(progress: Any, task: Any, name: str) -> Callable[[int, int], None]:
    def update(done: int, total: int) -> None:
        progress.update(task, completed=done)
        if done >= total:
            progress.update(task, description=f"{name}: gateway encrypting, pinning, registering")

    return update


def _offset_progress(progress: Any, task: Any, base: int) -> Callable[[int, int], None]:
    def update(done: int, total: int) -> None:
        progress.update(task, completed=base + done)

    return update


def _read_manifest(path: Path) -> list[tuple[int, dict[str, str]]]:
    """``(line number, row)`` for every data row of the manifest."""
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"file", "patient", "category"} - set(reader.fieldnames or [])
            if missing:
                raise CliError(
                    f"{path}: the header must name file, patient, category "
                    f"(missing {', '.join(sorted(missing))})"
                )
            for r in reader:
                rows.append((reader.line_num, {k: (v or "").strip() for k, v in r.items() if k}))
    except OSError as exc:
        raise CliError(f"cannot read the manifest {path}: {exc.strerror}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read the manifest {path}: {exc}") from None
    if not rows:
        raise CliError(f"{path} lists no files")
    return rows


@dataclass(frozen=True)
class _Job:
    """A manifest row whose file was found inside DIR (``path`` has no symlink left)."""

    line: int
    row: dict[str, str]
    path: Path
    size: int
    identity: tuple[int, int]  # (st_dev, st_ino) when checked

    def read(self) -> bytes:
        """The file's bytes, refusing it if it was swapped since it was checked."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            raise CliError(f"cannot read {self.row['file']}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if (st.st_dev, st.st_ino) != self.identity:
                raise CliError(f"{self.row['file']} changed since it was checked; not uploaded")
            return f.read()


def _confine_manifest(
    directory: Path, manifest: Path, rows: list[tuple[int, dict[str, str]]]
) -> list[_Job]:
    """Every row's file, confined to ``directory``; one error naming every refused row."""
    try:
        root = directory.resolve(strict=True)
    except OSError:
        raise CliError(f"{directory} is not a directory; nothing was uploaded") from None
    if not root.is_dir():
        raise CliError(f"{directory} is not a directory; nothing was uploaded")
    jobs: list[_Job] = []
    refused: list[str] = []
    for line, row in rows:
        name = row["file"]
        reason = _outside(root, name)
        if reason is None:
            path = (root / name).resolve()
            st = path.stat()
            jobs.append(_Job(line, row, path, st.st_size, (st.st_dev, st.st_ino)))
        else:
            refused.append(f"line {line} {name!r} {reason}")
    if refused:
        raise CliError(
            f"{manifest}: refused {len(refused)} of {len(rows)} rows, nothing was uploaded: "
            + "; ".join(refused)
        )
    return jobs


def _outside(root: Path, name: str) -> str | None:
    """Why ``name`` does not name a regular file inside ``root`` (None: it does)."""
    if not name:
        return "names no file"
    relative = PurePath(name)
    if relative.is_absolute() or name.startswith(("/", "\\")):
        return "is an absolute path (paths are relative to DIR)"
    if ".." in relative.parts:
        return "has a '..' part (paths stay inside DIR)"
    try:
        resolved = (root / relative).resolve(strict=True)
    except (OSError, RuntimeError):
        return f"is not a file in {root}"
    if not resolved.is_relative_to(root):
        return f"leads out of {root} through a symlink"
    if not resolved.is_file():
        return f"is not a regular file in {root}"
    return None


@app.command()
def records(
    cli: typer.Context,
    who: AsOpt = None,
) -> None:
    """Patient: my records (a centre sees its uploads)."""
    ctx = context_of(cli)
    account = ctx.account(who)
    found = ctx.session(account).records()
    if ctx.as_json:
        echo_json([r.model_dump() for r in found])
        return
    names = ctx.names()
    table = Table(title=f"records of {named(names, account.address)}", title_justify="left")
    table.add_column("record id", overflow="fold", min_width=20)
    table.add_column("category")
    table.add_column("issued")
    table.add_column("centre")
    table.add_column("block", justify="right")
    for r in found:
        table.add_row(
            r.record_id,
            r.category,
            when(r.issued_at),
            names.get(r.centre.lower(), short(r.centre, 6)),
            str(r.block_number),
        )
    console.print(table)
    if not found:
        console.print("no records yet.")
