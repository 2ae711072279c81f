"""``Node.stats()`` (API.md, round 2): a frozen snapshot, consistent with the node."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from test_node_api import Harness, block, followers_of, one_leader, wait_height

from etcdraft import NodeStats


@pytest.fixture
def harness(etcd: Any, namespace: str, tmp_path: Any) -> Iterator[Harness]:
    h = Harness(list(etcd.endpoints), namespace, tmp_path)
    yield h
    h.close()


def test_stats_of_leader_and_follower(harness: Harness) -> None:
    nodes = harness.cluster(2)
    leader = one_leader(nodes)
    (follower,) = followers_of(leader, nodes)
    for h in (1, 2, 3):
        leader.broadcast(block(h))
    wait_height(follower, 3)
    ls, fs = leader.stats(), follower.stats()
    assert isinstance(ls, NodeStats)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ls.role = "x"  # type: ignore[misc]
    assert (ls.role, ls.node_id, ls.leader_id) == ("leader", leader.node_id, leader.node_id)
    assert ls.term == leader.term > 0 and ls.broadcasts == 3
    assert ls.applied_height == 3 and ls.applied_index == leader.fsm.index
    assert ls.observed_revision >= ls.applied_index
    assert 0 < ls.lease_remaining <= 1.0 + 0.5
    assert ls.last_heartbeat_age is not None and 0 <= ls.last_heartbeat_age < 1.0
    assert fs.role in ("follower", "candidate") and fs.term == 0
    assert fs.leader_id == leader.node_id and fs.last_heartbeat_age is None
    assert fs.applied_height == 3 and fs.applied == 3 and fs.broadcasts == 0
    # what metrics and the HTTP endpoints read (no private attributes)
    for st in (ls, fs):
        assert (st.members, st.live_nodes, st.paused) == (2, 2, False)
        assert st.applied_term == ls.term and st.watch_connected
        assert st.lease_ttl >= 1 and st.keepalive_latency >= 0
    # the leader's belief ends no later than its lease and heartbeat deadlines
    assert ls.leader_remaining is not None
    assert 0 < ls.leader_remaining <= min(ls.lease_remaining, leader.config.heartbeat_timeout)
    assert fs.leader_remaining is None
    follower.shutdown()
    assert follower.stats().role == "stopped"
