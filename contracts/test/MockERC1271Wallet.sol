// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

/// @title A minimal ERC-1271 contract wallet, for tests only
/// @notice Accepts a hash as signed when its ECDSA signature recovers to `owner`; the owner may
/// switch acceptance off to model a wallet that revokes its signatures. It can also forward a
/// call, so tests can have the wallet act as a patient or guardian directly.
contract MockERC1271Wallet is IERC1271 {
    address public immutable owner;
    bool public accepting = true;

    error NotOwner(address caller);

    constructor(address owner_) {
        owner = owner_;
    }

    function setAccepting(bool accepting_) external {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        accepting = accepting_;
    }

    /// @notice Forwards a call from the wallet; bubbles up a revert unchanged.
    function execute(address target, bytes calldata data) external returns (bytes memory result) {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        bool ok;
        (ok, result) = target.call(data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(result, 0x20), mload(result))
            }
        }
    }

    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecover(hash, signature);
        if (accepting && err == ECDSA.RecoverError.NoError && recovered == owner) {
            return IERC1271.isValidSignature.selector;
        }
        return 0xffffffff;
    }
}
