"""The record service: upload (:mod:`gateway.services.upload`), crash recovery
(:mod:`gateway.services.recovery`) and consent-checked fetch (:mod:`gateway.services.fetch`)
on the shared record rows (:mod:`gateway.services.rows`)."""

from __future__ import annotations

from gateway.services.fetch import RecordFetches
from gateway.services.upload import RecordUploads

__all__ = ["RecordService"]


class RecordService(RecordUploads, RecordFetches):
    """Upload and fetch of records, with the access log written for every fetch decision."""
