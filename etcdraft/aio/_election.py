"""``AsyncDynamicLeaderElection``: the threaded ``DynamicLeaderElection`` state machine,
unchanged, driving async workers that run as tasks on the caller's event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from etcdraft.errors import EtcdraftError
from etcdraft.leader_election import DynamicLeaderElection, LeaderNode
from etcdraft.proto import RaftBlockState
from etcdraft.types import Runnable

__all__ = ["AsyncDynamicLeaderElection", "AsyncLeaderNode", "AsyncRunnable"]

log = logging.getLogger("etcdraft.aio")

T = TypeVar("T")

#: How often a worker's thread looks at its task while waiting for the role to end.
WORKER_POLL = 0.02
#: A worker task cancelled from outside is an error unless the role ends this soon.
CANCEL_GRACE = 0.1


class AsyncRunnable(Protocol):
    """A worker run by :class:`AsyncDynamicLeaderElection` (the async ``Runnable``)."""

    async def run(self) -> None:
        """Work until cancelled (the role ended: let ``CancelledError`` propagate) or
        fail (raise). Returning while the role lasts counts as a failure."""

    def is_synced(self, state: RaftBlockState) -> int:
        """Local height minus replicated height: 0 in sync, -1 when the replicated
        state is one block ahead, positive when the local state is ahead. Runs on the
        event loop: keep it quick."""

    async def recover(self, state: RaftBlockState) -> None:
        """Bring the local state to ``state`` (roll back or catch up)."""


class AsyncLeaderNode(Protocol):
    """What :class:`AsyncDynamicLeaderElection` needs: the threaded node underneath
    (``AsyncNode.threaded``)."""

    @property
    def threaded(self) -> LeaderNode: ...


class AsyncDynamicLeaderElection:
    """Run ``leader_factory()``'s worker while ``node`` leads and
    ``follower_factory()``'s otherwise: the async form of
    :class:`~etcdraft.DynamicLeaderElection`, whose state machine it runs unchanged.

    Workers run as tasks on the event loop that awaits :meth:`run`; when a role ends,
    its worker's task is cancelled and awaited (up to ``shutdown_timeout``) before the
    next worker starts. The factories and ``is_synced`` also run on the loop.

    Args:
        leader_factory: builds the leader worker (e.g. the block producer).
        follower_factory: builds the follower worker (e.g. the syncer).
        node: a started :class:`AsyncNode`.
        logger: logger to use.
    """

    def __init__(
        self,
        leader_factory: Callable[[], AsyncRunnable],
        follower_factory: Callable[[], AsyncRunnable],
        node: AsyncLeaderNode,
        *,
        logger: logging.Logger | None = None,
    ) -> None:
        self._leader_factory = leader_factory
        self._follower_factory = follower_factory
        self._node = node
        self._logger = logger  # the state machine's (default: etcdraft.leader_election)
        self._log = logger or log
        self._running = threading.Event()

    def is_running(self) -> bool:
        """True while :meth:`run` is active (until its election thread has ended)."""
        return self._running.is_set()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run the worker that fits this node's role until this task is cancelled
        (the worker is cancelled and awaited first, then ``CancelledError``
        propagates), ``stop`` is set (the same, then ``run`` returns ``None``, as the
        threaded ``run(stop)`` does), or something fails.

        Raises:
            LeadershipLostError: leadership was lost while the leader worker ran.
            WorkerError: a worker failed; leadership was handed over first.
            EtcdraftError: recovery failed, or a worker would not stop in time.
            RuntimeError: ``run`` is already running.
        """
        if self._running.is_set():
            raise RuntimeError("AsyncDynamicLeaderElection.run is already running")
        if stop is not None and stop.is_set():
            return None
        loop = asyncio.get_running_loop()
        bridge = _LoopCalls(loop, contextvars.copy_context())
        threaded = self._node.threaded
        dle = DynamicLeaderElection(
            self._wrap(bridge, self._leader_factory, "leader"),
            self._wrap(bridge, self._follower_factory, "follower"),
            threaded,
            logger=self._logger,
        )
        halt = threading.Event()
        done: asyncio.Future[None] = loop.create_future()

        def target() -> None:
            outcome: BaseException | None = None
            try:
                dle.run(halt)
            except BaseException as exc:
                outcome = exc
            finally:
                self._running.clear()
            try:
                loop.call_soon_threadsafe(_resolve, done, outcome)
            except RuntimeError:  # the loop is closed: nobody awaits run() any more
                if outcome is not None:
                    self._log.warning("election ended after its event loop closed: %r", outcome)

        self._running.set()
        try:
            threading.Thread(
                target=target, name=f"etcdraft-aio-election-{threaded.node_id}", daemon=True
            ).start()
        except BaseException:
            self._running.clear()
            raise
        cfg = threaded.config
        bound = cfg.shutdown_timeout + 6 * cfg.send_timeout + 1.0
        stopped = loop.create_task(stop.wait()) if stop is not None else None
        try:
            if stopped is None:
                await asyncio.shield(done)
                return None
            first: set[asyncio.Future[Any]] = {done, stopped}
            await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
            if not done.done():
                halt.set()
                await self._settle(done, bound)
                _retrieve(done, self._log)  # a stop is not an error, as in the threaded run
                return None
            return done.result()
        except asyncio.CancelledError:
            if done.done():
                _retrieve(done, self._log)  # it ended on its own as we were cancelled
                raise
            halt.set()
            await self._settle(done, bound)
            _retrieve(done, self._log)
            raise
        finally:
            if stopped is not None:
                stopped.cancel()

    async def _settle(self, done: asyncio.Future[None], bound: float) -> None:
        """Wait (bounded, deaf to further cancellation) for the election thread to
        halt its worker and end: a cancelled ``run`` returns only once the worker it
        ran has ended or was given up on after ``shutdown_timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + bound
        while not done.done():
            left = deadline - loop.time()
            if left <= 0:
                self._log.error(
                    "the election did not end within %.3gs of being cancelled; it ends on its own",
                    bound,
                )
                return
            try:
                await asyncio.wait({done}, timeout=left)
            except asyncio.CancelledError:
                continue  # already stopping; a second cancel cannot make it faster

    def _wrap(
        self, bridge: _LoopCalls, factory: Callable[[], AsyncRunnable], role: str
    ) -> Callable[[], Runnable]:
        def make() -> Runnable:
            worker = bridge.call(factory)
            for name in ("run", "recover"):
                if not inspect.iscoroutinefunction(getattr(worker, name, None)):
                    raise TypeError(
                        f"the {role} factory built {type(worker).__name__}, whose {name} is "
                        f"not an 'async def' method: AsyncDynamicLeaderElection needs async "
                        f"workers (a threaded Runnable goes to etcdraft.DynamicLeaderElection)"
                    )
            return _ThreadedWorker(bridge, worker)

        return make


def _resolve(done: asyncio.Future[None], outcome: BaseException | None) -> None:
    if done.done():
        return
    if outcome is None:
        done.set_result(None)
    else:
        done.set_exception(outcome)


def _retrieve(done: asyncio.Future[None], logger: logging.Logger) -> None:
    """Consume the outcome of an election that was stopped or cancelled: what it
    raised meanwhile is logged, not lost."""
    if done.done() and (exc := done.exception()) is not None:
        logger.info("the election ended with %r as it was being stopped", exc)


class _LoopCalls:
    """Hands user code to the event loop from the election's threads."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ctx: contextvars.Context) -> None:
        self._loop = loop
        self._ctx = ctx  # the context run() was awaited in, for every user call

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the loop's thread; blocks this thread for the result."""
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def call() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(self._ctx.run(fn, *args))
            except BaseException as exc:
                fut.set_exception(exc)

        self._loop.call_soon_threadsafe(call)
        while not fut.done():
            concurrent.futures.wait([fut], timeout=1.0)
            if not fut.done() and self._loop.is_closed():
                raise RuntimeError("the event loop closed before it ran the call")
        return fut.result()

    def run_until(
        self, make: Callable[[], Coroutine[Any, Any, None]], stop: threading.Event
    ) -> None:
        """Run ``make()`` as a task on the loop until it ends or ``stop`` is set; then
        cancel it and wait for it to end. Raises what the task raised (unless
        ``stop`` was set); a task cancelled from outside is an error."""
        finished = threading.Event()
        box: dict[str, Any] = {}

        def start() -> None:
            try:
                task = self._ctx.run(self._loop.create_task, make())
            except BaseException as exc:
                box["error"] = exc
                finished.set()
                return
            box["task"] = task

            def done(t: asyncio.Task[None]) -> None:
                if t.cancelled():
                    box["cancelled"] = True
                else:
                    box["error"] = t.exception()
                finished.set()

            task.add_done_callback(done)

        def cancel() -> None:
            task = box.get("task")
            if task is not None:
                task.cancel()

        self._loop.call_soon_threadsafe(start)
        while not finished.is_set():
            if self._loop.is_closed():
                raise RuntimeError("the event loop closed under a running worker")
            if stop.wait(WORKER_POLL):
                self._loop.call_soon_threadsafe(cancel)  # runs after start: FIFO
                while not finished.wait(0.1):
                    if self._loop.is_closed():
                        return
                if box.get("error") is not None:
                    log.debug("worker raised while being cancelled: %r", box["error"])
                return
        error = box.get("error")
        if error is not None:
            raise error
        if box.get("cancelled") and not stop.wait(CANCEL_GRACE):
            raise EtcdraftError(
                "its task was cancelled from outside the election; cancel the task "
                "awaiting AsyncDynamicLeaderElection.run() instead"
            )


class _ThreadedWorker:
    """A threaded ``Runnable`` for the state machine, backed by an async worker."""

    def __init__(self, bridge: _LoopCalls, worker: AsyncRunnable) -> None:
        self._bridge = bridge
        self.worker = worker

    def run(self, stop: threading.Event) -> None:
        self._bridge.run_until(self.worker.run, stop)

    def is_synced(self, state: RaftBlockState) -> int:
        return self._bridge.call(self.worker.is_synced, state)

    def recover(self, stop: threading.Event, state: RaftBlockState) -> None:
        self._bridge.run_until(functools.partial(self.worker.recover, state), stop)
