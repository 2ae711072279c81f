"""Bad input, each a test against real etcd: foreign or corrupt data under the
namespace, two clusters on one namespace, oversize states, endpoints that are not
etcd, and wall-clock jumps. Each must end in a typed, explanatory error or a logged
and counted skip: never a hang, never a lost acknowledged block.

TLS and auth misconfiguration is covered by ``tests/test_tls_auth.py``.

Five of these tests were written against library bugs found here (a corrupt value at
the next height halting the leader, a skipped newest entry blocking wait_applied, a
foreign overwrite dropping blocks on catch-up, two clusters on one namespace, an
endpoint that is not etcd); they pass since those fixes.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import http.server
import itertools
import logging
import queue
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers import free_port, wait_until

import etcdraft
from etcdraft import (
    Config,
    ConfigError,
    EtcdError,
    EtcdraftError,
    EtcdUnavailableError,
    InvalidStateError,
    Node,
    RaftApplyMsg,
    RaftBlockState,
)
from etcdraft._deadline import Deadline
from etcdraft.etcd import EtcdClient, prefix_end
from etcdraft.keys import Keys

FAST = {
    "election_timeout": "1s",
    "heartbeat_timeout": "200ms",
    "leader_lease_timeout": "300ms",
    "send_timeout": "500ms",
}


def block(height: int, salt: bytes = b"", size: int = 0) -> RaftBlockState:
    return RaftBlockState(
        height=height,
        timestamp=1_000 + height,
        hash=hashlib.sha256(b"block-%d%s" % (height, salt)).digest(),
        header=b"\x00" * size,
    )


class Group:
    """In-process nodes on one namespace, each with an unbounded apply queue; all
    shut down at the end."""

    def __init__(self, endpoints: Sequence[str], namespace: str) -> None:
        self.endpoints = list(endpoints)
        self.namespace = namespace
        self.nodes: list[Node] = []
        self.queues: dict[str, queue.Queue[RaftApplyMsg]] = {}
        self.streams: dict[str, list[RaftApplyMsg]] = {}
        self.raw = EtcdClient(self.endpoints, name="test-raw")
        self.keys = Keys(namespace)

    def start(
        self, ids: Sequence[str], *, peers: Sequence[str] | None = None, bootstrap: bool = True
    ) -> list[Node]:
        peer_ids = list(peers) if peers is not None else list(ids)
        peer_list = ",".join(f"{p}@127.0.0.1:{7200 + i}" for i, p in enumerate(peer_ids))
        new = []
        for nid in ids:
            node = Node(
                Config(
                    node_id=nid,
                    endpoints=self.endpoints,
                    namespace=self.namespace,
                    peers=peer_list,
                    bootstrap=bootstrap,
                    **FAST,
                )
            )
            q: queue.Queue[RaftApplyMsg] = queue.Queue()
            node.set_apply_callback(q)
            self.queues[nid], self.streams[nid] = q, []
            self.nodes.append(node)
            node.start()
            new.append(node)
        return new

    def leader(self, among: Sequence[Node] | None = None) -> Node:
        nodes = list(among) if among is not None else self.nodes

        def single() -> Node | None:
            leaders = [n for n in nodes if n.is_leader()]
            return leaders[0] if len(leaders) == 1 else None

        found: Node = wait_until(single, 10, "no single leader")
        return found

    def stream(self, nid: str) -> list[RaftApplyMsg]:
        q = self.queues[nid]
        while True:
            try:
                self.streams[nid].append(q.get_nowait())
            except queue.Empty:
                return self.streams[nid]

    def heights(self, nid: str) -> list[int]:
        return [m.state.height for m in self.stream(nid)]

    def wait_height(self, node: Node, height: int) -> None:
        wait_until(
            lambda: node.get_state().height >= height,
            10,
            lambda: f"{node.node_id} stuck at {node.get_state().height}, want {height}",
        )

    def put(self, key: bytes, value: bytes) -> None:
        """A foreign writer: a plain put, not fenced."""
        self.raw.put(key, value, Deadline(5.0))

    def close(self) -> None:
        for node in self.nodes:
            node.shutdown()
        self.raw.close()


@pytest.fixture
def group(etcd: Any, namespace: str) -> Iterator[Group]:
    g = Group(etcd.endpoints, namespace)
    try:
        yield g
    finally:
        g.close()


def assert_clean_stream(g: Group, nid: str, upto: int) -> None:
    """``nid`` applied exactly heights 1..upto, in order, each the leader's block."""
    msgs = g.stream(nid)
    assert [m.state.height for m in msgs] == list(range(1, upto + 1)), (
        f"{nid}: apply stream {[m.state.height for m in msgs]}"
    )
    for prev, cur in itertools.pairwise(msgs):
        assert cur.index > prev.index and cur.term >= prev.term
    for m in msgs:
        assert m.state == block(m.state.height), f"{nid}: foreign block applied at {m}"


