// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title Consent Ledger registry
/// @notice The on-chain source of truth for who may read which checkup result, for which purpose,
/// until when. Records are attested by checkup centres (EIP-712) and registered by gateways;
/// patients (or their guardian) grant and revoke consent directly or by signature; emergency
/// institutions may open time-boxed break-glass access; gateways anchor access-log checkpoints.
///
/// @dev Event digest. Every event this contract emits (including OpenZeppelin's RoleGranted /
/// RoleRevoked) is folded, right after it is emitted, into a running digest:
///
///     head' = bytes24(keccak256(abi.encodePacked(head, topic0, topic1, ..., topicN, data)))
///     count' = count + 1
///
/// where `topic0..topicN` and `data` are exactly the log's topics and data as a node returns
/// them. An auditor therefore recomputes the digest from raw logs without decoding them, and a
/// missing, extra or reordered log changes the result. The head is truncated to 24 bytes so that
/// head and count share one storage slot (one SSTORE per event instead of two); 192 bits keep
/// second-preimage resistance far beyond reach. The registry emits its own events only through
/// `EventDigest.emitAndFold` (contracts/libraries/EventDigest.sol), which logs exactly the bytes
/// it folds.
///
/// Guardianship epochs. Every GuardianSet and every GuardianRemoved bumps the patient's
/// guardianship epoch by one (`setGuardian` replacing a guardian emits GuardianRemoved for the
/// old one, then GuardianSet, so it bumps twice). A grant made by a guardian (`grantFor`, or
/// `grantBySig` whose signer is the guardian) is stamped with the epoch of that appointment; it
/// is in force only while the patient's epoch still equals its stamp. So removing or replacing
/// a guardian ends, in the same transaction, every grant that guardian made (including one mined
/// just before the removal, in the same block or earlier), and re-appointing the same guardian
/// later does not revive them: the epoch has moved on. A grant's owner is whoever set its current terms: the
/// patient's own re-grant over a guardian-made grant is a patient grant (it survives guardian
/// changes), and a guardian's re-grant over a patient grant is a guardian grant. A replay
/// recovers the epoch by counting the patient's guardian events, and a grant's stamp from its
/// ConsentGranted's `actor` (the patient: none; anyone else: the guardian then appointed).
///
/// Break-glass limits. An opening lasts at most MAX_BREAK_GLASS. After the patient or guardian
/// closes it, the same institution cannot reopen for that patient before BREAK_GLASS_COOLDOWN
/// has passed (BreakGlassCoolingDown, and BreakGlassClosed names the time). A window that
/// simply lapses may be followed by a new opening at once, but every opening needs a reason
/// hash other than that of the institution's previous opening for the patient
/// (BreakGlassReasonReused): each renewal is a separate, reasoned, on-chain decision that the
/// patient is shown and an auditor can ask to see the reason for, and the patient (or guardian)
/// can end the renewals at any time by closing, which starts the cool-down.
///
/// Categories. A record's category, and the id of a Category-scoped grant, must be on a short
/// list the admin manages (`addCategory` / `removeCategory`; CategoryNotListed otherwise). Every
/// node of the chain, and anyone reading a public chain, sees a record's category next to its
/// patient's address, so the list must stay coarse (checkup, laboratory, imaging, prescription):
/// a category names a kind of document, never a condition, a test or a specialty ("hiv-test" or
/// "psychiatry" would disclose the diagnosis to every observer). Finer classification belongs
/// inside the encrypted record. Removing a category refuses new records and new Category grants
/// under it; records already registered keep it, and a Category grant already stored under it
/// stays in force, may change its terms and can be revoked.
interface IConsentRegistry {
    /// @notice What a consent covers.
    /// Record: `scopeId` is one record id. Category: `scopeId` is a listed category (bytes32, a
    /// short ASCII name left-aligned and zero-padded, e.g. "laboratory"). All: every record of the
    /// patient; `scopeId` must be zero.
    enum ScopeKind {
        Record,
        Category,
        All
    }

