"""``AsyncNode``: the threaded ``Node``'s operations as coroutines, and the bridge that
puts apply messages on an ``asyncio.Queue`` from the loop's own thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, TypeVar

from etcdraft.config import Config
from etcdraft.node import Node
from etcdraft.proto import RaftBlockState
from etcdraft.types import RaftApplyMsg
from etcdraft.view import Progress

__all__ = ["AsyncNode"]

log = logging.getLogger("etcdraft.aio")

T = TypeVar("T")

#: Threads for the blocking calls other than ``broadcast`` (per ``AsyncNode``).
POOL_WORKERS = 4
#: ``wait_role_change`` waits in slices this long, so a cancelled wait frees its thread.
ROLE_SLICE = 0.1
#: Apply-queue drops are logged at most this often (every drop is counted).
DROP_LOG_EVERY = 5.0


class AsyncNode:
    """The asyncio form of :class:`~etcdraft.Node` (same operations, same contract).

    Blocking operations are coroutines that run the threaded ``Node``'s call in a
    thread of this node's own, so the event loop never waits on etcd. Cancelling a
    coroutine (or a timeout around it) returns control at once, as a cancelled Go
    ``context.Context`` does; the call it started ends in its thread on its own
    deadline, so ``broadcast`` may or may not have landed: retrying the same state is
    safe (a retry at a replicated height with identical bytes succeeds without writing).

    Constructing does no I/O. ``async with AsyncNode(config) as node:`` awaits
    :meth:`start` and, on exit, :meth:`stop`.

    Args:
        config: the node's configuration.
        logger: logger to use (default: ``logging.getLogger("etcdraft.node")`` for the
            node, ``etcdraft.aio`` for this layer).
    """

    def __init__(self, config: Config, *, logger: logging.Logger | None = None) -> None:
        self._node = Node(config, logger=logger)
        self._log = logger or log
        self._id = config.node_id
        self._lock = threading.Lock()
        # executors are made on first use (no thread before a call needs one)
        self._pool: ThreadPoolExecutor | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._retired = False  # executors released for good: calls use the default one
        self._start_fut: concurrent.futures.Future[None] | None = None
        self._closing = threading.Event()  # stopped after a start, or start cancelled
        self._dropped = 0
        self._last_drop_log = -math.inf

    # ------------------------------------------------------------------ properties

    @property
    def threaded(self) -> Node:
        """The threaded :class:`~etcdraft.Node` this drives: for what has no async form
        (``stats``-like counters, ``fsm``, ``add_broadcast_observer``, metrics)."""
        return self._node

    @property
    def node_id(self) -> str:
        return self._id

    @property
    def config(self) -> Config:
        return self._node.config

    @property
    def term(self) -> int:
        """The current term while this node leads, else 0."""
        return self._node.term

    @property
    def dropped(self) -> int:
        """Apply messages dropped because the ``asyncio.Queue`` was full (or its loop
        closed), since this node was created."""
        with self._lock:
            return self._dropped

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> AsyncNode:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect, load local state, catch up with etcd, register and campaign
        (:meth:`Node.start <etcdraft.Node.start>`). A second call is a no-op.

        Cancelling it returns at once and shuts the node down once the start under
        way ends (a started node nobody drives would campaign and could lead).

        Raises:
            EtcdUnavailableError: etcd stayed unreachable past the start deadline.
            EtcdAuthError: credentials or TLS rejected.
            RuntimeError: the node was stopped, or a start was cancelled; create a
                new ``AsyncNode``.
        """
        if self._closing.is_set():
            raise RuntimeError(
                "this AsyncNode was stopped (or its start cancelled); create a new AsyncNode"
            )
        fut = self._start_fut = self._spawn("start", self._node.start)
        try:
            await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            self._closing.set()
            fut.add_done_callback(lambda _f: self._abandon())
            raise

    async def stop(self) -> None:
        """Drain applies (up to ``shutdown_timeout``), hand leadership over if leader,
        release the session, then join this node's threads. Idempotent; safe before
        :meth:`start`. Cancelling it returns at once; the stop completes in its thread."""
        await self._close("stop", self._node.stop, join=True)

    async def shutdown(self) -> None:
        """Stop at once: revoke the session lease and stop background work, without
        handover or waiting (calls still in flight end on their own deadlines).
        Idempotent."""
        await self._close("shutdown", self._node.shutdown, join=False)

    async def _close(self, what: str, fn: Callable[[], None], *, join: bool) -> None:
        start = self._start_fut
        if start is not None and not (start.done() and start.exception() is not None):
            self._closing.set()  # started, or starting: no new AsyncNode life after this
        # (before any start, or after failed ones, stopping is a no-op, as for Node)

        def close() -> None:
            try:
                fn()
            finally:
                self._release(wait=join)

        # shielded: a cancelled caller returns, the stop itself always completes
        await asyncio.shield(asyncio.wrap_future(self._spawn(what, close)))

    def _abandon(self) -> None:
        """After a cancelled start: shut down in a thread of its own (never blocks)."""

        def close() -> None:
            try:
                self._node.shutdown()
            finally:
                self._release(wait=False)

        self._spawn("shutdown", close)

    def _executor(self, *, writer: bool) -> ThreadPoolExecutor | None:
        """This node's executor for a call; None (the loop's default) once closed."""
        with self._lock:
            if self._retired:
                return None
            if writer:
                if self._writer is None:
                    self._writer = ThreadPoolExecutor(
                        1, thread_name_prefix=f"etcdraft-aio-broadcast-{self._id}"
                    )
                return self._writer
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    POOL_WORKERS, thread_name_prefix=f"etcdraft-aio-{self._id}"
                )
            return self._pool

    def _release(self, *, wait: bool) -> None:
        with self._lock:
            executors = [e for e in (self._writer, self._pool) if e is not None]
            self._pool = self._writer = None
            self._retired = self._closing.is_set()
        for executor in executors:
            executor.shutdown(wait=wait)

    def _spawn(self, what: str, fn: Callable[[], None]) -> concurrent.futures.Future[None]:
        """Run ``fn`` in a thread of its own (lifecycle calls never queue behind
        other calls); the future completes when it ends."""
        fut: concurrent.futures.Future[None] = concurrent.futures.Future()
        ctx = contextvars.copy_context()

        def target() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                ctx.run(fn)
            except BaseException as exc:
                fut.set_exception(exc)
            else:
                fut.set_result(None)

        threading.Thread(target=target, name=f"etcdraft-aio-{what}-{self._id}", daemon=True).start()
        return fut

    async def _run(self, fn: Callable[..., T], *args: Any, writer: bool = False) -> T:
        """Await ``fn(*args)`` run in this node's threads (the default executor once
        the node is closed). Cancelling returns at once; ``fn`` runs on."""
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        call = functools.partial(ctx.run, fn, *args)
        executor = self._executor(writer=writer)
        try:
            fut = loop.run_in_executor(executor, call)
        except RuntimeError:  # the node closed its executors meanwhile
            fut = loop.run_in_executor(None, call)
        return await fut

    # ------------------------------------------------------------------ local queries

    def is_leader(self) -> bool:
        """True only while this node holds leadership and its lease cannot yet have
        expired at etcd. Local; never blocks."""
        return self._node.is_leader()

    def leader_id(self) -> str:
        """The leader's node id as last seen (``""`` when unknown). Local, no I/O."""
        return self._node.leader_id()

    def get_state(self) -> RaftBlockState:
        """A copy of the latest applied state (height 0 before any). No I/O."""
        return self._node.get_state()

    def members(self) -> dict[str, str]:
        """Membership as last seen: node id → advertised address. No I/O."""
        return self._node.members()

    def progress(self) -> dict[str, Progress | None]:
        """Live nodes as last seen: node id → last reported progress. No I/O."""
        return self._node.progress()

    def set_apply_callback(self, queue: asyncio.Queue[RaftApplyMsg] | None) -> None:
        """Put one ``RaftApplyMsg`` per applied entry on ``queue``, in index order,
        from the event loop's own thread; ``None`` stops delivery. Call it from the
        loop that reads the queue. A full queue drops the message (logged, counted in
        :attr:`dropped`); etcdraft's threads never wait for the loop.

        Raises:
            RuntimeError: called outside a running event loop.
        """
        if queue is None:
            self._node.set_apply_callback(None)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "AsyncNode.set_apply_callback must be called from the event loop that "
                "reads the queue (inside a coroutine)"
            ) from None
        self._node.set_apply_callback(_LoopQueue(self, loop, queue))

    def _count_drops(self, msg: RaftApplyMsg, count: int, why: str) -> None:
        with self._lock:
            self._dropped += count
            total = self._dropped
            now = time.monotonic()
            due = now - self._last_drop_log >= DROP_LOG_EVERY
            if due:
                self._last_drop_log = now
        if due:
            self._log.warning(
                "apply queue %s: dropped notification for height %d (%d dropped so far); "
                "drain the queue faster or give it more room",
                why,
                msg.state.height,
                total,
                extra={"node_id": self._id, "height": msg.state.height},
            )

    # ------------------------------------------------------------------ coroutines

    async def broadcast(self, state: RaftBlockState, *, timeout: float | None = None) -> None:
        """Replicate ``state``; returns once etcd committed it (``Node.broadcast``).

        Broadcasts run one at a time, in the order they were awaited. ``state`` is
        copied first: changing it afterwards cannot change what is written.
        Cancelling returns at once; the write may or may not land (retry the same
        state: safe).

        Raises:
            NotLeaderError: this node does not lead.
            HeightConflictError: a different block is replicated at that height.
            InvalidStateError: timestamp not strictly increasing, height pruned, or
                the state too large for etcd.
            LeadershipLostError: the fenced write was rejected; nothing written.
            EtcdUnavailableError: etcd did not answer in time (safe to retry).
        """
        if not isinstance(state, RaftBlockState):
            raise TypeError(f"state must be a RaftBlockState, not {type(state).__name__}")
        copy = RaftBlockState()
        copy.CopyFrom(state)
        await self._run(functools.partial(self._node.broadcast, copy, timeout=timeout), writer=True)

    async def has_quorum(self) -> bool:
        """True when this node leads and etcd confirms it through a linearizable
        round trip within ``send_timeout``. Never raises (but cancellation)."""
        if not self._node.is_leader():
            return False
        return await self._run(self._node.has_quorum)

    async def resign_leader(self, *, timeout: float | None = None) -> None:
        """Hand leadership to the most up-to-date live member; return once another
        node holds it. No-op when not leader. Cancelling returns at once; a handover
        already sent to etcd still happens.

        Raises:
            HandoverError: no live member can take over (this node stays leader).
            TimeoutError: no other node took over within ``timeout``
                (default 5 * ``send_timeout``).
        """
        await self._run(functools.partial(self._node.resign_leader, timeout=timeout))

    async def add_peer(self, node_id: str, addr: str) -> None:
        """Add a member (``Node.add_peer``); works on any node.

        Raises:
            ConfigError: empty or malformed id or address.
            EtcdUnavailableError: etcd did not answer in time.
        """
        await self._run(self._node.add_peer, node_id, addr)

    async def remove_peer(self, node_id: str) -> None:
        """Remove a member (``Node.remove_peer``); a removed leader steps down.

        Raises:
            EtcdUnavailableError: etcd did not answer in time.
        """
        await self._run(self._node.remove_peer, node_id)

    async def wait_applied(self, timeout: float) -> bool:
        """Wait until every entry committed before the call is applied locally.

        Raises:
            EtcdUnavailableError: etcd could not tell what was committed in time.
        """
        return await self._run(self._node.wait_applied, timeout)

    async def wait_role_change(self, was_leader: bool, timeout: float) -> bool:
        """Wait up to ``timeout`` until ``is_leader()`` differs from ``was_leader`` (or
        the leader changes); True if it did. Leadership can also lapse by time, so
        poll with a modest timeout. Once the node is stopping it returns False within
        0.1 s (its thread is needed back)."""
        cancel = threading.Event()
        try:
            return await self._run(self._wait_role_change, was_leader, timeout, cancel)
        except asyncio.CancelledError:
            cancel.set()  # frees the thread within ROLE_SLICE
            raise

    def _wait_role_change(self, was_leader: bool, timeout: float, cancel: threading.Event) -> bool:
        node = self._node
        deadline = time.monotonic() + timeout
        seen = node.leader_id()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if node.wait_role_change(was_leader, min(left, ROLE_SLICE)):
                return True
            if node.is_leader() != was_leader or node.leader_id() != seen:
                return True
            if cancel.is_set() or self._closing.is_set():
                return False