# --------------------------------------------------------------------------- foreign data


def test_foreign_and_corrupt_values_are_logged_skipped_and_counted(
    group: Group, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="etcdraft")
    leader_, follower_ = group.start(["a", "b"])
    leader = group.leader()
    follower = follower_ if leader is leader_ else leader_
    k = group.keys
    for h in range(1, 6):
        leader.broadcast(block(h))
    group.wait_height(follower, 5)
    skipped0, foreign0 = follower.fsm.skipped, follower.foreign_keys

    # not protobuf, at an applied height (someone overwrote log/3)
    group.put(k.log(3), b"\xff\xfenot a protobuf")
    # wrong key shapes
    group.put(k.log_prefix + b"abc", block(6).SerializeToString())
    group.put(k.log_prefix + b"6", block(6).SerializeToString())  # not zero-padded
    group.put(k.root + b"random", b"hello")
    group.put(k.root + b"log/00000000000000000006/extra", b"x")
    # a valid block at a lower height, written by someone else
    group.put(k.log(2), block(2, salt=b"foreign").SerializeToString())
    # a log key whose value holds another height (height 4 stored under log/<7>)
    group.put(k.log(7), block(4, salt=b"misplaced").SerializeToString())

    wait_until(
        lambda: follower.fsm.skipped >= skipped0 + 3 and follower.foreign_keys >= foreign0 + 4,
        10,
        lambda: f"skipped {follower.fsm.skipped}, foreign keys {follower.foreign_keys}",
    )
    # the apply stream goes on: the leader produces 6 (log/7 is taken by the foreign
    # value, so the next block goes to 8), and the followers apply them
    leader.broadcast(block(6))
    leader.broadcast(block(8))
    for h in range(9, 12):
        leader.broadcast(block(h))
    group.wait_height(follower, 11)
    for node in (leader, follower):
        heights = group.heights(node.node_id)
        assert heights == [1, 2, 3, 4, 5, 6, 8, 9, 10, 11], f"{node.node_id}: {heights}"
        assert all(m.state == block(m.state.height) for m in group.stream(node.node_id))
        assert node.get_state() == block(11)
    assert follower.fsm.skipped >= skipped0 + 3
    assert follower.foreign_keys >= foreign0 + 4
    text = caplog.text
    assert "is corrupt" in text, text
    assert "holds height 4" in text, text
    assert "not above the applied height" in text, text
    assert "foreign key" in text, text


def test_late_node_skips_a_foreign_overwrite_and_loses_no_block(group: Group) -> None:
    group.start(["a", "b"])
    leader = group.leader()
    for h in range(1, 6):
        leader.broadcast(block(h))
    # someone overwrites log/2 with a valid-looking block, after 3..5 were written
    group.put(group.keys.log(2), block(2, salt=b"foreign").SerializeToString())
    for h in range(6, 9):
        leader.broadcast(block(h))
    (late,) = group.start(["c"], peers=["a", "b", "c"])
    group.wait_height(late, 8)
    msgs = group.stream("c")
    # the original block 2 is gone from etcd; everything else must be applied, and
    # nothing that etcdraft did not write
    assert [m.state.height for m in msgs] == [1, 3, 4, 5, 6, 7, 8], [m.state.height for m in msgs]
    assert all(m.state == block(m.state.height) for m in msgs)


