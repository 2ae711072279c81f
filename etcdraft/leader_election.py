"""``DynamicLeaderElection``: run the leader worker while this node leads and the
follower worker otherwise (Go: ``raft.DynamicLeaderElection``, ``election.go``).

The state machine, as in Go:

* start as follower once a leader other than this node is known (polled, not only
  on change notifications), after waiting for committed entries to be applied and
  checking the follower's store against the replicated state;
* on becoming leader: wait for committed entries to be applied (abdicate if that
  times out); if a follower worker ran, re-check leadership, compare the store
  (wait for a lagging store up to ``shutdown_timeout``, ``recover`` a one-block
  difference, abdicate when it cannot catch up); then stop the follower worker and
  start the leader worker;
* losing leadership while leading stops the leader worker and raises
  :class:`~etcdraft.errors.LeadershipLostError`;
* a worker that fails hands leadership over and raises
  ``"<leader|follower> worker exited unexpectedly: <cause>"``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import NoReturn, Protocol, TypeVar

import tenacity

from etcdraft.config import Config
from etcdraft.errors import EtcdraftError, LeadershipLostError, WorkerError
from etcdraft.proto import RaftBlockState
from etcdraft.types import Runnable

__all__ = ["DynamicLeaderElection", "LeaderNode", "WorkerError", "WorkerReturnedEarly"]

log = logging.getLogger(__name__)

#: How often the store is polled while waiting for it to catch up (Go: 100 ms).
CATCH_UP_POLL = 0.1
#: Upper bound of one wait for a role change (leadership is also time-based).
ROLE_POLL = 0.1


_T = TypeVar("_T")


def _poll(
    check: Callable[[], _T], done: Callable[[_T], bool], timeout: float, stop: threading.Event
) -> _T:
    """``check()`` every ``CATCH_UP_POLL`` until ``done`` says so, ``timeout`` passed or
    ``stop`` is set; returns the last result (see ``done`` for which it was)."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_result(lambda result: not done(result)),
        wait=tenacity.wait_fixed(CATCH_UP_POLL),
        stop=tenacity.stop_any(
            tenacity.stop_after_delay(timeout), tenacity.stop_when_event_set(stop)
        ),
        sleep=tenacity.sleep_using_event(stop),
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
    )
    return retrying(check)


class WorkerReturnedEarly(EtcdraftError):
    """The cause of a :class:`WorkerError` when a worker's ``run`` returned while
    its stop event was not set: a runnable must keep working until it is stopped
    (a leader worker that quits would leave a leader producing nothing)."""

    def __init__(self) -> None:
        super().__init__(
            "run() returned before its stop event was set; a worker must keep running "
            "until it is stopped (retry or wait inside run instead of returning)"
        )


class LeaderNode(Protocol):
    """What ``DynamicLeaderElection`` needs from a node (``Node`` provides it)."""

    @property
    def node_id(self) -> str: ...

    @property
    def config(self) -> Config: ...

    def is_leader(self) -> bool: ...

    def leader_id(self) -> str: ...

    def get_state(self) -> RaftBlockState: ...

    def wait_applied(self, timeout: float) -> bool: ...

    def resign_leader(self, *, timeout: float | None = None) -> None: ...

    def wait_role_change(self, was_leader: bool, timeout: float) -> bool: ...


class _Worker:
    def __init__(self, role: str, runnable: Runnable, errors: list[tuple[str, BaseException]],
                 wake: threading.Event, node_id: str) -> None:  # fmt: skip
        self.role = role
        self.runnable = runnable
        self.stop = threading.Event()
        self._errors = errors
        self._wake = wake
        self.thread = threading.Thread(
            target=self._run, name=f"etcdraft-{role}-worker-{node_id}", daemon=True
        )
        self.thread.start()

    def _run(self) -> None:
        try:
            self.runnable.run(self.stop)
        except BaseException as exc:
            if not self.stop.is_set():
                self._errors.append((self.role, exc))
                self._wake.set()
            else:
                log.debug("%s worker raised while stopping: %r", self.role, exc)
        else:
            if not self.stop.is_set():
                self._errors.append((self.role, WorkerReturnedEarly()))
                self._wake.set()

    def halt(self, timeout: float) -> None:
        self.stop.set()
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise EtcdraftError(
                f"{self.role} worker did not stop within {timeout:.3g}s of its stop event; "
                "workers must return promptly when stop is set"
            )


