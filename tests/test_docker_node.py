"""End to end on the container backend: Nodes on a 3-member etcd run by testcontainers
on the loopback-only Docker engine (see docs/testing-docker.md)."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import pytest
from _docker import DockerEtcd, docker_unavailable_reason, require_or_skip
from helpers import wait_until

from etcdraft import Config, Node, RaftBlockState

pytestmark = pytest.mark.docker

require_or_skip(docker_unavailable_reason(), "a Docker engine")


@pytest.fixture(scope="module")
def docker_etcd3() -> Iterator[DockerEtcd]:
    with DockerEtcd(size=3) as etcd:
        yield etcd


def test_nodes_elect_replicate_and_hand_over_on_containers(
    docker_etcd3: DockerEtcd, namespace: str
) -> None:
    peers = ["a@a:7000", "b@b:7000"]
    common = dict(
        endpoints=docker_etcd3.endpoints,
        namespace=namespace,
        peers=peers,
        election_timeout="2s",
        heartbeat_timeout="200ms",
        send_timeout="1s",
    )
    a = Node(Config(node_id="a", raft_addr="a:7000", bootstrap=True, **common))
    b = Node(Config(node_id="b", raft_addr="b:7000", **common))
    try:
        a.start()
        b.start()
        leader = wait_until(
            lambda: next((n for n in (a, b) if n.is_leader()), None), 10, "a leader"
        )
        follower = b if leader is a else a
        applied: queue.Queue[object] = queue.Queue()
        follower.set_apply_callback(applied)
        for h in range(1, 21):
            leader.broadcast(RaftBlockState(height=h, timestamp=h, hash=bytes([h]) * 32))
        wait_until(lambda: follower.get_state().height == 20, 10, "follower applied 20")
        assert [applied.get(timeout=5).state.height for _ in range(20)] == list(range(1, 21))
        assert leader.has_quorum()
        leader.resign_leader(timeout=5)
        assert wait_until(follower.is_leader, 5, "follower took over")
        follower.broadcast(RaftBlockState(height=21, timestamp=21))
        wait_until(lambda: leader.get_state().height == 21, 10, "old leader follows")
    finally:
        a.shutdown()
        b.shutdown()
