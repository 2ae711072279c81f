"""``DynamicLeaderElection`` with three real ``Node``s on a 3-member etcd.

Each node runs a DLE in a thread with a toy leader worker (broadcasts a block every
~20 ms) and a toy follower worker (waits on stop; ``is_synced`` compares with the
node's applied state). The tests check that exactly one node runs the leader worker,
that a follower takes over when the leader's node goes away, and that a failing
leader worker moves leadership to another node.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from helpers import wait_until

from etcdraft import (
    Config,
    DynamicLeaderElection,
    EtcdraftError,
    EtcdUnavailableError,
    HeightConflictError,
    InvalidStateError,
    LeadershipLostError,
    Node,
    NotLeaderError,
    RaftBlockState,
    WorkerError,
)

pytestmark = pytest.mark.timeout(60)

ELECTION_TIMEOUT = 1.0
TAKEOVER_BOUND = ELECTION_TIMEOUT + 1.0
IDS = ("n1", "n2", "n3")
JOIN = 8.0


class Roles:
    """Which worker each node runs right now, and when workers started."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current: dict[str, str | None] = dict.fromkeys(IDS)
        self.starts: list[tuple[float, str, str]] = []  # (monotonic, node, role)
        self.max_leaders = 0

    def enter(self, node_id: str, role: str) -> None:
        with self._lock:
            self.current[node_id] = role
            self.starts.append((time.monotonic(), node_id, role))
            self.max_leaders = max(self.max_leaders, len(self._leaders()))

    def leave(self, node_id: str, role: str) -> None:
        with self._lock:
            if self.current[node_id] == role:
                self.current[node_id] = None

    def _leaders(self) -> list[str]:
        return [n for n, r in self.current.items() if r == "leader"]

    def leaders(self) -> list[str]:
        with self._lock:
            return self._leaders()

    def followers(self) -> list[str]:
        with self._lock:
            return [n for n, r in self.current.items() if r == "follower"]

    def snapshot(self) -> dict[str, str | None]:
        with self._lock:
            return dict(self.current)

    def leader_start(self, node_id: str, after: float) -> float | None:
        with self._lock:
            for t, n, r in self.starts:
                if n == node_id and r == "leader" and t >= after:
                    return t
        return None


class ToyLeader:
    """Produces a block every ~20 ms; returns when leadership is gone."""

    def __init__(self, node: Node, roles: Roles, should_fail: Callable[[], bool]) -> None:
        self.node = node
        self.roles = roles
        self.should_fail = should_fail
        self.produced = 0

    def run(self, stop: threading.Event) -> None:
        nid = self.node.node_id
        self.roles.enter(nid, "leader")
        try:
            while not stop.wait(0.02):
                head = self.node.get_state()
                block = RaftBlockState(
                    height=head.height + 1,
                    timestamp=max(head.timestamp + 1, time.time_ns()),
                    hash=f"{nid}-{head.height + 1}".encode(),
                )
                try:
                    self.node.broadcast(block)
                except NotLeaderError:  # includes LeadershipLostError: role is over
                    return
                except (HeightConflictError, InvalidStateError, EtcdUnavailableError):
                    continue  # stale head or slow etcd: retry from the new head
                self.produced += 1
                if self.should_fail():
                    raise RuntimeError("boom")
        finally:
            self.roles.leave(nid, "leader")

    def is_synced(self, state: RaftBlockState) -> int:
        return self.node.get_state().height - state.height

    def recover(self, stop: threading.Event, state: RaftBlockState) -> None:
        pass


class ToyFollower:
    """Waits on stop; its store is the node's applied state."""

    def __init__(self, node: Node, roles: Roles) -> None:
        self.node = node
        self.roles = roles
        self.recovered = 0

    def run(self, stop: threading.Event) -> None:
        nid = self.node.node_id
        self.roles.enter(nid, "follower")
        try:
            stop.wait()
        finally:
            self.roles.leave(nid, "follower")

    def is_synced(self, state: RaftBlockState) -> int:
        return self.node.get_state().height - state.height

    def recover(self, stop: threading.Event, state: RaftBlockState) -> None:
        self.recovered += 1


class Member:
    def __init__(self, node: Node, dle: DynamicLeaderElection) -> None:
        self.node = node
        self.dle = dle
        self.stop = threading.Event()
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.result: object = "not returned"
        self.thread = threading.Thread(target=self._run, name=f"dle-{node.node_id}", daemon=True)

    def _run(self) -> None:
        try:
            self.result = self.dle.run(self.stop)
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def outcome(self, timeout: float = JOIN) -> BaseException | None:
        assert self.done.wait(timeout), f"DLE of {self.node.node_id} still running"
        return self.error


