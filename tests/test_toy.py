"""The toy sequencer (``etcdraft.demo.toy``, used by the demo, ``etcdraft node`` and the
chaos suite) as a leader worker under ``DynamicLeaderElection``, on real etcd."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from helpers import wait_until

from etcdraft import Config, DynamicLeaderElection, Node, NotLeaderError
from etcdraft.demo.toy import Recorder, ToyFollower, ToyProducer

pytestmark = pytest.mark.timeout(60)


def test_producer_survives_a_momentary_not_leader(etcd: Any, namespace: str, tmp_path) -> None:
    """``is_leader()`` can be false for a moment while the node still leads (a
    keep-alive answered late eats into ``leader_lease_timeout``). The producer must
    keep running and producing, not return: a leader worker that quits leaves a
    leader producing nothing, which no follower would ever replace (found by the
    soak run: 20 s without blocks while the leader kept heartbeating)."""
    cfg = Config(
        node_id="n1",
        raft_addr="n1:1",
        endpoints=etcd.endpoints,
        namespace=namespace,
        bootstrap=True,
        raft_dir=str(tmp_path / "raft"),
    )
    node = Node(cfg)
    node.start()
    rec = Recorder(None)
    refusals = []
    real_broadcast = node.broadcast

    def flaky_broadcast(state: Any, *, timeout: float | None = None) -> None:
        if len(refusals) < 3 and state.height >= 3:
            refusals.append(state.height)
            raise NotLeaderError("node n1 is not the leader (a late keep-alive, say)")
        real_broadcast(state, timeout=timeout)

    node.broadcast = flaky_broadcast  # type: ignore[method-assign]
    dle = DynamicLeaderElection(
        lambda: ToyProducer(node, 0.01, rec), lambda: ToyFollower(node, 0.01, rec), node
    )
    stop = threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            dle.run(stop)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: node.get_state().height >= 10 or failures,
            20,
            lambda: f"height {node.get_state().height}",
        )
        assert not failures, f"DynamicLeaderElection.run raised {failures[0]!r}"
        assert refusals == [3, 3, 3], "the producer should retry the same block"
        assert node.is_leader()
    finally:
        stop.set()
        thread.join(10)
        node.shutdown()
