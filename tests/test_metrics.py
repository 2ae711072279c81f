"""Prometheus metrics: NodeMetrics on a real node, served over HTTP; ClusterMetrics;
the broadcast observer hook; the error without prometheus-client.

prometheus-client is imported, not skipped when missing: the ``dev`` extra installs
it, so its absence is a broken environment, not a reason to test less."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from helpers import wait_until
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from etcdraft import Config, Node, RaftBlockState
from etcdraft.errors import InvalidStateError, NotLeaderError
from etcdraft.etcd import EtcdClient
from etcdraft.keys import Keys
from etcdraft.metrics import NodeMetrics, outcome_of, serve, serve_cluster
from etcdraft.stats import NodeStats

FAST = {
    "election_timeout": "1s",
    "heartbeat_timeout": "200ms",
    "leader_lease_timeout": "300ms",
    "send_timeout": "500ms",
}


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def one(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_node_metrics_over_http(etcd: Any, namespace: str) -> None:
    cfg = Config(
        node_id="m1",
        raft_addr="127.0.0.1:7201",
        bootstrap=True,
        endpoints=etcd.endpoints,
        namespace=namespace,
        **FAST,  # type: ignore[arg-type]
    )
    with Node(cfg) as node:
        server = serve(node, port=0)
        try:
            assert server.url.startswith("http://127.0.0.1:")
            metrics = NodeMetrics()  # a second collector, fed by hand
            wait_until(node.is_leader, 10, "m1 never led")
            for h in range(1, 4):
                metrics.broadcast(node, RaftBlockState(height=h, timestamp=h))
            with pytest.raises(InvalidStateError):
                metrics.broadcast(node, RaftBlockState(height=5, timestamp=1))  # invalid
            wait_until(lambda: node.get_state().height == 3, 5)
            # a keep-alive round answered since the lease was granted
            s = wait_until(
                lambda: (
                    (x := scrape(server.url))
                    and x.get(("etcdraft_keepalive_latency_seconds", (("node_id", "m1"),)), 0) > 0
                    and x
                ),
                10,
                "no keep-alive latency measured",
            )
            assert one(s, "etcdraft_is_leader", node_id="m1") == 1
            assert one(s, "etcdraft_term", node_id="m1") == node.term > 0
            assert one(s, "etcdraft_applied_height", node_id="m1") == 3
            assert one(s, "etcdraft_applied_index", node_id="m1") == node.fsm.index
            assert one(s, "etcdraft_broadcasts_total", node_id="m1") == 3
            assert one(s, "etcdraft_members", node_id="m1") == 1
            assert one(s, "etcdraft_apply_dropped_total", node_id="m1") == 0
            assert one(s, "etcdraft_fenced_rejections_total", node_id="m1") == 0
            assert 0 < one(s, "etcdraft_lease_remaining_seconds", node_id="m1") <= 2
            assert one(s, "etcdraft_lease_ttl_seconds", node_id="m1") >= 1
            assert 0 < one(s, "etcdraft_keepalive_latency_seconds", node_id="m1") < 1
            assert one(s, "etcdraft_watch_connected", node_id="m1") == 1
            # one watch, never broken on a healthy etcd
            assert one(s, "etcdraft_watch_reconnects_total", node_id="m1") == 0
            # the hand-fed collector has outcomes and the latency histogram
            reg = CollectorRegistry()
            reg.register(metrics)
            assert (
                reg.get_sample_value(
                    "etcdraft_broadcast_outcomes_total", {"node_id": "m1", "outcome": "ok"}
                )
                == 3
            )
            assert (
                reg.get_sample_value(
                    "etcdraft_broadcast_outcomes_total", {"node_id": "m1", "outcome": "invalid"}
                )
                == 1
            )
            assert (
                reg.get_sample_value("etcdraft_broadcast_duration_seconds_count", {"node_id": "m1"})
                == 4
            )
            assert (
                reg.get_sample_value(
                    "etcdraft_broadcast_duration_seconds_bucket", {"node_id": "m1", "le": "+Inf"}
                )
                == 4
            )
        finally:
            server.close()


class FakeNode:
    """Enough of a Node for the collector (its stats() snapshot), with the observer
    hook: the collector reads nothing else."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.observers: list[Callable[[str, float], None]] = []

    def add_broadcast_observer(self, callback: Callable[[str, float], None]) -> None:
        self.observers.append(callback)

    def stats(self) -> NodeStats:
        zeros = {
            f.name: 0
            for f in dataclasses.fields(NodeStats)
            if f.type in ("int", int) and f.name not in ("members", "live_nodes")
        }
        return NodeStats(
            node_id=self.node_id,
            role="follower",
            leader_id="",
            lease_remaining=0.0,
            last_heartbeat_age=None,
            etcd_full=False,
            members=2,
            live_nodes=1,
            **zeros,
        )


