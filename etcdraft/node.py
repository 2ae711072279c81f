"""``Node``: election, fenced broadcast, watch-driven FSM and membership on etcd.

``Node`` is a facade over parts that each own their state (see docs/architecture.md):

* :class:`~etcdraft.cluster_view.ClusterView`: the view of the namespace;
* :class:`~etcdraft.replication.Replicator`: the watch (thread
  ``etcdraft-watch-<id>``), catch-up, feeding the FSM;
* :class:`~etcdraft.elector.Elector`: the session (thread ``etcdraft-session-<id>``:
  keep-alives, progress reports, local snapshots) and the control thread
  (``etcdraft-control-<id>``: campaign, claim, heartbeat, depose, prune); it publishes
  an immutable :class:`~etcdraft.elector.Leadership`;
* :class:`~etcdraft.heartbeat.Heartbeat`: fast takeover's clock;
* :class:`~etcdraft.broadcast.Broadcaster`: the fenced writes of blocks;
* :class:`~etcdraft.progress.ProgressReporter` and :class:`~etcdraft.pruner.Pruner`.

The facade starts the parts in order, stops and joins every thread in ``stop()``, and
delegates the public API. Safety never rests on local state: every leader write is an
etcd transaction that compares the create revision of this node's election key (the
term).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from etcdraft import membership, protocol
from etcdraft._context import NodeContext
from etcdraft._deadline import Deadline
from etcdraft._worker import join_all
from etcdraft.broadcast import MAX_ENTRY_BYTES, Broadcaster
from etcdraft.cluster_view import ClusterView
from etcdraft.config import Config
from etcdraft.elector import Elector
from etcdraft.errors import ConfigError, EtcdraftError
from etcdraft.etcd import EtcdClient
from etcdraft.fsm import FSM, ApplyQueue, SnapshotStore
from etcdraft.handover import Handover
from etcdraft.heartbeat import Heartbeat
from etcdraft.keys import Keys
from etcdraft.progress import ProgressReporter
from etcdraft.proto import RaftBlockState
from etcdraft.pruner import Pruner
from etcdraft.replication import Replicator
from etcdraft.stats import Counter, NodeHealth, NodeStats
from etcdraft.view import Progress

if TYPE_CHECKING:
    from etcdraft.http_api import NodeHttpServer

__all__ = ["MAX_ENTRY_BYTES", "Node"]

log = logging.getLogger(__name__)


class Node:
    """A member of an etcdraft cluster (Go: ``raft.Node``). Constructing does no I/O.

    Args:
        config: the node's configuration.
        logger: logger to use (default: ``logging.getLogger("etcdraft.node")``).
    """

    def __init__(self, config: Config, *, logger: logging.Logger | None = None) -> None:
        self._ctx = ctx = NodeContext(config, logger or log)  # checks config
        snapshots = (
            SnapshotStore(config.raft_dir, config.snap_count, namespace=config.namespace)
            if config.raft_dir
            else None
        )
        self._fsm = FSM(config.node_id, snapshots)
        self._cluster = ClusterView()
        self._heartbeat = Heartbeat(config.heartbeat_timeout)
        self._progress = ProgressReporter(ctx, self._cluster, self._fsm)
        self._pruner = Pruner(ctx, self._cluster, self._fsm)
        self._elector = Elector(
            ctx,
            self._cluster,
            self._fsm,
            self._heartbeat,
            self._pruner,
            on_new_session=self._progress.new_session,
            on_tick=self._progress.tick,
        )
        ctx.current_term = lambda: self._elector.leadership.term
        self._broadcaster = Broadcaster(
            ctx, self._fsm, self._elector, self._heartbeat, self._elector.leader_id
        )
        self._replicator = Replicator(ctx, self._cluster, self._fsm, self._heartbeat, self._elector)
        self._handover = Handover(ctx, self._cluster, self._elector)
        self._start_lock = threading.Lock()
        self._closed = False
        self._http: NodeHttpServer | None = None  # Config.http_addr

    # ------------------------------------------------------------------ properties

    @property
    def node_id(self) -> str:
        return self._ctx.id

    @property
    def config(self) -> Config:
        return self._ctx.config

    @property
    def fsm(self) -> FSM:
        return self._fsm

    @property
    def term(self) -> int:
        """The current term while this node leads, else 0."""
        return self._elector.leadership.term if self.is_leader() else 0

    @property
    def keys(self) -> Keys:
        return self._ctx.keys

    # counters (see also stats()), each kept by the part that counts

    broadcasts = Counter(lambda node: node._broadcaster.broadcasts)
    fenced_rejections = Counter(lambda node: node._broadcaster.fenced_rejections)
    deposed = Counter(lambda node: node._elector.deposed)
    foreign_keys = Counter(lambda node: node._replicator.foreign_keys)
    corrupt_blocks = Counter(lambda node: node._replicator.corrupt_blocks)
    pieces_written = Counter(lambda node: node._broadcaster.pieces_written)
    pieces_cleaned = Counter(lambda node: node._pruner.pieces_cleaned)

    @property
    def etcd_full(self) -> bool:
        """The last write failed on etcd's NOSPACE alarm (until a write succeeds or
        ``has_quorum`` sees the alarm gone)."""
        return self._broadcaster.etcd_full

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Node:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Connect, load local state, catch up with etcd, register and campaign.

        Returns once ``get_state()`` reflects the replicated state as of the call.
        A second call is a no-op.

        Raises:
            EtcdUnavailableError: etcd stayed unreachable past the start deadline
                (``shutdown_timeout``).
            EtcdAuthError: credentials or TLS rejected.
            RuntimeError: the node was stopped; create a new one.
            ConfigError: ``http_addr`` could not be bound (the node is then stopped).
        """
        ctx = self._ctx
        with self._start_lock:
            if ctx.started:
                return
            if self._closed:
                raise RuntimeError("this Node was stopped; create a new Node to start again")
            cfg = ctx.config
            ctx.client = EtcdClient.from_config(cfg, name=ctx.id)
            deadline = Deadline(max(cfg.shutdown_timeout, cfg.send_timeout), ctx.stopping)
            try:
                self._progress.load_snapshot()
                revision = self._replicator.resync(deadline)
                if cfg.bootstrap:
                    peers = membership.bootstrap(ctx.client, ctx.keys, cfg, deadline, ctx.log)
                    if peers:
                        with self._cluster.editing() as view:  # before the watch runs
                            view.members.update(peers)
                self._elector.new_session(deadline)
            except EtcdraftError:
                ctx.client.close()
                ctx.client = None
                raise
            self._replicator.start(revision)
            self._elector.start()
            if cfg.http_addr:
                from etcdraft.http_api import NodeHttpServer

                try:
                    self._http = NodeHttpServer(self, cfg.http_addr)
                except ConfigError:
                    self._close(revoke_timeout=cfg.send_timeout)
                    raise
                self._http.start()
            ctx.started = True
            self._elector.wake()
            ctx.log.info(
                "node %s started: height %d, %d members",
                ctx.id,
                self._fsm.height,
                len(self._cluster.members()),
                extra=ctx.extra(height=self._fsm.height),
            )

    def stop(self) -> None:
        """Drain applies (up to ``shutdown_timeout``), hand leadership over if leader,
        release the session. Idempotent; safe before ``start()``."""
        ctx = self._ctx
        with self._start_lock:
            if not ctx.started or self._closed:
                return
            cfg = ctx.config
            deadline = Deadline(cfg.shutdown_timeout)
            try:
                self.wait_applied(deadline.remaining())
            except EtcdraftError as exc:
                ctx.log.warning("stop: could not confirm applies: %s", exc, extra=ctx.extra())
            self._elector.retiring.set()  # no more campaigning
            if self._elector.holds_term():
                try:
                    self.resign_leader(timeout=max(cfg.send_timeout, deadline.remaining()))
                except (EtcdraftError, TimeoutError) as exc:
                    ctx.log.warning("stop: handover failed: %s", exc, extra=ctx.extra())
            self._close(revoke_timeout=cfg.send_timeout)

    def shutdown(self) -> None:
        """Stop at once: revoke the session lease (others take over immediately) and
        stop background work, without handover or waiting. Idempotent."""
        with self._start_lock:
            if not self._ctx.started or self._closed:
                return
            self._ctx.stopping.set()
            self._close(revoke_timeout=min(self._ctx.config.send_timeout, 1.0))

    def _close(self, revoke_timeout: float) -> None:
        """Signal every thread, revoke the lease, then join the threads within a
        bounded budget (an in-flight request ends on its own deadline)."""
        ctx = self._ctx
        ctx.stopping.set()
        http, self._http = self._http, None
        if http is not None:
            http.close()
        self._elector.step_down("node stopping")
        self._elector.signal_stop()
        self._replicator.signal_stop()
        self._elector.revoke_session(revoke_timeout)
        join_all(
            self._threads().values(),
            Deadline(max(0.2, ctx.config.send_timeout)),
            ctx.log,
            "thread %s still busy at stop; it ends on its own deadline",
            ctx.extra(),
        )
        self._progress.final_snapshot()
        if ctx.client is not None:
            ctx.client.close()
        self._closed = True
        self._cluster.notify()
        ctx.log.info("node %s stopped", ctx.id, extra=ctx.extra())

    # ------------------------------------------------------------------ queries

    def is_leader(self) -> bool:
        """True only while this node holds leadership, its lease cannot yet have
        expired at etcd (minus ``leader_lease_timeout``) and, with fast takeover, no
        other node can have deposed it yet: less than ``heartbeat_timeout`` has passed
        since the send time of its last heartbeat etcd acknowledged (a follower deposes
        only after seeing no heartbeat for that long, and it sees each heartbeat after
        it was sent). So a cut-off leader stops believing before anyone can take over.
        Local; never blocks."""
        return self._elector.is_leader()

    def stats(self) -> NodeStats:
        """A frozen snapshot of this node: role, term, leader, applied and observed
        revision, lease remaining, last heartbeat, counters. Local; never blocks on I/O.
        Each part reports its own fields."""
        running = self._ctx.started and not self._closed
        return NodeStats(
            **self._ctx.figures(),
            **self._elector.figures(time.monotonic(), running=running),
            **self._fsm.figures(),
            **self._broadcaster.figures(),
            **self._replicator.figures(),
            **self._pruner.figures(),
            **self._cluster.figures(),
        )

    def _threads(self) -> dict[str, threading.Thread | None]:
        """The node's threads by role, in the order they are joined at stop."""
        return {**self._elector.threads(), **self._replicator.threads()}

    def _health(self, timeout: float) -> NodeHealth:
        """For the HTTP probes (package-internal): see :class:`NodeHealth`."""
        threads = self._threads()
        return NodeHealth(
            stopping=self._closed or self._ctx.stopping.is_set(),
            dead_threads=tuple(n for n, t in threads.items() if t is None or not t.is_alive()),
            session_live=self._elector.session_live(),
            answering=self._cluster.responsive(timeout),
        )

    def _log_head(self, timeout: float) -> int:
        """The highest height in etcd's log (package-internal; one range read).

        Raises:
            EtcdraftError: etcd did not answer within ``timeout``.
        """
        ctx = self._ctx
        return protocol.log_head(ctx.require_client(), ctx.keys, Deadline(timeout, ctx.stopping))

    def leader_id(self) -> str:
        """The leader's node id as last seen (``""`` when unknown). Local, no I/O."""
        return self._elector.leader_id()

    def get_state(self) -> RaftBlockState:
        """A copy of the latest applied state (height 0 before any). No I/O."""
        return self._fsm.state()

    def set_apply_callback(self, q: ApplyQueue | None) -> None:
        """Offer one ``RaftApplyMsg`` per applied entry to ``q.put_nowait``; a full
        queue drops the message (logged, counted in ``fsm.dropped``). None stops."""
        self._fsm.set_apply_callback(q)

    def members(self) -> dict[str, str]:
        """Membership as last seen: node id → advertised address."""
        return self._cluster.members()

    def progress(self) -> dict[str, Progress | None]:
        """Live nodes as last seen: node id → last reported progress."""
        return self._cluster.alive()

    def has_quorum(self) -> bool:
        """True when this node leads and etcd confirms it through a linearizable
        (quorum) transaction within ``send_timeout``. Never raises."""
        if not self.is_leader() or self._ctx.client is None:
            return False
        if self._broadcaster.etcd_full and not self._broadcaster.etcd_accepts_writes():
            return False
        return self._elector.confirm()

    def wait_applied(self, timeout: float) -> bool:
        """Wait until every log entry committed before the call is applied locally.

        Raises:
            EtcdUnavailableError: etcd could not tell what was committed in time.
        """
        ctx = self._ctx
        client = ctx.require_client()
        deadline = Deadline(timeout, ctx.stopping)
        rev = protocol.log_head_revision(client, ctx.keys, deadline.sub(ctx.config.send_timeout))
        return not rev or self._fsm.wait_applied(rev, deadline.remaining(), ctx.stopping)

    def wait_role_change(self, was_leader: bool, timeout: float) -> bool:
        """Wait up to ``timeout`` until ``is_leader()`` differs from ``was_leader``
        (or the leader view changes); True if it did. Used by
        ``DynamicLeaderElection``; leadership can also lapse by time, so callers
        poll with a short timeout."""
        seen = self._cluster.leader()
        if self._closed:
            # nothing changes any more; still honour the timeout so that pollers
            # (DynamicLeaderElection) do not turn into busy loops
            self._cluster.wait(lambda: False, timeout)
            return False
        return self._cluster.wait(
            lambda: self.is_leader() != was_leader or self._cluster.leader() != seen,
            timeout,
        )

    # ------------------------------------------------------------------ writes

    def add_broadcast_observer(self, callback: Callable[[str, float], None]) -> None:
        """Call ``callback(outcome, seconds)`` after every ``broadcast()``, in the
        caller's thread, with its duration and outcome: ``ok`` (written),
        ``duplicate`` (the same block was already replicated: a retry),
        ``not_leader``, ``lost``, ``conflict``, ``invalid``, ``unavailable`` or
        ``error``. Used by ``etcdraft.metrics``; the callback must be quick and must
        not raise (exceptions are logged and ignored)."""
        self._broadcaster.add_broadcast_observer(callback)

    def broadcast(self, state: RaftBlockState, *, timeout: float | None = None) -> None:
        """Replicate ``state``; returns once etcd committed it.

        Raises:
            NotLeaderError: this node does not lead.
            HeightConflictError: a different block is replicated at that height.
            InvalidStateError: timestamp not strictly increasing, height pruned or
                skipped, or the state too large for etcd.
            LeadershipLostError: the fenced write was rejected; nothing written.
            EtcdUnavailableError: etcd did not answer in time (safe to retry).
        """
        self._broadcaster.broadcast(state, timeout=timeout)

    def resign_leader(self, *, timeout: float | None = None) -> None:
        """Hand leadership to the most up-to-date live member; return once another
        node holds it. No-op when not leader.

        Raises:
            HandoverError: no live member can take over (this node stays leader).
            TimeoutError: no other node took over within ``timeout``
                (default 5 * ``send_timeout``).
        """
        self._handover.resign(timeout, self._broadcaster.exclusive())

    def add_peer(self, node_id: str, addr: str) -> None:
        """Add a member (a node allowed to lead). Same id and addr: no-op; same id or
        same addr with a different partner: the old entry is replaced. Works on any
        node.

        Raises:
            ConfigError: empty or malformed id or address (also a ``ValueError``).
            EtcdUnavailableError: etcd did not answer in time.
        """
        membership.add_peer(self._ctx, node_id, addr)

    def remove_peer(self, node_id: str) -> None:
        """Remove a member; a removed leader steps down and its writes are fenced
        (its candidacy is deleted in the same step). Unknown ids are a no-op.

        Raises:
            EtcdUnavailableError: etcd did not answer in time.
        """
        membership.remove_peer(self._ctx, node_id)