def test_corrupt_value_at_the_next_height_does_not_halt_the_leader(group: Group) -> None:
    a, b = group.start(["a", "b"])
    leader = group.leader()
    follower = b if leader is a else a
    for h in range(1, 4):
        leader.broadcast(block(h))
    group.put(group.keys.log(4), b"\xffgarbage")
    wait_until(lambda: follower.fsm.skipped >= 1, 5, "the follower did not skip log/4")
    leader.broadcast(block(4))  # every node skipped the garbage: height 4 is free
    group.wait_height(follower, 4)
    assert follower.get_state() == block(4)


def test_skipped_entry_does_not_block_wait_applied(group: Group) -> None:
    a, b = group.start(["a", "b"])
    leader = group.leader()
    follower = b if leader is a else a
    leader.broadcast(block(1))
    group.wait_height(follower, 1)
    group.put(group.keys.log(1000), b"\xffgarbage far ahead")
    wait_until(lambda: follower.fsm.skipped >= 1, 5, "the follower did not skip log/1000")
    assert follower.wait_applied(2.0), "wait_applied waits for an entry that is never applied"


# --------------------------------------------------------------------------- two clusters


def test_two_groups_producing_on_the_same_keys_never_double_sign(group: Group) -> None:
    """Two groups of nodes really run on one namespace: group b, refused at bootstrap
    (the next test), is made a member by writing its membership keys directly (as a
    misconfigured operator could) and starts without bootstrap. Each group has its
    own producer, broadcasting its own blocks at the heights its nodes see next,
    concurrently, while leadership is moved from group a to group b. Whatever etcd
    holds is the truth: every acknowledged block is the one stored at its height, no
    height is acknowledged twice, both groups acknowledged blocks, and every node's
    apply stream is etcd's log."""
    a1, a2 = group.start(["a1", "a2"])
    group.leader([a1, a2]).broadcast(block(1))
    group.put(group.keys.member("b1"), b"127.0.0.1:7301")
    group.put(group.keys.member("b2"), b"127.0.0.1:7302")
    b1, b2 = group.start(["b1", "b2"], bootstrap=False)
    sides = {"a": [a1, a2], "b": [b1, b2]}
    acks: list[tuple[str, int, bytes]] = []
    stop = threading.Event()
    lock = threading.Lock()

    def produce(side: str) -> None:
        while not stop.is_set():
            node = next((n for n in sides[side] if n.is_leader()), None)
            if node is None:
                stop.wait(0.005)
                continue
            state = block(node.get_state().height + 1, salt=side.encode())
            try:
                node.broadcast(state)
            except EtcdraftError:
                continue  # not leading any more, or the height was taken
            with lock:
                acks.append((side, state.height, state.hash))

    threads = [threading.Thread(target=produce, args=(side,)) for side in sides]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len({s for s, _, _ in acks}) == 1, 10, "group a produced")
        # move leadership until group b leads (resign hands it to the most up-to-date)
        for _ in range(10):
            leader = group.leader()
            if leader in sides["b"]:
                break
            with contextlib.suppress(EtcdraftError):
                leader.resign_leader()
        wait_until(lambda: {s for s, _, _ in acks} == {"a", "b"}, 10, "both groups produced")
        top = max(x for _, x, _ in acks)
        wait_until(lambda: max(x for _, x, _ in acks) >= top + 5, 10, "production went on")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    stored = {
        group.keys.parse(kv.key).number: kv.value
        for kv in group.raw.range(
            group.keys.log_prefix, prefix_end(group.keys.log_prefix), Deadline(5.0)
        ).kvs
    }
    by_height: dict[int, set[bytes]] = {}
    for _side, height, digest in acks:
        by_height.setdefault(height, set()).add(digest)
    assert all(len(d) == 1 for d in by_height.values()), f"double sign: {by_height}"
    for _side, height, digest in acks:
        assert RaftBlockState.FromString(stored[height]).hash == digest, f"height {height}"
    head = max(stored)
    assert sorted(stored) == list(range(1, head + 1))
    for node in group.nodes:
        group.wait_height(node, head)
        msgs = group.stream(node.node_id)
        assert [m.state.height for m in msgs] == list(range(1, head + 1)), node.node_id
        assert all(m.state.SerializeToString() == stored[m.state.height] for m in msgs)


