"""The verified consent index: the registry's consent state kept locally, fed block by block
from its logs with the event digest checked at every applied block, so a decision is a lookup
instead of an ``eth_call`` (see DESIGN.md, "The verified consent index").

- ``fold``: the consent state machine (one fold function per event type, and
  ``access_basis``), shared with the audit's timeline;
- ``state``: ``ConsentState``, the state now, with undo and a JSON body;
- ``digest``: the running event digest recomputed from raw logs;
- ``index``: ``ConsentIndex``, catching up with verification, reorganisations and snapshots;
- ``fresh``: ``FreshIndex``, decisions at a position no older than a head observed after the
  request arrived, one head observation in flight at a time;
- ``errors``: what makes the index refuse (every one fails closed).
"""

from ledger.index.errors import (
    ChainUnsettled,
    ConsentIndexError,
    HeadTooOld,
    IndexRefused,
    ReorgTooDeep,
    SnapshotInvalid,
)
from ledger.index.fresh import FreshIndex, HeadObservation
from ledger.index.index import ConsentIndex
from ledger.index.position import AccountConsents, BlockRef, IndexPosition, IndexStats
from ledger.index.state import ConsentState

__all__ = [
    "AccountConsents",
    "BlockRef",
    "ChainUnsettled",
    "ConsentIndex",
    "ConsentIndexError",
    "ConsentState",
    "FreshIndex",
    "HeadObservation",
    "HeadTooOld",
    "IndexPosition",
    "IndexRefused",
    "IndexStats",
    "ReorgTooDeep",
    "SnapshotInvalid",
]