class Cluster:
    def __init__(self, endpoints: list[str], namespace: str) -> None:
        self.roles = Roles()
        self.members: dict[str, Member] = {}
        self._fail_next = False  # make the running leader worker fail, once
        self._lock = threading.Lock()
        peers = [f"{nid}@127.0.0.1:{7001 + i}" for i, nid in enumerate(IDS)]
        for i, nid in enumerate(IDS):
            cfg = Config(
                node_id=nid,
                raft_addr=f"127.0.0.1:{7001 + i}",
                endpoints=endpoints,
                namespace=namespace,
                election_timeout="1s",
                heartbeat_timeout="200ms",
                leader_lease_timeout="300ms",
                send_timeout="500ms",
                bootstrap=i == 0,
                peers=peers if i == 0 else [],
            )
            node = Node(cfg)
            dle = DynamicLeaderElection(
                self._leader_factory(node), lambda node=node: ToyFollower(node, self.roles), node
            )
            self.members[nid] = Member(node, dle)

    def _leader_factory(self, node: Node) -> Callable[[], ToyLeader]:
        return lambda: ToyLeader(node, self.roles, self._take_failure)

    def fail_leader_worker(self) -> None:
        """The leader worker running now raises RuntimeError("boom") after its
        next block (exactly one worker fails)."""
        with self._lock:
            self._fail_next = True

    def _take_failure(self) -> bool:
        with self._lock:
            fail, self._fail_next = self._fail_next, False
            return fail

    def start(self) -> None:
        for m in self.members.values():
            m.node.start()
        for m in self.members.values():
            m.thread.start()

    def wait_steady(self, among: tuple[str, ...] = IDS, timeout: float = 15.0) -> str:
        """Wait until one of ``among`` runs the leader worker and the rest of them run
        the follower worker; return the leader's id."""

        def steady() -> str | None:
            snap = self.roles.snapshot()
            leaders = [n for n in among if snap[n] == "leader"]
            followers = [n for n in among if snap[n] == "follower"]
            if len(leaders) == 1 and len(followers) == len(among) - 1:
                return leaders[0]
            return None

        return wait_until(steady, timeout, lambda: f"roles never settled: {self.roles.snapshot()}")

    def close(self) -> None:
        for m in self.members.values():
            m.stop.set()
        for m in self.members.values():
            if m.thread.is_alive():
                m.thread.join(JOIN)
        for m in self.members.values():
            with contextlib.suppress(EtcdraftError):
                m.node.shutdown()
        alive = [m.node.node_id for m in self.members.values() if m.thread.is_alive()]
        assert not alive, f"DLE threads still running after stop: {alive}"


@pytest.fixture
def cluster(etcd3: object, namespace: str) -> Iterator[Cluster]:
    c = Cluster(etcd3.endpoints, namespace)  # type: ignore[attr-defined]
    try:
        yield c
    finally:
        c.close()


def test_exactly_one_node_runs_the_leader_worker(cluster: Cluster) -> None:
    cluster.start()
    leader = cluster.wait_steady()
    node = cluster.members[leader].node
    assert node.is_leader()
    start_height = node.get_state().height
    # at least 20 samples over at least 1 s (a descheduled thread takes fewer per
    # second: the count, not the clock, ends the loop)
    deadline = time.monotonic() + 1.0
    samples = 0
    while samples < 20 or time.monotonic() < deadline:
        snap = cluster.roles.snapshot()
        leaders = [n for n, r in snap.items() if r == "leader"]
        assert leaders == [leader], f"leader workers: {leaders} (roles {snap})"
        assert sorted(n for n, r in snap.items() if r == "follower") == sorted(set(IDS) - {leader})
        samples += 1
        threading.Event().wait(0.02)  # sampling period, not synchronisation
    assert cluster.roles.max_leaders == 1
    # the leader worker really leads: blocks get replicated to every node
    target = node.get_state().height
    assert target > start_height, "the leader worker produced no block"
    for m in cluster.members.values():
        wait_until(lambda m=m: m.node.get_state().height >= target, 5.0, "followers lag")
        assert m.dle.is_running() and m.error is None


