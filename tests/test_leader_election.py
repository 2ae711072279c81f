"""Unit tests of ``DynamicLeaderElection`` against a small fake node.

Each Go scenario of ``pkg/raft/election_test.go`` is ported by name
(``test_<scenario_snake_case>``); further tests pin the rest of the contract in
``API.md`` (one worker at a time, the workers' own stop events, ``is_running``,
the error message format, the store checks on starting as follower).

No fixed sleeps synchronise anything: tests wait on events or ``wait_until``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import wait_until

from etcdraft import (
    Config,
    DynamicLeaderElection,
    ErrLeadershipLost,
    EtcdraftError,
    EtcdUnavailableError,
    LeadershipLostError,
    RaftBlockState,
    WorkerError,
)
from etcdraft.leader_election import WorkerReturnedEarly

pytestmark = pytest.mark.timeout(30)

SEND_TIMEOUT = 0.2
SHUTDOWN_TIMEOUT = 1.0
JOIN = 5.0  # bound on every join of the thread running DynamicLeaderElection.run


# --------------------------------------------------------------------------- fakes


class Journal:
    """A thread-safe, ordered record of what the workers did."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries: list[tuple[float, str, str]] = []
        self._active = 0
        self.max_active = 0

    def add(self, who: str, what: str) -> None:
        with self._lock:
            if what == "run-start":
                self._active += 1
                self.max_active = max(self.max_active, self._active)
            elif what == "run-end":
                self._active -= 1
            self.entries.append((time.monotonic(), who, what))

    def events(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(who, what) for _, who, what in self.entries]

    def time_of(self, who: str, what: str) -> float:
        with self._lock:
            for t, w, e in self.entries:
                if (w, e) == (who, what):
                    return t
        raise AssertionError(f"{who} never logged {what}: {self.events()}")


Synced = int | BaseException | Callable[[RaftBlockState], int]


class FakeRunnable:
    """A worker: ``run`` waits on its stop event (or raises on demand),
    ``is_synced`` answers from a script, ``recover`` is recorded."""

    def __init__(
        self,
        role: str,
        journal: Journal,
        *,
        synced: Synced = 0,
        recover_error: BaseException | None = None,
        linger: float = 0.0,
    ) -> None:
        self.role = role
        self.journal = journal
        self.synced = synced
        self.recover_error = recover_error
        self.linger = linger  # keeps running this long after stop (a slow worker)
        self.raise_on_stop: BaseException | None = None  # raised after stop was set
        self.started = threading.Event()
        self.returned = threading.Event()
        self.stop_event: threading.Event | None = None
        self.is_synced_calls: list[int] = []  # replicated heights it was asked about
        self.recover_calls: list[tuple[threading.Event, int]] = []
        self._fail: BaseException | None = None
        self._return = False
        self._lock = threading.Lock()

    # -- test controls
    def fail(self, exc: BaseException) -> None:
        with self._lock:
            self._fail = exc

    def return_early(self) -> None:
        """Make ``run`` return although its stop event is not set."""
        with self._lock:
            self._return = True

    # -- Runnable
    def run(self, stop: threading.Event) -> None:
        self.stop_event = stop
        self.journal.add(self.role, "run-start")
        self.started.set()
        try:
            while not stop.wait(0.005):
                with self._lock:
                    exc, quit_now = self._fail, self._return
                if exc is not None:
                    raise exc
                if quit_now:
                    return
            if self.linger:
                threading.Event().wait(self.linger)  # a worker slow to wind down
            if self.raise_on_stop is not None:
                raise self.raise_on_stop
        finally:
            self.journal.add(self.role, "run-end")
            self.returned.set()

    def is_synced(self, state: RaftBlockState) -> int:
        with self._lock:
            self.is_synced_calls.append(state.height)
            synced = self.synced
        self.journal.add(self.role, "is_synced")
        if isinstance(synced, BaseException):
            raise synced
        if callable(synced):
            return synced(state)
        return synced

    def recover(self, stop: threading.Event, state: RaftBlockState) -> None:
        with self._lock:
            self.recover_calls.append((stop, state.height))
        self.journal.add(self.role, "recover")
        if self.recover_error is not None:
            raise self.recover_error


