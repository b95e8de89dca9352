"""Typed Python client of the on-chain ``ConsentRegistry``.

Reads (``has_consent``, ``access_basis``, ``consent_of`` ...) are ``eth_call``s, optionally at a
given block. Writes (``grant``, ``revoke``, ``register_record`` ...) take the ``LocalAccount``
that sends them: the transaction is built and signed locally, sent raw, and its receipt polled
(``ledger.chain.node.TxSender``); they return a frozen ``Receipt``. A revert, at estimate time or
in a view, raises the ``ledger.protocol.contract_errors`` class of its custom error, with the
decoded arguments (``ExpiryInPast(expires_at=..., now_timestamp=...)``).

Each account's nonce is tracked locally by one ``TxSender`` per account and client
(``sender(account)``; ``install_sender`` puts in one configured otherwise); after rewinding the
chain under a live client (``evm_revert``) call ``reset_nonces()``. Logs are read in bounded
chunks (``ledger.chain.logs.fetch_logs``) over the client's own connection.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress, HexStr
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError
from web3.types import BlockIdentifier, TxParams, TxReceipt

from ledger.chain.build import Artifact, compile_contracts
from ledger.chain.logs import fetch_logs
from ledger.chain.node import Sent, TransactionFailed, TxSender, deploy
from ledger.chain.rpc import ProviderRpc, RpcClient
from ledger.protocol.consent_types import (
    DEFAULT_CATEGORIES,
    Basis,
    RecordId,
    ScopeKind,
    category_id,
)
from ledger.protocol.contract_errors import ContractError, ErrorDecoder
from ledger.protocol.eip712 import Domain, GrantRequest, RecordAttestation, RevokeRequest
from ledger.protocol.events import (
    BreakGlassClosed,
    BreakGlassOpened,
    EventDecoder,
    registry_event_abi,
)

__all__ = [
    "REGISTRY_CONTRACT",
    "AccessBasis",
    "AccessDecision",
    "BreakGlassOpening",
    "Checkpoint",
    "ConsentRegistry",
    "ConsentTerms",
    "EventDigest",
    "Receipt",
    "Record",
    "RecordReceipt",
]

REGISTRY_CONTRACT = "ConsentRegistry"


@dataclass(frozen=True)
class Receipt:
    """A mined, successful registry transaction."""

    tx_hash: str
    block_number: int
    gas_used: int
    raw: TxReceipt = field(repr=False, compare=False)

    @classmethod
    def of(cls, sent: Sent) -> Receipt:
        return cls(sent.tx_hash, sent.block_number, sent.gas_used, sent.receipt)


@dataclass(frozen=True)
class RecordReceipt(Receipt):
    """``registerRecord``'s receipt, with the new record's id."""

    record_id: RecordId


@dataclass(frozen=True)
class ConsentTerms:
    """A stored consent (zeroes when none); it may be expired (see ``in_force_at``)."""

    purposes: int
    expires_at: int

    @property
    def exists(self) -> bool:
        return self.purposes != 0

    def in_force_at(self, timestamp: int) -> bool:
        return self.purposes != 0 and timestamp < self.expires_at


@dataclass(frozen=True)
class AccessBasis:
    """Why an access is allowed, and until when (0: no expiry, or not allowed)."""

    basis: Basis
    until: int

    @property
    def allowed(self) -> bool:
        return self.basis is not Basis.NONE


@dataclass(frozen=True)
class AccessDecision(AccessBasis):
    """``accessDecision``: the access basis with the ledger position it was computed on (the
    one decision type: the typed client returns it, and so does the gateway's raw hot path).

    ``event_count`` is the event digest's count in the state the node evaluated (it names that
    state exactly, even when the node evaluated a later state than the block it was asked
    about); ``block_number`` / ``timestamp`` are ``block.number`` / ``block.timestamp`` as the
    call saw them."""

    event_count: int
    block_number: int
    timestamp: int


@dataclass(frozen=True)
class Record:
    """A registered record as the chain holds it."""

    record_id: RecordId
    patient: ChecksumAddress
    issued_at: int
    centre: ChecksumAddress
    category: bytes
    content_digest: bytes


@dataclass(frozen=True)
class BreakGlassOpening:
    """One break-glass opening for a patient, from the registry's logs: who, why (the reason
    hash), and the window: opened at ``opened_at`` (block ``block_number``), until ``until``,
    or closed early at ``closed_at`` by ``closed_by`` (then no reopening before ``reopens_at``)."""

    patient: ChecksumAddress
    institution: ChecksumAddress
    reason_hash: bytes
    block_number: int
    opened_at: int
    until: int
    closed_at: int | None = None
    closed_by: ChecksumAddress | None = None
    reopens_at: int | None = None

    @property
    def ends_at(self) -> int:
        """When the access ended (or ends): the close, else ``until``."""
        return self.closed_at if self.closed_at is not None else self.until


@dataclass(frozen=True)
class Checkpoint:
    """A gateway's last anchored access-log checkpoint (zeroes when none)."""

    tree_size: int
    root_hash: bytes