    /// @notice On which basis an access is allowed (`None` when it is not).
    enum Basis {
        None,
        Owner,
        Record,
        Category,
        All,
        Guardian,
        Emergency
    }

    /// @notice What a checkup centre signs (EIP-712 primary type `RecordAttestation`):
    /// `RecordAttestation(address patient,bytes32 category,bytes32 contentDigest,uint64 issuedAt,bytes32 custodySet,bytes32 shareCommitments)`.
    /// `contentDigest` is sha256(salt || plaintext result), with a fresh 32-byte salt that
    /// travels only inside the encrypted record, so an observer cannot test candidate results
    /// against it. `category` must be listed (see the contract-level notes).
    /// `custodySet` is the federation the centre split the record's data key across
    /// (`federation().custodySet`, zero while no federation is set: the single-gateway mode in
    /// which the uploading gateway wraps the key itself); `registerRecord` refuses any other.
    /// `shareCommitments` is keccak256(abi.encode(bytes32[] commitments)) over the custody
    /// manifest's per-share commitments (zero in the single-gateway mode): the record id binds
    /// them, so a reader detects a bad share and names its gateway.
    struct RecordAttestation {
        address patient;
        bytes32 category;
        bytes32 contentDigest;
        uint64 issuedAt;
        bytes32 custodySet;
        bytes32 shareCommitments;
    }

    /// @notice A registered record, as views return it.
    struct Record {
        address patient;
        uint64 issuedAt;
        address centre;
        bytes32 category;
        bytes32 contentDigest;
    }

    /// @notice A patient's (or guardian's) signed grant (EIP-712 primary type `GrantConsent`):
    /// `GrantConsent(address patient,address grantee,uint8 scopeKind,bytes32 scopeId,uint32 purposes,uint64 expiresAt,address signer,uint256 nonce,uint256 deadline)`.
    /// `signer` is the patient or the patient's guardian (an EOA or an ERC-1271 wallet).
    struct GrantRequest {
        address patient;
        address grantee;
        ScopeKind scopeKind;
        bytes32 scopeId;
        uint32 purposes;
        uint64 expiresAt;
        address signer;
        uint256 nonce;
        uint256 deadline;
    }

    /// @notice A patient's (or guardian's) signed revoke (EIP-712 primary type `RevokeConsent`):
    /// `RevokeConsent(address patient,address grantee,uint8 scopeKind,bytes32 scopeId,address signer,uint256 nonce,uint256 deadline)`.
    struct RevokeRequest {
        address patient;
        address grantee;
        ScopeKind scopeKind;
        bytes32 scopeId;
        address signer;
        uint256 nonce;
        uint256 deadline;
    }

    // ---------------------------------------------------------------- events

    /// @notice A record became live. The CID (CIDv1, base32) is in the data, never indexed.
    event RecordRegistered(
        bytes32 indexed recordId,
        address indexed patient,
        address indexed centre,
        bytes32 category,
        bytes32 contentDigest,
        uint64 issuedAt,
        string cid
    );

    /// @notice Consent was granted or its purposes / expiry changed. `actor` is the patient or guardian.
    event ConsentGranted(
        address indexed patient,
        address indexed grantee,
        ScopeKind scopeKind,
        bytes32 scopeId,
        uint32 purposes,
        uint64 expiresAt,
        address actor
    );

    /// @notice Consent was revoked. `actor` is the patient or guardian.
    event ConsentRevoked(
        address indexed patient, address indexed grantee, ScopeKind scopeKind, bytes32 scopeId, address actor
    );

    /// @notice The patient appointed a guardian; the guardianship epoch moved on by one.
    event GuardianSet(address indexed patient, address indexed guardian);

    /// @notice The patient removed their guardian, or replaced it (then GuardianSet follows in
    /// the same transaction); the guardianship epoch moved on by one, and every grant this
    /// guardian made for the patient ended (see the contract-level notes).
    event GuardianRemoved(address indexed patient, address indexed guardian);