class FakeNode:
    """Implements the ``LeaderNode`` protocol; every knob is thread-safe."""

    def __init__(
        self,
        node_id: str = "n1",
        *,
        leader: bool = False,
        leader_id: str = "",
        height: int = 0,
    ) -> None:
        self._config = Config(
            node_id=node_id,
            endpoints=["http://127.0.0.1:1"],
            send_timeout=SEND_TIMEOUT,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            heartbeat_timeout="50ms",
            election_timeout="1s",
            leader_lease_timeout="100ms",
        )
        self._cond = threading.Condition()
        self._leader = leader
        self._leader_id = node_id if leader else leader_id
        self._state = RaftBlockState(height=height, timestamp=height)
        self._version = 0
        # wait_applied: True, False, an exception, or a callable returning one of those
        self.wait_applied_result: Any = True
        self.wait_applied_calls: list[float] = []
        self.resign_calls: list[float] = []
        self.resign_hands_over_to: str | None = "n2"  # None: resign has no effect
        self.wait_role_change_calls: list[bool] = []

    # -- test controls
    def set_leader(
        self, leader: bool, leader_id: str | None = None, *, notify: bool = True
    ) -> None:
        with self._cond:
            self._leader = leader
            if leader_id is not None:
                self._leader_id = leader_id
            elif leader:
                self._leader_id = self.node_id
            self._version += 1
            if notify:
                self._cond.notify_all()

    def set_leader_id(self, leader_id: str, *, notify: bool = True) -> None:
        with self._cond:
            self._leader_id = leader_id
            if notify:
                self._version += 1
                self._cond.notify_all()

    def set_height(self, height: int) -> None:
        with self._cond:
            self._state = RaftBlockState(height=height, timestamp=height)

    # -- LeaderNode
    @property
    def node_id(self) -> str:
        return self._config.node_id

    @property
    def config(self) -> Config:
        return self._config

    def is_leader(self) -> bool:
        with self._cond:
            return self._leader

    def leader_id(self) -> str:
        with self._cond:
            return self._leader_id

    def get_state(self) -> RaftBlockState:
        with self._cond:
            copy = RaftBlockState()
            copy.CopyFrom(self._state)
            return copy

    def wait_applied(self, timeout: float) -> bool:
        with self._cond:
            self.wait_applied_calls.append(time.monotonic())
            result = self.wait_applied_result
        if callable(result):
            result = result()
        if isinstance(result, BaseException):
            raise result
        return bool(result)

    def resign_leader(self, *, timeout: float | None = None) -> None:
        with self._cond:
            self.resign_calls.append(time.monotonic())
            target = self.resign_hands_over_to
        if target is not None and self.is_leader():
            self.set_leader(False, target)

    def wait_role_change(self, was_leader: bool, timeout: float) -> bool:
        with self._cond:
            self.wait_role_change_calls.append(was_leader)
            seen = self._version
            return self._cond.wait_for(
                lambda: self._leader != was_leader or self._version != seen, timeout
            )


class Runner:
    """Runs ``dle.run(stop)`` in a thread and keeps its outcome."""

    def __init__(self, dle: DynamicLeaderElection) -> None:
        self.dle = dle
        self.stop = threading.Event()
        self.done = threading.Event()
        self.result: object = "not returned"
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="dle-under-test", daemon=True)

    def _run(self) -> None:
        try:
            self.result = self.dle.run(self.stop)
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def start(self) -> Runner:
        self.thread.start()
        wait_until(self.dle.is_running, 2.0, "DynamicLeaderElection.run did not start")
        return self

    def join(self, timeout: float = JOIN) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), (
            f"DynamicLeaderElection.run still running after {timeout}s"
        )

    def finish(self) -> None:
        """Set stop and join; run must return None."""
        self.stop.set()
        self.join()
        assert self.error is None, f"run raised {self.error!r}"
        assert self.result is None

    def raised(self, timeout: float = JOIN) -> BaseException:
        self.join(timeout)
        assert self.error is not None, f"run returned {self.result!r} instead of raising"
        return self.error


class Setup:
    def __init__(self, node: FakeNode, leader: FakeRunnable, follower: FakeRunnable) -> None:
        self.node = node
        self.leader = leader
        self.follower = follower
        self.journal = leader.journal
        self.leader_builds = 0
        self.follower_builds = 0
        self.dle = DynamicLeaderElection(self._make_leader, self._make_follower, node)
        self.runner = Runner(self.dle)

    def _make_leader(self) -> FakeRunnable:
        self.leader_builds += 1
        return self.leader

    def _make_follower(self) -> FakeRunnable:
        self.follower_builds += 1
        return self.follower