@dataclass(frozen=True)
class FederationMember:
    """One custodian of the federation: its gateway account, custody key and URL."""

    gateway: ChecksumAddress
    custody_key: bytes  # 33-byte compressed secp256k1 public key
    url: str


@dataclass(frozen=True)
class Federation:
    """The custody federation in force (``federation()``); empty: the single-gateway mode."""

    threshold: int
    custody_set: bytes
    members: tuple[FederationMember, ...]

    @property
    def size(self) -> int:
        return len(self.members)


@dataclass(frozen=True)
class EventDigest:
    """The registry's running event digest: 24-byte head and the number of events folded."""

    head: bytes
    count: int


class ConsentRegistry:
    """A deployed registry at ``address``."""

    def __init__(
        self,
        w3: Web3,
        address: str,
        *,
        abi: Sequence[Mapping[str, Any]] | None = None,
        rpc: RpcClient | None = None,
    ) -> None:
        if abi is None:
            abi = compile_contracts()[REGISTRY_CONTRACT].abi
        self.w3 = w3
        self.address: ChecksumAddress = to_checksum_address(address)
        self.contract: Contract = w3.eth.contract(address=self.address, abi=list(abi))
        self.errors = ErrorDecoder(abi)
        self._event_topics = {
            str(item["name"]): keccak(
                text=f"{item['name']}({','.join(str(i['type']) for i in item['inputs'])})"
            )
            for item in abi
            if item.get("type") == "event"
        }
        self.domain = Domain(chain_id=w3.eth.chain_id, verifying_contract=self.address)
        self._senders: dict[str, TxSender] = {}
        self._senders_lock = threading.Lock()
        # Raw JSON-RPC (chunked eth_getLogs) over the same provider as web3 unless handed one.
        url = str(getattr(w3.provider, "endpoint_uri", None) or type(w3.provider).__name__)
        self.rpc = rpc if rpc is not None else RpcClient(url, transport=ProviderRpc(w3.provider))

    @classmethod
    def deploy(
        cls,
        w3: Web3,
        *,
        admin: str,
        sender: LocalAccount,
        artifact: Artifact | None = None,
        categories: Sequence[str] = DEFAULT_CATEGORIES,
    ) -> tuple[ConsentRegistry, Receipt]:
        """Deploy a new registry administered by ``admin`` and listing ``categories``;
        ``sender`` pays."""
        if artifact is None:
            artifact = compile_contracts()[REGISTRY_CONTRACT]
        sent = deploy(
            w3,
            abi=artifact.abi,
            bytecode=artifact.bytecode,
            args=[to_checksum_address(admin), [category_id(c) for c in categories]],
            sender=TxSender(w3, sender),
        )
        address = sent.receipt["contractAddress"]
        if address is None:
            raise TransactionFailed(sent.tx_hash, "no contract address in the receipt")
        return cls(w3, address, abi=artifact.abi), Receipt.of(sent)

    def reset_nonces(self) -> None:
        """Forget locally tracked account nonces (after the chain was rewound)."""
        with self._senders_lock:
            self._senders.clear()

    # ---------------------------------------------------------------- reads

    def has_consent(
        self,
        patient: str,
        grantee: str,
        record_id: bytes,
        purpose: int,
        *,
        block_identifier: BlockIdentifier = "latest",
    ) -> bool:
        """Whether ``grantee`` may read ``record_id`` of ``patient`` for ``purpose``."""
        args = (_addr(patient), _addr(grantee), bytes(record_id), int(purpose))
        return bool(self._call("hasConsent", *args, block_identifier=block_identifier))

    def access_basis(
        self,
        patient: str,
        grantee: str,
        record_id: bytes,
        purpose: int,
        *,
        block_identifier: BlockIdentifier = "latest",
    ) -> AccessBasis:
        args = (_addr(patient), _addr(grantee), bytes(record_id), int(purpose))
        basis, until = self._call("accessBasis", *args, block_identifier=block_identifier)
        return AccessBasis(Basis(basis), int(until))

    def access_decision(
        self,
        patient: str,
        grantee: str,
        record_id: bytes,
        purpose: int,
        *,
        block_identifier: BlockIdentifier = "latest",
    ) -> AccessDecision:
        """``accessDecision``: ``access_basis`` plus the event count, block number and timestamp
        the node evaluated it on."""
        args = (_addr(patient), _addr(grantee), bytes(record_id), int(purpose))
        basis, until, count, number, timestamp = self._call(
            "accessDecision", *args, block_identifier=block_identifier
        )
        return AccessDecision(Basis(basis), int(until), int(count), int(number), int(timestamp))

    def consent_of(
        self,
        patient: str,
        grantee: str,
        scope_kind: ScopeKind,
        scope_id: bytes,
        *,
        block_identifier: BlockIdentifier = "latest",
    ) -> ConsentTerms:
        args = (_addr(patient), _addr(grantee), int(scope_kind), bytes(scope_id))
        purposes, expires_at = self._call("consentOf", *args, block_identifier=block_identifier)
        return ConsentTerms(int(purposes), int(expires_at))

    def record_of(
        self, record_id: bytes, *, block_identifier: BlockIdentifier = "latest"
    ) -> Record:
        """The record; raises ``UnknownRecord`` when absent."""
        patient, issued_at, centre, category, content_digest = self._call(
            "recordOf", bytes(record_id), block_identifier=block_identifier
        )
        return Record(
            record_id=RecordId(bytes(record_id)),
            patient=to_checksum_address(patient),
            issued_at=int(issued_at),
            centre=to_checksum_address(centre),
            category=bytes(category),
            content_digest=bytes(content_digest),
        )

    def guardian_of(
        self, patient: str, *, block_identifier: BlockIdentifier = "latest"
    ) -> ChecksumAddress | None:
        """The patient's guardian, or None."""
        guardian = to_checksum_address(
            self._call("guardianOf", _addr(patient), block_identifier=block_identifier)
        )
        return None if int(guardian, 16) == 0 else guardian

    def break_glass_until(
        self, patient: str, institution: str, *, block_identifier: BlockIdentifier = "latest"
    ) -> int:
        """When the institution's break-glass ends (0: never opened, or closed)."""
        args = (_addr(patient), _addr(institution))
        return int(self._call("breakGlassUntil", *args, block_identifier=block_identifier))

    def break_glass_reopens_at(
        self, patient: str, institution: str, *, block_identifier: BlockIdentifier = "latest"
    ) -> int:
        """The earliest time the institution may open break-glass for the patient again (the end
        of the open window or of the cool-down after a close; at or before now: it may)."""
        args = (_addr(patient), _addr(institution))
        return int(self._call("breakGlassReopensAt", *args, block_identifier=block_identifier))

    def break_glass_openings(
        self, patient: str, *, from_block: int = 0, to_block: BlockIdentifier = "latest"
    ) -> list[BreakGlassOpening]:
        """Every break-glass opening for ``patient`` in ``[from_block, to_block]``, oldest first,
        each with its window and, if closed early, the close (from ``BreakGlassOpened`` /
        ``BreakGlassClosed`` logs, which index the patient)."""
        decoder = EventDecoder(registry_event_abi(self.contract.abi))
        opened = decoder.topic0_of("BreakGlassOpened")
        closed = decoder.topic0_of("BreakGlassClosed")
        topic = "0x" + bytes(12).hex() + _addr(patient)[2:].lower()
        end = (
            to_block
            if isinstance(to_block, int)
            else int(self.w3.eth.get_block(to_block)["number"])
        )
        found = fetch_logs(
            self.rpc,
            address=self.address,
            from_block=from_block,
            to_block=end,
            topics=[["0x" + opened.hex(), "0x" + closed.hex()], topic],
        )
        logs = sorted(found, key=lambda log: log.position)
        times: dict[int, int] = {}

        def time_of(block: int) -> int:
            if block not in times:
                times[block] = int(self.w3.eth.get_block(block)["timestamp"])
            return times[block]

        out: list[BreakGlassOpening] = []
        open_at: dict[str, int] = {}  # institution -> index in out of its last opening
        for log in logs:
            event = decoder.decode(log)
            if isinstance(event, BreakGlassOpened):
                open_at[event.institution] = len(out)
                out.append(
                    BreakGlassOpening(
                        patient=event.patient,
                        institution=event.institution,
                        reason_hash=event.reason_hash,
                        block_number=event.block_number,
                        opened_at=time_of(event.block_number),
                        until=event.until,
                    )
                )
            elif isinstance(event, BreakGlassClosed) and event.institution in open_at:
                i = open_at.pop(event.institution)
                out[i] = replace(
                    out[i],
                    closed_at=time_of(event.block_number),
                    closed_by=event.closed_by,
                    reopens_at=event.reopens_at,
                )
        return out

    def checkpoint_of(
        self, gateway: str, *, block_identifier: BlockIdentifier = "latest"
    ) -> Checkpoint:
        tree_size, root_hash = self._call(
            "checkpointOf", _addr(gateway), block_identifier=block_identifier
        )
        return Checkpoint(int(tree_size), bytes(root_hash))

    def federation(self, *, block_identifier: BlockIdentifier = "latest") -> Federation:
        """The custody federation in force, in one call."""
        threshold, custody_set, gateways, keys, urls = self._call(
            "federation", block_identifier=block_identifier
        )
        members = tuple(
            FederationMember(_addr(g), bytes(k), str(u))
            for g, k, u in zip(gateways, keys, urls, strict=True)
        )
        return Federation(int(threshold), bytes(custody_set), members)

    def is_category(self, category: bytes, *, block_identifier: BlockIdentifier = "latest") -> bool:
        """Whether ``category`` (a bytes32 id) is on the admin's list."""
        return bool(self._call("isCategory", bytes(category), block_identifier=block_identifier))

    def event_digest(self, *, block_identifier: BlockIdentifier = "latest") -> EventDigest:
        head, count = self._call("eventDigest", block_identifier=block_identifier)
        return EventDigest(bytes(head), int(count))

    def attestation_digest(
        self, attestation: RecordAttestation, *, block_identifier: BlockIdentifier = "latest"
    ) -> RecordId:
        """The record id the chain derives for ``attestation``."""
        value = self._call(
            "attestationDigest", attestation.as_tuple(), block_identifier=block_identifier
        )
        return RecordId(bytes(value))

    def nonce_of(self, signer: str, *, block_identifier: BlockIdentifier = "latest") -> int:
        """The next nonce a ``grantBySig`` / ``revokeBySig`` of ``signer`` must carry."""
        return int(self._call("nonces", _addr(signer), block_identifier=block_identifier))

    def has_role(
        self, role: bytes, account: str, *, block_identifier: BlockIdentifier = "latest"
    ) -> bool:
        args = (bytes(role), _addr(account))
        return bool(self._call("hasRole", *args, block_identifier=block_identifier))

    # ---------------------------------------------------------------- writes: records

    def register_record(
        self,
        sender: LocalAccount,
        attestation: RecordAttestation,
        centre_signature: bytes,
        cid: str,
    ) -> RecordReceipt:
        """Register an attested record (``sender`` holds GATEWAY_ROLE)."""
        sent = self._send(
            sender, "registerRecord", attestation.as_tuple(), bytes(centre_signature), cid
        )
        record_id = self._record_id_from_logs(sent)
        return RecordReceipt(
            sent.tx_hash, sent.block_number, sent.gas_used, sent.receipt, record_id
        )

    # ---------------------------------------------------------------- writes: consent

    def grant(
        self,
        patient: LocalAccount,
        grantee: str,
        scope_kind: ScopeKind,
        scope_id: bytes,
        purposes: int,
        expires_at: int,
    ) -> Receipt:
        """``patient`` grants (or changes) consent; ``purposes`` is a bit set."""
        args = (_addr(grantee), int(scope_kind), bytes(scope_id), int(purposes), int(expires_at))
        return Receipt.of(self._send(patient, "grant", *args))

    def revoke(
        self, patient: LocalAccount, grantee: str, scope_kind: ScopeKind, scope_id: bytes
    ) -> Receipt:
        args = (_addr(grantee), int(scope_kind), bytes(scope_id))
        return Receipt.of(self._send(patient, "revoke", *args))

    def grant_for(
        self,
        guardian: LocalAccount,
        patient: str,
        grantee: str,
        scope_kind: ScopeKind,
        scope_id: bytes,
        purposes: int,
        expires_at: int,
    ) -> Receipt:
        """The patient's guardian grants on the patient's behalf."""
        args = (
            _addr(patient),
            _addr(grantee),
            int(scope_kind),
            bytes(scope_id),
            int(purposes),
            int(expires_at),
        )
        return Receipt.of(self._send(guardian, "grantFor", *args))

    def revoke_for(
        self,
        guardian: LocalAccount,
        patient: str,
        grantee: str,
        scope_kind: ScopeKind,
        scope_id: bytes,
    ) -> Receipt:
        args = (_addr(patient), _addr(grantee), int(scope_kind), bytes(scope_id))
        return Receipt.of(self._send(guardian, "revokeFor", *args))

    def grant_by_sig(
        self, relayer: LocalAccount, request: GrantRequest, signature: bytes
    ) -> Receipt:
        """Relay a signed grant (``eip712.sign(signer, registry.domain, request)``)."""
        return Receipt.of(self._send(relayer, "grantBySig", request.as_tuple(), bytes(signature)))

    def revoke_by_sig(
        self, relayer: LocalAccount, request: RevokeRequest, signature: bytes
    ) -> Receipt:
        return Receipt.of(self._send(relayer, "revokeBySig", request.as_tuple(), bytes(signature)))

    def burn_nonce(self, signer: LocalAccount, nonce: int | None = None) -> Receipt:
        """``signer`` gives up its next signing nonce (default: the current one), so a signed
        grant or revoke carrying it, held back by a relayer, can never be submitted."""
        value = self.nonce_of(signer.address) if nonce is None else int(nonce)
        return Receipt.of(self._send(signer, "burnNonce", value))

    # ---------------------------------------------------------------- writes: guardian

    def set_guardian(self, patient: LocalAccount, guardian: str) -> Receipt:
        """Appoint (or replace) the guardian; a replaced guardian's grants end."""
        return Receipt.of(self._send(patient, "setGuardian", _addr(guardian)))

    def remove_guardian(self, patient: LocalAccount) -> Receipt:
        """Remove the guardian; every grant it made for the patient ends."""
        return Receipt.of(self._send(patient, "removeGuardian"))

    # ---------------------------------------------------------------- writes: break-glass

    def open_break_glass(
        self, institution: LocalAccount, patient: str, duration_s: int, reason_hash: bytes
    ) -> Receipt:
        """``institution`` (EMERGENCY_ROLE) opens emergency access for ``duration_s`` seconds."""
        args = (_addr(patient), int(duration_s), bytes(reason_hash))
        return Receipt.of(self._send(institution, "openBreakGlass", *args))

    def close_break_glass(self, closer: LocalAccount, patient: str, institution: str) -> Receipt:
        """The patient (or guardian) closes an institution's break-glass early."""
        args = (_addr(patient), _addr(institution))
        return Receipt.of(self._send(closer, "closeBreakGlass", *args))

    # ---------------------------------------------------------------- writes: access log

    def anchor_checkpoint(self, gateway: LocalAccount, tree_size: int, root_hash: bytes) -> Receipt:
        args = (int(tree_size), bytes(root_hash))
        return Receipt.of(self._send(gateway, "anchorCheckpoint", *args))

    # ---------------------------------------------------------------- writes: categories

    def add_category(self, admin: LocalAccount, category: bytes) -> Receipt:
        """``admin`` (DEFAULT_ADMIN_ROLE) lists ``category`` (a bytes32 id); keep it coarse."""
        return Receipt.of(self._send(admin, "addCategory", bytes(category)))

    def set_federation(
        self, admin: LocalAccount, threshold: int, members: Sequence[FederationMember]
    ) -> Receipt:
        """``admin`` sets the whole custody federation (members in share order) in one step."""
        return Receipt.of(
            self._send(
                admin,
                "setFederation",
                int(threshold),
                [_addr(m.gateway) for m in members],
                [bytes(m.custody_key) for m in members],
                [str(m.url) for m in members],
            )
        )

    def remove_category(self, admin: LocalAccount, category: bytes) -> Receipt:
        """``admin`` takes ``category`` off the list (existing records and grants stay)."""
        return Receipt.of(self._send(admin, "removeCategory", bytes(category)))

    # ---------------------------------------------------------------- writes: roles

    def grant_role(self, admin: LocalAccount, role: bytes, account: str) -> Receipt:
        return Receipt.of(self._send(admin, "grantRole", bytes(role), _addr(account)))

    def revoke_role(self, admin: LocalAccount, role: bytes, account: str) -> Receipt:
        return Receipt.of(self._send(admin, "revokeRole", bytes(role), _addr(account)))

    def renounce_role(self, account: LocalAccount, role: bytes, confirmation: str) -> Receipt:
        """``account`` gives up ``role``; ``confirmation`` must be its own address."""
        args = (bytes(role), _addr(confirmation))
        return Receipt.of(self._send(account, "renounceRole", *args))

    # ---------------------------------------------------------------- plumbing

    def _call(self, name: str, *args: Any, block_identifier: BlockIdentifier) -> Any:
        function = self.contract.get_function_by_name(name)(*args)
        try:
            return function.call(block_identifier=block_identifier)
        except ContractLogicError as exc:
            raise self._decode(exc) from exc

    def _send(self, account: LocalAccount, name: str, *args: Any) -> Sent:
        data = self.contract.encode_abi(name, args=list(args))
        tx = cast(TxParams, {"to": self.address, "data": data})
        try:
            return self.sender(account).send(tx)
        except ContractLogicError as exc:
            raise self._decode(exc) from exc
        except TransactionFailed as exc:
            # Mined but reverted (the state or the time moved between estimate and inclusion):
            # replay the call on the block it was mined in to recover the custom error.
            raise self._replay_failure(account, tx, exc) from exc

    def sender(self, account: LocalAccount) -> TxSender:
        """The nonce-keeping sender of ``account`` (made on first use, 64 in flight)."""
        with self._senders_lock:
            sender = self._senders.get(account.address)
            if sender is None:
                sender = self._senders[account.address] = TxSender(self.w3, account)
            return sender

    def install_sender(self, sender: TxSender) -> None:
        """Send ``sender.account``'s transactions through ``sender`` (e.g. with another bound
        on transactions in flight) instead of the default one."""
        with self._senders_lock:
            self._senders[sender.address] = sender

    def _decode(self, exc: ContractLogicError) -> ContractError:
        data = exc.data if isinstance(exc.data, str) else None
        return self.errors.decode(data)

    def _replay_failure(
        self, account: LocalAccount, tx: TxParams, exc: TransactionFailed
    ) -> Exception:
        """The custom error of a mined, reverted transaction (else ``exc`` itself).

        The call is replayed on the state after the transaction's block with that block's
        timestamp: a reverted transaction changed nothing, so in a block of its own (anvil's
        automine) this is exactly the state and the time it ran with.
        """
        try:
            receipt = self.w3.eth.get_transaction_receipt(HexStr(exc.tx_hash))
            params = cast(TxParams, {**tx, "from": account.address})
            self.w3.eth.call(params, block_identifier=int(receipt["blockNumber"]))
        except ContractLogicError as replayed:
            return self._decode(replayed)
        except Exception:  # the original failure is the more useful one
            return exc
        return exc

    def _record_id_from_logs(self, sent: Sent) -> RecordId:
        topic = self._event_topics["RecordRegistered"]
        for log in sent.receipt["logs"]:
            if log["address"] == self.address and log["topics"] and log["topics"][0] == topic:
                return RecordId(bytes(log["topics"][1]))
        raise TransactionFailed(sent.tx_hash, "no RecordRegistered event in the receipt")


def _addr(value: str) -> ChecksumAddress:
    return to_checksum_address(value)