def test_two_clusters_sharing_a_namespace_is_detected(group: Group) -> None:
    group.start(["a1", "a2"])
    group.leader()
    with pytest.raises(ConfigError, match="another"):
        group.start(["b1"], peers=["b1", "b2"])


# --------------------------------------------------------------------------- oversize


def test_oversize_state_is_refused_before_writing_and_the_stream_goes_on(group: Group) -> None:
    group.start(["a", "b"])
    leader = group.leader()
    leader.broadcast(block(1))
    # over one etcd request is fine now (pieces); over max_block_bytes is refused
    for size in (leader.config.max_block_bytes + 1, 2 * leader.config.max_block_bytes):
        oversize = block(2, size=size)  # built first: tens of MB take a while
        began = time.monotonic()
        with pytest.raises(InvalidStateError, match=r"max_block_bytes"):
            group.leader().broadcast(oversize)
        assert time.monotonic() - began < 5.0
    assert (
        group.raw.range(
            group.keys.blocks_prefix, prefix_end(group.keys.blocks_prefix), Deadline(5.0)
        ).kvs
        == []
    ), "pieces of an oversize state written"
    assert group.raw.get(group.keys.log(2), Deadline(5.0)) is None, "oversize state written"
    group.leader().broadcast(block(2))
    for node in group.nodes:
        group.wait_height(node, 2)
        assert_clean_stream(group, node.node_id, 2)


# --------------------------------------------------------------------------- endpoints


