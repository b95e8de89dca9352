"""The consents listing: consents as they stand on-chain for one account (those it granted as
patient and those granted to it), from the registry's consent logs and ``consentOf``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from gateway.services.chain import ChainAccess
from ledger.protocol.consent_types import Purpose, ScopeKind, purposes_of
from ledger.protocol.events import ConsentGranted as ConsentGrantedEvent
from ledger.protocol.events import ConsentRevoked as ConsentRevokedEvent
from ledger.protocol.events import EventDecoder, registry_event_abi
from ledger.protocol.wire import (
    ConsentPublic,
    ConsentsPublic,
)

__all__ = ["ConsentDirectory"]

_SCOPE_NAMES: dict[ScopeKind, Literal["record", "category", "all"]] = {
    ScopeKind.RECORD: "record",
    ScopeKind.CATEGORY: "category",
    ScopeKind.ALL: "all",
}


class ConsentDirectory:
    """Consents as they stand on-chain, for one account: those it granted as patient and
    those granted to it. Candidates come from the registry's ``ConsentGranted`` /
    ``ConsentRevoked`` logs (indexed by patient and grantee), read from the deploy block in
    bounded chunks; the terms are then read with ``consentOf`` at one block, which the answer
    names."""

    def __init__(
        self, chain: ChainAccess, *, abi: Sequence[Mapping[str, Any]], from_block: int
    ) -> None:
        self.chain = chain
        self.from_block = from_block
        self._decoder = EventDecoder(registry_event_abi(abi))
        self._granted = self._decoder.topic0_of("ConsentGranted")
        self._revoked = self._decoder.topic0_of("ConsentRevoked")

    def _keys(self, topics: list[Any], block: int) -> list[tuple[str, str, ScopeKind, bytes]]:
        # From the pinned deploy block, in bounded chunks (the audit's fetch, ledger.chain.logs).
        found = self.chain.logs(topics=topics, from_block=self.from_block, to_block=block)
        keys: dict[tuple[str, str, ScopeKind, bytes], None] = {}
        for raw in found:
            event = self._decoder.decode(raw)
            if isinstance(event, (ConsentGrantedEvent, ConsentRevokedEvent)):
                keys[(event.patient, event.grantee, event.scope_kind, event.scope_id)] = None
        return list(keys)

    def list_for(self, address: str) -> ConsentsPublic:
        who = "0x" + "00" * 12 + address.lower()[2:]
        block = self.chain.block_number()
        both = [self._granted, self._revoked]
        granted = self._terms(self._keys([both, who], block), block)
        received = self._terms(self._keys([both, None, who], block), block)
        return ConsentsPublic(block_number=block, granted=granted, received=received)

    def _terms(
        self, keys: list[tuple[str, str, ScopeKind, bytes]], block: int
    ) -> list[ConsentPublic]:
        out: list[ConsentPublic] = []
        if not keys:
            return out
        with self.chain.guard():
            timestamp = int(self.chain.w3.eth.get_block(block)["timestamp"])
        for patient, grantee, kind, scope_id in keys:
            with self.chain.guard():
                terms = self.chain.registry.consent_of(
                    patient, grantee, kind, scope_id, block_identifier=block
                )
            if not terms.exists:
                continue
            ids = sorted(int(p) for p in purposes_of(terms.purposes))
            out.append(
                ConsentPublic(
                    patient=patient,
                    grantee=grantee,
                    scope_kind=_SCOPE_NAMES[kind],
                    scope_id="0x" + scope_id.hex(),
                    purposes=ids,
                    purpose_names=[
                        Purpose(i).name.lower() if i in Purpose._value2member_map_ else str(i)
                        for i in ids
                    ],
                    expires_at=terms.expires_at,
                    active=terms.in_force_at(timestamp),
                )
            )
        return out
