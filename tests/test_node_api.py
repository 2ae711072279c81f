"""The public ``Node`` API (API.md, section "Node"), row by row, against real etcd.

Every test builds its nodes through the ``harness`` fixture (its own namespace,
short timings, nodes always shut down afterwards) and checks what the contract
says against etcd itself: raw reads and deletes go through etcd's JSON gateway
with ``requests``, independently of the library's client.

Two test-only levers make a node deterministically *stale* without pausing a
process, while its session lease stays alive:

* a ``Gate`` given to ``set_apply_callback`` blocks the node's watch thread inside
  ``put_nowait``: the node stops applying entries and reporting progress;
* a ``FaultProxy`` between a node and etcd withholds etcd's watch stream
  (keep-alives and transactions still pass): the node keeps *believing* what it
  last saw, e.g. that it leads.

Faults on etcd itself (SIGSTOP) use a private cluster from ``etcd_cluster_factory``.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import queue
import re
import selectors
import socket
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from helpers import free_port, wait_until

from etcdraft import (
    Config,
    EtcdraftError,
    EtcdUnavailableError,
    HandoverError,
    HeightConflictError,
    InvalidStateError,
    LeadershipLostError,
    Node,
    NotLeaderError,
    RaftApplyMsg,
    RaftBlockState,
)
from etcdraft.embedded import find_etcdctl_binary
from etcdraft.fsm import SnapshotStore
from etcdraft.keys import Keys
from etcdraft.node import MAX_ENTRY_BYTES

#: Short timings (the embedded etcd runs with a 250 ms election timeout, so the
#: minimum lease TTL is 1 s).
FAST: dict[str, Any] = {
    "election_timeout": "1s",
    "heartbeat_timeout": "200ms",
    "leader_lease_timeout": "300ms",
    "send_timeout": "500ms",
}


# --------------------------------------------------------------------------- helpers


def addr_of(node_id: str) -> str:
    """A stable, unique-enough advertised address (never contacted)."""
    return f"127.0.0.1:{17000 + zlib.crc32(node_id.encode()) % 20000}"


def block(height: int, *, timestamp: int | None = None, **fields: Any) -> RaftBlockState:
    """A block state whose hash and timestamp follow its height unless given."""
    fields.setdefault("hash", height.to_bytes(8, "big") * 4)
    return RaftBlockState(
        height=height, timestamp=height * 10 if timestamp is None else timestamp, **fields
    )


def sized(height: int, size: int) -> RaftBlockState:
    """``block(height)`` padded with ``data`` to exactly ``size`` encoded bytes
    (sizes near 1.5 MiB: the data field costs 1 tag byte and a 3-byte length)."""
    state = block(height, data=b"y" * (size - len(block(height).SerializeToString()) - 4))
    assert len(state.SerializeToString()) == size
    return state


def drain(q: queue.Queue[RaftApplyMsg]) -> list[RaftApplyMsg]:
    out: list[RaftApplyMsg] = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


def collect(
    q: queue.Queue[RaftApplyMsg], up_to_height: int, timeout: float = 5.0
) -> list[RaftApplyMsg]:
    """Messages from ``q`` until one reaches ``up_to_height`` (bounded wait)."""
    got: list[RaftApplyMsg] = []
    deadline = time.monotonic() + timeout
    while not got or got[-1].state.height < up_to_height:
        left = deadline - time.monotonic()
        if left <= 0:
            heights = [m.state.height for m in got]
            raise AssertionError(f"apply stream stopped at heights {heights}")
        try:
            got.append(q.get(timeout=left))
        except queue.Empty:
            continue
    return got


def assert_stream_invariants(msgs: list[RaftApplyMsg]) -> None:
    """API.md: index strictly increases, term never decreases, height increases."""
    for prev, cur in itertools.pairwise(msgs):
        assert cur.index > prev.index, f"index not increasing: {prev} -> {cur}"
        assert cur.term >= prev.term, f"term decreased: {prev} -> {cur}"
        assert cur.state.height > prev.state.height, f"height not increasing: {prev} -> {cur}"
        assert cur.state.timestamp > prev.state.timestamp
    for m in msgs:
        assert isinstance(m, RaftApplyMsg)
        assert m.index > 0 and m.term > 0


class RawEtcd:
    """Direct access to etcd's JSON gateway (independent of the library's client)."""

    def __init__(self, endpoint: str) -> None:
        self.url = endpoint.rstrip("/") + "/v3/"
        self.session = requests.Session()
        self.session.trust_env = False  # loopback only, never through a proxy

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = self.session.post(self.url + path, json=body, timeout=5)
        resp.raise_for_status()
        return resp.json()

    @staticmethod
    def _b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    @staticmethod
    def _end(prefix: bytes) -> bytes:
        return prefix[:-1] + bytes([prefix[-1] + 1])

    def range(self, key: bytes, range_end: bytes | None = None) -> list[dict[str, Any]]:
        body = {"key": self._b64(key)}
        if range_end is not None:
            body["range_end"] = self._b64(range_end)
        kvs = self._post("kv/range", body).get("kvs", [])
        return [
            {
                "key": base64.b64decode(kv["key"]),
                "value": base64.b64decode(kv.get("value", "")),
                "create_revision": int(kv.get("create_revision", 0)),
                "mod_revision": int(kv.get("mod_revision", 0)),
                "version": int(kv.get("version", 0)),
                "lease": int(kv.get("lease", 0)),
            }
            for kv in kvs
        ]

    def get(self, key: bytes) -> dict[str, Any] | None:
        kvs = self.range(key)
        return kvs[0] if kvs else None

    def prefix(self, prefix: bytes) -> list[dict[str, Any]]:
        return self.range(prefix, self._end(prefix))

    def put(self, key: bytes, value: bytes) -> int:
        res = self._post("kv/put", {"key": self._b64(key), "value": self._b64(value)})
        return int(res["header"]["revision"])

    def delete_prefix(self, prefix: bytes) -> int:
        res = self._post(
            "kv/deleterange", {"key": self._b64(prefix), "range_end": self._b64(self._end(prefix))}
        )
        return int(res.get("deleted", 0))

    def close(self) -> None:
        self.session.close()


class FaultProxy:
    """A loopback TCP proxy to one etcd member, with two faults:

    * ``freeze()``: withhold what etcd sends on watch streams (the node's view goes
      stale, as in a partition of its watch) while every other request passes;
    * ``drop_replies(marker, count)``: the next ``count`` requests whose bytes contain
      ``marker`` reach etcd, but their replies are lost (the connection is closed
      instead), as when a network fails after etcd committed a write.
    """

    def __init__(self, target_port: int, listen_port: int = 0) -> None:
        self.target_port = target_port
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", listen_port))
        self.listener.listen(64)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thawed = threading.Event()
        self.thawed.set()
        self.closed = threading.Event()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.drop_marker = b""
        self.drop_left = 0
        self.dropped = 0
        threading.Thread(target=self._accept, name="test-proxy", daemon=True).start()

    def freeze(self) -> None:
        self.thawed.clear()

    def thaw(self) -> None:
        self.thawed.set()

    def drop_replies(self, marker: bytes, count: int) -> None:
        with self.lock:
            self.drop_marker, self.drop_left = marker, count

    def close(self) -> None:
        self.closed.set()
        self.thawed.set()
        self.listener.close()
        for sock in list(self.sockets):
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                return
            upstream.settimeout(None)
            self.sockets += [client, upstream]
            watch = threading.Event()  # this connection carries a watch stream
            drop = threading.Event()  # lose etcd's next reply on this connection
            for args in (
                (client, upstream, watch, drop, False),
                (upstream, client, watch, drop, True),
            ):
                threading.Thread(target=self._pump, args=args, daemon=True).start()

    def _pump(
        self,
        src: socket.socket,
        dst: socket.socket,
        watch: threading.Event,
        drop: threading.Event,
        from_etcd: bool,
    ) -> None:
        seen = b""  # the tail of what the client sent, so a marker split across reads matches
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_etcd:
                    if drop.is_set():
                        with self.lock:
                            self.dropped += 1
                        break  # the reply is lost: close the connection instead
                    if watch.is_set():
                        self.thawed.wait(30)
                else:
                    seen = seen[-4096:] + data
                    if b"/etcdserverpb.Watch/Watch" in data:
                        watch.set()
                    with self.lock:
                        if self.drop_left and self.drop_marker and self.drop_marker in seen:
                            self.drop_left -= 1
                            seen = b""
                            drop.set()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class Gate:
    """An apply queue whose ``put_nowait`` blocks the node's *watch* thread until
    released: the node then stops applying and stops seeing election changes,
    while its session stays alive. Calls from other threads pass through."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.blocked = threading.Event()

    def put_nowait(self, msg: RaftApplyMsg) -> None:
        if threading.current_thread().name.startswith("etcdraft-watch-"):
            self.blocked.set()
            self.release.wait(30)


