"""``etcdraft.aio`` against real etcd: the rows of the ``Node`` API that make sense in
async form (as in ``test_node_api.py``), cancellation of ``broadcast`` (Go's
``context.Context``), the apply queue on the loop (order, thread, full queue, a
blocked loop), a crash failover with async workers, and stopping while a worker
ignores its cancellation (bounded by ``shutdown_timeout``).

Every test builds its nodes through the ``harness`` fixture (its own namespace, short
timings, every node shut down afterwards) and checks etcd itself through its JSON
gateway, independently of the library. No fixed sleeps synchronise anything.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
import re
import socket
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import requests
from helpers import wait_until

from etcdraft import (
    Config,
    EtcdraftError,
    EtcdUnavailableError,
    HandoverError,
    HeightConflictError,
    InvalidStateError,
    LeadershipLostError,
    NotLeaderError,
    RaftApplyMsg,
    RaftBlockState,
)
from etcdraft.aio import AsyncDynamicLeaderElection, AsyncNode
from etcdraft.keys import Keys

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

#: Short timings, as in test_node_api (the embedded etcd's minimum lease TTL is 1 s).
FAST: dict[str, Any] = {
    "election_timeout": "1s",
    "heartbeat_timeout": "200ms",
    "leader_lease_timeout": "300ms",
    "send_timeout": "500ms",
}


# --------------------------------------------------------------------------- helpers


def addr_of(node_id: str) -> str:
    return f"127.0.0.1:{17000 + zlib.crc32(node_id.encode()) % 20000}"


def block(height: int, *, timestamp: int | None = None, **fields: Any) -> RaftBlockState:
    """A block state whose hash and timestamp follow its height unless given."""
    fields.setdefault("hash", height.to_bytes(8, "big") * 4)
    return RaftBlockState(
        height=height, timestamp=height * 10 if timestamp is None else timestamp, **fields
    )


async def until(
    predicate: Callable[[], Any], timeout: float, message: str | Callable[[], str] = "not met"
) -> Any:
    """Poll ``predicate`` on the loop until it is truthy (bounded; monotonic clock)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:.1f}s: {text}")
        await asyncio.sleep(0.005)


async def collect(
    q: asyncio.Queue[RaftApplyMsg], up_to_height: int, timeout: float = 5.0
) -> list[RaftApplyMsg]:
    """Messages from ``q`` until one reaches ``up_to_height`` (bounded wait)."""
    got: list[RaftApplyMsg] = []
    deadline = time.monotonic() + timeout
    while not got or got[-1].state.height < up_to_height:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"apply stream stopped at {[m.state.height for m in got]}")
        with contextlib.suppress(asyncio.TimeoutError):
            got.append(await asyncio.wait_for(q.get(), left))
    return got


def drain(q: asyncio.Queue[RaftApplyMsg]) -> list[RaftApplyMsg]:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


def assert_stream_invariants(msgs: list[RaftApplyMsg]) -> None:
    for prev, cur in itertools.pairwise(msgs):
        assert cur.index > prev.index, f"index not increasing: {prev} -> {cur}"
        assert cur.term >= prev.term, f"term decreased: {prev} -> {cur}"
        assert cur.state.height > prev.state.height


class RawEtcd:
    """Reads etcd through its JSON gateway (independently of the library's client)."""

    def __init__(self, endpoint: str) -> None:
        self.url = endpoint.rstrip("/") + "/v3/"
        self.session = requests.Session()
        self.session.trust_env = False

    def range(self, key: bytes, range_end: bytes | None = None) -> list[dict[str, Any]]:
        body = {"key": base64.b64encode(key).decode()}
        if range_end is not None:
            body["range_end"] = base64.b64encode(range_end).decode()
        resp = self.session.post(self.url + "kv/range", json=body, timeout=5)
        resp.raise_for_status()
        return [
            {
                "key": base64.b64decode(kv["key"]),
                "value": base64.b64decode(kv.get("value", "")),
                "mod_revision": int(kv.get("mod_revision", 0)),
                "version": int(kv.get("version", 0)),
            }
            for kv in resp.json().get("kvs", [])
        ]

    def get(self, key: bytes) -> dict[str, Any] | None:
        kvs = self.range(key)
        return kvs[0] if kvs else None

    def prefix(self, prefix: bytes) -> list[dict[str, Any]]:
        return self.range(prefix, prefix[:-1] + bytes([prefix[-1] + 1]))

    def close(self) -> None:
        self.session.close()


