"""Pruning: the leader keeps the log in etcd bounded, and old term records go with it."""

from __future__ import annotations

import base64

import requests
from helpers import wait_until

from etcdraft import Config, Node, RaftBlockState
from etcdraft.etcd import prefix_end


def _count(endpoint: str, prefix: bytes) -> int:
    body = {
        "key": base64.b64encode(prefix).decode(),
        "range_end": base64.b64encode(prefix_end(prefix)).decode(),
        "count_only": True,
    }
    resp = requests.post(f"{endpoint}/v3/kv/range", json=body, timeout=5)
    resp.raise_for_status()
    return int(resp.json().get("count", 0))


def test_log_and_term_records_stay_bounded_across_leaders(etcd, namespace: str) -> None:
    common = dict(
        endpoints=etcd.endpoints,
        namespace=namespace,
        peers=["a@a:1", "b@b:1"],
        election_timeout="1s",
        heartbeat_timeout="100ms",
        leader_lease_timeout="300ms",
        send_timeout="500ms",
        trailing_logs=5,
        snapshot_threshold=5,
    )
    nodes = [
        Node(Config(node_id="a", raft_addr="a:1", bootstrap=True, **common)),
        Node(Config(node_id="b", raft_addr="b:1", **common)),
    ]
    try:
        for n in nodes:
            n.start()
        height = 0
        for _round in range(6):  # six leaderships, ten blocks each
            leader = wait_until(
                lambda: next((n for n in nodes if n.is_leader()), None), 10, "a leader"
            )
            for _ in range(10):
                height += 1
                leader.broadcast(RaftBlockState(height=height, timestamp=height))
            leader.resign_leader(timeout=5)
        keys = nodes[0].keys
        ep = etcd.endpoints[0]
        # pruning runs on the leader's control loop: wait for it to catch up
        wait_until(
            lambda: _count(ep, keys.log_prefix) <= 5 + 5 + 1,
            10,
            lambda: f"log not pruned: {_count(ep, keys.log_prefix)} entries",
        )
        wait_until(
            lambda: _count(ep, keys.terms_prefix) <= 3,
            10,
            lambda: f"term records not pruned: {_count(ep, keys.terms_prefix)}",
        )
        # every node still agrees on the head, and a late node can still catch up
        wait_until(lambda: all(n.get_state().height == height for n in nodes), 10, "converged")
        late = Node(Config(node_id="c", raft_addr="c:1", **common))
        try:
            late.start()
            assert late.get_state().height == height
        finally:
            late.shutdown()
    finally:
        for n in nodes:
            n.shutdown()