@dataclass
class Harness:
    """Builds nodes for one test; every node is shut down at teardown."""

    endpoints: list[str]
    namespace: str
    tmp_path: Path
    nodes: list[Node] = field(default_factory=list)
    gates: list[Gate] = field(default_factory=list)
    keys: Keys = field(init=False)
    raw: RawEtcd = field(init=False)

    def __post_init__(self) -> None:
        self.keys = Keys(self.namespace)
        self.raw = RawEtcd(self.endpoints[0])

    def config(self, node_id: str, *, raft_dir: bool = True, **overrides: Any) -> Config:
        values: dict[str, Any] = dict(FAST)
        values.update(
            node_id=node_id,
            raft_addr=addr_of(node_id),
            endpoints=self.endpoints,
            namespace=self.namespace,
        )
        if raft_dir:
            values["raft_dir"] = str(self.tmp_path / node_id)
        values.update(overrides)
        return Config(**values)

    def node(self, node_id: str, *, start: bool = True, **overrides: Any) -> Node:
        node = Node(self.config(node_id, **overrides))
        self.nodes.append(node)
        if start:
            node.start()
        return node

    def cluster(self, size: int, **overrides: Any) -> list[Node]:
        """``size`` member nodes n1..n<size>; n1 bootstraps the membership."""
        ids = [f"n{i + 1}" for i in range(size)]
        peers = [f"{nid}@{addr_of(nid)}" for nid in ids]
        nodes = [self.node(ids[0], bootstrap=True, peers=peers, **overrides)]
        nodes += [self.node(nid, peers=peers, **overrides) for nid in ids[1:]]
        return nodes

    def gate(self) -> Gate:
        gate = Gate()
        self.gates.append(gate)
        return gate

    def close(self) -> None:
        """Release every gate, then shut every node down (all of them, even if one
        fails; the first failure is raised)."""
        for gate in self.gates:
            gate.release.set()
        failures: list[BaseException] = []
        for node in reversed(self.nodes):
            try:
                node.shutdown()
            except BaseException as exc:
                failures.append(exc)
        self.raw.close()
        if failures:
            raise failures[0]


def one_leader(nodes: list[Node], timeout: float = 5.0) -> Node:
    """Wait until exactly one of ``nodes`` leads and return it."""

    def single() -> Node | None:
        leaders = [n for n in nodes if n.is_leader()]
        return leaders[0] if len(leaders) == 1 else None

    return wait_until(
        single,
        timeout,
        lambda: f"no single leader: {[(n.node_id, n.is_leader()) for n in nodes]}",
    )


def followers_of(leader: Node, nodes: list[Node]) -> list[Node]:
    return [n for n in nodes if n is not leader]


def wait_height(node: Node, height: int, timeout: float = 5.0) -> None:
    wait_until(
        lambda: node.get_state().height >= height,
        timeout,
        lambda: f"{node.node_id} stuck at height {node.get_state().height} (want {height})",
    )


def threads_of(node_id: str) -> list[str]:
    """Live threads the library named for ``node_id`` (etcdraft-<role>-<id>[-...])."""
    pattern = re.compile(rf"^etcdraft-[a-z]+-{re.escape(node_id)}(-[a-z]+)?$")
    return [t.name for t in threading.enumerate() if pattern.match(t.name)]


def written(h: Harness, prefix: bytes | None = None) -> list[tuple[bytes, int, int]]:
    """Every key under ``prefix`` (default: the whole namespace) with its revision
    and version, except the liveness reports (refreshed in the background): equal
    before and after means nothing was written there."""
    return [
        (kv["key"], kv["mod_revision"], kv["version"])
        for kv in h.raw.prefix(prefix or h.keys.root)
        if not kv["key"].startswith(h.keys.alive_prefix)
    ]


def logged(h: Harness) -> list[tuple[bytes, int, int]]:
    """The replicated log as stored: equal before and after means no log write."""
    return written(h, h.keys.log_prefix)


def settled(h: Harness, nodes: list[Node]) -> None:
    """Wait until one node leads and every node is a candidate in etcd (no election
    writes pending). The leader's *view* has seen the candidacies once it has seen
    anything written later: see :func:`wait_progress`."""
    ids = sorted(n.node_id for n in nodes)
    one_leader(nodes)
    wait_until(
        lambda: sorted(election_holders(h)) == ids,
        5,
        lambda: f"candidates {election_holders(h)} (want {ids})",
    )


def wait_progress(leader: Node, nodes: list[Node], height: int) -> None:
    """Wait until ``leader`` saw each of ``nodes`` report applying ``height``."""

    def seen() -> bool:
        prog = leader.progress()
        return all((p := prog.get(n.node_id)) is not None and p.height >= height for n in nodes)

    wait_until(seen, 5, lambda: f"{leader.node_id} sees progress {leader.progress()}")


def election_holders(h: Harness) -> list[str]:
    return [kv["value"].decode() for kv in h.raw.prefix(h.keys.election_prefix)]


@pytest.fixture
def harness(etcd: Any, namespace: str, tmp_path: Path) -> Iterator[Harness]:
    h = Harness(list(etcd.endpoints), namespace, tmp_path)
    yield h
    h.close()


@pytest.fixture
def harness3(etcd3: Any, namespace: str, tmp_path: Path) -> Iterator[Harness]:
    h = Harness(list(etcd3.endpoints), namespace, tmp_path)
    yield h
    h.close()


# ------------------------------------------------------------------ construction & lifecycle