@dataclass
class Harness:
    """Builds async nodes for one test; every node is shut down at teardown."""

    endpoints: list[str]
    namespace: str
    tmp_path: Path
    nodes: list[AsyncNode] = field(default_factory=list)
    keys: Keys = field(init=False)
    raw: RawEtcd = field(init=False)

    def __post_init__(self) -> None:
        self.keys = Keys(self.namespace)
        self.raw = RawEtcd(self.endpoints[0])

    def config(self, node_id: str, **overrides: Any) -> Config:
        values: dict[str, Any] = dict(FAST)
        values.update(
            node_id=node_id,
            raft_addr=addr_of(node_id),
            endpoints=self.endpoints,
            namespace=self.namespace,
            raft_dir=str(self.tmp_path / node_id),
        )
        values.update(overrides)
        return Config(**values)

    def node(self, node_id: str, **overrides: Any) -> AsyncNode:
        node = AsyncNode(self.config(node_id, **overrides))
        self.nodes.append(node)
        return node

    async def cluster(self, size: int, **overrides: Any) -> list[AsyncNode]:
        """``size`` started member nodes n1..n<size>; n1 bootstraps the membership."""
        ids = [f"n{i + 1}" for i in range(size)]
        peers = [f"{nid}@{addr_of(nid)}" for nid in ids]
        nodes = [self.node(ids[0], bootstrap=True, peers=peers, **overrides)]
        nodes += [self.node(nid, peers=peers, **overrides) for nid in ids[1:]]
        for n in nodes:
            await n.start()
        return nodes

    def members(self) -> dict[str, bytes]:
        plen = len(self.keys.members_prefix)
        return {
            kv["key"][plen:].decode(): kv["value"]
            for kv in self.raw.prefix(self.keys.members_prefix)
        }

    def candidates(self) -> list[str]:
        return sorted(kv["value"].decode() for kv in self.raw.prefix(self.keys.election_prefix))

    def log(self) -> list[tuple[bytes, int, int]]:
        """The replicated log as stored: equal before and after means no log write."""
        return [
            (kv["key"], kv["mod_revision"], kv["version"])
            for kv in self.raw.prefix(self.keys.log_prefix)
        ]


async def one_leader(nodes: list[AsyncNode], timeout: float = 5.0) -> AsyncNode:
    def single() -> AsyncNode | None:
        leaders = [n for n in nodes if n.is_leader()]
        return leaders[0] if len(leaders) == 1 else None

    leader: AsyncNode = await until(
        single, timeout, lambda: f"no single leader: {[(n.node_id, n.is_leader()) for n in nodes]}"
    )
    return leader


async def knows_leader(nodes: list[AsyncNode], leader: AsyncNode) -> None:
    await until(
        lambda: all(n.leader_id() == leader.node_id for n in nodes),
        5.0,
        lambda: f"leader_id disagreement: {[(n.node_id, n.leader_id()) for n in nodes]}",
    )


async def synced_progress(leader: AsyncNode, nodes: list[AsyncNode], height: int) -> None:
    """Wait until ``leader`` saw each of ``nodes`` report applying ``height``."""

    def seen() -> bool:
        prog = leader.progress()
        return all((p := prog.get(n.node_id)) is not None and p.height >= height for n in nodes)

    await until(seen, 5.0, lambda: f"{leader.node_id} sees progress {leader.progress()}")


def aio_threads(node_id: str, *, executors_only: bool = False) -> list[str]:
    """Live threads of this layer for ``node_id``: its executors' (``..._<n>``) and,
    unless ``executors_only``, its lifecycle and election threads."""
    tail = r"_\d+" if executors_only else r"(_\d+)?"
    pattern = re.compile(rf"etcdraft-aio-([a-z]+-)?{re.escape(node_id)}{tail}")
    return [t.name for t in threading.enumerate() if pattern.fullmatch(t.name)]