_setups: list[Setup] = []


@pytest.fixture
def make() -> Iterator[Callable[..., Setup]]:
    def factory(
        *,
        leader: bool = False,
        leader_id: str = "",
        height: int = 0,
        follower_synced: Synced = 0,
        leader_synced: Synced = 0,
        recover_error: BaseException | None = None,
        linger: float = 0.0,
    ) -> Setup:
        journal = Journal()
        node = FakeNode(leader=leader, leader_id=leader_id, height=height)
        lead = FakeRunnable("leader", journal, synced=leader_synced, linger=linger)
        follow = FakeRunnable(
            "follower", journal, synced=follower_synced, recover_error=recover_error, linger=linger
        )
        setup = Setup(node, lead, follow)
        _setups.append(setup)
        return setup

    yield factory
    while _setups:  # never leave a DLE thread behind, whatever the test did
        setup = _setups.pop()
        setup.runner.stop.set()
        if setup.runner.thread.is_alive():
            setup.runner.thread.join(JOIN)


def start_follower(make: Callable[..., Setup], **kwargs: Any) -> Setup:
    """A DLE running its follower worker under leader n2 at height 10."""
    kwargs.setdefault("height", 10)
    s = make(leader_id="n2", **kwargs)
    s.runner.start()
    assert s.follower.started.wait(JOIN), f"follower never started: {s.journal.events()}"
    return s


# --------------------------------------------------------------------------- Go scenarios


def test_start_as_follower_via_leader_discovery(make: Callable[..., Setup]) -> None:
    s = make(height=5)
    s.runner.start()
    # no leader known yet: the DLE polls, and runs nothing
    wait_until(lambda: len(s.node.wait_role_change_calls) >= 3, 2.0, "DLE never polled")
    assert s.journal.events() == []
    # the leader becomes known without any change notification: discovered by polling
    s.node.set_leader_id("n2", notify=False)
    assert s.follower.started.wait(JOIN), "follower worker never started via leader discovery"
    assert s.node.wait_applied_calls, "committed entries were not awaited before starting"
    assert s.node.wait_applied_calls[0] <= s.journal.time_of("follower", "run-start")
    assert s.follower.is_synced_calls == [5]
    assert s.follower.recover_calls == []
    assert s.leader_builds == 0 and not s.leader.started.is_set()
    s.runner.finish()


def test_leader_loss_returns_leadership_lost_error(make: Callable[..., Setup]) -> None:
    s = make(leader=True, height=3)
    s.runner.start()
    assert s.leader.started.wait(JOIN), "leader worker never started"
    s.node.set_leader(False, "n2")
    err = s.runner.raised()
    assert isinstance(err, LeadershipLostError)
    assert isinstance(err, ErrLeadershipLost)
    assert "leader lock lost" in str(err)
    assert s.leader.returned.is_set(), "leader worker still running after run raised"
    assert s.leader.stop_event is not None and s.leader.stop_event.is_set()
    assert s.node.resign_calls == [], "losing leadership must not try to hand it over"
    assert not s.dle.is_running()


def test_worker_error_surfaces_and_hands_over(make: Callable[..., Setup]) -> None:
    s = make(leader=True, height=3)
    s.runner.start()
    assert s.leader.started.wait(JOIN)
    boom = RuntimeError("boom")
    s.leader.fail(boom)
    err = s.runner.raised()
    assert isinstance(err, WorkerError)
    assert isinstance(err, EtcdraftError)
    assert "leader worker exited unexpectedly: boom" in str(err)
    assert err.__cause__ is boom
    assert len(s.node.resign_calls) == 1, "a failed leader worker must hand leadership over"
    # the failed worker is gone before leadership is handed over
    assert s.node.resign_calls[0] >= s.journal.time_of("leader", "run-end")
    assert not s.node.is_leader()
    assert not s.dle.is_running()


def test_leadership_transfer_when_not_synced(make: Callable[..., Setup]) -> None:
    s = start_follower(make)
    # committed entries do not land in time once this node becomes leader
    s.node.wait_applied_result = False
    s.node.set_leader(True)
    wait_until(lambda: s.node.resign_calls, 3.0, "a leader that is not synced did not abdicate")
    wait_until(lambda: not s.node.is_leader(), 2.0)
    assert s.leader_builds == 0, "leader worker built although not synced"
    assert not s.leader.started.is_set()
    # the follower worker keeps running under the new leader
    assert s.follower.stop_event is not None and not s.follower.stop_event.is_set()
    assert not s.follower.returned.is_set()
    assert s.runner.error is None and s.dle.is_running()
    s.runner.finish()
    assert s.follower.returned.is_set()


