// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {Hashes} from "@openzeppelin/contracts/utils/cryptography/Hashes.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";

import {IConsentRegistry} from "./IConsentRegistry.sol";
import {EventDigest} from "./libraries/EventDigest.sol";

/// @title Consent Ledger registry (implementation of IConsentRegistry)
/// @notice See IConsentRegistry for the behaviour and the event digest.
/// @dev Decisions the interface leaves open, fixed here:
/// - Scope key: `keccak256(abi.encode(uint8(scopeKind), scopeId))`, hashed in the scratch space
///   by OpenZeppelin's `Hashes.efficientKeccak256` (called directly: a wrapper function costs a
///   jump, 70 gas per key, and a denied `hasConsent` computes three).
/// - A grant is in force while `block.timestamp < expiresAt`; a new grant needs
///   `expiresAt > block.timestamp` (else ExpiryInPast). `type(uint64).max` means "no expiry".
/// - Revoking a stored but expired grant is allowed: it is still stored, and revoke deletes it
///   (so `consentOf` returns zeroes afterwards). ConsentNotFound means "nothing stored", or a
///   guardian grant whose guardianship ended (see below).
/// - `grantFor` / `revokeFor` and `closeBreakGlass` accept the patient as well as the guardian.
/// - `setGuardian` replacing a guardian emits GuardianRemoved (old) then GuardianSet (new), and
///   bumps the guardianship epoch once for each (see IConsentRegistry): one slot holds the
///   guardian and its epoch, so a decision reads both with one SLOAD, and only for a guardian
///   grant (a patient grant's stamp is zero and needs no look-up).
/// - A stale guardian grant (stamp != the patient's epoch) stays in storage until overwritten; it
///   is never in force, `consentOf` returns zeroes for it and revoking it is ConsentNotFound, so
///   no event ever describes it as live. Ending every grant of a guardian costs O(1) at removal.
/// - BREAK_GLASS_COOLDOWN is 7 days: closing is the patient's (or guardian's) explicit
///   objection, and 7 days covers a typical acute episode, so the same institution cannot
///   override it during that episode, while a new emergency a week later, or any other
///   EMERGENCY_ROLE institution at any time, is still served. After a lapse there is no gap (an
///   unconscious patient still in care must not be cut off), but the reason must change: the
///   last reason's first 16 bytes are kept in the break-glass slot (until, cool-down end and
///   reason share one slot); 128 bits suffice, the institution chooses its own reasons.
/// - Read precedence (accessBasis): Owner, Record, Category, All, Guardian, Emergency — the first
///   that applies is returned. A record of another patient, or an unknown record, gives None.
/// - A guardian may read every record of the patient for every purpose (it could grant itself
///   anyway); break-glass covers purposes TREATMENT and EMERGENCY only, and does not re-check
///   EMERGENCY_ROLE at read time (the patient or guardian closes it; it lapses after at most 24 h).
/// - Signatures: `block.timestamp <= deadline` is valid (as in ERC-2612); the nonce is consumed
///   (checked) before the signature is verified, so a replay reverts InvalidAccountNonce. A
///   signature that ECDSA-recovers to the signer is accepted at once; otherwise a signer with code
///   is asked through ERC-1271 (OpenZeppelin SignatureChecker). This is isValidSignatureNow with
///   the two attempts swapped, which spares EOAs a cold EXTCODESIZE (2,600 gas).
/// - Records: the centre's attestation is checked with ECDSA (centres are EOAs); malformed
///   signatures revert with OpenZeppelin's ECDSAInvalidSignature* errors.
/// - Events: emitted only through `EventDigest.emitAndFold`, which logs the very bytes it folds
///   (the event selector, the indexed arguments, then the ABI-encoded data); OpenZeppelin's own
///   RoleGranted / RoleRevoked / RoleAdminChanged are folded by the `_grantRole`, `_revokeRole`
///   and `_setRoleAdmin` overrides.
/// - Block number and timestamp are cast to uint64 without SafeCast (they are far below 2^64):
///   SafeCast (or OpenZeppelin's Time) would add a revert path that can never be taken, and its
///   SafeCastOverflowedUintDowncast error to the ABI every client decodes.
/// - The admin is plain AccessControl's DEFAULT_ADMIN_ROLE, not AccessControlDefaultAdminRules:
///   that extension emits DefaultAdminTransferScheduled / ...Canceled and
///   DefaultAdminDelayChangeScheduled / ...Canceled from private functions, the Canceled ones
///   only on some paths, so the registry could fold them only by re-deriving OpenZeppelin's
///   private conditions, and a missed fold would break the event digest the audit checks.
contract ConsentRegistry is IConsentRegistry, AccessControl, EIP712, Nonces {
    using EventDigest for EventDigest.Digest;

    // ---------------------------------------------------------------- types

    /// @dev One consent, packed in one slot (20 bytes). `guardianEpoch` is 0 for the patient's
    /// own grant, else the guardianship epoch the granting guardian was appointed in (>= 1).
    struct Grant {
        uint32 purposes;
        uint64 expiresAt;
        uint64 guardianEpoch;
    }

    /// @dev A patient's guardian and guardianship epoch, in one slot (28 bytes). The epoch counts
    /// the patient's GuardianSet and GuardianRemoved events; it survives removal.
    struct Guardianship {
        address guardian;
        uint64 epoch;
    }

    /// @dev One institution's break-glass for one patient, in one slot (32 bytes): the open
    /// window's end (0 once closed), the end of the cool-down after a close, and the first 16
    /// bytes of the last opening's reason hash.
    struct BreakGlass {
        uint64 until;
        uint64 reopensAt;
        bytes16 reason;
    }

    /// @dev A gateway's last anchored access-log checkpoint.
    struct Checkpoint {
        uint64 treeSize;
        bytes32 rootHash;
    }

    // ---------------------------------------------------------------- constants

    /// @inheritdoc IConsentRegistry
    bytes32 public constant CENTRE_ROLE = keccak256("CENTRE_ROLE");
    /// @inheritdoc IConsentRegistry
    bytes32 public constant GATEWAY_ROLE = keccak256("GATEWAY_ROLE");
    /// @inheritdoc IConsentRegistry
    bytes32 public constant EMERGENCY_ROLE = keccak256("EMERGENCY_ROLE");

    /// @inheritdoc IConsentRegistry
    uint8 public constant TREATMENT = 0;
    /// @inheritdoc IConsentRegistry
    uint8 public constant RESEARCH = 1;
    /// @inheritdoc IConsentRegistry
    uint8 public constant INSURANCE = 2;
    /// @inheritdoc IConsentRegistry
    uint8 public constant PUBLIC_HEALTH = 3;
    /// @inheritdoc IConsentRegistry
    uint8 public constant EMERGENCY = 4;

    /// @inheritdoc IConsentRegistry
    uint64 public constant MAX_BREAK_GLASS = 24 hours;
    /// @inheritdoc IConsentRegistry
    uint64 public constant BREAK_GLASS_COOLDOWN = 7 days;

    /// @notice The highest purpose id a bit set of 32 bits can hold.
    uint8 private constant _MAX_PURPOSE = 31;
    /// @notice The most gateways a federation may have.
    uint256 private constant _MAX_CUSTODIANS = 16;
    /// @notice The longest member URL accepted, in bytes.
    uint256 private constant _MAX_URL_LENGTH = 200;
    /// @notice The longest CID accepted, in bytes.
    uint256 private constant _MAX_CID_LENGTH = 128;
    /// @dev Each scope kind as the first word of its scope key (see the contract-level notes).
    bytes32 private constant _RECORD_SCOPE = bytes32(uint256(ScopeKind.Record));
    bytes32 private constant _CATEGORY_SCOPE = bytes32(uint256(ScopeKind.Category));
    bytes32 private constant _ALL_SCOPE = bytes32(uint256(ScopeKind.All));
    /// @dev Purposes break-glass access covers.
    uint32 private constant _BREAK_GLASS_PURPOSES = uint32((1 << TREATMENT) | (1 << EMERGENCY));

    bytes32 private constant _RECORD_ATTESTATION_TYPEHASH =
        keccak256(
            "RecordAttestation(address patient,bytes32 category,bytes32 contentDigest,uint64 issuedAt,bytes32 custodySet,bytes32 shareCommitments)"
        );
    bytes32 private constant _GRANT_CONSENT_TYPEHASH = keccak256(
        "GrantConsent(address patient,address grantee,uint8 scopeKind,bytes32 scopeId,uint32 purposes,uint64 expiresAt,address signer,uint256 nonce,uint256 deadline)"
    );
    bytes32 private constant _REVOKE_CONSENT_TYPEHASH = keccak256(
        "RevokeConsent(address patient,address grantee,uint8 scopeKind,bytes32 scopeId,address signer,uint256 nonce,uint256 deadline)"
    );

    // ---------------------------------------------------------------- state

    mapping(bytes32 recordId => Record) private _records;
    // Written in _grant and _revoke with one SSTORE of the whole slot through `stored.slot` (a
    // word compare and one write instead of three masked field writes keeps a new grant under
    // its 55,000 gas budget); slither does not follow assembly stores, hence "never initialized".
    // slither-disable-next-line uninitialized-state
    mapping(address patient => mapping(bytes32 scope => mapping(address grantee => Grant))) private _grants;
    mapping(address patient => Guardianship) private _guardians;
    mapping(address patient => mapping(address institution => BreakGlass)) private _breakGlass;
    mapping(address gateway => Checkpoint) private _checkpoints;
    mapping(bytes32 category => bool listed) private _categories;
    EventDigest.Digest private _digest;
    // The custody federation (see setFederation): members in share order, their keys and URLs.
    address[] private _custodians;
    bytes[] private _custodyKeys;
    string[] private _custodianUrls;
    mapping(address gateway => bool) private _isCustodian;
    uint8 private _custodyThreshold;
    bytes32 private _custodySet;

    // ---------------------------------------------------------------- constructor

    /// @param admin Receives DEFAULT_ADMIN_ROLE (admits centres, gateways, emergency institutions,
    /// categories).
    /// @param categories The categories listed at deployment (each emits CategoryAdded).
    constructor(address admin, bytes32[] memory categories) EIP712("ConsentLedger", "1") {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        for (uint256 i = 0; i < categories.length; ++i) {
            _addCategory(categories[i]);
        }
    }

    // ---------------------------------------------------------------- external: categories

    /// @inheritdoc IConsentRegistry
    function addCategory(bytes32 category) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _addCategory(category);
    }

    /// @inheritdoc IConsentRegistry
    function removeCategory(bytes32 category) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (!_categories[category]) revert CategoryNotListed(category);
        _categories[category] = false;
        _digest.emitAndFold(2, abi.encode(CategoryRemoved.selector, category));
    }

    // ---------------------------------------------------------------- external: records

    /// @inheritdoc IConsentRegistry
    function registerRecord(RecordAttestation calldata attestation, bytes calldata centreSignature, string calldata cid)
        external
        onlyRole(GATEWAY_ROLE)
        returns (bytes32 recordId)
    {
        if (bytes(cid).length == 0 || bytes(cid).length > _MAX_CID_LENGTH) revert InvalidCid(bytes(cid).length);
        if (attestation.patient == address(0)) revert ZeroPatient();
        if (!_categories[attestation.category]) revert CategoryNotListed(attestation.category);
        bytes32 current = _custodySet;
        if (attestation.custodySet != current) revert CustodySetNotCurrent(attestation.custodySet, current);
        recordId = _attestationDigest(attestation);
        address centre = ECDSA.recover(recordId, centreSignature);
        if (!hasRole(CENTRE_ROLE, centre)) revert NotACentre(centre);
        Record storage record = _records[recordId];
        if (record.patient != address(0)) revert RecordExists(recordId);

        record.patient = attestation.patient;
        record.issuedAt = attestation.issuedAt;
        record.centre = centre;
        record.category = attestation.category;
        record.contentDigest = attestation.contentDigest;
        _digest.emitAndFold(
            4,
            bytes.concat(
                abi.encode(RecordRegistered.selector, recordId, attestation.patient, centre),
                abi.encode(attestation.category, attestation.contentDigest, attestation.issuedAt, cid)
            )
        );
    }

    // ---------------------------------------------------------------- external: federation

    /// @inheritdoc IConsentRegistry
    function setFederation(
        uint8 threshold,
        address[] calldata gateways,
        bytes[] calldata custodyKeys,
        string[] calldata urls
    ) external onlyRole(DEFAULT_ADMIN_ROLE) {
        uint256 n = gateways.length;
        if (n != custodyKeys.length || n != urls.length || n > _MAX_CUSTODIANS) {
            revert InvalidFederation(n, custodyKeys.length, urls.length);
        }
        if (n == 0 ? threshold != 0 : (threshold == 0 || threshold > n)) revert InvalidThreshold(threshold, n);
        address[] memory previous = _custodians;
        for (uint256 i = 0; i < previous.length; ++i) {
            _isCustodian[previous[i]] = false;
        }
        for (uint256 i = 0; i < n; ++i) {
            address gateway = gateways[i];
            bytes calldata key = custodyKeys[i];
            if (!hasRole(GATEWAY_ROLE, gateway)) revert NotAGateway(gateway);
            if (key.length != 33 || (key[0] != 0x02 && key[0] != 0x03)) revert InvalidCustodyKey(gateway);
            uint256 urlLength = bytes(urls[i]).length;
            if (urlLength == 0 || urlLength > _MAX_URL_LENGTH) revert InvalidUrl(gateway, urlLength);
            if (_isCustodian[gateway]) revert DuplicateCustodian(gateway);
            _isCustodian[gateway] = true;
            for (uint256 j = 0; j < i; ++j) {
                if (keccak256(custodyKeys[j]) == keccak256(key)) revert DuplicateCustodian(gateway);
            }
        }
        bytes32 custodySet = n == 0 ? bytes32(0) : keccak256(abi.encode(threshold, gateways, custodyKeys));
        _custodians = gateways;
        delete _custodyKeys;
        delete _custodianUrls;
        for (uint256 i = 0; i < n; ++i) {
            _custodyKeys.push(custodyKeys[i]);
            _custodianUrls.push(urls[i]);
        }
        _custodyThreshold = threshold;
        _custodySet = custodySet;
        _digest.emitAndFold(
            1,
            bytes.concat(
                abi.encode(FederationSet.selector), abi.encode(threshold, custodySet, gateways, custodyKeys, urls)
            )
        );
    }

    // ---------------------------------------------------------------- external: consent

    /// @inheritdoc IConsentRegistry
    function grant(address grantee, ScopeKind scopeKind, bytes32 scopeId, uint32 purposes, uint64 expiresAt)
        external
    {
        _grant(msg.sender, grantee, scopeKind, scopeId, purposes, expiresAt, msg.sender, 0);
    }

    /// @inheritdoc IConsentRegistry
    function revoke(address grantee, ScopeKind scopeKind, bytes32 scopeId) external {
        _revoke(msg.sender, grantee, scopeKind, scopeId, msg.sender);
    }

    /// @inheritdoc IConsentRegistry
    function grantFor(
        address patient,
        address grantee,
        ScopeKind scopeKind,
        bytes32 scopeId,
        uint32 purposes,
        uint64 expiresAt
    ) external {
        uint64 epoch = _checkPatientOrGuardian(msg.sender, patient);
        _grant(patient, grantee, scopeKind, scopeId, purposes, expiresAt, msg.sender, epoch);
    }

    /// @inheritdoc IConsentRegistry
    function revokeFor(address patient, address grantee, ScopeKind scopeKind, bytes32 scopeId) external {
        _checkPatientOrGuardian(msg.sender, patient);
        _revoke(patient, grantee, scopeKind, scopeId, msg.sender);
    }

    /// @inheritdoc IConsentRegistry
    function grantBySig(GrantRequest calldata request, bytes calldata signature) external {
        uint64 epoch = _checkSignedRequest(
            request.signer,
            request.patient,
            request.nonce,
            request.deadline,
            keccak256(abi.encode(_GRANT_CONSENT_TYPEHASH, request)),
            signature
        );
        _grant(
            request.patient,
            request.grantee,
            request.scopeKind,
            request.scopeId,
            request.purposes,
            request.expiresAt,
            request.signer,
            epoch
        );
    }

    /// @inheritdoc IConsentRegistry
    function revokeBySig(RevokeRequest calldata request, bytes calldata signature) external {
        _checkSignedRequest(
            request.signer,
            request.patient,
            request.nonce,
            request.deadline,
            keccak256(abi.encode(_REVOKE_CONSENT_TYPEHASH, request)),
            signature
        );
        _revoke(request.patient, request.grantee, request.scopeKind, request.scopeId, request.signer);
    }

    /// @inheritdoc IConsentRegistry
    function burnNonce(uint256 nonce) external {
        _useCheckedNonce(msg.sender, nonce);
        _digest.emitAndFold(2, abi.encode(NonceBurned.selector, msg.sender, nonce));
    }

    // ---------------------------------------------------------------- external: guardian

    /// @inheritdoc IConsentRegistry
    function setGuardian(address guardian) external {
        if (guardian == address(0) || guardian == msg.sender) revert InvalidGuardian(guardian);
        Guardianship memory current = _guardians[msg.sender];
        address previous = current.guardian;
        if (previous == guardian) revert GuardianUnchanged(msg.sender, guardian);

        // Cannot overflow: two bumps per transaction at most, 2^64 transactions are out of reach.
        unchecked {
            _guardians[msg.sender] =
                Guardianship({guardian: guardian, epoch: current.epoch + (previous == address(0) ? 1 : 2)});
        }
        if (previous != address(0)) {
            _digest.emitAndFold(3, abi.encode(GuardianRemoved.selector, msg.sender, previous));
        }
        _digest.emitAndFold(3, abi.encode(GuardianSet.selector, msg.sender, guardian));
    }

    /// @inheritdoc IConsentRegistry
    function removeGuardian() external {
        Guardianship memory current = _guardians[msg.sender];
        address guardian = current.guardian;
        if (guardian == address(0)) revert NoGuardian(msg.sender);

        // Cannot overflow: see setGuardian. The epoch stays, so a re-appointment moves past it.
        unchecked {
            _guardians[msg.sender] = Guardianship({guardian: address(0), epoch: current.epoch + 1});
        }
        _digest.emitAndFold(3, abi.encode(GuardianRemoved.selector, msg.sender, guardian));
    }

    // ---------------------------------------------------------------- external: break-glass

    /// @inheritdoc IConsentRegistry
    function openBreakGlass(address patient, uint64 duration, bytes32 reasonHash)
        external
        onlyRole(EMERGENCY_ROLE)
    {
        if (patient == address(0)) revert ZeroPatient();
        if (duration == 0 || duration > MAX_BREAK_GLASS) revert InvalidBreakGlassDuration(duration, MAX_BREAK_GLASS);
        if (reasonHash == bytes32(0)) revert MissingReason();
        BreakGlass memory current = _breakGlass[patient][msg.sender];
        if (block.timestamp < current.until) revert BreakGlassAlreadyOpen(patient, msg.sender, current.until);
        if (block.timestamp < current.reopensAt) {
            revert BreakGlassCoolingDown(patient, msg.sender, current.reopensAt);
        }
        // A previous opening left `until` (or, once closed, `reopensAt`) non-zero.
        bool openedBefore = current.until != 0 || current.reopensAt != 0;
        if (openedBefore && bytes16(reasonHash) == current.reason) {
            revert BreakGlassReasonReused(patient, msg.sender, reasonHash);
        }

        uint64 until;
        // Cannot overflow: block.timestamp is far below 2^64 - MAX_BREAK_GLASS, and duration <= MAX_BREAK_GLASS.
        unchecked {
            until = uint64(block.timestamp) + duration;
        }
        _breakGlass[patient][msg.sender] =
            BreakGlass({until: until, reopensAt: current.reopensAt, reason: bytes16(reasonHash)});
        _digest.emitAndFold(3, abi.encode(BreakGlassOpened.selector, patient, msg.sender, until, reasonHash));
    }

    /// @inheritdoc IConsentRegistry
    function closeBreakGlass(address patient, address institution) external {
        _checkPatientOrGuardian(msg.sender, patient);
        BreakGlass storage stored = _breakGlass[patient][institution];
        if (block.timestamp >= stored.until) revert BreakGlassNotOpen(patient, institution);

        uint64 reopensAt;
        // Cannot overflow: block.timestamp is far below 2^64 - BREAK_GLASS_COOLDOWN.
        unchecked {
            reopensAt = uint64(block.timestamp) + BREAK_GLASS_COOLDOWN;
        }
        stored.until = 0;
        stored.reopensAt = reopensAt;
        _digest.emitAndFold(3, abi.encode(BreakGlassClosed.selector, patient, institution, msg.sender, reopensAt));
    }

    // ---------------------------------------------------------------- external: access log

    /// @inheritdoc IConsentRegistry
    function anchorCheckpoint(uint64 treeSize, bytes32 rootHash) external onlyRole(GATEWAY_ROLE) {
        Checkpoint storage checkpoint = _checkpoints[msg.sender];
        uint64 last = checkpoint.treeSize;
        if (treeSize <= last) revert CheckpointNotGrowing(msg.sender, treeSize, last);

        checkpoint.treeSize = treeSize;
        checkpoint.rootHash = rootHash;
        _digest.emitAndFold(2, abi.encode(CheckpointAnchored.selector, msg.sender, treeSize, rootHash));
    }

    // ---------------------------------------------------------------- external: views

    /// @inheritdoc IConsentRegistry
    function hasConsent(address patient, address grantee, bytes32 recordId, uint8 purpose)
        external
        view
        returns (bool)
    {
        (Basis basis,) = _accessBasis(patient, grantee, recordId, purpose);
        return basis != Basis.None;
    }

    /// @inheritdoc IConsentRegistry
    function accessBasis(address patient, address grantee, bytes32 recordId, uint8 purpose)
        external
        view
        returns (Basis basis, uint64 until)
    {
        return _accessBasis(patient, grantee, recordId, purpose);
    }

    /// @inheritdoc IConsentRegistry
    function accessDecision(address patient, address grantee, bytes32 recordId, uint8 purpose)
        external
        view
        returns (Basis basis, uint64 until, uint64 eventCount, uint64 blockNumber, uint64 timestamp)
    {
        (basis, until) = _accessBasis(patient, grantee, recordId, purpose);
        eventCount = _digest.count;
        // Cannot truncate: block numbers and timestamps are far below 2^64.
        blockNumber = uint64(block.number);
        timestamp = uint64(block.timestamp);
    }

    /// @inheritdoc IConsentRegistry
    function consentOf(address patient, address grantee, ScopeKind scopeKind, bytes32 scopeId)
        external
        view
        returns (uint32 purposes, uint64 expiresAt)
    {
        bytes32 scope = Hashes.efficientKeccak256(bytes32(uint256(scopeKind)), scopeId);
        Grant memory stored = _grants[patient][scope][grantee];
        if (!_guardianshipHolds(patient, stored.guardianEpoch)) return (0, 0);
        return (stored.purposes, stored.expiresAt);
    }

    /// @inheritdoc IConsentRegistry
    function recordOf(bytes32 recordId) external view returns (Record memory record) {
        record = _records[recordId];
        if (record.patient == address(0)) revert UnknownRecord(recordId);
    }

    /// @inheritdoc IConsentRegistry
    function guardianOf(address patient) external view returns (address) {
        return _guardians[patient].guardian;
    }

    /// @inheritdoc IConsentRegistry
    function breakGlassUntil(address patient, address institution) external view returns (uint64) {
        return _breakGlass[patient][institution].until;
    }

    /// @inheritdoc IConsentRegistry
    function breakGlassReopensAt(address patient, address institution) external view returns (uint64) {
        BreakGlass memory stored = _breakGlass[patient][institution];
        return stored.until > stored.reopensAt ? stored.until : stored.reopensAt;
    }

    /// @inheritdoc IConsentRegistry
    function isCategory(bytes32 category) external view returns (bool) {
        return _categories[category];
    }

    /// @inheritdoc IConsentRegistry
    function checkpointOf(address gateway) external view returns (uint64 treeSize, bytes32 rootHash) {
        Checkpoint storage checkpoint = _checkpoints[gateway];
        return (checkpoint.treeSize, checkpoint.rootHash);
    }

    /// @inheritdoc IConsentRegistry
    function federation()
        external
        view
        returns (
            uint8 threshold,
            bytes32 custodySet,
            address[] memory gateways,
            bytes[] memory custodyKeys,
            string[] memory urls
        )
    {
        return (_custodyThreshold, _custodySet, _custodians, _custodyKeys, _custodianUrls);
    }

    /// @inheritdoc IConsentRegistry
    function eventDigest() external view returns (bytes24 head, uint64 count) {
        EventDigest.Digest memory digest = _digest;
        return (digest.head, digest.count);
    }

    /// @inheritdoc IConsentRegistry
    function attestationDigest(RecordAttestation calldata attestation) external view returns (bytes32) {
        return _attestationDigest(attestation);
    }

    // ---------------------------------------------------------------- public

    /// @inheritdoc AccessControl
    function supportsInterface(bytes4 interfaceId) public view override returns (bool) {
        return interfaceId == type(IConsentRegistry).interfaceId || super.supportsInterface(interfaceId);
    }

    // ---------------------------------------------------------------- internal

    /// @dev OpenZeppelin's grant, with its RoleGranted(role, account, sender) folded into the digest.
    function _grantRole(bytes32 role, address account) internal override returns (bool granted) {
        granted = super._grantRole(role, account);
        if (granted) _digest.fold(abi.encode(RoleGranted.selector, role, account, _msgSender()));
    }

    /// @dev OpenZeppelin's revoke, with its RoleRevoked(role, account, sender) folded into the digest.
    /// A federation member keeps GATEWAY_ROLE until a federation without it is set.
    function _revokeRole(bytes32 role, address account) internal override returns (bool revoked) {
        if (role == GATEWAY_ROLE && _isCustodian[account]) revert FederationMember(account);
        revoked = super._revokeRole(role, account);
        if (revoked) _digest.fold(abi.encode(RoleRevoked.selector, role, account, _msgSender()));
    }

    /// @dev OpenZeppelin's role-admin change, with its RoleAdminChanged folded (unused today; keeps
    /// the "every event is folded" invariant for subclasses).
    function _setRoleAdmin(bytes32 role, bytes32 adminRole) internal override {
        bytes32 previousAdminRole = getRoleAdmin(role);
        super._setRoleAdmin(role, adminRole);
        _digest.fold(abi.encode(RoleAdminChanged.selector, role, previousAdminRole, adminRole));
    }

    // ---------------------------------------------------------------- private

    function _addCategory(bytes32 category) private {
        if (category == bytes32(0)) revert ZeroCategory();
        if (_categories[category]) revert CategoryAlreadyListed(category);
        _categories[category] = true;
        _digest.emitAndFold(2, abi.encode(CategoryAdded.selector, category));
    }

    function _grant(
        address patient,
        address grantee,
        ScopeKind scopeKind,
        bytes32 scopeId,
        uint32 purposes,
        uint64 expiresAt,
        address actor,
        uint64 guardianEpoch
    ) private {
        if (grantee == address(0) || grantee == patient) revert InvalidGrantee(grantee);
        _checkScope(patient, scopeKind, scopeId);
        if (purposes == 0) revert NoPurpose();
        if (expiresAt <= block.timestamp) revert ExpiryInPast(expiresAt, block.timestamp);
        bytes32 scope = Hashes.efficientKeccak256(bytes32(uint256(scopeKind)), scopeId);
        Grant storage stored = _grants[patient][scope][grantee];
        // The slot as a whole: Grant's fields are laid out from the low-order end (purposes in
        // bits 0-31, expiresAt 32-95, guardianEpoch 96-159) and nothing else shares the slot, so
        // one word compare is "same terms by the same owner" (the patient, or the guardian of the
        // same epoch; a stale guardian grant never matches), and one SSTORE writes all three.
        uint256 word = uint256(purposes) | (uint256(expiresAt) << 32) | (uint256(guardianEpoch) << 96);
        uint256 current;
        assembly ("memory-safe") {
            current := sload(stored.slot)
        }
        if (current == word) revert ConsentUnchanged(patient, grantee, scopeKind, scopeId);
        // A new Category grant needs a listed category; a stored one was listed when it was made
        // (the list is enforced from the constructor on), so changing its terms skips the read.
        if (scopeKind == ScopeKind.Category && current == 0 && !_categories[scopeId]) {
            revert CategoryNotListed(scopeId);
        }

        assembly ("memory-safe") {
            sstore(stored.slot, word)
        }
        _digest.emitAndFold(
            3,
            abi.encode(ConsentGranted.selector, patient, grantee, scopeKind, scopeId, purposes, expiresAt, actor)
        );
    }

    function _revoke(address patient, address grantee, ScopeKind scopeKind, bytes32 scopeId, address actor) private {
        bytes32 scope = Hashes.efficientKeccak256(bytes32(uint256(scopeKind)), scopeId);
        Grant storage stored = _grants[patient][scope][grantee];
        // The slot as a whole (layout: see _grant): purposes is its low 32 bits, guardianEpoch
        // bits 96-159; clearing the word clears all three fields with one SSTORE.
        uint256 word;
        assembly ("memory-safe") {
            word := sload(stored.slot)
        }
        if (uint32(word) == 0 || !_guardianshipHolds(patient, uint64(word >> 96))) {
            revert ConsentNotFound(patient, grantee, scopeKind, scopeId);
        }

        assembly ("memory-safe") {
            sstore(stored.slot, 0)
        }
        _digest.emitAndFold(3, abi.encode(ConsentRevoked.selector, patient, grantee, scopeKind, scopeId, actor));
    }

    /// @dev Checks a signed request's deadline, signer, nonce (consumed) and signature; returns
    /// the signer's guardianship epoch (0 when the signer is the patient).
    function _checkSignedRequest(
        address signer,
        address patient,
        uint256 nonce,
        uint256 deadline,
        bytes32 structHash,
        bytes calldata signature
    ) private returns (uint64 guardianEpoch) {
        if (block.timestamp > deadline) revert SignatureExpired(deadline, block.timestamp);
        guardianEpoch = _checkPatientOrGuardian(signer, patient);
        _useCheckedNonce(signer, nonce);
        if (!_isValidSignature(signer, _hashTypedDataV4(structHash), signature)) revert InvalidSignature(signer);
    }

    /// @dev SignatureChecker.isValidSignatureNow with the ECDSA attempt first: an EOA's signature
    /// is accepted without reading the signer's code size (a cold EXTCODESIZE, 2,600 gas); any
    /// other signature goes to the signer's ERC-1271 `isValidSignature` when it has code.
    function _isValidSignature(address signer, bytes32 hash, bytes memory signature) private view returns (bool) {
        // tryRecover's third value (errorArg) only details a failure for an error message; both
        // the recovered address and the error code are checked below, so nothing is unchecked.
        // slither-disable-next-line unused-return
        (address recovered, ECDSA.RecoverError error,) = ECDSA.tryRecover(hash, signature);
        if (error == ECDSA.RecoverError.NoError && recovered == signer) return true;
        return signer.code.length != 0 && SignatureChecker.isValidERC1271SignatureNow(signer, hash, signature);
    }

    /// @dev Reverts unless `account` is the patient or the patient's guardian; returns 0 for the
    /// patient, else the guardianship epoch (>= 1) the guardian acts in.
    function _checkPatientOrGuardian(address account, address patient) private view returns (uint64) {
        if (account == patient && patient != address(0)) return 0;
        Guardianship memory guardianship = _guardians[patient];
        if (account != guardianship.guardian || account == address(0)) revert NotPatientOrGuardian(account, patient);
        return guardianship.epoch;
    }

    /// @dev Whether a grant stamped `guardianEpoch` may be in force: a patient grant (0) always,
    /// a guardian grant only while the patient's guardianship epoch is still the one it was made in.
    function _guardianshipHolds(address patient, uint64 guardianEpoch) private view returns (bool) {
        return guardianEpoch == 0 || guardianEpoch == _guardians[patient].epoch;
    }

    function _checkScope(address patient, ScopeKind scopeKind, bytes32 scopeId) private view {
        if (scopeKind == ScopeKind.Record) {
            address owner = _records[scopeId].patient;
            if (owner == address(0)) revert UnknownRecord(scopeId);
            if (owner != patient) revert RecordNotOwned(scopeId, patient, owner);
        } else if ((scopeKind == ScopeKind.Category) == (scopeId == bytes32(0))) {
            // Category with a zero id, or All with a non-zero id.
            revert InvalidScope(scopeKind, scopeId);
        }
    }

    function _accessBasis(address patient, address grantee, bytes32 recordId, uint8 purpose)
        private
        view
        returns (Basis, uint64)
    {
        if (purpose > _MAX_PURPOSE) revert InvalidPurpose(purpose);
        if (grantee == address(0)) return (Basis.None, 0);
        Record storage record = _records[recordId];
        if (record.patient != patient || patient == address(0)) return (Basis.None, 0);
        if (grantee == patient) return (Basis.Owner, 0);

        mapping(bytes32 scope => mapping(address grantee => Grant)) storage grants = _grants[patient];
        uint32 bit = uint32(1) << purpose;
        uint64 until = _activeUntil(patient, grants[Hashes.efficientKeccak256(_RECORD_SCOPE, recordId)][grantee], bit);
        if (until != 0) return (Basis.Record, until);
        bytes32 categoryScope = Hashes.efficientKeccak256(_CATEGORY_SCOPE, record.category);
        until = _activeUntil(patient, grants[categoryScope][grantee], bit);
        if (until != 0) return (Basis.Category, until);
        until = _activeUntil(patient, grants[Hashes.efficientKeccak256(_ALL_SCOPE, bytes32(0))][grantee], bit);
        if (until != 0) return (Basis.All, until);
        if (_guardians[patient].guardian == grantee) return (Basis.Guardian, 0);
        if (bit & _BREAK_GLASS_PURPOSES != 0) {
            until = _breakGlass[patient][grantee].until;
            if (block.timestamp < until) return (Basis.Emergency, until);
        }
        return (Basis.None, 0);
    }

    /// @dev The grant's expiry if it covers `bit` and is in force now, else 0. The guardianship is
    /// read only for a guardian grant.
    function _activeUntil(address patient, Grant storage stored, uint32 bit) private view returns (uint64) {
        uint256 word; // the slot as a whole (layout: see _grant)
        assembly ("memory-safe") {
            word := sload(stored.slot)
        }
        uint64 expiresAt = uint64(word >> 32);
        if (uint32(word) & bit == 0 || block.timestamp >= expiresAt) return 0;
        if (!_guardianshipHolds(patient, uint64(word >> 96))) return 0;
        return expiresAt;
    }

    function _attestationDigest(RecordAttestation calldata attestation) private view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(_RECORD_ATTESTATION_TYPEHASH, attestation)));
    }
}