    /// @notice An emergency institution opened break-glass access to a patient's records until `until`.
    event BreakGlassOpened(address indexed patient, address indexed institution, uint64 until, bytes32 reasonHash);

    /// @notice Break-glass access was closed early by the patient or guardian; the institution
    /// may not reopen for this patient before `reopensAt` (now + BREAK_GLASS_COOLDOWN).
    event BreakGlassClosed(
        address indexed patient, address indexed institution, address closedBy, uint64 reopensAt
    );

    /// @notice `signer` gave up its signing nonce `nonce` without using it: a `grantBySig` /
    /// `revokeBySig` signed with that nonce can no longer be submitted.
    event NonceBurned(address indexed signer, uint256 nonce);

    /// @notice A gateway anchored an access-log checkpoint (RFC 9162 tree size and root hash).
    event CheckpointAnchored(address indexed gateway, uint64 treeSize, bytes32 rootHash);

    /// @notice The admin listed `category`: records and Category-scoped grants may now use it.
    event CategoryAdded(bytes32 indexed category);

    /// @notice The admin took `category` off the list: no new record or Category-scoped grant
    /// may use it (existing records and grants are unaffected).
    event CategoryRemoved(bytes32 indexed category);

    /// @notice The admin set the custody federation: `gateways[i]` holds share i of every record
    /// uploaded from now on, sealed to `custodyKeys[i]` (a 33-byte compressed secp256k1 key);
    /// any `threshold` of them can release a record's key. `custodySet` is
    /// keccak256(abi.encode(threshold, gateways, custodyKeys)), zero for an empty federation.
    /// `urls[i]` is where clients reach `gateways[i]` (not part of `custodySet`).
    event FederationSet(
        uint8 threshold, bytes32 custodySet, address[] gateways, bytes[] custodyKeys, string[] urls
    );

    // ---------------------------------------------------------------- errors