def test_abdicate_when_the_store_is_far_behind_and_never_catches_up(
    make: Callable[..., Setup],
) -> None:
    s = start_follower(make, follower_synced=-5)
    calls_before = len(s.follower.is_synced_calls)
    became = time.monotonic()
    s.node.set_leader(True)
    wait_until(lambda: s.node.resign_calls, SHUTDOWN_TIMEOUT + 3.0, "never abdicated")
    waited = s.node.resign_calls[0] - became
    assert waited >= SHUTDOWN_TIMEOUT * 0.9, (
        f"abdicated after {waited:.2f}s, before shutdown_timeout"
    )
    assert waited <= SHUTDOWN_TIMEOUT + 1.5, f"abdicated only after {waited:.2f}s"
    polls = len(s.follower.is_synced_calls) - calls_before
    # polled, but at most every 100 ms
    assert 2 <= polls <= SHUTDOWN_TIMEOUT / 0.1 + 3, f"{polls} store checks in {waited:.2f}s"
    assert s.leader_builds == 0 and not s.leader.started.is_set()
    assert s.follower.recover_calls == [], "a far-behind store must not be 'recovered'"
    assert not s.follower.returned.is_set(), "follower worker stopped although not leading"
    assert s.runner.error is None and s.dle.is_running()
    s.runner.finish()


def test_proceed_as_leader_when_the_store_catches_up_during_the_wait(
    make: Callable[..., Setup],
) -> None:
    lagging = threading.Event()
    lagging.set()
    s = start_follower(make, follower_synced=lambda st: -5 if lagging.is_set() else 0)
    s.node.set_leader(True)
    n = len(s.follower.is_synced_calls)
    wait_until(lambda: len(s.follower.is_synced_calls) >= n + 2, 3.0, "store never polled")
    lagging.clear()  # the store caught up
    assert s.leader.started.wait(JOIN), "leader worker never started after the store caught up"
    assert s.node.resign_calls == []
    assert s.follower.recover_calls == []
    assert s.follower.returned.is_set()
    assert s.journal.time_of("follower", "run-end") <= s.journal.time_of("leader", "run-start")
    s.runner.finish()


def test_lost_leadership_during_sync_wait(make: Callable[..., Setup]) -> None:
    s = start_follower(make)
    node = s.node

    def lose_while_waiting() -> bool:  # leadership moves on while entries land
        node.set_leader(False, "n3")
        return True

    node.wait_applied_result = lose_while_waiting
    node.set_leader(True)
    wait_until(lambda: node.leader_id() == "n3", 3.0, "sync wait never happened")
    marker = len(node.wait_role_change_calls)
    wait_until(lambda: len(node.wait_role_change_calls) > marker + 2, 2.0, "DLE stuck")
    assert s.leader_builds == 0 and not s.leader.started.is_set()
    assert node.resign_calls == [], "must not hand over a leadership it no longer holds"
    assert not s.follower.returned.is_set(), "follower worker must keep running"
    assert s.runner.error is None and s.dle.is_running()
    s.runner.finish()


def test_lost_leadership_while_waiting_for_the_store_to_catch_up(
    make: Callable[..., Setup],
) -> None:
    s = start_follower(make, follower_synced=-5)
    node = s.node
    n = len(s.follower.is_synced_calls)
    node.set_leader(True)
    wait_until(lambda: len(s.follower.is_synced_calls) >= n + 2, 3.0, "store never polled")
    node.set_leader(False, "n3")
    marker = len(node.wait_role_change_calls)
    wait_until(lambda: len(node.wait_role_change_calls) > marker + 2, 3.0, "DLE stuck")
    # well past shutdown_timeout: an abdication would have happened by now
    wait_until(
        lambda: (
            time.monotonic() - s.journal.time_of("follower", "run-start") > SHUTDOWN_TIMEOUT + 0.3
        ),
        5.0,
    )
    assert node.resign_calls == [], "abdicated although leadership was already lost"
    assert s.leader_builds == 0 and not s.leader.started.is_set()
    assert not s.follower.returned.is_set(), "must continue as follower"
    assert s.runner.error is None and s.dle.is_running()
    s.runner.finish()