@pytest_asyncio.fixture
async def harness(etcd: Any, namespace: str, tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(list(etcd.endpoints), namespace, tmp_path)
    yield h
    for node in reversed(h.nodes):
        await node.shutdown()
    h.raw.close()


class ThreadRecordingQueue(asyncio.Queue[RaftApplyMsg]):
    """An ``asyncio.Queue`` that records which thread each message was put from."""

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self.put_threads: set[int] = set()

    def put_nowait(self, item: RaftApplyMsg) -> None:
        self.put_threads.add(threading.get_ident())
        super().put_nowait(item)


# ------------------------------------------------------------------ construction & lifecycle


async def test_constructing_does_no_io_and_local_reads_work_before_start(
    tmp_path: Path,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.setblocking(False)
        raft_dir = tmp_path / "never-created"
        cfg = Config(
            node_id="quiet",
            raft_addr="127.0.0.1:1",
            endpoints=[f"http://127.0.0.1:{server.getsockname()[1]}"],
            namespace="/etcdraft-test/quiet",
            raft_dir=str(raft_dir),
            **FAST,
        )
        node = AsyncNode(cfg)
        assert node.node_id == "quiet" and node.config is cfg
        assert node.threaded.config is cfg
        assert node.is_leader() is False
        assert node.leader_id() == ""
        assert node.get_state() == RaftBlockState()
        assert await node.has_quorum() is False
        node.set_apply_callback(asyncio.Queue())
        node.set_apply_callback(None)
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected
        assert not raft_dir.exists(), "constructing an AsyncNode touched raft_dir"
        assert aio_threads("quiet") == [], "constructing started threads"
        # stop and shutdown before start are safe no-ops (and idempotent)
        await node.stop()
        await node.stop()
        await node.shutdown()
        with pytest.raises(BlockingIOError):
            server.accept()


async def test_set_apply_callback_needs_the_loop_that_reads_the_queue() -> None:
    node = AsyncNode(Config(node_id="x", raft_addr="x:1", endpoints=["http://127.0.0.1:1"], **FAST))
    q: asyncio.Queue[RaftApplyMsg] = asyncio.Queue()
    # from a thread without a running loop: refused, it could not deliver safely
    with pytest.raises(RuntimeError, match="event loop"):
        await asyncio.to_thread(node.set_apply_callback, q)
    await asyncio.to_thread(node.set_apply_callback, None)  # detaching needs no loop
    node.set_apply_callback(q)


async def test_context_manager_starts_stops_and_joins_its_threads(harness: Harness) -> None:
    cfg = harness.config("cm", bootstrap=True, peers=[f"cm@{addr_of('cm')}"])
    async with AsyncNode(cfg) as node:
        assert harness.raw.get(harness.keys.alive("cm")) is not None, "not started"
        await node.start()  # a second start is a no-op
        await one_leader([node])
        assert harness.candidates() == ["cm"], "start() twice must not campaign twice"
        await node.broadcast(block(1))
        assert node.get_state() == block(1)
        assert aio_threads("cm"), "precondition: the node's threads ran"
    assert node.is_leader() is False
    assert harness.raw.get(harness.keys.alive("cm")) is None, "session not released on exit"
    assert harness.candidates() == []
    assert aio_threads("cm", executors_only=True) == [], "stop() did not join its executors"
    await until(lambda: aio_threads("cm") == [], 1.0, lambda: f"left: {aio_threads('cm')}")
    await node.shutdown()  # idempotent after stop
    await node.stop()
    assert await node.has_quorum() is False  # never raises, even after stop
    with pytest.raises(NotLeaderError):
        await node.broadcast(block(2))
    with pytest.raises(RuntimeError, match="create a new AsyncNode"):
        await node.start()


async def test_cancelled_start_leaves_the_node_shut_down(harness: Harness) -> None:
    node = harness.node("abandoned", bootstrap=True, peers=[f"abandoned@{addr_of('abandoned')}"])
    task = asyncio.create_task(node.start())
    await asyncio.sleep(0)  # the start is under way in its thread
    task.cancel()
    await asyncio.wait({task}, timeout=5)
    # cancelled, not completed: the coroutine returned without waiting for start()'s
    # thread (which keeps going, and is shut down below)
    assert task.cancelled(), "start() was not cancelled"
    # whether or not the start got through, nobody drives the node: it must not lead
    await until(
        lambda: aio_threads("abandoned") == [], 5.0, lambda: f"left: {aio_threads('abandoned')}"
    )
    assert harness.candidates() == [], "an abandoned start left a candidacy behind"
    assert harness.raw.get(harness.keys.alive("abandoned")) is None
    assert node.is_leader() is False
    with pytest.raises(RuntimeError, match="create a new AsyncNode"):
        await node.start()


async def test_start_raises_etcd_unavailable_within_deadline_without_blocking_the_loop(
    namespace: str, tmp_path: Path
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # released: nothing listens there
    node = AsyncNode(
        Config(
            node_id="lonely",
            raft_addr="127.0.0.1:1",
            endpoints=[f"http://127.0.0.1:{port}"],
            namespace=namespace,
            raft_dir=str(tmp_path / "lonely"),
            bootstrap=True,
            shutdown_timeout="1s",
            **FAST,
        )
    )
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    tick_task = asyncio.create_task(ticker())
    try:
        t0 = time.monotonic()
        with pytest.raises(EtcdUnavailableError):
            await node.start()
        elapsed = time.monotonic() - t0
        assert elapsed <= 1.0 + 2.0, f"start() took {elapsed:.2f}s to give up"
        assert ticks >= elapsed / 0.01 / 4, "the event loop was blocked during start()"
        with pytest.raises(EtcdUnavailableError):  # a failed start can be retried
            await node.start()
        assert node.is_leader() is False and await node.has_quorum() is False
    finally:
        tick_task.cancel()
        await node.shutdown()


async def test_start_returns_with_replicated_state(harness: Harness) -> None:
    (leader,) = await harness.cluster(1)
    await one_leader([leader])
    for height in range(1, 6):
        await leader.broadcast(block(height))
    late = harness.node("late")
    q: asyncio.Queue[RaftApplyMsg] = asyncio.Queue()
    late.set_apply_callback(q)
    await late.start()
    assert late.get_state() == block(5), "start() returned before catching up"
    msgs = await collect(q, 5)
    assert [m.state.height for m in msgs] == [1, 2, 3, 4, 5]
    assert_stream_invariants(msgs)


async def test_shutdown_releases_lease_at_once_for_fast_takeover(harness: Harness) -> None:
    nodes = await harness.cluster(2, election_timeout="4s")
    leader = await one_leader(nodes)
    await until(lambda: harness.candidates() == ["n1", "n2"], 5.0, "both never campaigned")
    (follower,) = [n for n in nodes if n is not leader]
    t0 = time.monotonic()
    await leader.shutdown()
    assert time.monotonic() - t0 < 1.5, "shutdown() did not return promptly"
    assert leader.node_id not in harness.candidates(), "shutdown() kept the candidacy"
    await until(follower.is_leader, 2.5, "follower did not take over after shutdown()")
    assert time.monotonic() - t0 < 3.0  # well under the 4 s lease: the lease was revoked
    await leader.shutdown()


# --------------------------------------------------------------------------- queries


async def test_has_quorum_true_only_on_leader(harness: Harness) -> None:
    nodes = await harness.cluster(3)
    leader = await one_leader(nodes)
    await knows_leader(nodes, leader)
    assert await leader.has_quorum() is True
    for f in nodes:
        if f is not leader:
            assert await f.has_quorum() is False
            assert f.leader_id() == leader.node_id
    assert set(leader.members()) == {"n1", "n2", "n3"}
    await leader.shutdown()
    assert await leader.has_quorum() is False


async def test_wait_role_change(harness: Harness) -> None:
    nodes = await harness.cluster(2)
    leader = await one_leader(nodes)
    (follower,) = [n for n in nodes if n is not leader]
    await knows_leader(nodes, leader)
    # nothing changes: False after the timeout
    t0 = time.monotonic()
    assert await follower.wait_role_change(False, 0.3) is False
    assert 0.25 <= time.monotonic() - t0 <= 1.5
    # cancelled waits free their threads: a later call is not stuck behind them
    waits = [asyncio.create_task(follower.wait_role_change(False, 30.0)) for _ in range(8)]
    await asyncio.sleep(0)
    for w in waits:
        w.cancel()
    await asyncio.wait(waits, timeout=2.0)
    assert all(w.cancelled() for w in waits)
    assert await asyncio.wait_for(follower.resign_leader(), 2.0) is None  # a follower: no-op
    # a change: the follower is woken when it becomes leader
    await leader.broadcast(block(1))
    await synced_progress(leader, [follower], 1)
    became = asyncio.create_task(follower.wait_role_change(False, 10.0))
    await leader.resign_leader()
    assert await asyncio.wait_for(became, 5.0) is True
    await until(follower.is_leader, 2.0, "the woken follower does not lead")


# --------------------------------------------------------------------------- broadcast


async def test_broadcast_on_follower_raises_not_leader(harness: Harness) -> None:
    nodes = await harness.cluster(2)
    leader = await one_leader(nodes)
    (follower,) = [n for n in nodes if n is not leader]
    await knows_leader(nodes, leader)
    with pytest.raises(NotLeaderError):
        await follower.broadcast(block(1))
    assert harness.log() == []
    with pytest.raises(TypeError):
        await leader.broadcast(b"not a state")  # type: ignore[arg-type]


async def test_broadcast_stores_exact_bytes_and_identical_retry_writes_nothing(
    harness: Harness,
) -> None:
    nodes = await harness.cluster(2)
    leader = await one_leader(nodes)
    (follower,) = [n for n in nodes if n is not leader]
    q: asyncio.Queue[RaftApplyMsg] = asyncio.Queue()
    follower.set_apply_callback(q)
    state = block(7, header=b"hdr-bytes", data=b"payload", last_submitted_da_header_height=5)
    await leader.broadcast(state)
    kv = harness.raw.get(harness.keys.log(7))
    assert kv is not None and kv["value"] == state.SerializeToString() and kv["version"] == 1
    assert leader.get_state() == state, "broadcast returned before the leader applied it"
    before = harness.log()
    again = RaftBlockState()
    again.CopyFrom(state)
    await leader.broadcast(again)
    assert harness.log() == before, "an identical retry wrote to etcd"
    (msg,) = await collect(q, 7)
    assert msg.index == kv["mod_revision"] and msg.state == state


async def test_broadcast_copies_the_state_when_called(harness: Harness) -> None:
    """Once ``broadcast`` runs, changing the caller's object cannot change what is
    written (the call may still be queued behind another broadcast)."""
    (leader,) = await harness.cluster(1)
    await one_leader([leader])
    first, second = block(1), block(2)
    tasks = [asyncio.create_task(leader.broadcast(s)) for s in (first, second)]
    await asyncio.sleep(0)  # both calls ran up to their thread hop
    second.hash = b"\xee" * 32
    first.height = 99
    await asyncio.gather(*tasks)
    assert harness.raw.get(harness.keys.log(1))["value"] == block(1).SerializeToString()  # type: ignore[index]
    assert harness.raw.get(harness.keys.log(2))["value"] == block(2).SerializeToString()  # type: ignore[index]
    assert leader.get_state() == block(2)


async def test_broadcast_height_conflict_and_invalid_state(harness: Harness) -> None:
    (leader,) = await harness.cluster(1)
    await one_leader([leader])
    for height in (1, 2, 3):
        await leader.broadcast(block(height))
    before = harness.log()
    with pytest.raises(HeightConflictError):
        await leader.broadcast(block(3, hash=b"\xff" * 32))
    with pytest.raises(InvalidStateError):
        await leader.broadcast(block(4, timestamp=30))  # not above height 3's timestamp
    with pytest.raises(InvalidStateError):
        too_big = leader.config.max_block_bytes + 1
        await leader.broadcast(block(4, data=b"x" * too_big))  # over max_block_bytes
    assert harness.log() == before, "a rejected broadcast wrote to etcd"
    await leader.broadcast(block(4))
    assert leader.get_state() == block(4)


async def test_cancelling_broadcast_returns_at_once_and_retry_is_safe(
    etcd_cluster_factory: Callable[..., Any], namespace: str, tmp_path: Path
) -> None:
    """Go's ctx: a broadcast waiting on a frozen etcd (SIGSTOP) is cancelled, or times
    out under ``asyncio.wait_for``, and control returns at once while the loop stays
    free; the write lands later. Retrying the same state succeeds without a second
    write, and the apply stream holds the entry once."""
    cluster = etcd_cluster_factory(size=1)
    h = Harness(list(cluster.endpoints), namespace, tmp_path)
    try:
        # a lease far longer than the freeze, and no fast takeover (whose belief ends
        # heartbeat_timeout after the last acknowledged heartbeat), so leadership
        # survives the freeze
        (leader,) = await h.cluster(1, election_timeout="5s", fast_takeover=False)
        await one_leader([leader])
        q: asyncio.Queue[RaftApplyMsg] = asyncio.Queue()
        leader.set_apply_callback(q)
        await leader.broadcast(block(1))
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick_task = asyncio.create_task(ticker())
        cluster.members[0].pause()
        try:
            # a deadline around the call (asyncio.timeout() on 3.11+ behaves the same)
            t0 = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(leader.broadcast(block(2), timeout=4.0), 0.3)
            # before the abandoned call's own 4 s deadline: it did not wait for it
            assert time.monotonic() - t0 < 4.0, "wait_for waited for the abandoned call"
            # the abandoned call runs on in its thread, waiting for etcd ...
            assert leader.threaded._broadcaster._lock.locked(), "precondition: a write in flight"
            # ... and an explicit cancel of a call queued behind it
            task = asyncio.create_task(leader.broadcast(block(2), timeout=4.0))
            ticks_before = ticks
            await until(lambda: ticks >= ticks_before + 5, 2.0, "the event loop is blocked")
            assert not task.done()
            t1 = time.monotonic()
            task.cancel()
            await asyncio.wait({task}, timeout=2.0)
            assert task.cancelled()
            # before the queued call's own 4 s deadline: the cancel did not wait for it
            assert time.monotonic() - t1 < 4.0, "cancel waited for the queued call"
            assert leader.get_state().height == 1, "precondition: nothing landed while frozen"
        finally:
            cluster.members[0].resume()
            tick_task.cancel()
        # the retry: queued behind the abandoned calls, it finds the block there or writes it
        await leader.broadcast(block(2))
        kv = h.raw.get(h.keys.log(2))
        assert kv is not None and kv["value"] == block(2).SerializeToString()
        assert kv["version"] == 1, "block 2 was written more than once"
        await leader.broadcast(block(3))
        msgs = await collect(q, 3)
        assert [m.state.height for m in msgs] == [1, 2, 3], "entry lost or applied twice"
        assert_stream_invariants(msgs)
    finally:
        for node in h.nodes:
            await node.shutdown()
        h.raw.close()


# --------------------------------------------------------------------------- apply queue


async def test_apply_streams_match_in_index_order_from_the_loop_thread(harness: Harness) -> None:
    nodes = await harness.cluster(3)
    leader = await one_leader(nodes)
    queues = {n.node_id: ThreadRecordingQueue() for n in nodes}
    for n in nodes:
        n.set_apply_callback(queues[n.node_id])
    heights = [1, 2, 3, 5, 8, 13, 21, 34, 55, 89]
    for height in heights:
        await leader.broadcast(block(height))
    streams = {nid: await collect(q, heights[-1]) for nid, q in queues.items()}
    reference = streams[leader.node_id]
    assert [m.state.height for m in reference] == heights
    assert_stream_invariants(reference)
    for nid, msgs in streams.items():
        assert [(m.index, m.term, m.state) for m in msgs] == [
            (m.index, m.term, m.state) for m in reference
        ], f"{nid}'s apply stream differs from the leader's"
    revisions = [harness.raw.get(harness.keys.log(h))["mod_revision"] for h in heights]  # type: ignore[index]
    assert [m.index for m in reference] == revisions
    loop_thread = threading.get_ident()
    for nid, q in queues.items():
        assert q.put_threads == {loop_thread}, f"{nid}: put_nowait called off the loop thread"


async def test_full_apply_queue_drops_counts_and_warns(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="etcdraft")
    nodes = await harness.cluster(2)
    leader = await one_leader(nodes)
    (follower,) = [n for n in nodes if n is not leader]
    fq: asyncio.Queue[RaftApplyMsg] = asyncio.Queue(maxsize=1)
    lq: asyncio.Queue[RaftApplyMsg] = asyncio.Queue(maxsize=1)
    follower.set_apply_callback(fq)
    leader.set_apply_callback(lq)
    for height in range(1, 21):
        await leader.broadcast(block(height))
    await until(lambda: follower.get_state().height == 20, 5.0, "follower stuck")
    await until(
        lambda: follower.dropped == 19 and leader.dropped == 19,
        5.0,
        lambda: f"dropped: follower {follower.dropped}, leader {leader.dropped}",
    )
    assert fq.get_nowait().state.height == 1 and fq.empty()
    assert lq.get_nowait().state.height == 1 and lq.empty()
    assert any("apply queue full" in r.getMessage() for r in caplog.records), caplog.text


async def test_apply_delivery_never_waits_for_a_blocked_loop(harness: Harness) -> None:
    """While the event loop is blocked (a CPU-bound callback, say), etcdraft keeps
    applying: its threads hand messages over without waiting for the loop. Once the
    loop runs again the queue receives the first messages in order; those it has no
    room for are dropped and counted."""
    nodes = await harness.cluster(2)
    leader = await one_leader(nodes)
    (follower,) = [n for n in nodes if n is not leader]
    q: asyncio.Queue[RaftApplyMsg] = asyncio.Queue(maxsize=5)
    follower.set_apply_callback(q)

    def produce() -> None:  # through the threaded node: the loop is blocked meanwhile
        for height in range(1, 21):
            leader.threaded.broadcast(block(height))

    producer = threading.Thread(target=produce, name="test-producer", daemon=True)
    producer.start()
    # block the loop (on purpose) until the follower applied everything
    wait_until(lambda: follower.get_state().height == 20, 10.0, "follower stopped applying")
    producer.join(5.0)
    assert q.empty(), "precondition: nothing was delivered while the loop was blocked"
    await until(lambda: q.full(), 2.0, "nothing delivered once the loop ran again")
    assert [m.state.height for m in drain(q)] == [1, 2, 3, 4, 5]
    assert follower.dropped == 15


async def test_set_apply_callback_none_stops_delivery(harness: Harness) -> None:
    nodes = await harness.cluster(2)
    leader = await one_leader(nodes)
    (follower,) = [n for n in nodes if n is not leader]
    q: asyncio.Queue[RaftApplyMsg] = asyncio.Queue()
    follower.set_apply_callback(q)
    await leader.broadcast(block(1))
    assert [m.state.height for m in await collect(q, 1)] == [1]
    follower.set_apply_callback(None)
    await leader.broadcast(block(2))
    await leader.broadcast(block(3))
    await until(lambda: follower.get_state().height == 3, 5.0, "follower stuck")
    follower.set_apply_callback(q)
    await leader.broadcast(block(4))
    assert [m.state.height for m in await collect(q, 4)] == [4], "2 and 3 were delivered"


# --------------------------------------------------------------------------- membership


async def test_add_peer_and_remove_peer_from_a_follower(harness: Harness) -> None:
    nodes = await harness.cluster(2)
    leader = await one_leader(nodes)
    (follower,) = [n for n in nodes if n is not leader]
    await follower.add_peer("c", "10.9.9.9:1")
    assert harness.members()["c"] == b"10.9.9.9:1"
    await follower.add_peer("c", "10.9.9.9:2")  # same id, new addr: replaced
    assert harness.members()["c"] == b"10.9.9.9:2"
    await follower.remove_peer("c")
    assert "c" not in harness.members()
    assert leader.is_leader(), "membership edits of others must not disturb the leader"
    await follower.remove_peer(leader.node_id)
    await until(lambda: not leader.is_leader(), 2.0, "removed leader did not step down")
    with pytest.raises(NotLeaderError):
        await leader.broadcast(block(1))
    await until(follower.is_leader, 5.0, "the remaining member did not take over")


# --------------------------------------------------------------------------- handover


async def test_resign_leader_hands_over(harness: Harness) -> None:
    nodes = await harness.cluster(2)
    leader = await one_leader(nodes)
    (follower,) = [n for n in nodes if n is not leader]
    await until(lambda: harness.candidates() == ["n1", "n2"], 5.0, "both never campaigned")
    await leader.broadcast(block(1))
    await synced_progress(leader, [follower], 1)
    await leader.resign_leader()
    assert leader.is_leader() is False
    await until(follower.is_leader, 1.0, "successor not leading right after resign returned")
    with pytest.raises(NotLeaderError):
        await leader.broadcast(block(2))
    await follower.broadcast(block(2))


async def test_resign_leader_without_live_member_raises(harness: Harness) -> None:
    (leader,) = await harness.cluster(1)
    await one_leader([leader])
    with pytest.raises(HandoverError):
        await leader.resign_leader(timeout=1.0)
    assert leader.is_leader()


async def test_stop_of_leader_hands_over(harness: Harness) -> None:
    nodes = await harness.cluster(2)
    leader = await one_leader(nodes)
    (follower,) = [n for n in nodes if n is not leader]
    await until(lambda: harness.candidates() == ["n1", "n2"], 5.0, "both never campaigned")
    await leader.broadcast(block(1))
    await synced_progress(leader, [follower], 1)
    t0 = time.monotonic()
    await leader.stop()
    assert time.monotonic() - t0 <= leader.config.shutdown_timeout + 1.0
    await until(follower.is_leader, 2.0, "stop() did not hand over")


# --------------------------------------------------------------------------- election


class Roles:
    """Which worker each node runs right now."""

    def __init__(self) -> None:
        self.current: dict[str, str | None] = {}
        self.starts: list[tuple[float, str, str]] = []
        self.max_leaders = 0

    def enter(self, node_id: str, role: str) -> None:
        self.current[node_id] = role
        self.starts.append((time.monotonic(), node_id, role))
        self.max_leaders = max(self.max_leaders, len(self.leaders()))

    def leave(self, node_id: str, role: str) -> None:
        if self.current.get(node_id) == role:
            self.current[node_id] = None

    def leaders(self) -> list[str]:
        return [n for n, r in self.current.items() if r == "leader"]

    def leader_start(self, node_id: str, after: float) -> float | None:
        return next(
            (t for t, n, r in self.starts if n == node_id and r == "leader" and t >= after), None
        )


class Producer:
    """An async block producer: a block every ~20 ms while leading."""

    def __init__(self, node: AsyncNode, roles: Roles, *, ignore_cancel_for: float = 0.0) -> None:
        self.node = node
        self.roles = roles
        self.ignore_cancel_for = ignore_cancel_for
        self.produced = 0
        self.cancelled = False
        self.ended = False
        self.late_error: BaseException | None = None

    async def run(self) -> None:
        nid = self.node.node_id
        self.roles.enter(nid, "leader")
        try:
            while True:
                await asyncio.sleep(0.02)
                head = self.node.get_state()
                try:
                    await self.node.broadcast(
                        block(head.height + 1, timestamp=head.timestamp + 1, data=nid.encode())
                    )
                except NotLeaderError:
                    await asyncio.sleep(0.02)  # the election will cancel us
                except (HeightConflictError, InvalidStateError, EtcdUnavailableError):
                    continue  # a stale head or a slow etcd: retry from the new head
                else:
                    self.produced += 1
        except asyncio.CancelledError:
            self.cancelled = True
            if not self.ignore_cancel_for:
                raise
            # a worker that ignores its cancellation for a while; then it still tries
            # to write: the abandoned worker must be fenced
            await asyncio.sleep(self.ignore_cancel_for)
            head = self.node.get_state()
            try:
                await self.node.broadcast(block(head.height + 1, timestamp=head.timestamp + 1))
            except EtcdraftError as exc:
                self.late_error = exc
        finally:
            self.ended = True
            self.roles.leave(nid, "leader")

    def is_synced(self, state: RaftBlockState) -> int:
        return self.node.get_state().height - state.height

    async def recover(self, state: RaftBlockState) -> None:
        pass


class Syncer:
    """An async follower: its store is what the apply queue delivered."""

    def __init__(self, node: AsyncNode, roles: Roles) -> None:
        self.node = node
        self.roles = roles
        self.queue: asyncio.Queue[RaftApplyMsg] = asyncio.Queue(maxsize=1024)
        self.height = node.get_state().height

    async def run(self) -> None:
        nid = self.node.node_id
        self.roles.enter(nid, "follower")
        self.node.set_apply_callback(self.queue)
        try:
            while True:
                msg = await self.queue.get()
                self.height = max(self.height, msg.state.height)
        finally:
            self.node.set_apply_callback(None)
            self.roles.leave(nid, "follower")

    def is_synced(self, state: RaftBlockState) -> int:
        return self.node.get_state().height - state.height

    async def recover(self, state: RaftBlockState) -> None:
        self.height = state.height


@dataclass
class Member:
    node: AsyncNode
    election: AsyncDynamicLeaderElection
    task: asyncio.Task[None] | None = None
    producers: list[Producer] = field(default_factory=list)
    syncers: list[Syncer] = field(default_factory=list)

    def outcome(self) -> BaseException | None:
        assert self.task is not None and self.task.done()
        return None if self.task.cancelled() else self.task.exception()


async def elections(
    h: Harness,
    roles: Roles,
    size: int,
    *,
    first_ignores_cancel_for: float = 0.0,
    **overrides: Any,
) -> dict[str, Member]:
    """``size`` started nodes, each running an election with async workers; the
    first leader worker built ignores its cancellation that long."""
    members: dict[str, Member] = {}
    built_producers: list[Producer] = []
    for node in await h.cluster(size, **overrides):
        producers: list[Producer] = []
        syncers: list[Syncer] = []

        def producer(node: AsyncNode = node, built: list[Producer] = producers) -> Producer:
            stubborn = first_ignores_cancel_for if not built_producers else 0.0
            built.append(Producer(node, roles, ignore_cancel_for=stubborn))
            built_producers.append(built[-1])
            return built[-1]

        def syncer(node: AsyncNode = node, built: list[Syncer] = syncers) -> Syncer:
            built.append(Syncer(node, roles))
            return built[-1]

        election = AsyncDynamicLeaderElection(producer, syncer, node)
        members[node.node_id] = Member(node, election, producers=producers, syncers=syncers)
    for m in members.values():
        m.task = asyncio.create_task(m.election.run())
    return members


async def steady(members: dict[str, Member], roles: Roles, among: list[str]) -> str:
    """Wait until one of ``among`` runs the leader worker and the others the follower."""

    def check() -> str | None:
        leaders = [n for n in among if roles.current.get(n) == "leader"]
        followers = [n for n in among if roles.current.get(n) == "follower"]
        return leaders[0] if len(leaders) == 1 and len(followers) == len(among) - 1 else None

    leader: str = await until(check, 15.0, lambda: f"roles never settled: {roles.current}")
    return leader


async def cancel_all(members: dict[str, Member]) -> None:
    tasks = [m.task for m in members.values() if m.task is not None and not m.task.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=10.0)
    assert all(t.done() for t in tasks), "an election did not end after cancellation"


@pytest.mark.parametrize("crash", ["shutdown", "keepalive_stopped"])
async def test_crash_failover_with_async_workers(harness: Harness, crash: str) -> None:
    roles = Roles()
    members = await elections(harness, roles, 3)
    try:
        ids = sorted(members)
        old = await steady(members, roles, ids)
        old_node = members[old].node
        h0 = old_node.get_state().height
        await until(lambda: old_node.get_state().height >= h0 + 5, 5.0, "no blocks produced")
        t0 = time.monotonic()
        if crash == "shutdown":
            await old_node.shutdown()  # revokes the lease: a crash plus lease expiry
        else:
            session = old_node.threaded._elector.session
            assert session is not None
            session.stop()  # keep-alives stop; the lease is left to expire
        survivors = [n for n in ids if n != old]

        def new_leader() -> tuple[str, float] | None:
            for n in survivors:
                t = roles.leader_start(n, after=t0)
                if t is not None:
                    return n, t
            return None

        new, t_start = await until(new_leader, 7.0, lambda: f"no takeover: {roles.current}")
        bound = old_node.config.election_timeout + 1.0
        assert t_start - t0 <= bound, f"{new} took over after {t_start - t0:.2f}s (> {bound}s)"
        old_task = members[old].task
        assert old_task is not None
        await asyncio.wait({old_task}, timeout=5.0)
        assert isinstance(members[old].outcome(), LeadershipLostError)
        assert all(p.ended for p in members[old].producers), "old leader worker still running"
        assert await steady(members, roles, survivors) == new
        new_node = members[new].node
        h1 = new_node.get_state().height
        await until(lambda: new_node.get_state().height >= h1 + 3, 5.0, "new leader idle")
        (follower,) = [n for n in survivors if n != new]
        syncer = members[follower].syncers[-1]
        target = new_node.get_state().height
        await until(lambda: syncer.height >= target, 5.0, "the async follower's store lags")
        assert roles.max_leaders == 1, "two leader workers ran at the same time"
        for n in survivors:
            task = members[n].task
            assert task is not None and not task.done() and members[n].election.is_running()
    finally:
        await cancel_all(members)


@pytest.mark.parametrize("how", ["cancel_then_stop", "shutdown"])
async def test_stopping_while_a_worker_ignores_cancellation_is_bounded(
    harness: Harness, how: str
) -> None:
    """The leader worker ignores its cancellation for 3 x ``shutdown_timeout``. Ending
    the election (cancelling it, then ``stop()`` to hand over; or ``shutdown()`` of the
    node) still completes within ``shutdown_timeout`` plus a margin, the other node
    takes over, and the abandoned worker's late write is fenced."""
    shutdown_timeout = 1.0
    roles = Roles()
    members = await elections(
        harness,
        roles,
        2,
        first_ignores_cancel_for=3 * shutdown_timeout,
        shutdown_timeout=shutdown_timeout,
    )
    try:
        old = await steady(members, roles, sorted(members))
        (other,) = [n for n in members if n != old]
        await synced_progress(members[old].node, [members[other].node], 1)
        old_member = members[old]
        old_task = old_member.task
        assert old_task is not None
        (producer,) = old_member.producers
        assert producer.ignore_cancel_for, "precondition: the leader worker is the stubborn one"
        t0 = time.monotonic()
        if how == "cancel_then_stop":
            old_task.cancel()
            await asyncio.wait({old_task}, timeout=shutdown_timeout + 5.0)
            assert old_task.cancelled()
            ended = time.monotonic() - t0
            await old_member.node.stop()  # hands over
        else:
            await old_member.node.shutdown()
            assert time.monotonic() - t0 < 1.5, "shutdown() waited for the worker"
            await asyncio.wait({old_task}, timeout=shutdown_timeout + 5.0)
            ended = time.monotonic() - t0
            err = old_member.outcome()
            assert isinstance(err, EtcdraftError) and "did not stop" in str(err), repr(err)
        assert ended <= shutdown_timeout + 1.5, f"the election took {ended:.2f}s to end"
        assert producer.cancelled and not producer.ended, "precondition: still ignoring"
        await until(lambda: roles.leader_start(other, after=t0), 5.0, "no takeover")
        await until(lambda: producer.ended, 4 * shutdown_timeout, "the worker never ended")
        assert isinstance(producer.late_error, NotLeaderError), (
            f"the abandoned worker's late write was not refused: {producer.late_error!r}"
        )
        new_node = members[other].node
        h1 = new_node.get_state().height
        await until(lambda: new_node.get_state().height >= h1 + 3, 5.0, "new leader idle")
    finally:
        await cancel_all(members)