    /// @notice The attestation's signer does not hold CENTRE_ROLE.
    error NotACentre(address signer);
    /// @notice The attestation names the zero address as patient.
    error ZeroPatient();
    /// @notice The record id is already registered.
    error RecordExists(bytes32 recordId);
    /// @notice The record id is not registered.
    error UnknownRecord(bytes32 recordId);
    /// @notice The CID is empty or longer than 128 bytes.
    error InvalidCid(uint256 length);
    /// @notice The grantee is the zero address or the patient themself.
    error InvalidGrantee(address grantee);
    /// @notice A Record scope names a record of another patient.
    error RecordNotOwned(bytes32 recordId, address patient, address owner);
    /// @notice An All scope with a non-zero id, or a Category scope with a zero id.
    error InvalidScope(ScopeKind scopeKind, bytes32 scopeId);
    /// @notice The purposes bit set is empty.
    error NoPurpose();
    /// @notice The expiry is not in the future.
    error ExpiryInPast(uint64 expiresAt, uint256 nowTimestamp);
    /// @notice The grant would change nothing (same purposes and expiry as in force).
    error ConsentUnchanged(address patient, address grantee, ScopeKind scopeKind, bytes32 scopeId);
    /// @notice There is no consent in force to revoke.
    error ConsentNotFound(address patient, address grantee, ScopeKind scopeKind, bytes32 scopeId);
    /// @notice The caller (or signer) is neither the patient nor the patient's guardian.
    error NotPatientOrGuardian(address account, address patient);
    /// @notice The signature's deadline has passed.
    error SignatureExpired(uint256 deadline, uint256 nowTimestamp);
    /// @notice The signature does not verify for the claimed signer under this contract's domain.
    error InvalidSignature(address signer);
    /// @notice The guardian is the zero address or the patient.
    error InvalidGuardian(address guardian);
    /// @notice The guardian is already appointed.
    error GuardianUnchanged(address patient, address guardian);
    /// @notice The patient has no guardian to remove.
    error NoGuardian(address patient);
    /// @notice A break-glass duration is zero or above MAX_BREAK_GLASS.
    error InvalidBreakGlassDuration(uint64 duration, uint64 maxDuration);
    /// @notice Break-glass by this institution for this patient is already open (no silent extension).
    error BreakGlassAlreadyOpen(address patient, address institution, uint64 until);
    /// @notice No open break-glass to close.
    error BreakGlassNotOpen(address patient, address institution);
    /// @notice The patient (or guardian) closed this institution's break-glass less than
    /// BREAK_GLASS_COOLDOWN ago; it may reopen at `reopensAt`.
    error BreakGlassCoolingDown(address patient, address institution, uint64 reopensAt);
    /// @notice The reason hash is that of this institution's previous opening for the patient.
    error BreakGlassReasonReused(address patient, address institution, bytes32 reasonHash);
    /// @notice The reason hash is zero.
    error MissingReason();
    /// @notice The purpose id is out of range (0..31).
    error InvalidPurpose(uint8 purpose);
    /// @notice A checkpoint's tree size does not strictly grow for this gateway.
    error CheckpointNotGrowing(address gateway, uint64 treeSize, uint64 lastTreeSize);
    /// @notice The category is not on the admin's list (a record's category, a Category-scoped
    /// grant's id, or a category to remove).
    error CategoryNotListed(bytes32 category);
    /// @notice The category is already on the list.
    error CategoryAlreadyListed(bytes32 category);
    /// @notice The zero category cannot be listed.
    error ZeroCategory();
    /// @notice The attestation names a custody set other than the federation's current one.
    error CustodySetNotCurrent(bytes32 attested, bytes32 current);
    /// @notice A federation needs 1 <= threshold <= members (or no members and threshold 0).
    error InvalidThreshold(uint8 threshold, uint256 members);
    /// @notice Federation arrays of different lengths, or more than 16 members.
    error InvalidFederation(uint256 gateways, uint256 custodyKeys, uint256 urls);
    /// @notice A federation member must hold GATEWAY_ROLE.
    error NotAGateway(address account);
    /// @notice A custody key must be a 33-byte compressed secp256k1 public key (0x02 / 0x03 prefix).
    error InvalidCustodyKey(address gateway);
    /// @notice A gateway (or a custody key) appears twice in the federation.
    error DuplicateCustodian(address gateway);
    /// @notice GATEWAY_ROLE cannot be taken from a federation member: set a federation without it first.
    error FederationMember(address gateway);
    /// @notice A member URL must be 1..200 bytes.
    error InvalidUrl(address gateway, uint256 length);

    // ---------------------------------------------------------------- constants

    /// @notice The role of checkup centres: their EIP-712 attestations make records.
    function CENTRE_ROLE() external view returns (bytes32);

    /// @notice The role of gateways: they register records and anchor access-log checkpoints.
    function GATEWAY_ROLE() external view returns (bytes32);

    /// @notice The role of emergency institutions: they may open break-glass access.
    function EMERGENCY_ROLE() external view returns (bytes32);

    /// @notice Purpose id (a bit position in a purposes set): treatment.
    function TREATMENT() external view returns (uint8);

    /// @notice Purpose id: research.
    function RESEARCH() external view returns (uint8);

    /// @notice Purpose id: insurance.
    function INSURANCE() external view returns (uint8);

    /// @notice Purpose id: public health.
    function PUBLIC_HEALTH() external view returns (uint8);

    /// @notice Purpose id: emergency.
    function EMERGENCY() external view returns (uint8);

    /// @notice The longest break-glass access, in seconds.
    function MAX_BREAK_GLASS() external view returns (uint64);

    /// @notice How long, after the patient or guardian closes an institution's break-glass, that
    /// institution cannot reopen it for that patient, in seconds. 7 days: a close is the
    /// patient's explicit objection and outlasts a typical acute episode; other emergency
    /// institutions are not affected.
    function BREAK_GLASS_COOLDOWN() external view returns (uint64);

    // ---------------------------------------------------------------- categories

    /// @notice Lists `category` (DEFAULT_ADMIN_ROLE only). Keep it coarse: see the contract-level
    /// notes on categories.
    function addCategory(bytes32 category) external;