class _NotEtcd(http.server.BaseHTTPRequestHandler):
    """Any HTTP server that is not etcd: 404 with an HTML page."""

    def _answer(self) -> None:
        body = b"<html><body><h1>404 Not Found</h1></body></html>"
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def not_etcd_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotEtcd)
    thread = threading.Thread(target=server.serve_forever, name="not-etcd", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextlib.contextmanager
def black_hole() -> Iterator[str]:
    """A port that accepts connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def start_fails(endpoints: list[str], namespace: str) -> tuple[EtcdraftError, float]:
    node = Node(Config(node_id="lost", endpoints=endpoints, namespace=namespace, **FAST))
    began = time.monotonic()
    try:
        with pytest.raises(EtcdraftError) as info:
            node.start()
    finally:
        node.shutdown()
    return info.value, time.monotonic() - began


def test_nothing_listening_is_etcd_unavailable_within_the_start_deadline(namespace: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    err, took = start_fails([url], namespace)
    assert isinstance(err, EtcdUnavailableError), repr(err)
    assert took < 2.5 + 1.5, f"start() took {took:.1f}s to give up"
    assert url in str(err) and "refused" in str(err), str(err)


def test_silent_port_is_etcd_unavailable_within_the_start_deadline(namespace: str) -> None:
    with black_hole() as url:
        err, took = start_fails([url], namespace)
    assert isinstance(err, EtcdUnavailableError), repr(err)
    assert took < 2.5 + 1.5, f"start() took {took:.1f}s to give up"
    assert url in str(err) and "did not answer" in str(err), str(err)


def test_http_server_that_is_not_etcd_is_a_typed_error_within_the_deadline(namespace: str) -> None:
    with not_etcd_server() as url:
        err, took = start_fails([url], namespace)
    assert isinstance(err, EtcdError), repr(err)
    assert took < 2.5 + 1.5
    # an HTTP/1 server where etcd's gRPC API should be: named, with the likely cause
    assert url in str(err) and "client URL" in str(err), str(err)


def test_endpoint_that_is_not_etcd_is_skipped_and_explained(etcd: Any, namespace: str) -> None:
    with not_etcd_server() as url:
        node = Node(
            Config(
                node_id="a",
                endpoints=[url, *etcd.endpoints],
                namespace=namespace,
                bootstrap=True,
                **FAST,
            )
        )
        try:
            node.start()  # the good endpoint is used
        finally:
            node.shutdown()
        err, _ = start_fails([url], namespace)
    assert isinstance(err, EtcdUnavailableError), repr(err)
    assert "not etcd" in str(err) or "client URL" in str(err), str(err)


# --------------------------------------------------------------------------- clocks


def test_wall_clock_jumps_change_nothing(group: Group, monkeypatch: pytest.MonkeyPatch) -> None:
    """Timing is on the monotonic clock only: the wall clock jumping by an hour either
    way, many times, during leadership and a broadcast loop changes nothing."""
    a, b = group.start(["a", "b"])
    leader = group.leader()
    follower = b if leader is a else a
    real_time, real_ns = time.time, time.time_ns
    offset = [0.0]
    monkeypatch.setattr(time, "time", lambda: real_time() + offset[0])
    monkeypatch.setattr(time, "time_ns", lambda: real_ns() + int(offset[0] * 1e9))
    stop = threading.Event()

    def jump() -> None:
        shifts = [3600.0, -3600.0, 0.0, -7200.0, 86400.0]
        i = 0
        while not stop.wait(0.05):
            offset[0] = shifts[i % len(shifts)]
            i += 1

    jumper = threading.Thread(target=jump, name="clock-jumper", daemon=True)
    jumper.start()
    try:
        began = time.monotonic()
        h = 0
        while time.monotonic() - began < 3.0:  # three lease TTLs
            h += 1
            leader.broadcast(block(h))  # raises if leadership wavered
            assert leader.is_leader() and not follower.is_leader()
            time.sleep(0.02)
    finally:
        stop.set()
        jumper.join(5)
    assert h > 50
    group.wait_height(follower, h)
    assert_clean_stream(group, follower.node_id, h)
    assert follower.leader_id() == leader.node_id


WALL_CLOCK_CALLS = {
    ("time", "time"),
    ("time", "time_ns"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
}
#: (module file, call) pairs allowed to read the wall clock, and why
ALLOWED = {("demo/toy.py", "time.time_ns")}  # block timestamps of the toy sequencer


def test_the_package_reads_only_the_monotonic_clock() -> None:
    """No timing decision can depend on the wall clock: the package never reads it
    (time.time(), datetime.now(), time.localtime() without an argument, ...), except
    the toy sequencer's block timestamps."""
    root = Path(etcdraft.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.name.endswith("_pb2.py"):
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "time":
                names = {a.name for a in node.names}
                if names & {"time", "time_ns", "localtime", "gmtime", "ctime"}:
                    found.append(f"{path.name}:{node.lineno}: from time import {names}")
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value
            owner_name = (
                owner.id
                if isinstance(owner, ast.Name)
                else owner.attr
                if isinstance(owner, ast.Attribute)
                else ""
            )
            call = (owner_name, node.func.attr)
            now_without_arg = (
                call in {("time", "localtime"), ("time", "gmtime"), ("time", "ctime")}
                and not node.args
            )
            if call in WALL_CLOCK_CALLS or now_without_arg:
                name = f"{owner_name}.{node.func.attr}"
                if (path.relative_to(root).as_posix(), name) not in ALLOWED:
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {name}()")
    assert not found, "wall-clock reads in etcdraft/: " + "; ".join(found)
