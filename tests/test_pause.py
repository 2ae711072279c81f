"""Maintenance mode (``etcdraft pause`` / ``resume``) against real etcd.

While ``<ns>/paused`` exists no node claims a term or deposes a leader; a handover
still works; after ``resume`` failover is automatic again. The "nobody claims" checks
are deterministic: the test waits until a survivor's view puts it first in line (the
moment it would claim), then runs that node's control step itself, the code its
control loop runs on every change, and reads etcd: no term was claimed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import wait_until
from test_cli import Cluster, etcdraft

from etcdraft import Node
from etcdraft.keys import Keys
from etcdraft.view import Pause

HB = 0.2  # Cluster's heartbeat_timeout


@pytest.fixture
def cluster(etcd: Any, namespace: str) -> Iterator[Cluster]:
    with Cluster(etcd.endpoints, namespace) as c:
        yield c


def status(cluster: Cluster) -> dict[str, Any]:
    result = etcdraft("status", "-o", "json", "--no-etcd", *cluster.conn)
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def pause(cluster: Cluster, *extra: str) -> None:
    result = etcdraft("pause", *extra, *cluster.conn)
    assert result.returncode == 0, result.stderr
    # every node must have seen it before the test strikes
    wait_until(
        lambda: all(
            n._cluster.snapshot().pause is not None for n in cluster.nodes if not n._closed
        ),
        10,
        "not every node saw the pause",
    )


def first_in_line(nodes: list[Node], gone: bytes) -> bool:
    """Some survivor's view has ``gone`` deleted and puts that survivor first in line."""
    for n in nodes:
        view = n._cluster.snapshot()
        if gone in view.candidates or view.leader() is None:
            return False
    return any(n._cluster.leader().key == n._elector.leadership.key for n in nodes)  # type: ignore[union-attr]


def test_a_dead_leader_is_not_replaced_until_resume(cluster: Cluster) -> None:
    old = cluster.leader()
    assert old is not None
    result = etcdraft("pause", "--reason", "etcd upgrade", *cluster.conn)
    assert result.returncode == 0, result.stderr
    assert f"{old.node_id} keeps leading" in result.stdout
    pause(cluster)  # already paused: a no-op, then wait for every node to see it
    again = etcdraft("pause", *cluster.conn)
    assert again.returncode == 0 and "already paused" in again.stdout
    assert "etcd upgrade" in again.stdout
    before = status(cluster)
    assert before["leader"] == old.node_id
    assert before["paused"]["reason"] == "etcd upgrade" and before["paused"]["by"]
    text = etcdraft("status", "--no-etcd", *cluster.conn).stdout
    assert "paused     yes since " in text and "no failover until `etcdraft resume`" in text

    old_key = old._elector.leadership.key
    old.shutdown()  # revokes the lease: its election key is deleted at once
    others = [n for n in cluster.nodes if n is not old]
    wait_until(lambda: first_in_line(others, old_key), 10, "no survivor first in line")
    for _ in range(2):
        for n in others:
            n._elector.control_step()
    during = status(cluster)
    assert during["leader"] == "" and during["term"] == before["term"]
    assert during["next_in_line"] in {n.node_id for n in others}
    assert not any(n.is_leader() for n in others)
    text = etcdraft("status", "--no-etcd", *cluster.conn).stdout
    assert "is first in line but does not claim" in text
    check = etcdraft("status", "--check", "--no-etcd", *cluster.conn)
    assert check.returncode == 1 and "no leader (paused)" in check.stderr

    resumed = etcdraft("resume", *cluster.conn)
    assert resumed.returncode == 0 and "resumed" in resumed.stdout, resumed.stderr
    wait_until(lambda: any(n.is_leader() for n in others), 15, "no leader after resume")
    after = status(cluster)
    assert after["paused"] is None and after["term"] > before["term"]
    assert after["leader"] in {n.node_id for n in others}
    h = cluster.height()
    wait_until(lambda: cluster.height() > h + 3, 10, "no blocks after resume")
    noop = etcdraft("resume", "-o", "json", *cluster.conn)
    assert json.loads(noop.stdout) == {"changed": False, "was": None}