    /// @notice Takes `category` off the list (DEFAULT_ADMIN_ROLE only).
    function removeCategory(bytes32 category) external;

    // ---------------------------------------------------------------- records

    /// @notice Sets the whole custody federation in one step (DEFAULT_ADMIN_ROLE only): members,
    /// their custody keys and URLs, and the threshold. Records uploaded later must attest its
    /// `custodySet`; records uploaded earlier keep the custody set they were split under.
    function setFederation(
        uint8 threshold,
        address[] calldata gateways,
        bytes[] calldata custodyKeys,
        string[] calldata urls
    ) external;

    /// @notice The federation in force, in one call.
    function federation()
        external
        view
        returns (
            uint8 threshold,
            bytes32 custodySet,
            address[] memory gateways,
            bytes[] memory custodyKeys,
            string[] memory urls
        );

    /// @notice Registers a record attested by a centre; callable by GATEWAY_ROLE only.
    /// The record id is the EIP-712 digest of the attestation (unique per chain, contract and attestation).
    function registerRecord(RecordAttestation calldata attestation, bytes calldata centreSignature, string calldata cid)
        external
        returns (bytes32 recordId);

    // ---------------------------------------------------------------- consent

    /// @notice Grants (or changes) consent from msg.sender as patient. The grant is the
    /// patient's own: guardian changes do not end it.
    function grant(address grantee, ScopeKind scopeKind, bytes32 scopeId, uint32 purposes, uint64 expiresAt) external;

    /// @notice Revokes consent from msg.sender as patient.
    function revoke(address grantee, ScopeKind scopeKind, bytes32 scopeId) external;

    /// @notice Grants on behalf of `patient`; msg.sender must be the patient (a patient grant)
    /// or the patient's guardian (a guardian grant: it ends when this guardian is removed or
    /// replaced, see the contract-level notes).
    function grantFor(
        address patient,
        address grantee,
        ScopeKind scopeKind,
        bytes32 scopeId,
        uint32 purposes,
        uint64 expiresAt
    ) external;

    /// @notice Revokes on behalf of `patient`; msg.sender must be the patient's guardian.
    function revokeFor(address patient, address grantee, ScopeKind scopeKind, bytes32 scopeId) external;

    /// @notice Grants with the patient's (or guardian's) EIP-712 signature; anyone may relay.
    /// Signed by the guardian, it is a guardian grant (it ends with that guardianship).
    function grantBySig(GrantRequest calldata request, bytes calldata signature) external;

    /// @notice Revokes with the patient's (or guardian's) EIP-712 signature; anyone may relay.
    function revokeBySig(RevokeRequest calldata request, bytes calldata signature) external;

    /// @notice msg.sender gives up its next signing nonce, which must be `nonce` (else
    /// InvalidAccountNonce): a request signed with it, held back by a relayer, can then never be
    /// submitted. Burn once per outstanding signed request (each used the next nonce in turn).
    function burnNonce(uint256 nonce) external;

    // ---------------------------------------------------------------- guardian

    /// @notice msg.sender (a patient) appoints `guardian`, replacing any previous one; replacing
    /// emits GuardianRemoved for the previous guardian (whose grants end), then GuardianSet.
    function setGuardian(address guardian) external;

    /// @notice msg.sender (a patient) removes their guardian; every grant it made ends.
    function removeGuardian() external;

    // ---------------------------------------------------------------- break-glass

    /// @notice Opens emergency access to `patient`'s records for `duration` seconds (<= MAX_BREAK_GLASS);
    /// EMERGENCY_ROLE only. Covers purposes TREATMENT and EMERGENCY. Refused while open
    /// (BreakGlassAlreadyOpen), within BREAK_GLASS_COOLDOWN of the patient or guardian closing it
    /// (BreakGlassCoolingDown), and with the reason hash of the previous opening
    /// (BreakGlassReasonReused).
    function openBreakGlass(address patient, uint64 duration, bytes32 reasonHash) external;