class _LoopQueue:
    """What the threaded node's FSM offers messages to: ``put_nowait`` (any thread;
    called in index order) buffers the message and wakes the loop once per batch; the
    loop moves the batch to the user's ``asyncio.Queue``. Never blocks the caller."""

    def __init__(
        self, owner: AsyncNode, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[RaftApplyMsg]
    ) -> None:
        self._owner = owner
        self._loop = loop
        self._queue = queue
        # at most this many can fit when the batch is delivered (nothing drains the
        # queue while the loop runs _deliver): more would surely be dropped anyway
        self._cap = queue.maxsize if queue.maxsize > 0 else math.inf
        self._lock = threading.Lock()
        self._pending: deque[RaftApplyMsg] = deque()
        self._scheduled = False

    def put_nowait(self, msg: RaftApplyMsg) -> None:
        with self._lock:
            full = len(self._pending) >= self._cap
            if not full:
                self._pending.append(msg)
                if self._scheduled:
                    return
                self._scheduled = True
        if full:
            self._owner._count_drops(msg, 1, "full")
            return
        try:
            self._loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the loop is closed: nobody will ever read the queue
            with self._lock:
                lost = len(self._pending)
                self._pending.clear()
                self._scheduled = False
            self._owner._count_drops(msg, lost, "unread (its event loop is closed)")

    def _deliver(self) -> None:  # on the loop
        with self._lock:
            batch = list(self._pending)
            self._pending.clear()
            self._scheduled = False
        for msg in batch:
            try:
                self._queue.put_nowait(msg)
            except asyncio.QueueFull:
                self._owner._count_drops(msg, 1, "full")
            except Exception as exc:  # a queue that refuses (shut down, say): same rule
                self._owner._count_drops(msg, 1, f"refused it ({exc!r})")