def test_constructing_does_no_io(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.setblocking(False)
        port = server.getsockname()[1]
        raft_dir = tmp_path / "never-created"
        cfg = Config(
            node_id="quiet",
            raft_addr="127.0.0.1:1",
            endpoints=[f"http://127.0.0.1:{port}"],
            namespace="/etcdraft-test/quiet",
            raft_dir=str(raft_dir),
            **FAST,
        )
        node = Node(cfg)
        # local queries before start: no I/O, sensible answers
        assert node.node_id == "quiet"
        assert node.config is cfg
        assert node.is_leader() is False
        assert node.leader_id() == ""
        assert node.has_quorum() is False
        assert node.get_state() == RaftBlockState()
        node.set_apply_callback(queue.Queue())
        node.set_apply_callback(None)
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected
        assert not raft_dir.exists(), "constructing a Node touched raft_dir"
        # stop and shutdown before start are safe no-ops (and idempotent)
        node.stop()
        node.stop()
        node.shutdown()
        other = Node(cfg.replace(node_id="quiet2"))
        other.shutdown()
        other.shutdown()
        with pytest.raises(BlockingIOError):
            server.accept()


def test_start_raises_etcd_unavailable_within_deadline_and_can_be_retried(
    etcd: Any, namespace: str, tmp_path: Path
) -> None:
    port = free_port()
    cfg = Config(
        node_id="lonely",
        raft_addr="127.0.0.1:1",
        endpoints=[f"http://127.0.0.1:{port}"],
        namespace=namespace,
        raft_dir=str(tmp_path / "lonely"),
        bootstrap=True,
        # the start deadline; 3 s leaves the second start() room on a loaded 2-core
        # machine (1 s failed there once: its view reads ran out of time)
        shutdown_timeout="3s",
        **FAST,
    )
    node = Node(cfg)
    proxy: FaultProxy | None = None
    started = time.monotonic()
    try:
        with pytest.raises(EtcdUnavailableError):
            node.start()
        elapsed = time.monotonic() - started
        assert elapsed <= cfg.shutdown_timeout + 2.0, f"start() took {elapsed:.2f}s to give up"
        assert node.is_leader() is False
        assert node.has_quorum() is False
        # etcd becomes reachable at that address: a second start() succeeds
        proxy = FaultProxy(int(etcd.endpoints[0].rsplit(":", 1)[1]), listen_port=port)
        node.start()
        one_leader([node])
        node.broadcast(block(1))
        with contextlib.closing(RawEtcd(etcd.endpoints[0])) as raw:
            assert raw.get(Keys(namespace).log(1)) is not None
    finally:
        node.shutdown()
        node.shutdown()
        if proxy is not None:
            proxy.close()


def test_start_twice_is_noop_and_stop_releases_session(harness: Harness) -> None:
    (node,) = harness.cluster(1)
    one_leader([node])
    node.start()  # no-op
    keys, raw = harness.keys, harness.raw
    assert election_holders(harness) == ["n1"], "start() twice must not campaign twice"
    alive = raw.prefix(keys.alive_prefix)
    assert [kv["key"] for kv in alive] == [keys.alive("n1")], "start() registers the node once"
    assert alive[0]["lease"] != 0, "liveness key must be bound to the session lease"
    node.stop()
    # stop() released the session: its election and liveness keys are gone at once
    assert election_holders(harness) == []
    assert raw.prefix(keys.alive_prefix) == []
    assert node.is_leader() is False
    node.stop()
    node.shutdown()


def test_context_manager_starts_and_stops(harness: Harness) -> None:
    peers = [f"cm@{addr_of('cm')}"]
    cfg = harness.config("cm", bootstrap=True, peers=peers)
    with Node(cfg) as node:
        assert harness.raw.get(harness.keys.alive("cm")) is not None, "not started"
        one_leader([node])
        node.broadcast(block(1))
    assert node.is_leader() is False
    assert harness.raw.get(harness.keys.alive("cm")) is None, "session not released on exit"
    assert election_holders(harness) == []
    node.shutdown()  # idempotent after stop


def test_shutdown_releases_lease_at_once_for_fast_takeover(harness: Harness) -> None:
    # a long lease TTL: a takeover faster than it proves the lease was revoked
    nodes = harness.cluster(2, election_timeout="4s")
    leader = one_leader(nodes)
    settled(harness, nodes)
    (follower,) = followers_of(leader, nodes)
    t0 = time.monotonic()
    leader.shutdown()
    assert leader.node_id not in election_holders(harness), "shutdown() kept the candidacy"
    assert harness.raw.get(harness.keys.alive(leader.node_id)) is None
    wait_until(follower.is_leader, 2.5, "follower did not take over after shutdown()")
    assert time.monotonic() - t0 < 3.0
    leader.shutdown()  # idempotent
    leader.stop()


def test_bootstrap_writes_membership_once_and_only_members_campaign(harness: Harness) -> None:
    peers = [f"a@{addr_of('a')}", f"b@{addr_of('b')}"]
    a = harness.node("a", bootstrap=True, peers=peers)
    members = {kv["key"]: kv["value"] for kv in harness.raw.prefix(harness.keys.members_prefix)}
    assert members == {
        harness.keys.member("a"): addr_of("a").encode(),
        harness.keys.member("b"): addr_of("b").encode(),
    }
    # a second bootstrap with other peers does not rewrite existing membership
    harness.node("b", bootstrap=True, peers=[f"b@{addr_of('b')}", f"z@{addr_of('z')}"])
    members2 = {kv["key"]: kv["value"] for kv in harness.raw.prefix(harness.keys.members_prefix)}
    assert members2 == members
    # a non-member registers (alive) but never campaigns
    outsider = harness.node("outsider")
    leader = one_leader([a])
    leader.broadcast(block(1))
    wait_height(outsider, 1)
    assert harness.raw.get(harness.keys.alive("outsider")) is not None
    wait_until(lambda: sorted(election_holders(harness)) == ["a", "b"], 5, "b never campaigned")
    assert "outsider" not in election_holders(harness)
    assert outsider.is_leader() is False
    assert outsider.leader_id() == "a"


# --------------------------------------------------------------------------- start catches up


def test_start_returns_with_replicated_state(harness: Harness) -> None:
    nodes = harness.cluster(2)
    leader = one_leader(nodes)
    (follower,) = followers_of(leader, nodes)
    settled(harness, nodes)
    reference: queue.Queue[RaftApplyMsg] = queue.Queue()
    follower.set_apply_callback(reference)
    n = 70  # more than one catch-up page, written under two leaderships
    for height in range(1, 41):
        leader.broadcast(block(height))
    wait_progress(leader, [follower], 40)
    leader.resign_leader()
    wait_until(follower.is_leader, 2, "no takeover")
    for height in range(41, n + 1):
        follower.broadcast(block(height))
    late = Node(harness.config("late", raft_dir=False))
    harness.nodes.append(late)
    q: queue.Queue[RaftApplyMsg] = queue.Queue()
    late.set_apply_callback(q)
    late.start()
    state = late.get_state()  # right after start() returned: no waiting
    assert state.height == n
    assert state == follower.get_state()
    assert state.SerializeToString() == block(n).SerializeToString()
    # the catch-up went through the apply stream, with the terms the others saw
    caught_up = drain(q)
    original = collect(reference, n)
    assert [(m.index, m.term, m.state) for m in caught_up] == [
        (m.index, m.term, m.state) for m in original
    ]
    assert_stream_invariants(caught_up)
    assert caught_up[0].term < caught_up[-1].term


# --------------------------------------------------------------------------- leadership queries


def test_exactly_one_leader_and_all_agree(harness3: Harness) -> None:
    # the first endpoint is dead: nodes fail over to the live ones
    endpoints = [f"http://127.0.0.1:{free_port()}", *harness3.endpoints]
    nodes = harness3.cluster(3, endpoints=endpoints)
    leader = one_leader(nodes)
    wait_until(
        lambda: all(n.leader_id() == leader.node_id for n in nodes),
        5,
        lambda: f"leader_id disagreement: {[(n.node_id, n.leader_id()) for n in nodes]}",
    )
    assert [n.is_leader() for n in nodes].count(True) == 1
    for n, nid in zip(nodes, ["n1", "n2", "n3"], strict=True):
        assert n.node_id == nid
        assert n.config.node_id == nid
        assert n.config.endpoints == endpoints
        with pytest.raises(Exception):  # noqa: B017 - the config is immutable
            n.config.node_id = "other"  # type: ignore[misc]
    # etcd agrees: the leader holds the oldest election key
    kvs = harness3.raw.prefix(harness3.keys.election_prefix)
    oldest = min(kvs, key=lambda kv: kv["create_revision"])
    assert oldest["value"].decode() == leader.node_id


def test_has_quorum_true_only_on_leader(harness: Harness) -> None:
    nodes = harness.cluster(3)
    leader = one_leader(nodes)
    assert leader.has_quorum() is True
    for f in followers_of(leader, nodes):
        assert f.has_quorum() is False
    leader.shutdown()
    assert leader.has_quorum() is False  # never raises, even after shutdown


def test_is_leader_has_quorum_and_shutdown_bounded_when_etcd_stalls(
    etcd_cluster_factory: Callable[..., Any], namespace: str, tmp_path: Path
) -> None:
    cluster = etcd_cluster_factory(size=1)
    h = Harness(list(cluster.endpoints), namespace, tmp_path)
    ttl = 1.0  # election_timeout
    lease_margin = 0.3  # leader_lease_timeout
    send_timeout = 0.5
    #: "nothing hangs" bounds are liveness bounds: each call ends on a send_timeout
    #: deadline; 2 s more for a loaded 2-core machine (exact figures: make bench)
    slack = 2.0
    member = cluster.members[0]
    try:
        nodes = h.cluster(2)
        leader = one_leader(nodes)
        (follower,) = followers_of(leader, nodes)
        assert leader.has_quorum()
        member.pause()
        paused_at = time.monotonic()
        try:
            t0 = time.monotonic()
            assert leader.has_quorum() is False
            assert time.monotonic() - t0 <= send_timeout + slack, "has_quorum blocked too long"
            # every keep-alive that succeeded was sent before the stall, so the lease
            # may expire at etcd from paused_at + ttl on: leader_lease_timeout before
            # that, is_leader() must be false (the fault's duration, not a sync sleep)
            threading.Event().wait(max(0.0, paused_at + ttl - lease_margin - time.monotonic()))
            assert leader.is_leader() is False, (
                f"is_leader() still true {time.monotonic() - paused_at:.2f}s after etcd "
                f"stalled (lease TTL {ttl}s, leader_lease_timeout {lease_margin}s)"
            )
            t0 = time.monotonic()
            assert leader.has_quorum() is False
            assert time.monotonic() - t0 <= send_timeout + slack
            # the fault lasts 2 s (not a synchronisation): long enough for the nodes'
            # watches to give their silent stream up and try to reopen it
            threading.Event().wait(max(0.0, paused_at + 2.0 - time.monotonic()))
            t0 = time.monotonic()
            follower.shutdown()
            took = time.monotonic() - t0
            # revoke within send_timeout, join within one more
            assert took <= 2 * send_timeout + slack, (
                f"shutdown() took {took:.2f}s with etcd stalled"
            )
            wait_until(
                lambda: not threads_of(follower.node_id),
                1.0,
                lambda: f"background threads outlived shutdown(): {threads_of(follower.node_id)}",
            )
        finally:
            member.resume()
        wait_until(leader.is_leader, 8, "leadership did not recover after etcd came back")
        wait_until(leader.has_quorum, 5, "has_quorum did not recover")
        member.pause()
        try:
            t0 = time.monotonic()
            leader.stop()
            took = time.monotonic() - t0
            assert took <= leader.config.shutdown_timeout + 1.5, f"stop() took {took:.2f}s"
        finally:
            member.resume()
    finally:
        h.close()


def test_leader_id_is_empty_when_no_leader_is_known(harness: Harness) -> None:
    outsider = harness.node("outsider")  # no membership at all: nobody campaigns
    assert outsider.leader_id() == ""
    assert outsider.is_leader() is False
    assert outsider.has_quorum() is False


def test_stale_leader_has_quorum_confirms_with_etcd(harness: Harness) -> None:
    etcd_port = int(harness.endpoints[0].rsplit(":", 1)[1])
    proxy = FaultProxy(etcd_port)
    try:
        stale = harness.node(
            "p", bootstrap=True, peers=[f"p@{addr_of('p')}"], endpoints=[proxy.url]
        )
        one_leader([stale])
        assert stale.has_quorum() is True
        proxy.freeze()
        assert harness.raw.delete_prefix(harness.keys.election_prefix) == 1
        assert stale.is_leader(), "precondition: the stale node still believes it leads"
        t0 = time.monotonic()
        assert stale.has_quorum() is False, "has_quorum must confirm with etcd, not locally"
        assert time.monotonic() - t0 <= 0.5 + 2.0  # send_timeout; a liveness bound
        assert stale.is_leader() is False, "a failed quorum check proves leadership is gone"
        proxy.thaw()
        one_leader([stale])  # it campaigns again once it sees its key is gone
    finally:
        proxy.close()


def test_slow_apply_consumer_does_not_stall_node_api(harness: Harness) -> None:
    """``put_nowait`` is user code: while it runs, the node's own API must answer.
    (A consumer that hands messages to another thread synchronously, or calls back
    into the node from one, must not freeze or deadlock it.)"""
    nodes = harness.cluster(2)
    leader = one_leader(nodes)
    (follower,) = followers_of(leader, nodes)
    wait_until(lambda: follower.leader_id() == leader.node_id, 5, "follower unaware of leader")
    gate = harness.gate()
    follower.set_apply_callback(gate)
    leader.broadcast(block(1))
    wait_until(gate.blocked.is_set, 5, "follower never applied")
    answers: dict[str, Any] = {}

    def ask() -> None:
        answers["leader_id"] = follower.leader_id()
        answers["is_leader"] = follower.is_leader()
        answers["state"] = follower.get_state()

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    asker.join(1.0)
    assert not asker.is_alive(), (
        "leader_id() blocked while the apply consumer's put_nowait was running "
        "(the node holds its lock around user code)"
    )
    assert answers["leader_id"] == leader.node_id
    assert answers["state"].height == 1


# --------------------------------------------------------------------------- broadcast


def test_broadcast_on_follower_raises_not_leader(harness: Harness) -> None:
    nodes = harness.cluster(2)
    leader = one_leader(nodes)
    (follower,) = followers_of(leader, nodes)
    wait_until(lambda: follower.leader_id() == leader.node_id, 5, "follower unaware of leader")
    with pytest.raises(NotLeaderError):
        follower.broadcast(block(1))
    # NotLeaderError comes first, even for states that are invalid in other ways
    with pytest.raises(NotLeaderError):
        follower.broadcast(block(2, data=b"x" * (1600 * 1024)))
    assert harness.raw.prefix(harness.keys.log_prefix) == []
    assert follower.get_state().height == 0


def test_broadcast_stores_exact_bytes_under_padded_height(harness: Harness) -> None:
    nodes = harness.cluster(2)
    leader = one_leader(nodes)
    (follower,) = followers_of(leader, nodes)
    q: queue.Queue[RaftApplyMsg] = queue.Queue()
    follower.set_apply_callback(q)
    state = RaftBlockState(
        height=7,
        last_submitted_da_header_height=5,
        last_submitted_da_data_height=4,
        hash=b"\x01" * 32,
        timestamp=1_700_000_000_000_000_000,
        header=b"hdr-bytes",
        data=b"payload",
    )
    leader.broadcast(state)
    key = f"{harness.namespace}/log/{7:020d}".encode()
    assert key == harness.keys.log(7)
    kv = harness.raw.get(key)
    assert kv is not None, f"nothing stored under {key!r}"
    assert kv["value"] == state.SerializeToString()
    assert kv["version"] == 1 and kv["lease"] == 0
    # the broadcast returned after commit: the leader already reflects it
    assert leader.get_state() == state
    (msg,) = collect(q, 7)
    assert msg.index == kv["mod_revision"], "RaftApplyMsg.index must be the entry's revision"
    assert msg.state == state


def test_broadcast_identical_retry_writes_nothing(harness: Harness) -> None:
    nodes = harness.cluster(2)
    leader = one_leader(nodes)
    (follower,) = followers_of(leader, nodes)
    q: queue.Queue[RaftApplyMsg] = queue.Queue()
    follower.set_apply_callback(q)
    for height in (1, 2, 3):
        leader.broadcast(block(height))
    before = {h: harness.raw.get(harness.keys.log(h)) for h in (2, 3)}
    log_before = logged(harness)
    leader.broadcast(block(3))  # retry at the replicated height
    leader.broadcast(block(2))  # retry below it
    leader.broadcast(block(3), timeout=2.0)
    assert logged(harness) == log_before, "an identical retry wrote to etcd"
    for h in (2, 3):
        assert harness.raw.get(harness.keys.log(h)) == before[h]
    leader.broadcast(block(4))  # a barrier: everything before it was delivered
    msgs = collect(q, 4)
    assert [m.state.height for m in msgs] == [1, 2, 3, 4], "duplicate or missing apply"
    assert drain(q) == []


def test_broadcast_height_conflict(harness: Harness) -> None:
    (leader,) = harness.cluster(1)
    one_leader([leader])
    for height in (1, 2, 3):
        leader.broadcast(block(height))
    stored = {h: harness.raw.get(harness.keys.log(h)) for h in (1, 2, 3)}
    log_before = logged(harness)
    with pytest.raises(HeightConflictError):
        leader.broadcast(block(3, hash=b"\xff" * 32))  # at the replicated height
    with pytest.raises(HeightConflictError):
        leader.broadcast(block(1, timestamp=11))  # below it
    # the retry rule comes before the validity checks above the replicated height
    with pytest.raises(HeightConflictError):
        leader.broadcast(block(2, timestamp=1, data=b"x" * (1600 * 1024)))
    assert logged(harness) == log_before, "a rejected broadcast wrote to etcd"
    assert {h: harness.raw.get(harness.keys.log(h)) for h in (1, 2, 3)} == stored
    assert leader.get_state() == block(3)
    assert isinstance(HeightConflictError("x"), EtcdraftError)


def test_broadcast_rejects_non_increasing_timestamp(harness: Harness) -> None:
    (leader,) = harness.cluster(1)
    one_leader([leader])
    leader.broadcast(block(1, timestamp=100))
    log_before = logged(harness)
    with pytest.raises(InvalidStateError):
        leader.broadcast(block(2, timestamp=100))  # equal
    with pytest.raises(InvalidStateError):
        leader.broadcast(block(3, timestamp=99))  # lower
    assert logged(harness) == log_before
    assert harness.raw.get(harness.keys.log(2)) is None
    assert harness.raw.get(harness.keys.log(3)) is None
    leader.broadcast(block(2, timestamp=101))
    assert leader.get_state().height == 2


def test_broadcast_rejects_state_over_max_block_bytes(harness: Harness) -> None:
    """Over ``max_block_bytes`` is refused before anything is written; exactly the
    maximum replicates (here 2 MiB: above one etcd request, so as pieces)."""
    nodes = harness.cluster(2, max_block_bytes=2 * 1024 * 1024)
    leader = one_leader(nodes)
    (follower,) = followers_of(leader, nodes)
    log_before = logged(harness)
    fits, too_big = sized(1, 2 * 1024 * 1024), sized(1, 2 * 1024 * 1024 + 1)
    with pytest.raises(InvalidStateError, match="max_block_bytes"):
        leader.broadcast(too_big)
    assert logged(harness) == log_before
    assert written(harness, harness.keys.blocks_prefix) == []
    leader.broadcast(fits, timeout=10.0)
    wait_height(follower, 1, timeout=10)
    assert follower.get_state() == fits


def test_state_of_one_etcd_request_is_stored_as_its_exact_bytes(harness: Harness) -> None:
    """Wire compatibility: the largest state written in one request is stored under
    log/<height> as its protobuf bytes, exactly as ev-node's Go type reads them."""
    nodes = harness.cluster(2)
    leader = one_leader(nodes)
    (follower,) = followers_of(leader, nodes)
    fits = sized(1, MAX_ENTRY_BYTES)
    leader.broadcast(fits, timeout=5.0)
    kv = harness.raw.get(harness.keys.log(1))
    assert kv is not None and kv["value"] == fits.SerializeToString()
    wait_height(follower, 1)
    assert follower.get_state() == fits


def test_broadcast_of_pruned_height_is_invalid_and_late_node_restores(harness: Harness) -> None:
    (leader,) = harness.cluster(1, trailing_logs=2, snapshot_threshold=2)
    one_leader([leader])
    for height in range(1, 11):
        leader.broadcast(block(height))
    wait_until(lambda: harness.raw.get(harness.keys.log(1)) is None, 5, "old entries never pruned")
    assert harness.raw.get(harness.keys.log(10)) is not None
    before = logged(harness)
    with pytest.raises(InvalidStateError):
        leader.broadcast(block(1))  # identical bytes, but pruned: not a retry any more
    assert logged(harness) == before
    late = Node(harness.config("late", raft_dir=False))
    harness.nodes.append(late)
    q: queue.Queue[RaftApplyMsg] = queue.Queue()
    late.set_apply_callback(q)
    late.start()
    assert late.get_state() == block(10)
    msgs = drain(q)
    assert msgs and msgs[-1].state == block(10)
    assert_stream_invariants(msgs)


def test_broadcast_allows_height_gaps(harness: Harness) -> None:
    nodes = harness.cluster(2)
    leader = one_leader(nodes)
    (follower,) = followers_of(leader, nodes)
    q: queue.Queue[RaftApplyMsg] = queue.Queue()
    follower.set_apply_callback(q)
    for height in (1, 5, 10):
        leader.broadcast(block(height))
    assert [m.state.height for m in collect(q, 10)] == [1, 5, 10]
    assert follower.get_state().height == 10
    log_before = logged(harness)
    # a skipped height is below the replicated one: never written afterwards
    with pytest.raises((InvalidStateError, HeightConflictError)):
        leader.broadcast(block(3))
    assert harness.raw.get(harness.keys.log(3)) is None
    assert logged(harness) == log_before


def _proxied_pair(h: Harness, proxy: FaultProxy) -> tuple[Node, Node]:
    """Leader ``p`` talks to etcd through ``proxy``; follower ``q`` directly."""
    peers = [f"p@{addr_of('p')}", f"q@{addr_of('q')}"]
    leader = h.node("p", bootstrap=True, peers=peers, endpoints=[proxy.url])
    assert one_leader([leader]) is leader
    follower = h.node("q", peers=peers)
    return leader, follower


def test_broadcast_survives_a_lost_reply(harness: Harness) -> None:
    """etcd commits the write but the reply is lost: the fenced write is safely
    retried; exactly one entry is stored and applied once everywhere."""
    proxy = FaultProxy(int(harness.endpoints[0].rsplit(":", 1)[1]))
    try:
        leader, follower = _proxied_pair(harness, proxy)
        lq: queue.Queue[RaftApplyMsg] = queue.Queue()
        fq: queue.Queue[RaftApplyMsg] = queue.Queue()
        leader.set_apply_callback(lq)
        follower.set_apply_callback(fq)
        leader.broadcast(block(1))
        proxy.drop_replies(harness.keys.log(2), 1)
        try:
            leader.broadcast(block(2))
        except EtcdUnavailableError:  # allowed ("safe to retry"): retry it
            leader.broadcast(block(2))
        assert proxy.dropped == 1, "the fault was not injected"
        kv = harness.raw.get(harness.keys.log(2))
        assert kv is not None and kv["version"] == 1
        assert kv["value"] == block(2).SerializeToString()
        leader.broadcast(block(3))
        assert leader.get_state() == block(3)
        for q in (lq, fq):
            msgs = collect(q, 3)
            assert [m.state.height for m in msgs] == [1, 2, 3], "entry lost or applied twice"
            assert msgs[1].index == kv["mod_revision"]
            assert_stream_invariants(msgs)
    finally:
        proxy.close()


def test_broadcast_timing_out_after_commit_can_be_retried(harness: Harness) -> None:
    """Every reply about height 2 is lost: broadcast fails with EtcdUnavailableError
    although etcd committed it; the retry succeeds without a second write and no
    apply stream skips or repeats the entry."""
    proxy = FaultProxy(int(harness.endpoints[0].rsplit(":", 1)[1]))
    try:
        leader, follower = _proxied_pair(harness, proxy)
        lq: queue.Queue[RaftApplyMsg] = queue.Queue()
        fq: queue.Queue[RaftApplyMsg] = queue.Queue()
        leader.set_apply_callback(lq)
        follower.set_apply_callback(fq)
        leader.broadcast(block(1))
        proxy.drop_replies(harness.keys.log(2), 1000)
        t0 = time.monotonic()
        with pytest.raises(EtcdUnavailableError):
            leader.broadcast(block(2))
        # send_timeout; 2 s more is a liveness bound for a loaded machine
        assert time.monotonic() - t0 <= 0.5 + 2.0, "broadcast overran send_timeout"
        assert proxy.dropped >= 1
        kv = harness.raw.get(harness.keys.log(2))
        assert kv is not None and kv["value"] == block(2).SerializeToString(), (
            "precondition: etcd committed the write whose replies were lost"
        )
        proxy.drop_replies(b"", 0)
        leader.broadcast(block(2))  # the retry: identical bytes, already there
        assert harness.raw.get(harness.keys.log(2)) == kv, "the retry wrote again"
        leader.broadcast(block(3))
        wait_height(leader, 3)
        for q in (lq, fq):
            msgs = collect(q, 3)
            assert [m.state.height for m in msgs] == [1, 2, 3], "entry lost or applied twice"
            assert_stream_invariants(msgs)
    finally:
        proxy.close()


def test_leader_stream_keeps_an_ambiguous_write_before_later_ones(harness: Harness) -> None:
    """Height 2 commits but its replies are lost (EtcdUnavailableError) while the
    leader's watch is stalled; the producer moves on to height 3. Once the watch
    catches up, the leader's own apply stream holds 1, 2, 3: the committed entry
    is neither skipped nor reordered (invariants 2 and 3)."""
    proxy = FaultProxy(int(harness.endpoints[0].rsplit(":", 1)[1]))
    try:
        leader, follower = _proxied_pair(harness, proxy)
        lq: queue.Queue[RaftApplyMsg] = queue.Queue()
        fq: queue.Queue[RaftApplyMsg] = queue.Queue()
        leader.set_apply_callback(lq)
        follower.set_apply_callback(fq)
        leader.broadcast(block(1))
        proxy.freeze()
        proxy.drop_replies(harness.keys.log(2), 1000)
        with pytest.raises(EtcdUnavailableError):
            leader.broadcast(block(2))
        assert harness.raw.get(harness.keys.log(2)) is not None, "precondition: committed"
        proxy.drop_replies(b"", 0)
        leader.broadcast(block(3))
        proxy.thaw()
        wait_height(leader, 3)
        for name, q in (("leader", lq), ("follower", fq)):
            msgs = collect(q, 3)
            assert [m.state.height for m in msgs] == [1, 2, 3], f"{name} stream: {msgs}"
            assert_stream_invariants(msgs)
    finally:
        proxy.close()


# --------------------------------------------------------------------------- get_state


def test_get_state_returns_a_copy(harness: Harness) -> None:
    (leader,) = harness.cluster(1)
    one_leader([leader])
    assert leader.get_state() == RaftBlockState()
    leader.broadcast(block(1, data=b"abc"))
    snapshot = leader.get_state()
    snapshot.height = 99
    snapshot.data = b"mutated"
    snapshot.hash = b""
    again = leader.get_state()
    assert again == block(1, data=b"abc")
    assert again is not leader.get_state()


# --------------------------------------------------------------------------- apply callback


def test_apply_streams_match_on_leader_and_follower(harness: Harness) -> None:
    nodes = harness.cluster(3)
    leader = one_leader(nodes)
    queues: dict[str, queue.Queue[RaftApplyMsg]] = {}
    for n in nodes:
        queues[n.node_id] = queue.Queue()
        n.set_apply_callback(queues[n.node_id])
    heights = [1, 2, 3, 5, 8, 13, 21, 34, 55, 89]
    for height in heights:
        leader.broadcast(block(height))
    streams = {nid: collect(q, heights[-1]) for nid, q in queues.items()}
    reference = streams[leader.node_id]
    assert [m.state.height for m in reference] == heights
    assert_stream_invariants(reference)
    for nid, msgs in streams.items():
        assert [(m.index, m.term, m.state) for m in msgs] == [
            (m.index, m.term, m.state) for m in reference
        ], f"{nid}'s apply stream differs from the leader's"
    revisions = [harness.raw.get(harness.keys.log(h))["mod_revision"] for h in heights]
    assert [m.index for m in reference] == revisions
    assert len({m.term for m in reference}) == 1, "one leadership, one term"


def test_full_apply_queue_drops_and_never_blocks(harness: Harness) -> None:
    nodes = harness.cluster(2)
    leader = one_leader(nodes)
    (follower,) = followers_of(leader, nodes)
    fq: queue.Queue[RaftApplyMsg] = queue.Queue(maxsize=1)
    lq: queue.Queue[RaftApplyMsg] = queue.Queue(maxsize=1)
    follower.set_apply_callback(fq)
    leader.set_apply_callback(lq)
    t0 = time.monotonic()
    for height in range(1, 21):
        leader.broadcast(block(height))
    assert time.monotonic() - t0 < 10
    wait_height(follower, 20)
    assert follower.fsm.dropped == 19
    assert leader.fsm.dropped == 19
    assert fq.get_nowait().state.height == 1
    assert lq.get_nowait().state.height == 1


def test_set_apply_callback_none_stops_delivery(harness: Harness) -> None:
    nodes = harness.cluster(2)
    leader = one_leader(nodes)
    (follower,) = followers_of(leader, nodes)
    q: queue.Queue[RaftApplyMsg] = queue.Queue()
    follower.set_apply_callback(q)
    leader.broadcast(block(1))
    assert [m.state.height for m in collect(q, 1)] == [1]
    follower.set_apply_callback(None)
    leader.broadcast(block(2))
    leader.broadcast(block(3))
    wait_height(follower, 3)
    assert drain(q) == []
    # and it can be set again: delivery resumes with the next entry only
    follower.set_apply_callback(q)
    leader.broadcast(block(4))
    assert [m.state.height for m in collect(q, 4)] == [4]


# --------------------------------------------------------------------------- membership


def members_in_etcd(h: Harness) -> dict[str, dict[str, Any]]:
    return {
        kv["key"][len(h.keys.members_prefix) :].decode(): kv
        for kv in h.raw.prefix(h.keys.members_prefix)
    }


def test_add_peer_replace_semantics_from_a_follower(harness: Harness) -> None:
    nodes = harness.cluster(2)
    leader = one_leader(nodes)
    (follower,) = followers_of(leader, nodes)
    follower.add_peer("c", "10.9.9.9:1")  # never contacted: membership only
    members = members_in_etcd(harness)
    assert members["c"]["value"] == b"10.9.9.9:1"
    rev = written(harness, harness.keys.members_prefix)
    follower.add_peer("c", "10.9.9.9:1")  # same id and addr: no-op
    assert written(harness, harness.keys.members_prefix) == rev, "a no-op add_peer wrote to etcd"
    follower.add_peer("c", "10.9.9.9:2")  # same id, new addr: replaced
    members = members_in_etcd(harness)
    assert members["c"]["value"] == b"10.9.9.9:2"
    follower.add_peer("d", "10.9.9.9:2")  # same addr, new id: the old id is gone
    members = members_in_etcd(harness)
    assert "c" not in members
    assert members["d"]["value"] == b"10.9.9.9:2"
    assert {k: v["value"] for k, v in members.items()} == {
        "n1": addr_of("n1").encode(),
        "n2": addr_of("n2").encode(),
        "d": b"10.9.9.9:2",
    }
    assert leader.is_leader(), "membership edits of others must not disturb the leader"


def test_add_peer_reusing_leaders_address_demotes_it(harness: Harness) -> None:
    nodes = harness.cluster(2)
    leader = one_leader(nodes)
    (follower,) = followers_of(leader, nodes)
    follower.add_peer(leader.node_id, "127.0.0.1:2")  # same id, new addr: still a member
    assert members_in_etcd(harness)[leader.node_id]["value"] == b"127.0.0.1:2"
    leader.broadcast(block(1))
    assert leader.is_leader()
    follower.add_peer("successor", "127.0.0.1:2")  # same addr, new id: the old id is out
    assert leader.node_id not in members_in_etcd(harness)
    wait_until(lambda: not leader.is_leader(), 2.0, "replaced leader did not step down")
    with pytest.raises(NotLeaderError):
        leader.broadcast(block(2))
    assert harness.raw.get(harness.keys.log(2)) is None
    wait_until(follower.is_leader, 5, "the remaining member did not take over")
    follower.broadcast(block(2))


def test_add_peer_lets_a_node_campaign_and_remove_peer_withdraws_it(harness: Harness) -> None:
    (a,) = harness.cluster(1)
    one_leader([a])
    newcomer = harness.node("new")
    assert election_holders(harness) == ["n1"]
    newcomer.add_peer("new", addr_of("new"))
    wait_until(
        lambda: sorted(election_holders(harness)) == ["n1", "new"],
        5,
        "an added member did not campaign",
    )
    a.broadcast(block(1))
    wait_progress(a, [newcomer], 1)
    a.resign_leader()
    wait_until(newcomer.is_leader, 5, "the added member did not take over")
    newcomer.remove_peer("n1")
    wait_until(lambda: election_holders(harness) == ["new"], 5, "removed node still a candidate")
    assert "n1" not in members_in_etcd(harness)
    newcomer.broadcast(block(2))
    wait_height(a, 2)  # a still follows (and its control loop ran since)
    assert "n1" not in election_holders(harness), "a removed member campaigned again"
    assert a.is_leader() is False


def test_removed_leader_steps_down_and_is_fenced(harness: Harness) -> None:
    nodes = harness.cluster(3)
    leader = one_leader(nodes)
    leader.broadcast(block(1))
    f1, f2 = followers_of(leader, nodes)
    t0 = time.monotonic()
    f1.remove_peer(leader.node_id)
    wait_until(lambda: not leader.is_leader(), 2.0, "removed leader did not step down")
    assert time.monotonic() - t0 < 2.0
    rev = logged(harness)
    with pytest.raises(NotLeaderError):  # LeadershipLostError is one
        leader.broadcast(block(2))
    assert harness.raw.get(harness.keys.log(2)) is None
    assert logged(harness) == rev
    successor = one_leader([f1, f2])
    successor.broadcast(block(2))
    wait_height(leader, 2)
    assert leader.node_id not in election_holders(harness)
    assert leader.node_id not in members_in_etcd(harness)
    assert leader.is_leader() is False


# --------------------------------------------------------------------------- resign_leader


def test_resign_leader_is_noop_on_follower(harness: Harness) -> None:
    nodes = harness.cluster(2)
    leader = one_leader(nodes)
    (follower,) = followers_of(leader, nodes)
    settled(harness, nodes)
    term = leader.term
    rev = written(harness)
    t0 = time.monotonic()
    follower.resign_leader()
    # a no-op: it does not wait for a successor (its default timeout is several
    # seconds; a handover waits at least for a claim)
    assert time.monotonic() - t0 < follower.config.send_timeout * 5 / 2
    follower.resign_leader(timeout=0.1)
    assert written(harness) == rev, "resign_leader on a follower wrote to etcd"
    assert leader.is_leader() and leader.term == term


def test_resign_leader_hands_over(harness: Harness) -> None:
    nodes = harness.cluster(2)
    leader = one_leader(nodes)
    (follower,) = followers_of(leader, nodes)
    q: queue.Queue[RaftApplyMsg] = queue.Queue()
    follower.set_apply_callback(q)
    settled(harness, nodes)
    leader.broadcast(block(1))
    wait_progress(leader, [follower], 1)
    t0 = time.monotonic()
    leader.resign_leader()
    assert time.monotonic() - t0 < 2.5  # within default timeout (5 x send_timeout)
    assert leader.is_leader() is False
    wait_until(follower.is_leader, 1.0, "successor not leading right after resign returned")
    with pytest.raises(NotLeaderError):
        leader.broadcast(block(2))
    follower.broadcast(block(2))
    msgs = collect(q, 2)
    assert_stream_invariants(msgs)
    assert msgs[1].term > msgs[0].term, "a new leadership must have a higher term"
    wait_until(lambda: leader.leader_id() == follower.node_id, 5, "old leader unaware")


@pytest.mark.parametrize("laggard_pos", [0, 1])
def test_resign_leader_picks_most_up_to_date_member(harness: Harness, laggard_pos: int) -> None:
    nodes = harness.cluster(3)
    leader = one_leader(nodes)
    followers = followers_of(leader, nodes)
    laggard, fresh = followers[laggard_pos], followers[1 - laggard_pos]
    settled(harness, nodes)
    gate = harness.gate()
    laggard.set_apply_callback(gate)
    for height in range(1, 6):
        leader.broadcast(block(height))
    wait_until(gate.blocked.is_set, 5, "laggard never applied")
    wait_height(fresh, 5)

    def progress_known() -> bool:
        prog = leader.progress()
        lag, up = prog.get(laggard.node_id), prog.get(fresh.node_id)
        return bool(lag and up and lag.height == 1 and up.height == 5)

    wait_until(progress_known, 5, lambda: f"progress never reported: {leader.progress()}")
    leader.resign_leader()
    wait_until(fresh.is_leader, 2, "the most up-to-date member did not take over")
    assert laggard.is_leader() is False
    gate.release.set()
    laggard.set_apply_callback(None)
    fresh.broadcast(block(6))
    wait_height(laggard, 6)
    assert one_leader(nodes) is fresh


def test_resign_leader_times_out_when_successor_cannot_claim(harness: Harness) -> None:
    nodes = harness.cluster(2)
    leader = one_leader(nodes)
    (follower,) = followers_of(leader, nodes)
    settled(harness, nodes)
    gate = harness.gate()
    follower.set_apply_callback(gate)
    leader.broadcast(block(1))
    wait_until(gate.blocked.is_set, 5, "follower never applied")
    wait_progress(leader, [follower], 1)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        leader.resign_leader(timeout=1.0)
    elapsed = time.monotonic() - t0
    assert 0.9 <= elapsed <= 2.0, f"resign_leader(timeout=1.0) took {elapsed:.2f}s"
    gate.release.set()
    follower.set_apply_callback(None)
    leader_after = one_leader(nodes, timeout=5)
    leader_after.broadcast(block(2))
    wait_height(leader if leader_after is follower else follower, 2)


def test_resign_leader_without_live_member_raises_and_stays_leader(harness: Harness) -> None:
    nodes = harness.cluster(2)
    leader = one_leader(nodes)
    (follower,) = followers_of(leader, nodes)
    follower.shutdown()  # a member, but not live
    harness.node("bystander")  # live, but not a member
    leader.broadcast(block(1))
    with pytest.raises(HandoverError) as info:
        leader.resign_leader()
    assert isinstance(info.value, EtcdraftError)
    assert leader.is_leader()
    assert election_holders(harness) == [leader.node_id]
    leader.broadcast(block(2))
    assert leader.get_state().height == 2


def test_resign_leader_in_single_node_cluster_raises(harness: Harness) -> None:
    (leader,) = harness.cluster(1)
    one_leader([leader])
    before = written(harness)
    with pytest.raises(HandoverError):
        leader.resign_leader(timeout=1.0)
    assert leader.is_leader()
    assert written(harness) == before
    leader.broadcast(block(1))


def test_stop_of_leader_hands_over_to_most_up_to_date(harness: Harness) -> None:
    nodes = harness.cluster(3)
    leader = one_leader(nodes)
    followers = followers_of(leader, nodes)
    settled(harness, nodes)
    # the first follower in etcd's queue lags: a plain lease release would elect it
    kvs = harness.raw.prefix(harness.keys.election_prefix)
    queue_order = [kv["value"].decode() for kv in sorted(kvs, key=lambda k: k["create_revision"])]
    laggard = next(n for n in followers if n.node_id == queue_order[1])
    fresh = next(n for n in followers if n is not laggard)
    gate = harness.gate()
    laggard.set_apply_callback(gate)
    for height in range(1, 4):
        leader.broadcast(block(height))
    wait_until(gate.blocked.is_set, 5, "laggard never applied")
    wait_height(fresh, 3)
    wait_progress(leader, [fresh], 3)
    t0 = time.monotonic()
    leader.stop()
    assert time.monotonic() - t0 <= leader.config.shutdown_timeout + 1.0
    wait_until(fresh.is_leader, 2, "stop() did not hand over to the most up-to-date member")
    assert laggard.is_leader() is False
    gate.release.set()
    laggard.set_apply_callback(None)


def test_stop_waits_for_committed_entries_to_be_applied(harness: Harness) -> None:
    """A follower whose watch lags is stopped: stop() waits (within shutdown_timeout)
    until it applied everything committed before the call, and its final snapshot
    holds that state."""
    proxy = FaultProxy(int(harness.endpoints[0].rsplit(":", 1)[1]))
    try:
        peers = [f"l@{addr_of('l')}", f"f@{addr_of('f')}"]
        leader = harness.node("l", bootstrap=True, peers=peers)
        one_leader([leader])
        lagging = harness.node("f", peers=peers, endpoints=[proxy.url])
        proxy.freeze()
        for height in range(1, 6):
            leader.broadcast(block(height))
        assert lagging.get_state().height == 0, "precondition: the follower lags"
        # the lag lasts 0.3 s more (the fault's duration, not a synchronisation)
        thaw = threading.Timer(0.3, proxy.thaw)
        thaw.start()
        t0 = time.monotonic()
        lagging.stop()
        took = time.monotonic() - t0
        thaw.join()
        assert lagging.get_state() == block(5), "stop() returned before applying"
        assert took <= lagging.config.shutdown_timeout + 1.0
        snap = SnapshotStore(lagging.config.raft_dir, 3).load_latest()
        assert snap is not None and snap.state == block(5)
    finally:
        proxy.close()


# --------------------------------------------------------------------------- fencing


def test_external_delete_of_election_keys_fences_leader(harness: Harness) -> None:
    nodes = harness.cluster(2)
    leader = one_leader(nodes)
    (follower,) = followers_of(leader, nodes)
    q: queue.Queue[RaftApplyMsg] = queue.Queue()
    follower.set_apply_callback(q)
    leader.broadcast(block(1))
    (first,) = collect(q, 1)
    assert harness.raw.delete_prefix(harness.keys.election_prefix) >= 1
    try:
        leader.broadcast(block(2))
    except NotLeaderError:  # or its subclass LeadershipLostError: nothing written
        assert harness.raw.get(harness.keys.log(2)) is None
        # the cluster heals: someone campaigns again and leads
        one_leader(nodes, timeout=5).broadcast(block(2))
    # whoever wrote height 2 did so under a new leadership: the old term was fenced
    (second,) = collect(q, 2)
    assert second.term > first.term, "a write landed under the deleted leadership"
    assert harness.raw.get(harness.keys.log(2))["value"] == block(2).SerializeToString()


def test_stale_leader_write_is_fenced_by_etcd(harness: Harness) -> None:
    """Split brain on purpose: the old leader's watch is frozen (a proxy withholds
    etcd's watch stream; its lease stays alive), so it still *believes* it leads
    after its election key is deleted and another node took over. Its writes must
    be rejected by etcd's fence, and nothing it sends may land."""
    etcd_port = int(harness.endpoints[0].rsplit(":", 1)[1])
    proxy = FaultProxy(etcd_port)
    try:
        peers = [f"p@{addr_of('p')}", f"q@{addr_of('q')}"]
        # fast takeover off: its heartbeats would tell the stale node at once that
        # its key is gone; here it must keep believing it leads
        stale = harness.node(
            "p", bootstrap=True, peers=peers, endpoints=[proxy.url], fast_takeover=False
        )
        assert one_leader([stale]) is stale
        other = harness.node("q", peers=peers, fast_takeover=False)
        stale.broadcast(block(1))
        wait_height(other, 1)
        proxy.freeze()
        assert harness.raw.delete_prefix(harness.keys.election_prefix) >= 1
        wait_until(other.is_leader, 5, "the other node did not take over")
        other.broadcast(block(2))
        assert stale.is_leader(), "precondition: the stale node still believes it leads"
        rev = logged(harness)
        # same height, different bytes: rejected either way, nothing written
        # it believes it leads, so both attempts reach etcd's fence (or the first
        # one's rejection ends its leadership): never a plain "not leader" first
        with pytest.raises((HeightConflictError, LeadershipLostError)) as first:
            stale.broadcast(block(2, hash=b"\xee" * 32))
        expected = NotLeaderError if first.type is LeadershipLostError else LeadershipLostError
        with pytest.raises(expected) as second:
            stale.broadcast(block(3))
        if expected is LeadershipLostError:
            assert str(second.value) == "leader lock lost"
        assert logged(harness) == rev, "a stale leader's write reached etcd"
        assert harness.raw.get(harness.keys.log(3)) is None
        kv = harness.raw.get(harness.keys.log(2))
        assert kv is not None and kv["value"] == block(2).SerializeToString()
        assert kv["version"] == 1
        assert stale.is_leader() is False, "a fenced rejection must end local leadership"
        proxy.thaw()
        wait_height(stale, 2)
        assert stale.get_state() == block(2)
        assert one_leader([stale, other]) is other
    finally:
        proxy.close()


# --------------------------------------------------------------------------- raft_dir snapshots


def test_snapshots_in_raft_dir_and_retention(harness: Harness) -> None:
    (leader,) = harness.cluster(1, snap_count=2)
    one_leader([leader])
    raft_dir = Path(leader.config.raft_dir)
    for height in range(1, 6):
        leader.broadcast(block(height))
        leader.fsm.save_snapshot()
    files = sorted(raft_dir.glob("snapshot-*.json"))
    assert len(files) == 2, f"snap_count=2 but raft_dir holds {[f.name for f in files]}"
    leader.broadcast(block(6))
    leader.stop()
    assert len(list(raft_dir.glob("snapshot-*.json"))) <= 2
    snap = SnapshotStore(raft_dir, 2).load_latest()
    assert snap is not None
    assert snap.state.height == 6
    assert snap.state == block(6)


def test_restart_from_raft_dir_applies_only_new_entries(harness: Harness) -> None:
    nodes = harness.cluster(2)
    leader = one_leader(nodes)
    (follower,) = followers_of(leader, nodes)
    for height in range(1, 6):
        leader.broadcast(block(height))
    wait_height(follower, 5)
    follower.stop()
    snap = SnapshotStore(follower.config.raft_dir, 3).load_latest()
    assert snap is not None and snap.state.height == 5
    for height in range(6, 9):
        leader.broadcast(block(height))
    again = Node(follower.config)
    harness.nodes.append(again)
    q: queue.Queue[RaftApplyMsg] = queue.Queue()
    again.set_apply_callback(q)
    again.start()
    assert again.get_state() == block(8)
    msgs = drain(q)
    assert [m.state.height for m in msgs] == [6, 7, 8], "entries before the snapshot re-applied"
    assert msgs[0].index > snap.index
    assert_stream_invariants(msgs)


# --------------------------------------------------------------------------- threads


def test_public_methods_are_thread_safe(harness: Harness) -> None:
    nodes = harness.cluster(2)
    leader = one_leader(nodes)
    (follower,) = followers_of(leader, nodes)
    q: queue.Queue[RaftApplyMsg] = queue.Queue()
    follower.set_apply_callback(q)
    counter = itertools.count(1)
    lock = threading.Lock()
    done = threading.Event()
    succeeded: list[int] = []
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(15):
                with lock:
                    height = next(counter)
                try:
                    leader.broadcast(block(height))
                except InvalidStateError:
                    continue  # a higher height was replicated first: by contract
                with lock:
                    succeeded.append(height)
        except BaseException as exc:
            errors.append(exc)

    def reader(node: Node) -> None:
        last = 0
        try:
            while not done.is_set():
                height = node.get_state().height
                assert height >= last, "get_state went backwards"
                last = height
                node.is_leader()
                node.leader_id()
                node.has_quorum()
                node.progress()
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=writer) for _ in range(4)]
    readers = [threading.Thread(target=reader, args=(n,)) for n in nodes]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join(30)
    done.set()
    for t in readers:
        t.join(10)
    assert not errors, errors
    assert succeeded, "no broadcast succeeded"
    top = max(succeeded)
    msgs = collect(q, top)
    assert [m.state.height for m in msgs] == sorted(succeeded)
    assert_stream_invariants(msgs)
    assert follower.get_state() == block(top)