class DynamicLeaderElection:
    """Run ``leader_factory()``'s runnable while ``node`` leads and
    ``follower_factory()``'s otherwise (Go: ``NewDynamicLeaderElection``).

    Args:
        leader_factory: builds the leader worker (e.g. the block producer).
        follower_factory: builds the follower worker (e.g. the syncer).
        node: a started :class:`~etcdraft.Node`.
        logger: logger to use.
    """

    def __init__(
        self,
        leader_factory: Callable[[], Runnable],
        follower_factory: Callable[[], Runnable],
        node: LeaderNode,
        *,
        logger: logging.Logger | None = None,
    ) -> None:
        self._leader_factory = leader_factory
        self._follower_factory = follower_factory
        self._node = node
        self._log = logger or log
        self._running = threading.Event()
        self._wake = threading.Event()
        self._run_lock = threading.Lock()

    def is_running(self) -> bool:
        """True while :meth:`run` is active."""
        return self._running.is_set()

    # ------------------------------------------------------------------ run

    def run(self, stop: threading.Event | None = None) -> None:
        """Block, running the worker that fits this node's role.

        Returns ``None`` when ``stop`` is set (the worker is stopped first).

        Raises:
            LeadershipLostError: leadership was lost while the leader worker ran.
            WorkerError: a worker failed; leadership was handed over first.
            EtcdraftError: recovery failed, or a worker would not stop.
        """
        stop = stop if stop is not None else threading.Event()
        with self._run_lock:
            if self._running.is_set():
                raise RuntimeError("DynamicLeaderElection.run is already running")
            self._running.set()
        errors: list[tuple[str, BaseException]] = []
        self._worker: _Worker | None = None
        self._errors = errors
        self._stop = stop
        is_leader = False
        try:
            while not stop.is_set():
                if errors:
                    role, cause = errors[0]
                    if (
                        role == "leader"
                        and isinstance(cause, WorkerReturnedEarly)
                        and not self._node.is_leader()
                    ):
                        # it returned because leadership ended (a NotLeaderError, say):
                        # that is the lost-leadership case, not a failure
                        self._lose_leadership()
                    self._halt_worker()
                    self._handover(f"{role} worker failed")
                    raise WorkerError(role, cause) from cause
                leader_now = self._node.is_leader()
                if leader_now and not is_leader:
                    is_leader = self._become_leader()
                elif not leader_now and is_leader:
                    self._lose_leadership()
                elif not leader_now and self._worker is None:
                    leader = self._node.leader_id()
                    if leader and leader != self._node.node_id:
                        self._start_follower()
                if stop.is_set():
                    break
                self._wake.clear()
                if not errors:
                    began = time.monotonic()
                    if not self._node.wait_role_change(is_leader, ROLE_POLL):
                        # "no change" must cost ROLE_POLL: a node that returns at once
                        # (a stopped Node does) would otherwise make this a busy loop;
                        # _wake cuts the pause short when a worker fails.
                        left = ROLE_POLL - (time.monotonic() - began)
                        if left > 0:
                            self._wake.wait(left)
            return None
        finally:
            self._halt_worker(raise_on_timeout=False)
            self._running.clear()

    # ------------------------------------------------------------------ steps

    def _lose_leadership(self) -> NoReturn:
        self._halt_worker()
        self._log.info(
            "node %s lost leadership: leader worker stopped",
            self._node.node_id,
            extra={"node_id": self._node.node_id},
        )
        raise LeadershipLostError()

    def _start_follower(self) -> None:
        node = self._node
        cfg = node.config
        self._wait_applied(cfg.send_timeout)
        # a node that just started may not have applied the first block yet
        state = _poll(node.get_state, lambda st: st.height != 0, cfg.send_timeout, self._stop)
        runnable = self._follower_factory()
        try:
            diff = runnable.is_synced(state)
        except Exception as exc:
            self._log.info("follower store check failed (%s): recovering", exc)
            runnable.recover(self._stop, state)
        else:
            if diff > 0:
                self._log.info(
                    "follower store is %d blocks ahead of the replicated height %d: rolling back",
                    diff,
                    state.height,
                )
                runnable.recover(self._stop, state)
        self._log.info(
            "node %s starting follower worker (leader %s, height %d)",
            node.node_id,
            node.leader_id(),
            state.height,
            extra={"node_id": node.node_id, "height": state.height},
        )
        self._worker = _Worker("follower", runnable, self._errors, self._wake, node.node_id)

    def _become_leader(self) -> bool:
        """Returns True when the leader worker was started."""
        node = self._node
        cfg = node.config
        if not self._wait_applied(cfg.send_timeout):
            self._log.info("became leader but committed entries did not land in time: abdicating")
            self._handover("not synced with the replicated log")
            return False
        follower = self._worker
        if follower is not None:
            if not node.is_leader():
                self._log.info("lost leadership during sync wait")
                return False
            state = node.get_state()
            diff = self._is_synced(follower.runnable, state)
            if diff is not None and diff < -1:
                self._log.info(
                    "became leader with the store %d blocks behind height %d: waiting for it",
                    -diff,
                    state.height,
                )
                runnable = follower.runnable

                def look() -> tuple[bool, RaftBlockState, int | None]:
                    st = node.get_state()
                    return node.is_leader(), st, self._is_synced(runnable, st)

                def settled(seen: tuple[bool, RaftBlockState, int | None]) -> bool:
                    return not seen[0] or seen[2] is None or seen[2] >= -1

                leading, state, diff = seen = _poll(look, settled, cfg.shutdown_timeout, self._stop)
                if not leading:
                    self._log.info("lost leadership while waiting for the store to catch up")
                    return False
                if not settled(seen):
                    self._log.info("store did not catch up in time: abdicating")
                    self._handover("store too far behind")
                    return False
            if diff is None or diff != 0:
                self._log.info(
                    "became leader with the store %s the replicated state: recovering",
                    "unreadable against" if diff is None else f"{diff:+d} blocks off",
                )
                try:
                    follower.runnable.recover(self._stop, state)
                except Exception as exc:
                    self._handover("recovery failed")
                    raise EtcdraftError(f"recovery on becoming leader failed: {exc}") from exc
            try:
                self._halt_worker()
            except EtcdraftError:
                self._handover("follower worker would not stop")
                raise
        runnable = self._leader_factory()
        state = node.get_state()
        self._log.info(
            "node %s starting leader worker (height %d)",
            node.node_id,
            state.height,
            extra={"node_id": node.node_id, "height": state.height},
        )
        self._worker = _Worker("leader", runnable, self._errors, self._wake, node.node_id)
        return True

    def _is_synced(self, runnable: Runnable, state: RaftBlockState) -> int | None:
        try:
            return runnable.is_synced(state)
        except Exception as exc:
            self._log.info("store check failed: %s", exc)
            return None

    def _wait_applied(self, timeout: float) -> bool:
        try:
            return self._node.wait_applied(timeout)
        except EtcdraftError as exc:
            self._log.info("could not confirm committed entries landed: %s", exc)
            return False

    def _handover(self, why: str) -> None:
        if not self._node.is_leader():
            return
        self._log.info("handing leadership over: %s", why)
        try:
            self._node.resign_leader()
        except (EtcdraftError, TimeoutError) as exc:
            self._log.warning("handover failed: %s", exc)

    def _halt_worker(self, *, raise_on_timeout: bool = True) -> None:
        worker, self._worker = getattr(self, "_worker", None), None
        if worker is None:
            return
        try:
            worker.halt(self._node.config.shutdown_timeout)
        except EtcdraftError:
            if raise_on_timeout:
                raise
            self._log.error("%s worker did not stop in time", worker.role)