def test_no_follower_deposes_a_silent_leader_while_paused(cluster: Cluster) -> None:
    old = cluster.leader()
    assert old is not None
    pause(cluster)
    cluster.stop.set()  # no more broadcasts: they carry heartbeats too
    cluster.producer.join(5)
    old._elector._send_heartbeat = lambda client, deadline: None  # type: ignore[method-assign]
    others = [n for n in cluster.nodes if n is not old]
    # the silence that makes the first follower depose (heartbeat_timeout), twice over
    wait_until(
        lambda: all(time.monotonic() - n._heartbeat.seen.since > 2 * HB for n in others),
        10,
        "the followers still hear the leader",
    )
    for n in others:
        n._elector.control_step()
    assert sum(n.deposed for n in others) == 0
    # still the leader in etcd: its key and term stand (is_leader() itself turns False
    # while its heartbeats are not acknowledged: a silent leader stops believing)
    assert old._elector.holds_term() and status(cluster)["leader"] == old.node_id

    assert etcdraft("resume", *cluster.conn).returncode == 0
    wait_until(
        lambda: (new := cluster.leader()) is not None and new is not old,
        15,
        "the silent leader was not deposed after resume",
    )
    assert sum(n.deposed for n in others) >= 1


def test_handover_still_works_while_paused(cluster: Cluster) -> None:
    pytest.importorskip("prometheus_client")
    from etcdraft.metrics import ClusterMetrics, NodeMetrics

    def node_paused(n: Node) -> float:
        for fam in NodeMetrics(n).collect():
            if fam.name == "etcdraft_paused":
                return float(fam.samples[0].value)
        raise AssertionError("no etcdraft_paused")

    assert node_paused(cluster.nodes[0]) == 0.0
    pause(cluster)
    assert all(node_paused(n) == 1.0 for n in cluster.nodes)
    client = cluster.nodes[0]._ctx.client
    assert client is not None
    fams = {f.name: f for f in ClusterMetrics(client, Keys(cluster.namespace)).collect()}
    assert fams["etcdraft_cluster_paused"].samples[0].value == 1.0

    # the cooperative handover (Node.resign_leader, also what stop() does)
    first = cluster.leader()
    assert first is not None
    first.resign_leader(timeout=10)
    second = wait_until(cluster.leader, 10, "no leader after the handover")
    assert second is not first
    st = status(cluster)
    assert st["leader"] == second.node_id and st["paused"] is not None
    assert st["paused"]["handover"] == st["term"]  # the successor it named
    # the forced one (etcdraft resign), still paused
    forced = etcdraft("resign", "-o", "json", *cluster.conn)
    assert forced.returncode == 0, forced.stderr
    out = json.loads(forced.stdout)
    assert out["old_leader"] == second.node_id and out["leader"] != second.node_id
    st = status(cluster)
    assert st["paused"] is not None and st["paused"]["reason"] == ""
    # and it is still a pause: the new leader's death is not repaired
    third = next(n for n in cluster.nodes if n.node_id == out["leader"])
    wait_until(lambda: third.is_leader(), 10, "the successor did not lead")
    key = third._elector.leadership.key
    third.shutdown()
    others = [n for n in cluster.nodes if n is not third]
    wait_until(lambda: first_in_line(others, key), 10, "no survivor first in line")
    for n in others:
        n._elector.control_step()
    assert status(cluster)["leader"] == ""
    assert etcdraft("resume", *cluster.conn).returncode == 0
    wait_until(lambda: any(n.is_leader() for n in others), 15, "no leader after resume")
    wait_until(lambda: node_paused(others[0]) == 0.0, 10, "the gauge did not clear")


def test_pause_value_and_key() -> None:
    keys = Keys("/etcdraft/x")
    assert keys.parse(b"/etcdraft/x/paused").kind == "paused"
    assert keys.paused == b"/etcdraft/x/paused"
    # any value pauses; a handover adds its successor, keeping what was there
    foreign = Pause.parse(b"by hand", 7)
    assert foreign.handover == 0 and foreign.mod_revision == 7
    named = json.loads(foreign.with_handover(42))
    assert named == {"note": "by hand", "handover": 42}
    ours = Pause.parse(b'{"by":"a@b","at":"t","reason":"r"}', 9)
    assert Pause.parse(ours.with_handover(5), 10).handover == 5
    assert json.loads(ours.with_handover(5))["reason"] == "r"
