"""The audit world (``tests.helpers.audit_world``) holds the history the audit tests expect."""

from __future__ import annotations

from tests.helpers.audit_world import World


def test_world_history_has_two_logs_in_one_block(world: World, w3) -> None:
    logs = w3.eth.get_logs(
        {
            "address": world.address,
            "fromBlock": world.two_in_one_block,
            "toBlock": world.two_in_one_block,
        }
    )
    assert len(logs) == 2
    assert len(world.leaves) == 13
    assert [c.tree_size for c in world.checkpoints] == [6, 11]
