// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

/// @title An ERC-1271 wallet whose signature check burns gas, for tests only
/// @notice `isValidSignature` spends `burn` gas before it answers, and accepts a hash when its
/// ECDSA signature recovers to `owner`. Given less gas than that, the check runs out of gas,
/// so a relayer that sets its gas limit from an estimate pays for the whole burn.
contract GasBurningERC1271Wallet is IERC1271 {
    address public immutable owner;
    uint256 public immutable burn;

    constructor(address owner_, uint256 burn_) {
        owner = owner_;
        burn = burn_;
    }

    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        uint256 start = gasleft();
        uint256 spin;
        // Spin until `burn` gas is spent; the counter only keeps the loop from being optimised out.
        while (start - gasleft() < burn) {
            unchecked {
                ++spin;
            }
        }
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecover(hash, signature);
        if (spin != 0 && err == ECDSA.RecoverError.NoError && recovered == owner) {
            return IERC1271.isValidSignature.selector;
        }
        return 0xffffffff;
    }
}