def test_follower_starts_then_becomes_leader(make: Callable[..., Setup]) -> None:
    s = start_follower(make)
    follower_stop = s.follower.stop_event
    assert follower_stop is not None and not follower_stop.is_set()
    s.node.set_leader(True)
    assert s.leader.started.wait(JOIN), "leader worker never started"
    assert follower_stop.is_set(), "follower's own stop event not set when its role ended"
    assert s.journal.events() == [
        ("follower", "is_synced"),
        ("follower", "run-start"),
        ("follower", "is_synced"),
        ("follower", "run-end"),
        ("leader", "run-start"),
    ]
    assert s.follower.is_synced_calls == [10, 10]
    assert s.node.resign_calls == []
    assert s.leader.stop_event is not None and not s.leader.stop_event.is_set()
    assert s.leader.stop_event is not follower_stop, "each worker gets its own stop event"
    s.runner.finish()


@pytest.mark.parametrize("role", ["leader", "follower"])
def test_stop_returns_none_and_stops_the_worker(make: Callable[..., Setup], role: str) -> None:
    s = make(leader=role == "leader", leader_id="n2", height=4)
    s.runner.start()
    worker = s.leader if role == "leader" else s.follower
    assert worker.started.wait(JOIN)
    stop_at = time.monotonic()
    s.runner.stop.set()
    s.runner.join()
    assert s.runner.error is None, f"run raised {s.runner.error!r}"
    assert s.runner.result is None
    assert worker.returned.is_set(), "worker still running after run returned"
    assert worker.stop_event is not None and worker.stop_event.is_set()
    assert s.journal.time_of(role, "run-end") >= stop_at
    assert not s.dle.is_running()
    assert s.node.resign_calls == []


# --------------------------------------------------------------------------- contract details


def test_only_one_worker_at_a_time(make: Callable[..., Setup]) -> None:
    # a follower slow to wind down: the leader must not start before it returned
    s = start_follower(make, linger=0.3)
    s.node.set_leader(True)
    assert s.leader.started.wait(JOIN)
    follower_end = s.journal.time_of("follower", "run-end")
    leader_start = s.journal.time_of("leader", "run-start")
    assert follower_end <= leader_start, "leader worker started before the follower's run returned"
    assert s.journal.max_active == 1, "two workers ran at the same time"
    s.runner.finish()
    assert s.journal.max_active == 1


def test_worker_stop_event_is_set_when_the_role_ends(make: Callable[..., Setup]) -> None:
    s = start_follower(make)
    follower_stop = s.follower.stop_event
    assert follower_stop is not None and not follower_stop.is_set()
    assert follower_stop is not s.runner.stop, "the worker must get its own stop event"
    s.node.set_leader(True)
    assert s.leader.started.wait(JOIN)
    assert follower_stop.is_set()
    leader_stop = s.leader.stop_event
    assert leader_stop is not None and not leader_stop.is_set()
    assert not s.runner.stop.is_set(), "ending a role must not set the caller's stop event"
    s.node.set_leader(False, "n2")
    assert isinstance(s.runner.raised(), LeadershipLostError)
    assert leader_stop.is_set()
    assert not s.runner.stop.is_set()


def test_is_running_true_during_run_and_false_after(make: Callable[..., Setup]) -> None:
    s = make(leader=True)
    assert not s.dle.is_running()
    s.runner.start()
    assert s.leader.started.wait(JOIN)
    assert s.dle.is_running()
    s.runner.finish()
    assert not s.dle.is_running()
    # also false after run raised
    s2 = make(leader=True)
    s2.runner.start()
    assert s2.leader.started.wait(JOIN)
    assert s2.dle.is_running()
    s2.node.set_leader(False, "n2")
    assert isinstance(s2.runner.raised(), LeadershipLostError)
    assert not s2.dle.is_running()


def test_error_message_format(make: Callable[..., Setup]) -> None:
    s = make(leader=True)
    s.runner.start()
    assert s.leader.started.wait(JOIN)
    s.leader.fail(RuntimeError("boom"))
    err = s.runner.raised()
    assert isinstance(err, WorkerError)
    assert str(err) == "leader worker exited unexpectedly: boom"
    assert err.role == "leader"
    assert isinstance(err.cause, RuntimeError)