def test_observer_hook_and_several_nodes() -> None:
    a, b = FakeNode("a"), FakeNode("b")
    reg = CollectorRegistry()
    metrics = NodeMetrics(a, registry=reg)  # type: ignore[arg-type]
    metrics.add_node(b)  # type: ignore[arg-type]
    metrics.add_node(b)  # type: ignore[arg-type]  # twice: once
    assert len(a.observers) == 1 and len(b.observers) == 1
    a.observers[0]("ok", 0.004)
    a.observers[0]("lost", 0.2)
    b.observers[0]("not_leader", 0.0001)
    get = reg.get_sample_value
    assert get("etcdraft_broadcast_outcomes_total", {"node_id": "a", "outcome": "ok"}) == 1
    assert get("etcdraft_broadcast_outcomes_total", {"node_id": "a", "outcome": "lost"}) == 1
    assert get("etcdraft_broadcast_outcomes_total", {"node_id": "b", "outcome": "not_leader"}) == 1
    assert get("etcdraft_broadcast_duration_seconds_bucket", {"node_id": "a", "le": "0.005"}) == 1
    assert get("etcdraft_broadcast_duration_seconds_sum", {"node_id": "a"}) == pytest.approx(0.204)
    assert get("etcdraft_members", {"node_id": "b"}) == 2
    assert get("etcdraft_live_nodes", {"node_id": "a"}) == 1
    assert get("etcdraft_is_leader", {"node_id": "a"}) == 0
    # a second collector with the same series cannot join the same registry
    with pytest.raises(ValueError):
        NodeMetrics(FakeNode("c"), registry=reg)  # type: ignore[arg-type]


def test_outcome_labels() -> None:
    from etcdraft.errors import EtcdTimeoutError, HeightConflictError, LeadershipLostError

    assert outcome_of(None) == "ok"
    assert outcome_of(LeadershipLostError()) == "lost"
    assert outcome_of(NotLeaderError("x")) == "not_leader"
    assert outcome_of(HeightConflictError("x")) == "conflict"
    assert outcome_of(InvalidStateError("x")) == "invalid"
    assert outcome_of(EtcdTimeoutError("x")) == "unavailable"
    assert outcome_of(RuntimeError("x")) == "error"


def test_cluster_metrics(etcd: Any, namespace: str) -> None:
    cfg = Config(
        node_id="c1",
        raft_addr="127.0.0.1:7301",
        bootstrap=True,
        endpoints=etcd.endpoints,
        namespace=namespace,
        **FAST,  # type: ignore[arg-type]
    )
    client = EtcdClient(etcd.endpoints)
    try:
        with Node(cfg) as node:
            wait_until(node.is_leader, 10)
            node.broadcast(RaftBlockState(height=1, timestamp=1))
            server = serve_cluster(client, Keys(namespace), port=0)
            try:
                s = wait_until(
                    lambda: (
                        (x := scrape(server.url))
                        and x.get(("etcdraft_cluster_applied_height", (("node_id", "c1"),))) == 1
                        and x
                    ),
                    5,
                )
                assert one(s, "etcdraft_cluster_up") == 1
                assert one(s, "etcdraft_cluster_has_leader") == 1
                assert one(s, "etcdraft_cluster_height") == 1
                assert one(s, "etcdraft_cluster_term") == node.term
                assert one(s, "etcdraft_cluster_leader", node_id="c1") == 1
                assert one(s, "etcdraft_cluster_alive", node_id="c1") == 1
                assert one(s, "etcdraft_cluster_lag", node_id="c1") == 0
            finally:
                server.close()
    finally:
        client.close()
    # etcd gone: the scrape still answers, with up 0
    dead = EtcdClient(["http://127.0.0.1:1"])
    server = serve_cluster(dead, Keys(namespace), port=0, timeout=0.3)
    try:
        dead_cm = server.registry.get_sample_value("etcdraft_cluster_up")
        assert dead_cm == 0
    finally:
        server.close()
        dead.close()


def test_import_error_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "try:\n    import etcdraft.metrics\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert "pip install 'etcdraft[metrics]'" in out.stdout, out.stderr