def test_broadcasts_racing_a_handover(harness: Harness) -> None:
    """The old leader keeps producing while it resigns: each broadcast either lands
    before the handover or fails as not-leader; the successor starts leading only
    once it applied every entry written before, and continues from there."""
    nodes = harness.cluster(2)
    leader = one_leader(nodes)
    (follower,) = followers_of(leader, nodes)
    settled(harness, nodes)
    fq: queue.Queue[RaftApplyMsg] = queue.Queue()
    follower.set_apply_callback(fq)
    landed: list[int] = []
    errors: list[BaseException] = []

    def produce() -> None:
        height = 1
        while True:
            try:
                leader.broadcast(block(height))
            except NotLeaderError:
                return
            except BaseException as exc:
                errors.append(exc)
                return
            landed.append(height)
            height += 1

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        wait_until(lambda: len(landed) >= 20, 10, "the producer made no progress")
        leader.resign_leader()
    finally:
        producer.join(10)
    assert not errors, errors
    assert landed == list(range(1, len(landed) + 1))
    wait_until(follower.is_leader, 2, "no takeover")
    # leadership began only after every earlier entry was applied
    assert follower.get_state() == block(landed[-1])
    follower.broadcast(block(landed[-1] + 1, hash=b"\x5a" * 32))
    msgs = collect(fq, landed[-1] + 1)
    assert [m.state.height for m in msgs] == [*landed, landed[-1] + 1]
    assert_stream_invariants(msgs)
    assert msgs[-1].term > msgs[-2].term