def test_follower_worker_error_surfaces(make: Callable[..., Setup]) -> None:
    s = start_follower(make)
    s.follower.fail(ValueError("disk full"))
    err = s.runner.raised()
    assert isinstance(err, WorkerError)
    assert "follower worker exited unexpectedly: disk full" in str(err)
    assert s.node.resign_calls == [], "a follower has no leadership to hand over"
    assert not s.dle.is_running()


def test_leader_worker_returning_while_still_leader_is_a_failure(
    make: Callable[..., Setup],
) -> None:
    """A leader worker that returns on its own leaves a leader producing nothing:
    hand leadership over and raise, as for a worker that raised."""
    s = make(leader=True, height=3)
    s.runner.start()
    assert s.leader.started.wait(JOIN)
    s.leader.return_early()
    err = s.runner.raised()
    assert isinstance(err, WorkerError)
    assert isinstance(err.cause, WorkerReturnedEarly)
    assert str(err).startswith("leader worker exited unexpectedly: run() returned before")
    assert len(s.node.resign_calls) == 1, "the leadership must be handed over"
    assert not s.dle.is_running()


def test_leader_worker_returning_after_leadership_ended_is_leadership_lost(
    make: Callable[..., Setup],
) -> None:
    """A leader worker that returns because leadership ended (it saw
    NotLeaderError first) is the lost-leadership case, not a failure."""
    s = make(leader=True, height=3)
    s.runner.start()
    assert s.leader.started.wait(JOIN)
    s.node.set_leader(False, "n2", notify=False)  # the DLE has not noticed yet
    s.leader.return_early()
    err = s.runner.raised()
    assert isinstance(err, LeadershipLostError)
    assert s.node.resign_calls == []


def test_follower_worker_returning_early_is_a_failure(make: Callable[..., Setup]) -> None:
    s = start_follower(make)
    s.follower.return_early()
    err = s.runner.raised()
    assert isinstance(err, WorkerError)
    assert isinstance(err.cause, WorkerReturnedEarly)
    assert "follower worker exited unexpectedly" in str(err)
    assert s.node.resign_calls == []


def test_worker_raising_because_it_was_stopped_is_not_an_error(
    make: Callable[..., Setup],
) -> None:
    s = start_follower(make)
    # the follower raises while winding down, after its stop event was set
    s.follower.raise_on_stop = RuntimeError("cancelled")
    s.node.set_leader(True)
    assert s.leader.started.wait(JOIN)
    assert s.follower.returned.is_set()
    marker = len(s.node.wait_role_change_calls)
    wait_until(lambda: len(s.node.wait_role_change_calls) > marker + 2, 2.0, "DLE stuck")
    assert s.runner.error is None and s.dle.is_running()
    assert not s.leader.returned.is_set()
    s.runner.finish()


# -- starting as follower: the store checks


def test_follower_waits_for_the_replicated_height_to_appear(make: Callable[..., Setup]) -> None:
    s = make(leader_id="n2", height=0)
    s.runner.start()
    wait_until(lambda: s.node.wait_applied_calls, 2.0, "committed entries never awaited")
    s.node.set_height(7)
    assert s.follower.started.wait(JOIN)
    assert s.follower.is_synced_calls == [7], "the store was checked before height appeared"
    s.runner.finish()


def test_follower_starts_anyway_when_height_stays_zero(make: Callable[..., Setup]) -> None:
    s = make(leader_id="n2", height=0)
    t0 = time.monotonic()
    s.runner.start()
    assert s.follower.started.wait(JOIN)
    waited = time.monotonic() - t0
    assert waited >= SEND_TIMEOUT * 0.9, f"did not wait for a height to appear ({waited:.2f}s)"
    assert s.follower.is_synced_calls == [0]
    s.runner.finish()


def test_follower_starts_when_applying_times_out(make: Callable[..., Setup]) -> None:
    s = make(leader_id="n2", height=3)
    s.node.wait_applied_result = EtcdUnavailableError("etcd slow")
    s.runner.start()
    assert s.follower.started.wait(JOIN), "timing out while waiting for applies must be fine"
    s.runner.finish()


