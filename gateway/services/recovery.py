"""Upload crash recovery: resolving the pending rows an interrupted upload left.

A pending row names everything an upload may have reached: the CID (computed locally
before the blob is added) and, once signed and *before* it is sent, the registerRecord
transaction hash. Recovery resolves a pending row from the node's view of that hash:

  no hash               -> never sent: unpin, delete (unless the record is on-chain with
                           this CID after all, then live)
  hash mined, succeeded -> live (and the blob pinned again if it lost its pin)
  hash mined, reverted  -> unpin, delete
  hash pending          -> left alone; resolved by a later sweep or retry
  hash unknown to node  -> never sent or dropped: it can no longer be mined; unpin, delete

Rolling back first claims the row (status "aborting", only if nothing changed since it
was read), then unpins, then deletes: a live uploader cannot send after the claim, and a
crash mid-rollback leaves an "aborting" row that the next sweep finishes. An uploader
refuses to send once its row is older than half the grace period, and sweeps outside
start-up only touch rows older than the grace period, so a sweep never races a send.
"""

from __future__ import annotations

import logging

from sqlalchemy import delete, select, update

from gateway.ipfs import IpfsError
from gateway.services.rows import RecordStore
from gateway.storage.engine import db_guard
from gateway.storage.tables import RECORD, Record

__all__ = ["RecordRecovery"]

log = logging.getLogger("gateway")


class RecordRecovery(RecordStore):
    """Resolves pending upload rows from the chain (see the module docstring)."""

    def recover_pending(self, older_than_s: float) -> dict[str, int]:
        """Resolve every pending upload row older than ``older_than_s`` (see above); counts by
        outcome. Errors on one row are logged and leave it for a later sweep."""
        cutoff = self._clock() - older_than_s
        table = RECORD
        with db_guard(), self._engine.connect() as conn:
            found = (
                conn.execute(
                    select(table).where(
                        table.c.status.in_(("pending", "aborting")), table.c.created_at <= cutoff
                    )
                )
                .mappings()
                .all()
            )
        counts: dict[str, int] = {}
        for raw in found:
            row = Record.model_validate(dict(raw))
            try:
                outcome = self._recover_row(row)
            except Exception as exc:
                outcome = "error"
                log.error("recovery of upload %s failed: %s", row.record_id, type(exc).__name__)
            counts[outcome] = counts.get(outcome, 0) + 1
        if found:
            log.warning("recovered pending uploads: %s", counts)
        return counts

    def _recover_row(self, row: Record) -> str:
        rid = bytes.fromhex(row.record_id[2:])
        if row.status == "aborting":
            return self._finish_rollback(row)
        if row.tx_hash is not None:
            found = self.registrar.lookup(row.tx_hash, rid)
            if found.state == "pending":
                log.info("upload %s: registration %s still pending", row.record_id, row.tx_hash)
                return "pending"
            if found.state == "mined" and found.cid == row.cid and found.block_number is not None:
                return self._make_live(row, row.tx_hash, found.block_number)
        # Never sent, reverted, or unknown to the node: registered only if some other
        # transaction did it (then with this CID, or it is not ours).
        on_chain = None
        if self.registrar.is_registered(rid):  # recordOf; only then search the logs for the CID
            on_chain = self.registrar.registration_of(rid)
        if on_chain is not None and on_chain[0] == row.cid:
            return self._make_live(row, on_chain[1], on_chain[2])
        if on_chain is not None:
            log.error(
                "record %s is registered on-chain with CID %s, not the pending row's %s",
                row.record_id,
                on_chain[0],
                row.cid,
            )
        return self._roll_back_row(row)

    def _make_live(self, row: Record, tx_hash: str, block_number: int) -> str:
        table = RECORD
        with db_guard(), self._engine.begin() as conn:
            conn.execute(
                update(table)
                .where(
                    table.c.record_id == row.record_id,
                    table.c.status == "pending",
                    table.c.cid == row.cid,
                )
                .values(status="live", tx_hash=tx_hash, block_number=block_number)
            )
        if row.cid is not None:
            try:
                self.blobs.pin_add(row.cid)  # idempotent; re-pins if the pin was lost
            except Exception as exc:
                log.error(
                    "record %s is registered but its blob %s cannot be pinned: %s",
                    row.record_id,
                    row.cid,
                    type(exc).__name__,
                )
        log.warning("upload %s recovered: registered in tx %s", row.record_id, tx_hash)
        return "live"

    def _roll_back_row(self, row: Record) -> str:
        table = RECORD
        same = table.c.tx_hash.is_(None) if row.tx_hash is None else table.c.tx_hash == row.tx_hash
        with db_guard(), self._engine.begin() as conn:
            claimed = conn.execute(
                update(table)
                .where(table.c.record_id == row.record_id, table.c.status == "pending", same)
                .values(status="aborting")
            ).rowcount
        if claimed != 1:
            return "changed"  # the uploader moved on meanwhile; a later sweep looks again
        return self._finish_rollback(row)

    def _finish_rollback(self, row: Record) -> str:
        if row.cid is not None:
            try:
                self.blobs.pin_rm(row.cid)  # not pinned is fine
            except IpfsError as exc:
                # Best effort, as before: a node we cannot reach now may still hold the pin
                # (an add it finished after we gave up). Say so, with the CID to unpin.
                log.error(
                    "could not unpin %s rolling back %s (%s): unpin it when the node is back",
                    row.cid,
                    row.record_id,
                    exc.code,
                )
        table = RECORD
        with db_guard(), self._engine.begin() as conn:
            conn.execute(
                delete(table).where(
                    table.c.record_id == row.record_id, table.c.status == "aborting"
                )
            )
        log.warning("upload %s rolled back (cid %s)", row.record_id, row.cid)
        return "rolled back"
