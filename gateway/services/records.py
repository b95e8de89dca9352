"""The record service: upload (:mod:`gateway.services.upload`), crash recovery
(:mod:`gateway.services.recovery`), threshold custody (:mod:`gateway.services.custody`) and
consent-checked fetch (:mod:`gateway.services.fetch`)
on the shared record rows (:mod:`gateway.services.rows`)."""

from __future__ import annotations

from gateway.services.custody import RecordCustody

__all__ = ["RecordService"]


class RecordService(RecordCustody):
    """Upload and fetch of records, with the access log written for every fetch decision."""
