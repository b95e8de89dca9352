// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title The registry's running event digest
/// @notice Every log the registry emits is folded into a running digest (see IConsentRegistry):
///
///     head' = bytes24(keccak256(abi.encodePacked(head, topic0, topic1, ..., topicN, data)))
///     count' = count + 1
///
/// @dev `emitAndFold` is the only way the registry emits its own events: it writes the log
/// from the same memory it hashes, so a log and its fold cannot differ, and an event emitted
/// without its fold cannot be written (tests/test_contracts.py greps the sources for a bare
/// `emit`). `fold` alone is for the events OpenZeppelin emits itself (RoleGranted,
/// RoleRevoked, RoleAdminChanged), folded by the registry's overrides right after they are
/// emitted.
library EventDigest {
    /// @dev Head and count share one slot (one SSTORE per event instead of two); 192 bits keep
    /// second-preimage resistance far beyond reach.
    struct Digest {
        bytes24 head;
        uint64 count;
    }

    /// @dev Emits the log whose first `topicCount` (1..4) words of `topicsAndData` are its topics (the
    /// event selector first, then the indexed arguments, each one ABI word) and whose remaining
    /// bytes are its data (the non-indexed arguments, ABI-encoded on their own), then folds it.
    function emitAndFold(Digest storage digest, uint256 topicCount, bytes memory topicsAndData) internal {
        assembly ("memory-safe") {
            let topics := add(topicsAndData, 0x20)
            let dataStart := add(topics, shl(5, topicCount))
            let dataLength := sub(mload(topicsAndData), shl(5, topicCount))
            switch topicCount
            case 1 { log1(dataStart, dataLength, mload(topics)) }
            case 2 { log2(dataStart, dataLength, mload(topics), mload(add(topics, 0x20))) }
            case 3 {
                log3(dataStart, dataLength, mload(topics), mload(add(topics, 0x20)), mload(add(topics, 0x40)))
            }
            case 4 {
                log4(
                    dataStart,
                    dataLength,
                    mload(topics),
                    mload(add(topics, 0x20)),
                    mload(add(topics, 0x40)),
                    mload(add(topics, 0x60))
                )
            }
            // Every call site passes a literal 1..4, checked against the event's indexed
            // arguments in the ABI by tests/test_contracts.py; anything else is a bug.
            default { revert(0, 0) }
        }
        fold(digest, topicsAndData);
    }

    /// @dev Folds one log, given as its topics followed by its data, into the digest:
    /// head' = bytes24(keccak256(head || topicsAndData)), count' = count + 1.
    function fold(Digest storage digest, bytes memory topicsAndData) internal {
        assembly ("memory-safe") {
            // The slot as a whole: `head` is its low 24 bytes, `count` its high 8 (Solidity packs
            // a struct's fields from the low-order end), so one SLOAD and one SSTORE suffice.
            let word := sload(digest.slot)
            // Hash head || topicsAndData in place: the 24-byte head goes over the last 24 bytes of
            // the length word, right before the first byte; the length word is restored after.
            let length := mload(topicsAndData)
            mstore(topicsAndData, word)
            let hash := keccak256(add(topicsAndData, 8), add(length, 24))
            mstore(topicsAndData, length)
            // count' = count + 1 cannot overflow: one event per fold, and 2^64 events are out of
            // reach of any chain. head' = the hash's first 24 bytes.
            sstore(digest.slot, or(shl(192, add(shr(192, word), 1)), shr(64, hash)))
        }
    }
}