@pytest.mark.parametrize("crash", ["shutdown", "keepalive_stopped"])
def test_crash_of_the_leaders_node_makes_a_follower_take_over(cluster: Cluster, crash: str) -> None:
    cluster.start()
    old = cluster.wait_steady()
    old_member = cluster.members[old]
    # let some blocks flow first
    h0 = old_member.node.get_state().height
    wait_until(lambda: old_member.node.get_state().height >= h0 + 5, 5.0, "no blocks produced")
    t0 = time.monotonic()
    if crash == "shutdown":
        old_member.node.shutdown()  # revokes the lease: like a crash + lease expiry
    else:
        assert old_member.node._elector.session is not None
        old_member.node._elector.session.stop()  # keep-alives stop, the lease is left to expire
    survivors = tuple(n for n in IDS if n != old)

    def new_leader_started() -> tuple[str, float] | None:
        for n in survivors:
            t = cluster.roles.leader_start(n, after=t0)
            if t is not None:
                return n, t
        return None

    new, t_start = wait_until(
        new_leader_started,
        TAKEOVER_BOUND + 5.0,
        lambda: f"no follower switched to the leader worker: {cluster.roles.snapshot()}",
    )
    took = t_start - t0
    print(f"{crash}: {new} took over in {took:.2f}s")
    assert took <= TAKEOVER_BOUND, (
        f"{new} started the leader worker {took:.2f}s after the crash "
        f"(bound: election_timeout + 1s = {TAKEOVER_BOUND:.1f}s)"
    )
    # the crashed node's DLE saw its leadership go: LeadershipLostError (expected)
    err = old_member.outcome()
    assert isinstance(err, LeadershipLostError), f"crashed leader's DLE ended with {err!r}"
    assert cluster.roles.snapshot()[old] is None, "crashed node's leader worker still running"
    # survivors settle: one leader worker, one follower worker, and blocks flow again
    assert cluster.wait_steady(survivors) == new
    new_node = cluster.members[new].node
    assert new_node.is_leader()
    h1 = new_node.get_state().height
    wait_until(lambda: new_node.get_state().height >= h1 + 3, 5.0, "new leader produces nothing")
    for n in survivors:
        assert cluster.members[n].error is None
        assert cluster.members[n].dle.is_running()
    assert len(cluster.roles.leaders()) == 1
    assert cluster.roles.max_leaders == 1, "two leader workers ran at the same time"


def test_failing_leader_worker_moves_leadership_to_another_node(cluster: Cluster) -> None:
    cluster.start()
    old = cluster.wait_steady()
    old_member = cluster.members[old]
    t0 = time.monotonic()
    cluster.fail_leader_worker()
    err = old_member.outcome(timeout=15.0)
    assert isinstance(err, WorkerError), f"failing leader's DLE ended with {err!r}"
    assert "leader worker exited unexpectedly: boom" in str(err)
    assert err.role == "leader"
    # leadership moved to another node, whose leader worker started
    others = tuple(n for n in IDS if n != old)

    def moved() -> str | None:
        leaders = cluster.roles.leaders()
        return leaders[0] if len(leaders) == 1 and leaders[0] in others else None

    new = wait_until(moved, 10.0, lambda: f"leadership did not move: {cluster.roles.snapshot()}")
    assert cluster.roles.leader_start(new, after=t0) is not None
    new_node = cluster.members[new].node
    wait_until(new_node.is_leader, 5.0, "new leader's node does not lead")
    assert not old_member.node.is_leader()
    h1 = new_node.get_state().height
    wait_until(lambda: new_node.get_state().height >= h1 + 3, 5.0, "new leader produces nothing")
    for n in others:
        assert cluster.members[n].error is None, f"{n}: {cluster.members[n].error!r}"
        assert cluster.members[n].dle.is_running()
    assert cluster.roles.max_leaders == 1


def test_follower_dle_does_not_spin_after_its_node_stopped(cluster: Cluster) -> None:
    """A follower's DLE whose node was stopped must keep waiting politely (ROLE_POLL),
    not busy-loop: ``Node.wait_role_change`` returns at once on a closed node."""
    cluster.start()
    leader = cluster.wait_steady()
    follower = next(n for n in IDS if n != leader)
    member = cluster.members[follower]
    calls = [0]
    original = member.node.wait_role_change

    def counting(was_leader: bool, timeout: float) -> bool:
        calls[0] += 1
        return original(was_leader, timeout)

    member.node.wait_role_change = counting  # type: ignore[method-assign]
    member.node.shutdown()
    wait_until(lambda: calls[0] > 0, 5.0, "DLE stopped polling altogether")
    start, t0 = calls[0], time.monotonic()
    threading.Event().wait(0.5)  # observation window, not synchronisation
    rate = (calls[0] - start) / (time.monotonic() - t0)
    assert rate <= 50, (
        f"DLE of a stopped node polls wait_role_change {rate:.0f} times/s (busy loop); "
        "expected about 1 / ROLE_POLL = 10/s"
    )
    member.stop.set()
    assert member.outcome() is None