# --------------------------------------------------------------------------- etcdctl interop


class LineReader:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self.sel = selectors.DefaultSelector()
        self.sel.register(proc.stdout, selectors.EVENT_READ)
        self.buf = b""

    def next_line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sel.select(left):
                raise AssertionError(f"etcdctl printed no line (so far {self.buf!r})")
            chunk = os.read(self.proc.stdout.fileno(), 4096)  # type: ignore[union-attr]
            if not chunk:
                raise AssertionError(f"etcdctl exited: {self.buf!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()

    def wait_for(self, text: str, timeout: float) -> list[str]:
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while text not in seen:
            seen.append(self.next_line(max(0.01, deadline - time.monotonic())))
        return seen


def test_etcdctl_elect_observes_the_leader(harness: Harness) -> None:
    nodes = harness.cluster(2)
    leader = one_leader(nodes)
    (follower,) = followers_of(leader, nodes)
    settled(harness, nodes)
    leader.broadcast(block(1))
    wait_progress(leader, [follower], 1)
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["ETCDCTL_API"] = "3"
    proc = subprocess.Popen(
        [
            find_etcdctl_binary(),
            "--endpoints",
            ",".join(harness.endpoints),
            "elect",
            "-l",
            harness.keys.election_name,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        reader = LineReader(proc)
        first = reader.wait_for(leader.node_id, 10)
        assert first[0].startswith(harness.keys.election_name + "/"), first
        leader.resign_leader()
        reader.wait_for(follower.node_id, 10)
    finally:
        proc.kill()
        proc.communicate(timeout=10)
