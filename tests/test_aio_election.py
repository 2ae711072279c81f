"""Unit tests of ``etcdraft.aio.AsyncDynamicLeaderElection`` against the fake node of
``test_leader_election.py``.

Every scenario of the threaded tests is ported under the same name. An async
worker has no stop event: its task is cancelled when its role ends, so one name
changes, ``test_worker_stop_event_is_set_when_the_role_ends`` becoming
``test_worker_task_is_cancelled_when_the_role_ends``. ``run`` takes an optional
``asyncio.Event`` as the threaded ``run`` takes a ``threading.Event``; cancelling the
task awaiting ``run()`` is the asyncio way to stop it and has tests of its own.

Then the async layer's own contract: user code runs on the loop's thread in the
context ``run()`` was awaited in; a worker that ignores cancellation is waited for up
to ``shutdown_timeout`` and then abandoned; threaded workers are refused.

No fixed sleeps synchronise anything: tests wait for conditions with deadlines.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from test_leader_election import SEND_TIMEOUT, SHUTDOWN_TIMEOUT, FakeNode, Journal, Synced

from etcdraft import (
    ErrLeadershipLost,
    EtcdraftError,
    EtcdUnavailableError,
    LeadershipLostError,
    RaftBlockState,
    WorkerError,
)
from etcdraft.aio import AsyncDynamicLeaderElection
from etcdraft.leader_election import WorkerReturnedEarly

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]

JOIN = 5.0  # bound on every wait for run() to end


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


# --------------------------------------------------------------------------- fakes


class FakeAsyncRunnable:
    """An async worker: ``run`` waits until cancelled (or fails / returns on demand),
    ``is_synced`` answers from a script, ``recover`` is recorded. Records the thread
    every call ran on."""

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
        self.linger = linger  # keeps running this long after cancellation (slow wind-down)
        self.raise_on_stop: BaseException | None = None  # raised once cancelled
        self.started = threading.Event()
        self.returned = threading.Event()
        self.cancelled = False  # its task was cancelled: the role ended
        self.task: asyncio.Task[Any] | None = None
        self.is_synced_calls: list[int] = []
        self.recover_calls: list[int] = []
        self.threads: set[int] = set()
        self.seen_context: list[str] = []
        self._fail: BaseException | None = None
        self._return = False
        self._poke = asyncio.Event()

    # -- test controls (called on the loop)
    def fail(self, exc: BaseException) -> None:
        self._fail = exc
        self._poke.set()

    def return_early(self) -> None:
        self._return = True
        self._poke.set()

    # -- AsyncRunnable
    async def run(self) -> None:
        self.task = asyncio.current_task()
        self.threads.add(threading.get_ident())
        self.seen_context.append(REQUEST_ID.get())
        self.journal.add(self.role, "run-start")
        self.started.set()
        try:
            while True:
                if self._fail is not None:
                    raise self._fail
                if self._return:
                    return
                self._poke.clear()
                await self._poke.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            if self.linger:
                await asyncio.sleep(self.linger)  # the behaviour under test: slow to stop
            if self.raise_on_stop is not None:
                raise self.raise_on_stop from None
            raise
        finally:
            self.journal.add(self.role, "run-end")
            self.returned.set()

    def is_synced(self, state: RaftBlockState) -> int:
        self.threads.add(threading.get_ident())
        self.is_synced_calls.append(state.height)
        self.journal.add(self.role, "is_synced")
        synced = self.synced
        if isinstance(synced, BaseException):
            raise synced
        if callable(synced):
            return synced(state)
        return synced

    async def recover(self, state: RaftBlockState) -> None:
        self.threads.add(threading.get_ident())
        self.recover_calls.append(state.height)
        self.journal.add(self.role, "recover")
        if self.recover_error is not None:
            raise self.recover_error


REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class FakeAsyncNode:
    """What ``AsyncDynamicLeaderElection`` needs: the threaded node underneath."""

    def __init__(self, node: FakeNode) -> None:
        self._node = node

    @property
    def threaded(self) -> FakeNode:
        return self._node


class Runner:
    """Runs ``election.run()`` as a task and keeps its outcome."""

    def __init__(self, election: AsyncDynamicLeaderElection) -> None:
        self.election = election
        self.task: asyncio.Task[None] | None = None

    async def start(self, stop: asyncio.Event | None = None) -> Runner:
        self.task = asyncio.create_task(self.election.run(stop), name="election-under-test")
        await until(self.election.is_running, 2.0, "AsyncDynamicLeaderElection.run did not start")
        return self

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def join(self, timeout: float = JOIN) -> asyncio.Task[None]:
        assert self.task is not None
        await asyncio.wait({self.task}, timeout=timeout)
        assert self.task.done(), f"AsyncDynamicLeaderElection.run still running after {timeout}s"
        return self.task

    async def finish(self) -> None:
        """Cancel and wait; run must end cancelled (and raise nothing else)."""
        assert self.task is not None
        self.task.cancel()
        task = await self.join()
        assert task.cancelled(), f"run ended with {task.exception()!r} instead of cancelled"

    async def raised(self, timeout: float = JOIN) -> BaseException:
        task = await self.join(timeout)
        assert not task.cancelled(), "run was cancelled instead of raising"
        exc = task.exception()
        assert exc is not None, "run returned instead of raising"
        return exc


class Setup:
    def __init__(
        self, node: FakeNode, leader: FakeAsyncRunnable, follower: FakeAsyncRunnable
    ) -> None:
        self.node = node
        self.leader = leader
        self.follower = follower
        self.journal = leader.journal
        self.leader_builds = 0
        self.follower_builds = 0
        self.factory_threads: set[int] = set()
        self.dle = AsyncDynamicLeaderElection(
            self._make_leader, self._make_follower, FakeAsyncNode(node)
        )
        self.runner = Runner(self.dle)

    def _make_leader(self) -> FakeAsyncRunnable:
        self.factory_threads.add(threading.get_ident())
        self.leader_builds += 1
        return self.leader

    def _make_follower(self) -> FakeAsyncRunnable:
        self.factory_threads.add(threading.get_ident())
        self.follower_builds += 1
        return self.follower


@pytest_asyncio.fixture
async def make() -> AsyncIterator[Callable[..., Setup]]:
    setups: list[Setup] = []

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
        lead = FakeAsyncRunnable("leader", journal, synced=leader_synced, linger=linger)
        follow = FakeAsyncRunnable(
            "follower", journal, synced=follower_synced, recover_error=recover_error, linger=linger
        )
        setup = Setup(node, lead, follow)
        setups.append(setup)
        return setup

    yield factory
    for setup in setups:  # never leave an election behind, whatever the test did
        task = setup.runner.task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=JOIN)
    for setup in setups:
        await until(lambda s=setup: not s.dle.is_running(), JOIN, "election thread left running")


async def start_follower(make: Callable[..., Setup], **kwargs: Any) -> Setup:
    """An election running its follower worker under leader n2 at height 10."""
    kwargs.setdefault("height", 10)
    s = make(leader_id="n2", **kwargs)
    await s.runner.start()
    await until(s.follower.started.is_set, JOIN, lambda: f"follower never started: {events(s)}")
    return s


def events(s: Setup) -> list[tuple[str, str]]:
    return s.journal.events()


# --------------------------------------------------------------------------- Go scenarios


async def test_start_as_follower_via_leader_discovery(make: Callable[..., Setup]) -> None:
    s = make(height=5)
    await s.runner.start()
    # no leader known yet: the election polls, and runs nothing
    await until(lambda: len(s.node.wait_role_change_calls) >= 3, 2.0, "never polled")
    assert events(s) == []
    # the leader becomes known without any change notification: discovered by polling
    s.node.set_leader_id("n2", notify=False)
    await until(s.follower.started.is_set, JOIN, "follower never started via leader discovery")
    assert s.node.wait_applied_calls, "committed entries were not awaited before starting"
    assert s.node.wait_applied_calls[0] <= s.journal.time_of("follower", "run-start")
    assert s.follower.is_synced_calls == [5]
    assert s.follower.recover_calls == []
    assert s.leader_builds == 0 and not s.leader.started.is_set()
    await s.runner.finish()


async def test_leader_loss_returns_leadership_lost_error(make: Callable[..., Setup]) -> None:
    s = make(leader=True, height=3)
    await s.runner.start()
    await until(s.leader.started.is_set, JOIN, "leader worker never started")
    s.node.set_leader(False, "n2")
    err = await s.runner.raised()
    assert isinstance(err, LeadershipLostError)
    assert isinstance(err, ErrLeadershipLost)
    assert "leader lock lost" in str(err)
    assert s.leader.returned.is_set(), "leader worker still running after run raised"
    assert s.leader.cancelled, "the leader worker's task was not cancelled"
    assert s.node.resign_calls == [], "losing leadership must not try to hand it over"
    assert not s.dle.is_running()


async def test_worker_error_surfaces_and_hands_over(make: Callable[..., Setup]) -> None:
    s = make(leader=True, height=3)
    await s.runner.start()
    await until(s.leader.started.is_set, JOIN, "leader worker never started")
    boom = RuntimeError("boom")
    s.leader.fail(boom)
    err = await s.runner.raised()
    assert isinstance(err, WorkerError)
    assert isinstance(err, EtcdraftError)
    assert "leader worker exited unexpectedly: boom" in str(err)
    assert err.__cause__ is boom
    assert len(s.node.resign_calls) == 1, "a failed leader worker must hand leadership over"
    assert s.node.resign_calls[0] >= s.journal.time_of("leader", "run-end")
    assert not s.node.is_leader()
    assert not s.dle.is_running()


async def test_leadership_transfer_when_not_synced(make: Callable[..., Setup]) -> None:
    s = await start_follower(make)
    s.node.wait_applied_result = False  # committed entries do not land in time
    s.node.set_leader(True)
    await until(lambda: s.node.resign_calls, 3.0, "a leader that is not synced did not abdicate")
    await until(lambda: not s.node.is_leader(), 2.0, "still leader")
    assert s.leader_builds == 0, "leader worker built although not synced"
    assert not s.leader.started.is_set()
    # the follower worker keeps running under the new leader
    assert not s.follower.cancelled and not s.follower.returned.is_set()
    assert s.runner.running and s.dle.is_running()
    await s.runner.finish()
    assert s.follower.returned.is_set()


async def test_abdicate_when_the_store_is_far_behind_and_never_catches_up(
    make: Callable[..., Setup],
) -> None:
    s = await start_follower(make, follower_synced=-5)
    calls_before = len(s.follower.is_synced_calls)
    became = time.monotonic()
    s.node.set_leader(True)
    await until(lambda: s.node.resign_calls, SHUTDOWN_TIMEOUT + 3.0, "never abdicated")
    waited = s.node.resign_calls[0] - became
    assert waited >= SHUTDOWN_TIMEOUT * 0.9, f"abdicated after {waited:.2f}s, before the timeout"
    assert waited <= SHUTDOWN_TIMEOUT + 1.5, f"abdicated only after {waited:.2f}s"
    polls = len(s.follower.is_synced_calls) - calls_before
    assert 2 <= polls <= SHUTDOWN_TIMEOUT / 0.1 + 3, f"{polls} store checks in {waited:.2f}s"
    assert s.leader_builds == 0 and not s.leader.started.is_set()
    assert s.follower.recover_calls == [], "a far-behind store must not be 'recovered'"
    assert not s.follower.returned.is_set(), "follower worker stopped although not leading"
    assert s.runner.running and s.dle.is_running()
    await s.runner.finish()


async def test_proceed_as_leader_when_the_store_catches_up_during_the_wait(
    make: Callable[..., Setup],
) -> None:
    lagging = threading.Event()
    lagging.set()
    s = await start_follower(make, follower_synced=lambda st: -5 if lagging.is_set() else 0)
    s.node.set_leader(True)
    n = len(s.follower.is_synced_calls)
    await until(lambda: len(s.follower.is_synced_calls) >= n + 2, 3.0, "store never polled")
    lagging.clear()  # the store caught up
    await until(s.leader.started.is_set, JOIN, "leader worker never started after catching up")
    assert s.node.resign_calls == []
    assert s.follower.recover_calls == []
    assert s.follower.returned.is_set()
    assert s.journal.time_of("follower", "run-end") <= s.journal.time_of("leader", "run-start")
    await s.runner.finish()


async def test_lost_leadership_during_sync_wait(make: Callable[..., Setup]) -> None:
    s = await start_follower(make)
    node = s.node

    def lose_while_waiting() -> bool:  # leadership moves on while entries land
        node.set_leader(False, "n3")
        return True

    node.wait_applied_result = lose_while_waiting
    node.set_leader(True)
    await until(lambda: node.leader_id() == "n3", 3.0, "sync wait never happened")
    marker = len(node.wait_role_change_calls)
    await until(lambda: len(node.wait_role_change_calls) > marker + 2, 2.0, "election stuck")
    assert s.leader_builds == 0 and not s.leader.started.is_set()
    assert node.resign_calls == [], "must not hand over a leadership it no longer holds"
    assert not s.follower.returned.is_set(), "follower worker must keep running"
    assert s.runner.running and s.dle.is_running()
    await s.runner.finish()


async def test_lost_leadership_while_waiting_for_the_store_to_catch_up(
    make: Callable[..., Setup],
) -> None:
    s = await start_follower(make, follower_synced=-5)
    node = s.node
    n = len(s.follower.is_synced_calls)
    node.set_leader(True)
    await until(lambda: len(s.follower.is_synced_calls) >= n + 2, 3.0, "store never polled")
    node.set_leader(False, "n3")
    marker = len(node.wait_role_change_calls)
    await until(lambda: len(node.wait_role_change_calls) > marker + 2, 3.0, "election stuck")
    # well past shutdown_timeout: an abdication would have happened by now
    started = s.journal.time_of("follower", "run-start")
    await until(lambda: time.monotonic() - started > SHUTDOWN_TIMEOUT + 0.3, 5.0)
    assert node.resign_calls == [], "abdicated although leadership was already lost"
    assert s.leader_builds == 0 and not s.leader.started.is_set()
    assert not s.follower.returned.is_set(), "must continue as follower"
    assert s.runner.running and s.dle.is_running()
    await s.runner.finish()


async def test_follower_starts_then_becomes_leader(make: Callable[..., Setup]) -> None:
    s = await start_follower(make)
    follower_task = s.follower.task
    assert follower_task is not None and not s.follower.cancelled
    s.node.set_leader(True)
    await until(s.leader.started.is_set, JOIN, "leader worker never started")
    assert s.follower.cancelled, "follower's task not cancelled when its role ended"
    assert events(s) == [
        ("follower", "is_synced"),
        ("follower", "run-start"),
        ("follower", "is_synced"),
        ("follower", "run-end"),
        ("leader", "run-start"),
    ]
    assert s.follower.is_synced_calls == [10, 10]
    assert s.node.resign_calls == []
    assert not s.leader.cancelled
    assert s.leader.task is not follower_task, "each worker runs in its own task"
    assert s.leader.task is not s.runner.task
    await s.runner.finish()


@pytest.mark.parametrize("role", ["leader", "follower"])
async def test_stop_returns_none_and_stops_the_worker(
    make: Callable[..., Setup], role: str
) -> None:
    s = make(leader=role == "leader", leader_id="n2", height=4)
    stop = asyncio.Event()
    await s.runner.start(stop)
    worker = s.leader if role == "leader" else s.follower
    await until(worker.started.is_set, JOIN, f"{role} worker never started")
    stop_at = time.monotonic()
    stop.set()
    task = await s.runner.join()
    assert not task.cancelled() and task.exception() is None, "run raised"
    assert task.result() is None
    assert worker.returned.is_set(), "worker still running after run returned"
    assert worker.cancelled
    assert s.journal.time_of(role, "run-end") >= stop_at
    assert not s.dle.is_running()
    assert s.node.resign_calls == []


@pytest.mark.parametrize("role", ["leader", "follower"])
async def test_cancel_ends_run_and_stops_the_worker(make: Callable[..., Setup], role: str) -> None:
    """Cancelling the task awaiting ``run()`` stops it like ``stop``: the worker's task
    is cancelled and has ended before ``run()`` ends, cancelled."""
    s = make(leader=role == "leader", leader_id="n2", height=4)
    await s.runner.start()
    worker = s.leader if role == "leader" else s.follower
    await until(worker.started.is_set, JOIN, f"{role} worker never started")
    stop_at = time.monotonic()
    await s.runner.finish()
    assert worker.returned.is_set(), "worker still running after run ended"
    assert worker.cancelled
    assert s.journal.time_of(role, "run-end") >= stop_at
    assert not s.dle.is_running()
    assert s.node.resign_calls == []


# --------------------------------------------------------------------------- contract details


async def test_only_one_worker_at_a_time(make: Callable[..., Setup]) -> None:
    # a follower slow to wind down after cancellation: the leader must wait for it
    s = await start_follower(make, linger=0.3)
    s.node.set_leader(True)
    await until(s.leader.started.is_set, JOIN, "leader worker never started")
    follower_end = s.journal.time_of("follower", "run-end")
    leader_start = s.journal.time_of("leader", "run-start")
    assert follower_end <= leader_start, "leader worker started before the follower's run ended"
    assert s.journal.max_active == 1, "two workers ran at the same time"
    await s.runner.finish()
    assert s.journal.max_active == 1


async def test_worker_task_is_cancelled_when_the_role_ends(make: Callable[..., Setup]) -> None:
    """Threaded: ``test_worker_stop_event_is_set_when_the_role_ends``."""
    s = await start_follower(make)
    assert not s.follower.cancelled
    s.node.set_leader(True)
    await until(s.leader.started.is_set, JOIN, "leader worker never started")
    assert s.follower.cancelled and s.follower.returned.is_set()
    assert not s.leader.cancelled
    assert s.runner.running, "ending a role must not end run()"
    s.node.set_leader(False, "n2")
    assert isinstance(await s.runner.raised(), LeadershipLostError)
    assert s.leader.cancelled and s.leader.returned.is_set()


async def test_is_running_true_during_run_and_false_after(make: Callable[..., Setup]) -> None:
    s = make(leader=True)
    assert not s.dle.is_running()
    await s.runner.start()
    await until(s.leader.started.is_set, JOIN, "leader worker never started")
    assert s.dle.is_running()
    await s.runner.finish()
    assert not s.dle.is_running()
    # also false after run raised
    s2 = make(leader=True)
    await s2.runner.start()
    await until(s2.leader.started.is_set, JOIN, "leader worker never started")
    assert s2.dle.is_running()
    s2.node.set_leader(False, "n2")
    assert isinstance(await s2.runner.raised(), LeadershipLostError)
    assert not s2.dle.is_running()


async def test_error_message_format(make: Callable[..., Setup]) -> None:
    s = make(leader=True)
    await s.runner.start()
    await until(s.leader.started.is_set, JOIN, "leader worker never started")
    s.leader.fail(RuntimeError("boom"))
    err = await s.runner.raised()
    assert isinstance(err, WorkerError)
    assert str(err) == "leader worker exited unexpectedly: boom"
    assert err.role == "leader"
    assert isinstance(err.cause, RuntimeError)


async def test_follower_worker_error_surfaces(make: Callable[..., Setup]) -> None:
    s = await start_follower(make)
    s.follower.fail(ValueError("disk full"))
    err = await s.runner.raised()
    assert isinstance(err, WorkerError)
    assert "follower worker exited unexpectedly: disk full" in str(err)
    assert s.node.resign_calls == [], "a follower has no leadership to hand over"
    assert not s.dle.is_running()


async def test_leader_worker_returning_while_still_leader_is_a_failure(
    make: Callable[..., Setup],
) -> None:
    s = make(leader=True, height=3)
    await s.runner.start()
    await until(s.leader.started.is_set, JOIN, "leader worker never started")
    s.leader.return_early()
    err = await s.runner.raised()
    assert isinstance(err, WorkerError)
    assert isinstance(err.cause, WorkerReturnedEarly)
    assert str(err).startswith("leader worker exited unexpectedly: run() returned before")
    assert len(s.node.resign_calls) == 1, "the leadership must be handed over"
    assert not s.dle.is_running()


async def test_leader_worker_returning_after_leadership_ended_is_leadership_lost(
    make: Callable[..., Setup],
) -> None:
    s = make(leader=True, height=3)
    await s.runner.start()
    await until(s.leader.started.is_set, JOIN, "leader worker never started")
    s.node.set_leader(False, "n2", notify=False)  # the election has not noticed yet
    s.leader.return_early()
    err = await s.runner.raised()
    assert isinstance(err, LeadershipLostError)
    assert s.node.resign_calls == []


async def test_follower_worker_returning_early_is_a_failure(make: Callable[..., Setup]) -> None:
    s = await start_follower(make)
    s.follower.return_early()
    err = await s.runner.raised()
    assert isinstance(err, WorkerError)
    assert isinstance(err.cause, WorkerReturnedEarly)
    assert "follower worker exited unexpectedly" in str(err)
    assert s.node.resign_calls == []


async def test_worker_raising_because_it_was_stopped_is_not_an_error(
    make: Callable[..., Setup],
) -> None:
    s = await start_follower(make)
    # the follower raises something else than CancelledError once cancelled
    s.follower.raise_on_stop = RuntimeError("cancelled")
    s.node.set_leader(True)
    await until(s.leader.started.is_set, JOIN, "leader worker never started")
    assert s.follower.returned.is_set()
    marker = len(s.node.wait_role_change_calls)
    await until(lambda: len(s.node.wait_role_change_calls) > marker + 2, 2.0, "election stuck")
    assert s.runner.running and s.dle.is_running()
    assert not s.leader.returned.is_set()
    await s.runner.finish()


# -- starting as follower: the store checks


async def test_follower_waits_for_the_replicated_height_to_appear(
    make: Callable[..., Setup],
) -> None:
    s = make(leader_id="n2", height=0)
    await s.runner.start()
    await until(lambda: s.node.wait_applied_calls, 2.0, "committed entries never awaited")
    s.node.set_height(7)
    await until(s.follower.started.is_set, JOIN, "follower never started")
    assert s.follower.is_synced_calls == [7], "the store was checked before height appeared"
    await s.runner.finish()


async def test_follower_starts_anyway_when_height_stays_zero(make: Callable[..., Setup]) -> None:
    s = make(leader_id="n2", height=0)
    t0 = time.monotonic()
    await s.runner.start()
    await until(s.follower.started.is_set, JOIN, "follower never started")
    waited = time.monotonic() - t0
    assert waited >= SEND_TIMEOUT * 0.9, f"did not wait for a height to appear ({waited:.2f}s)"
    assert s.follower.is_synced_calls == [0]
    await s.runner.finish()


async def test_follower_starts_when_applying_times_out(make: Callable[..., Setup]) -> None:
    s = make(leader_id="n2", height=3)
    s.node.wait_applied_result = EtcdUnavailableError("etcd slow")
    await s.runner.start()
    await until(s.follower.started.is_set, JOIN, "timing out while waiting for applies is fine")
    await s.runner.finish()


@pytest.mark.parametrize(
    ("synced", "recovers"),
    [(0, False), (-1, False), (-7, False), (2, True), (RuntimeError("corrupt store"), True)],
    ids=["in-sync", "one-behind", "far-behind", "ahead", "raises"],
)
async def test_follower_store_check_on_start(
    make: Callable[..., Setup], synced: Synced, recovers: bool
) -> None:
    s = make(leader_id="n2", height=9, follower_synced=synced)
    await s.runner.start()
    await until(s.follower.started.is_set, JOIN, "follower must start")
    if recovers:
        assert s.follower.recover_calls == [9]
        assert s.journal.time_of("follower", "recover") <= s.journal.time_of(
            "follower", "run-start"
        )
    else:
        assert s.follower.recover_calls == []
    await s.runner.finish()


# -- becoming leader after following: the store checks


@pytest.mark.parametrize("diff", [-1, 1, 4], ids=["one-behind", "one-ahead", "ahead"])
async def test_becoming_leader_recovers_a_remaining_difference(
    make: Callable[..., Setup], diff: int
) -> None:
    s = await start_follower(make)
    s.follower.synced = diff
    s.node.set_leader(True)
    await until(s.leader.started.is_set, JOIN, "leader worker never started")
    assert s.follower.recover_calls == [10]
    assert s.journal.time_of("follower", "recover") <= s.journal.time_of("leader", "run-start")
    assert s.node.resign_calls == []
    await s.runner.finish()


async def test_becoming_leader_recovers_when_the_store_check_raises(
    make: Callable[..., Setup],
) -> None:
    s = await start_follower(make)
    s.follower.synced = RuntimeError("cannot read store")
    s.node.set_leader(True)
    await until(s.leader.started.is_set, JOIN, "leader worker never started")
    assert s.follower.recover_calls == [10]
    await s.runner.finish()


async def test_failed_recovery_on_becoming_leader_hands_over_and_raises(
    make: Callable[..., Setup],
) -> None:
    s = await start_follower(make, recover_error=OSError("rollback failed"))
    s.follower.synced = 1
    s.node.set_leader(True)
    err = await s.runner.raised()
    assert isinstance(err, EtcdraftError)
    assert "rollback failed" in str(err)
    assert len(s.node.resign_calls) == 1
    assert s.leader_builds == 0 and not s.leader.started.is_set()
    assert s.follower.returned.is_set(), "follower worker left running after run raised"
    assert not s.dle.is_running()


async def test_becoming_leader_directly_starts_the_leader_worker(
    make: Callable[..., Setup],
) -> None:
    s = make(leader=True, height=2)
    await s.runner.start()
    await until(s.leader.started.is_set, JOIN, "leader worker never started")
    assert s.node.wait_applied_calls, "committed entries not awaited before leading"
    assert s.node.wait_applied_calls[0] <= s.journal.time_of("leader", "run-start")
    assert s.follower_builds == 0
    await s.runner.finish()


async def test_abdicate_when_applying_fails_on_becoming_leader(make: Callable[..., Setup]) -> None:
    s = make(leader=True, height=2)
    s.node.wait_applied_result = EtcdUnavailableError("etcd unreachable")
    await s.runner.start()
    await until(lambda: s.node.resign_calls, 3.0, "did not abdicate")
    assert s.leader_builds == 0
    # handed over to n2: continue as its follower
    await until(s.follower.started.is_set, JOIN, "follower never started")
    await s.runner.finish()


async def test_stop_set_before_run_returns_none_at_once(make: Callable[..., Setup]) -> None:
    s = make(leader=True)
    stop = asyncio.Event()
    stop.set()
    assert await asyncio.wait_for(s.dle.run(stop), 1.0) is None
    assert not s.dle.is_running()
    assert not s.leader.started.is_set()


async def test_cancel_before_run_starts_nothing(make: Callable[..., Setup]) -> None:
    s = make(leader=True)
    task = asyncio.create_task(s.dle.run())
    task.cancel()
    await asyncio.wait({task}, timeout=JOIN)
    assert task.cancelled()
    assert not s.dle.is_running()
    assert not s.leader.started.is_set() and s.leader_builds == 0


async def test_run_twice_concurrently_is_refused(make: Callable[..., Setup]) -> None:
    s = make(leader=True)
    await s.runner.start()
    await until(s.leader.started.is_set, JOIN, "leader worker never started")
    with pytest.raises(RuntimeError, match="already running"):
        await s.dle.run()
    assert s.dle.is_running() and s.runner.running, "a refused second run must not end the first"
    await s.runner.finish()


async def test_run_without_stop_event_and_restart(make: Callable[..., Setup]) -> None:
    s = make(leader=True)
    await s.runner.start()
    await until(s.leader.started.is_set, JOIN, "leader worker never started")
    s.node.set_leader(False, "n2")
    assert isinstance(await s.runner.raised(), LeadershipLostError)
    # run again on the same object: now a follower
    again = await Runner(s.dle).start()
    await until(s.follower.started.is_set, JOIN, "follower never started on the second run")
    await again.finish()


# --------------------------------------------------------------------------- the async layer


async def test_user_code_runs_on_the_loop_thread_in_the_context_of_run(
    make: Callable[..., Setup],
) -> None:
    """Factories, ``is_synced``, ``recover`` and both workers run on the event loop's
    thread (asyncio objects are not thread-safe), in the context ``run()`` was
    awaited in (contextvars: request ids, tracing)."""
    loop_thread = threading.get_ident()
    s = make(leader_id="n2", height=9, follower_synced=1)  # ahead: recover on start
    REQUEST_ID.set("req-42")
    await s.runner.start()
    await until(s.follower.started.is_set, JOIN, "follower never started")
    s.follower.synced = 0
    s.node.set_leader(True)
    await until(s.leader.started.is_set, JOIN, "leader worker never started")
    assert s.follower.recover_calls == [9]
    assert s.factory_threads == {loop_thread}
    assert s.follower.threads == {loop_thread}
    assert s.leader.threads == {loop_thread}
    assert s.follower.seen_context == ["req-42"] and s.leader.seen_context == ["req-42"]
    election_threads = [
        t.name for t in threading.enumerate() if t.name == "etcdraft-aio-election-n1"
    ]
    assert election_threads == ["etcdraft-aio-election-n1"], "the state machine runs in its thread"
    await s.runner.finish()


async def test_cancelled_run_waits_for_a_worker_slow_to_stop(make: Callable[..., Setup]) -> None:
    """A worker that takes a while (under ``shutdown_timeout``) to honour its
    cancellation is waited for: when ``run()`` ends, no worker runs any more; a
    second cancel meanwhile does not cut that wait short."""
    s = make(leader=True, linger=0.4)
    await s.runner.start()
    await until(s.leader.started.is_set, JOIN, "leader worker never started")
    assert s.runner.task is not None
    s.runner.task.cancel()
    await until(lambda: s.leader.cancelled, 2.0, "worker never cancelled")
    s.runner.task.cancel()  # impatience: must not leave the worker running
    task = await s.runner.join()
    assert task.cancelled()
    assert s.leader.returned.is_set(), "run ended while its worker still ran"
    assert not s.dle.is_running()


async def test_worker_ignoring_cancellation_is_abandoned_after_shutdown_timeout(
    make: Callable[..., Setup], caplog: pytest.LogCaptureFixture
) -> None:
    """A worker that ignores its cancellation for longer than ``shutdown_timeout``
    does not hold ``run()`` hostage: it ends, cancelled, within that bound (plus a
    margin), and the stuck worker is reported; the worker ends on its own later."""
    s = make(leader=True, linger=SHUTDOWN_TIMEOUT * 2.5)
    await s.runner.start()
    await until(s.leader.started.is_set, JOIN, "leader worker never started")
    assert s.runner.task is not None
    caplog.set_level(logging.ERROR, logger="etcdraft")
    t0 = time.monotonic()
    s.runner.task.cancel()
    task = await s.runner.join(SHUTDOWN_TIMEOUT + 3.0)
    took = time.monotonic() - t0
    assert task.cancelled()
    assert took <= SHUTDOWN_TIMEOUT + 1.0, f"run() took {took:.2f}s to end after cancellation"
    assert s.leader.cancelled and not s.leader.returned.is_set(), (
        "precondition: the worker still ignores its cancellation"
    )
    assert any("did not stop in time" in r.getMessage() for r in caplog.records), caplog.text
    await until(s.leader.returned.is_set, SHUTDOWN_TIMEOUT * 3, "the worker never ended")


async def test_threaded_runnable_is_refused_with_a_clear_error(
    make: Callable[..., Setup],
) -> None:
    class Threaded:
        def run(self, stop: threading.Event) -> None:
            stop.wait()

        def is_synced(self, state: RaftBlockState) -> int:
            return 0

        def recover(self, stop: threading.Event, state: RaftBlockState) -> None:
            pass

    node = FakeNode(leader=True)
    dle = AsyncDynamicLeaderElection(Threaded, Threaded, FakeAsyncNode(node))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="async def"):
        await asyncio.wait_for(dle.run(), JOIN)
    assert not dle.is_running()


async def test_worker_task_cancelled_from_outside_is_a_worker_failure(
    make: Callable[..., Setup],
) -> None:
    """Only the election ends a worker's task; a task cancelled by anyone else while
    its role lasts is a failed worker (leadership is handed over)."""
    s = make(leader=True, height=3)
    await s.runner.start()
    await until(s.leader.started.is_set, JOIN, "leader worker never started")
    assert s.leader.task is not None
    s.leader.task.cancel()
    err = await s.runner.raised()
    assert isinstance(err, WorkerError)
    assert "leader worker exited unexpectedly" in str(err) and "cancelled" in str(err)
    assert len(s.node.resign_calls) == 1