@pytest.mark.parametrize(
    ("synced", "recovers"),
    [(0, False), (-1, False), (-7, False), (2, True), (RuntimeError("corrupt store"), True)],
    ids=["in-sync", "one-behind", "far-behind", "ahead", "raises"],
)
def test_follower_store_check_on_start(
    make: Callable[..., Setup], synced: Synced, recovers: bool
) -> None:
    s = make(leader_id="n2", height=9, follower_synced=synced)
    s.runner.start()
    assert s.follower.started.wait(JOIN), "follower must start"
    if recovers:
        assert len(s.follower.recover_calls) == 1
        stop, height = s.follower.recover_calls[0]
        assert height == 9
        assert isinstance(stop, threading.Event) and not stop.is_set()
        assert s.journal.time_of("follower", "recover") <= s.journal.time_of(
            "follower", "run-start"
        )
    else:
        assert s.follower.recover_calls == []
    s.runner.finish()


# -- becoming leader after following: the store checks


@pytest.mark.parametrize("diff", [-1, 1, 4], ids=["one-behind", "one-ahead", "ahead"])
def test_becoming_leader_recovers_a_remaining_difference(
    make: Callable[..., Setup], diff: int
) -> None:
    s = start_follower(make)
    s.follower.synced = diff
    s.node.set_leader(True)
    assert s.leader.started.wait(JOIN)
    assert [h for _, h in s.follower.recover_calls] == [10]
    t_recover = s.journal.time_of("follower", "recover")
    assert t_recover <= s.journal.time_of("leader", "run-start")
    assert s.node.resign_calls == []
    s.runner.finish()


def test_becoming_leader_recovers_when_the_store_check_raises(make: Callable[..., Setup]) -> None:
    s = start_follower(make)
    s.follower.synced = RuntimeError("cannot read store")
    s.node.set_leader(True)
    assert s.leader.started.wait(JOIN)
    assert [h for _, h in s.follower.recover_calls] == [10]
    s.runner.finish()


def test_failed_recovery_on_becoming_leader_hands_over_and_raises(
    make: Callable[..., Setup],
) -> None:
    s = start_follower(make, recover_error=OSError("rollback failed"))
    s.follower.synced = 1
    s.node.set_leader(True)
    err = s.runner.raised()
    assert isinstance(err, EtcdraftError)
    assert "rollback failed" in str(err)
    assert len(s.node.resign_calls) == 1
    assert s.leader_builds == 0 and not s.leader.started.is_set()
    assert s.follower.returned.is_set(), "follower worker left running after run raised"
    assert not s.dle.is_running()


def test_becoming_leader_directly_starts_the_leader_worker(make: Callable[..., Setup]) -> None:
    s = make(leader=True, height=2)
    s.runner.start()
    assert s.leader.started.wait(JOIN)
    assert s.node.wait_applied_calls, "committed entries not awaited before leading"
    assert s.node.wait_applied_calls[0] <= s.journal.time_of("leader", "run-start")
    assert s.follower_builds == 0
    s.runner.finish()


def test_abdicate_when_applying_fails_on_becoming_leader(make: Callable[..., Setup]) -> None:
    s = make(leader=True, height=2)
    s.node.wait_applied_result = EtcdUnavailableError("etcd unreachable")
    s.runner.start()
    wait_until(lambda: s.node.resign_calls, 3.0, "did not abdicate")
    assert s.leader_builds == 0
    # handed over to n2: continue as its follower
    assert s.follower.started.wait(JOIN)
    s.runner.finish()


def test_stop_set_before_run_returns_none_at_once(make: Callable[..., Setup]) -> None:
    s = make(leader=True)
    stop = threading.Event()
    stop.set()
    assert s.dle.run(stop) is None
    assert not s.dle.is_running()
    assert not s.leader.started.is_set()


def test_run_twice_concurrently_is_refused(make: Callable[..., Setup]) -> None:
    s = make(leader=True)
    s.runner.start()
    assert s.leader.started.wait(JOIN)
    with pytest.raises(RuntimeError):
        s.dle.run(threading.Event())
    assert s.dle.is_running(), "a refused second run must not end the first"
    s.runner.finish()


def test_run_without_stop_event_and_restart(make: Callable[..., Setup]) -> None:
    s = make(leader=True)
    s.runner.start()
    assert s.leader.started.wait(JOIN)
    s.node.set_leader(False, "n2")
    assert isinstance(s.runner.raised(), LeadershipLostError)
    # run again on the same object: now a follower
    s.follower.started.clear()
    again = Runner(s.dle).start()
    assert s.follower.started.wait(JOIN)
    again.finish()