    /// @notice The patient (or guardian) closes an institution's break-glass access early; that
    /// institution may not reopen for the patient within BREAK_GLASS_COOLDOWN.
    function closeBreakGlass(address patient, address institution) external;

    // ---------------------------------------------------------------- access log

    /// @notice A gateway anchors its access log's checkpoint; tree size strictly grows per gateway.
    function anchorCheckpoint(uint64 treeSize, bytes32 rootHash) external;

    // ---------------------------------------------------------------- views

    /// @notice Whether `grantee` may read `recordId` of `patient` for `purpose` now.
    function hasConsent(address patient, address grantee, bytes32 recordId, uint8 purpose) external view returns (bool);

    /// @notice On which basis `grantee` may read, and until when (0 for Owner / Guardian: no expiry).
    function accessBasis(address patient, address grantee, bytes32 recordId, uint8 purpose)
        external
        view
        returns (Basis basis, uint64 until);

    /// @notice `accessBasis`, together with the ledger position the answer was computed on: the
    /// number of events folded into the event digest so far, and `block.number` /
    /// `block.timestamp` as the call saw them.
    /// @dev Why: a node answering an `eth_call` "at block N" may evaluate it on a state that
    /// already holds the next block's transactions (anvil does while that block is being mined,
    /// before its block number moves on; pinning by block hash does not help), so the block a
    /// caller asked for does not identify the state that was evaluated. Every change to the
    /// state this view reads (records, consents, guardians, break-glass) emits an event, and
    /// every event is folded into the digest, so `eventCount` names that state exactly, whatever
    /// block number the node claims: an auditor replays the events, rebuilds the state after
    /// exactly `eventCount` events and checks the answer at `timestamp` (the time expiries were
    /// compared with). `basis` and `until` are exactly what `accessBasis` returns.
    /// @return basis On which basis `grantee` may read (`None` when not).
    /// @return until Until when (0 for None / Owner / Guardian).
    /// @return eventCount The event digest's count in the evaluated state (see `eventDigest`).
    /// @return blockNumber `block.number` during the call.
    /// @return timestamp `block.timestamp` during the call.
    function accessDecision(address patient, address grantee, bytes32 recordId, uint8 purpose)
        external
        view
        returns (Basis basis, uint64 until, uint64 eventCount, uint64 blockNumber, uint64 timestamp);

    /// @notice The consent in force for one (patient, grantee, scope); zeroes when none (expired ones are returned as stored).
    /// A guardian grant whose guardianship ended reads as zeroes (it is not in force, and
    /// revoking it reverts ConsentNotFound).
    function consentOf(address patient, address grantee, ScopeKind scopeKind, bytes32 scopeId)
        external
        view
        returns (uint32 purposes, uint64 expiresAt);

    /// @notice A registered record; reverts UnknownRecord when absent.
    function recordOf(bytes32 recordId) external view returns (Record memory);

    /// @notice The patient's guardian, or the zero address.
    function guardianOf(address patient) external view returns (address);

    /// @notice When break-glass by `institution` for `patient` ends (0 when never opened or closed).
    function breakGlassUntil(address patient, address institution) external view returns (uint64);

    /// @notice The earliest time `institution` may open break-glass for `patient` again: the end
    /// of the open window or of the cool-down after a close, whichever is later (a time at or
    /// before now: it may open now, with a reason other than its previous one).
    function breakGlassReopensAt(address patient, address institution)
        external
        view
        returns (uint64);

    /// @notice Whether `category` is on the list.
    function isCategory(bytes32 category) external view returns (bool);

    /// @notice The last checkpoint a gateway anchored.
    function checkpointOf(address gateway) external view returns (uint64 treeSize, bytes32 rootHash);

    /// @notice The running event digest (see the contract-level notes) and the number of events folded.
    function eventDigest() external view returns (bytes24 head, uint64 count);

    /// @notice The EIP-712 digest (= record id) of an attestation.
    function attestationDigest(RecordAttestation calldata attestation) external view returns (bytes32);
}
