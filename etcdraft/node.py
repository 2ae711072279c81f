"""``Node``: election, fenced broadcast, watch-driven FSM and membership on etcd.

Threads (each owned and joined by the node):

* ``etcdraft-watch-<id>``: the one ordered watch over the namespace; applies log
  entries to the FSM and keeps the :class:`~etcdraft.view.View` current. Never
  blocks on etcd requests of its own.
* ``etcdraft-session-<id>``: lease keep-alives, progress reports, local snapshots.
* ``etcdraft-control-<id>``: campaigning, claiming the term, stepping down when
  removed, pruning. Woken by the watch whenever the view changes.

Safety never rests on local state: every leader write is an etcd transaction that
compares the create revision of this node's election key (the term).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from etcdraft._deadline import Deadline
from etcdraft._node_core import NodeCore
from etcdraft.blocks import PieceBuffer
from etcdraft.broadcast import MAX_ENTRY_BYTES, BroadcastMixin
from etcdraft.config import Config
from etcdraft.election import ElectionMixin
from etcdraft.errors import (
    ConfigError,
    EtcdraftError,
)
from etcdraft.etcd import (
    Compare,
    EtcdClient,
    cmp_create,
    op_range,
    prefix_end,
)
from etcdraft.fsm import FSM, ApplyQueue, SnapshotStore
from etcdraft.heartbeat import Heartbeat
from etcdraft.keys import Keys
from etcdraft.proto import RaftBlockState
from etcdraft.replication import ReplicationMixin
from etcdraft.session import Session
from etcdraft.stats import NodeStats
from etcdraft.view import Progress, View
from etcdraft.watch import Watcher

if TYPE_CHECKING:
    from etcdraft.http_api import NodeHttpServer

__all__ = ["MAX_ENTRY_BYTES", "Node"]

log = logging.getLogger(__name__)

#: Minimum pause between local snapshots.
SNAPSHOT_INTERVAL = 1.0
#: A node outside the membership reports its progress at most every this many
#: heartbeat_timeout periods (members: every period, for handover ranking).
NON_MEMBER_PROGRESS_EVERY = 10


class Node(ElectionMixin, ReplicationMixin, BroadcastMixin, NodeCore):
    """A member of an etcdraft cluster (Go: ``raft.Node``). Constructing does no I/O.

    Args:
        config: the node's configuration.
        logger: logger to use (default: ``logging.getLogger("etcdraft.node")``).
    """

    def __init__(self, config: Config, *, logger: logging.Logger | None = None) -> None:
        if not isinstance(config, Config):
            raise TypeError(f"config must be an etcdraft.Config, not {type(config).__name__}")
        if not config.endpoints:
            raise ConfigError(
                "Node needs etcd endpoints: set Config.endpoints (env ETCDRAFT_ENDPOINTS), "
                "e.g. http://127.0.0.1:2379; for a local etcd use etcdraft.embedded",
                field="endpoints",
            )
        self._config = config
        self._log = logger or log
        self._id = config.node_id
        self._keys = Keys(config.namespace)
        snapshots = (
            SnapshotStore(config.raft_dir, config.snap_count, namespace=config.namespace)
            if config.raft_dir
            else None
        )
        self._fsm = FSM(config.node_id, snapshots)
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._view = View()
        self._client: EtcdClient | None = None
        self._session: Session | None = None
        self._watcher: Watcher | None = None
        self._control_thread: threading.Thread | None = None
        self._changed = threading.Event()
        self._stopping = threading.Event()
        self._retiring = threading.Event()  # stop(): no more campaigning
        self._started = False
        self._closed = False
        self._start_lock = threading.Lock()
        self._bcast_lock = threading.Lock()
        # candidacy / leadership (guarded by _lock)
        self._lease = 0
        self._my_key = b""
        self._my_rev = 0  # create revision of our election key (0: not campaigning)
        self._claimed = 0  # term whose record we wrote
        self._term = 0  # current term while leader, else 0
        self._hold_campaign_until = -math.inf
        self._session_lost = threading.Event()
        self._last_progress: Progress | None = None
        self._last_progress_at = -math.inf
        self._last_snapshot = -math.inf
        self._warned: dict[str, float] = {}
        # counters
        self.fenced_rejections = 0
        self.foreign_keys = 0
        self.broadcasts = 0
        self._broadcast_observers: list[Callable[[str, float], None]] = []
        # (leader key, term, its compare, the member compare): see _broadcast
        self._fence: tuple[bytes, int, Compare, Compare] = (b"", 0, Compare(), Compare())
        self._ambiguous = False  # a broadcast may have committed without our knowing
        # fast takeover: heartbeats sent and acknowledged, the leader's as seen
        self._heartbeat = Heartbeat(config.heartbeat_timeout)
        self.deposed = 0
        # large blocks (etcdraft.blocks): etcd's request limit as learned, the pieces
        # seen on the watch until their manifest commits, counters
        self._request_limit = config.etcd_max_request_bytes
        self._pieces = PieceBuffer(max_bytes=2 * config.max_block_bytes)
        self.pieces_written = 0
        self.pieces_cleaned = 0
        self._last_piece_sweep = -math.inf
        self.corrupt_blocks = 0
        self.etcd_full = False  # etcd's NOSPACE alarm seen on a write
        self._http: NodeHttpServer | None = None  # Config.http_addr

    # ------------------------------------------------------------------ properties

    @property
    def node_id(self) -> str:
        return self._id

    @property
    def config(self) -> Config:
        return self._config

    @property
    def fsm(self) -> FSM:
        return self._fsm

    @property
    def term(self) -> int:
        """The current term while this node leads, else 0."""
        return self._term if self.is_leader() else 0

    @property
    def keys(self) -> Keys:
        return self._keys

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Node:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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
        with self._start_lock:
            if self._started:
                return
            if self._closed:
                raise RuntimeError("this Node was stopped; create a new Node to start again")
            cfg = self._config
            self._client = EtcdClient.from_config(cfg, name=self._id)
            deadline = Deadline(max(cfg.shutdown_timeout, cfg.send_timeout), self._stopping)
            try:
                snap = self._fsm.load_snapshot()
                if snap is not None:
                    self._log.info(
                        "loaded local snapshot: height %d index %d",
                        snap.state.height,
                        snap.index,
                        extra=self._extra(height=snap.state.height, index=snap.index),
                    )
                revision = self._resync(deadline)
                if cfg.bootstrap:
                    self._bootstrap(deadline)
                self._new_session(deadline)
            except EtcdraftError:
                self._client.close()
                self._client = None
                raise
            self._watcher = Watcher(
                self._client,
                self._keys.root,
                revision + 1,
                self._on_events,
                self._on_compacted,
                name=f"etcdraft-watch-{self._id}",
                probe_after=max(1.0, cfg.heartbeat_timeout * 2),
                probe_timeout=cfg.send_timeout,
            )
            self._watcher.start()
            assert self._session is not None
            self._session.start()
            self._control_thread = threading.Thread(
                target=self._control_loop, name=f"etcdraft-control-{self._id}", daemon=True
            )
            self._control_thread.start()
            if cfg.http_addr:
                from etcdraft.http_api import NodeHttpServer

                try:
                    self._http = NodeHttpServer(self, cfg.http_addr)
                except ConfigError:
                    self._close(revoke_timeout=cfg.send_timeout)
                    raise
                self._http.start()
            self._started = True
            self._changed.set()
            self._log.info(
                "node %s started: height %d, %d members",
                self._id,
                self._fsm.height,
                len(self._view.members),
                extra=self._extra(height=self._fsm.height),
            )

    def stop(self) -> None:
        """Drain applies (up to ``shutdown_timeout``), hand leadership over if leader,
        release the session. Idempotent; safe before ``start()``."""
        with self._start_lock:
            if not self._started or self._closed:
                return
            cfg = self._config
            deadline = Deadline(cfg.shutdown_timeout)
            try:
                self.wait_applied(deadline.remaining())
            except EtcdraftError as exc:
                self._log.warning("stop: could not confirm applies: %s", exc, extra=self._extra())
            self._retiring.set()  # no more campaigning
            if self._holds_term():
                try:
                    self.resign_leader(timeout=max(cfg.send_timeout, deadline.remaining()))
                except (EtcdraftError, TimeoutError) as exc:
                    self._log.warning("stop: handover failed: %s", exc, extra=self._extra())
            self._close(revoke_timeout=cfg.send_timeout)

    def shutdown(self) -> None:
        """Stop at once: revoke the session lease (others take over immediately) and
        stop background work, without handover or waiting. Idempotent."""
        with self._start_lock:
            if not self._started or self._closed:
                return
            self._stopping.set()
            self._close(revoke_timeout=min(self._config.send_timeout, 1.0))

    def _close(self, revoke_timeout: float) -> None:
        """Signal every thread, revoke the lease, then join the threads within a
        bounded budget (an in-flight request ends on its own deadline)."""
        self._stopping.set()
        http, self._http = self._http, None
        if http is not None:
            http.close()
        self._step_down("node stopping")
        self._changed.set()
        session, watcher = self._session, self._watcher
        if session is not None:
            session.signal_stop()
        if watcher is not None:
            watcher.signal_stop()
        if session is not None:
            try:
                session.revoke(Deadline(revoke_timeout))
            except EtcdraftError as exc:
                self._log.warning(
                    "could not revoke the session lease (it expires in %ds): %s",
                    session.ttl,
                    exc,
                    extra=self._extra(),
                )
        budget = Deadline(max(0.2, self._config.send_timeout))
        threads = [self._control_thread]
        if session is not None:
            threads.append(session.thread)
        if watcher is not None:
            threads.append(watcher.thread)
        for thread in threads:
            if thread is not None and thread is not threading.current_thread():
                thread.join(budget.remaining())
                if thread.is_alive():
                    self._log.warning(
                        "thread %s still busy at stop; it ends on its own deadline",
                        thread.name,
                        extra=self._extra(),
                    )
        try:
            self._fsm.save_snapshot()
        except OSError as exc:
            self._log.warning("could not write the final snapshot: %s", exc, extra=self._extra())
        if self._client is not None:
            self._client.close()
        self._closed = True
        with self._cond:
            self._cond.notify_all()
        self._log.info("node %s stopped", self._id, extra=self._extra())

    # ------------------------------------------------------------------ queries

    def is_leader(self) -> bool:
        """True only while this node holds leadership, its lease cannot yet have
        expired at etcd (minus ``leader_lease_timeout``) and, with fast takeover, no
        other node can have deposed it yet: less than ``heartbeat_timeout`` has passed
        since the send time of its last heartbeat etcd acknowledged (a follower deposes
        only after seeing no heartbeat for that long, and it sees each heartbeat after
        it was sent). So a cut-off leader stops believing before anyone can take over.
        Local; never blocks."""
        if not self._holds_term():
            return False
        if self._config.fast_takeover:
            return time.monotonic() < self._heartbeat.belief_until()
        return True

    def _holds_term(self) -> bool:
        """This node has a term and its lease cannot have expired yet (what its own
        fenced writes may act on: heartbeats, pruning, handover)."""
        session = self._session
        if not self._term or session is None or self._stopping.is_set():
            return False
        return time.monotonic() < session.expires_at() - self._config.leader_lease_timeout

    def stats(self) -> NodeStats:
        """A frozen snapshot of this node: role, term, leader, applied and observed
        revision, lease remaining, last heartbeat, counters. Local; never blocks on I/O."""
        now = time.monotonic()
        session, watcher, client = self._session, self._watcher, self._client
        leader = self.is_leader()
        with self._lock:
            candidate = bool(self._my_rev)
            term = self._term if leader else 0
            view = self._view
            members, live, paused = len(view.members), len(view.alive), view.pause is not None
        leader_until = None
        if leader and session is not None:
            leader_until = session.expires_at() - self._config.leader_lease_timeout
            if self._config.fast_takeover:
                leader_until = min(leader_until, self._heartbeat.belief_until())
        if self._closed or not self._started:
            role = "stopped"
        elif leader:
            role = "leader"
        elif candidate:
            role = "candidate"
        else:
            role = "follower"
        fsm = self._fsm
        return NodeStats(
            node_id=self._id,
            role=role,
            term=term,
            leader_id=self.leader_id(),
            applied_index=fsm.index,
            applied_height=fsm.height,
            observed_revision=client.max_revision if client is not None else 0,
            lease_remaining=(session.expires_at() - now) if session is not None else 0.0,
            last_heartbeat_age=(
                now - self._heartbeat.acked_at
                if leader and self._config.fast_takeover and self._heartbeat.acked_at > -math.inf
                else None
            ),
            broadcasts=self.broadcasts,
            fenced_rejections=self.fenced_rejections,
            deposed=self.deposed,
            foreign_keys=self.foreign_keys,
            applied=fsm.applied,
            dropped=fsm.dropped,
            skipped=fsm.skipped,
            corrupt_blocks=self.corrupt_blocks,
            pieces_written=self.pieces_written,
            pieces_cleaned=self.pieces_cleaned,
            watch_reconnects=watcher.reconnects if watcher is not None else 0,
            watch_resyncs=watcher.resyncs if watcher is not None else 0,
            keepalive_failures=session.keepalive_failures if session is not None else 0,
            endpoint_failovers=client.failovers if client is not None else 0,
            etcd_full=self.etcd_full,
            applied_term=fsm.term,
            members=members,
            live_nodes=live,
            paused=paused,
            leader_remaining=leader_until - now if leader_until is not None else None,
            lease_ttl=float(session.ttl) if session is not None else 0.0,
            keepalive_latency=session.last_keepalive_latency if session is not None else 0.0,
            watch_connected=watcher is not None and watcher.connected.is_set(),
        )

    def leader_id(self) -> str:
        """The leader's node id as last seen (``""`` when unknown). Local, no I/O."""
        if self.is_leader():
            return self._id
        with self._lock:
            cand = self._view.leader()
            return cand.node_id if cand is not None else ""

    def get_state(self) -> RaftBlockState:
        """A copy of the latest applied state (height 0 before any). No I/O."""
        return self._fsm.state()

    def set_apply_callback(self, q: ApplyQueue | None) -> None:
        """Offer one ``RaftApplyMsg`` per applied entry to ``q.put_nowait``; a full
        queue drops the message (logged, counted in ``fsm.dropped``). None stops."""
        self._fsm.set_apply_callback(q)

    def members(self) -> dict[str, str]:
        """Membership as last seen: node id → advertised address."""
        with self._lock:
            return dict(self._view.members)

    def progress(self) -> dict[str, Progress | None]:
        """Live nodes as last seen: node id → last reported progress."""
        with self._lock:
            return dict(self._view.alive)

    def has_quorum(self) -> bool:
        """True when this node leads and etcd confirms it through a linearizable
        (quorum) transaction within ``send_timeout``. Never raises."""
        if not self.is_leader() or self._client is None:
            return False
        if self.etcd_full and not self._etcd_accepts_writes():
            return False
        with self._lock:
            key, term = self._my_key, self._term
        try:
            # A txn without operations counts as serializable to etcd: any member
            # answers it from its own store, even without quorum. A range op makes it
            # a linearizable read (ReadIndex), which needs an etcd quorum.
            result = self._client.txn(
                [cmp_create(key, "EQUAL", term)],
                [op_range(key)],
                deadline=Deadline(self._config.send_timeout, self._stopping),
                lane="control",
            )
        except Exception as exc:
            self._warn_once("quorum", "has_quorum: etcd did not confirm leadership: %s", exc)
            return False
        if not result.succeeded:
            self._step_down("has_quorum: election key gone")
        return result.succeeded

    def _etcd_accepts_writes(self) -> bool:
        """After a write failed with NOSPACE: is the alarm still raised? (A quorum that
        cannot take a block is no quorum for the caller of ``has_quorum``.)"""
        client = self._client
        if client is None:
            return False
        try:
            alarms = client.admin.alarms(Deadline(self._config.send_timeout, self._stopping))
        except EtcdraftError:
            return False
        if any(a.alarm == "NOSPACE" for a in alarms):
            return False
        self.etcd_full = False
        return True

    def wait_applied(self, timeout: float) -> bool:
        """Wait until every log entry committed before the call is applied locally.

        Raises:
            EtcdUnavailableError: etcd could not tell what was committed in time.
        """
        client = self._require_client()
        deadline = Deadline(timeout, self._stopping)
        res = client.range(
            self._keys.log_prefix,
            prefix_end(self._keys.log_prefix),
            deadline.sub(self._config.send_timeout),
            limit=1,
            keys_only=True,
            descending=True,
        )
        if not res.kvs:
            return True
        return self._fsm.wait_applied(res.kvs[0].mod_revision, deadline.remaining(), self._stopping)

    def wait_role_change(self, was_leader: bool, timeout: float) -> bool:
        """Wait up to ``timeout`` until ``is_leader()`` differs from ``was_leader``
        (or the leader view changes); True if it did. Used by
        ``DynamicLeaderElection``; leadership can also lapse by time, so callers
        poll with a short timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            seen = self._view.leader()
            while self.is_leader() == was_leader and self._view.leader() == seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                if self._closed:
                    # nothing changes any more; still honour the timeout so that
                    # pollers (DynamicLeaderElection) do not turn into busy loops
                    self._cond.wait(left)
                    return False
                self._cond.wait(left)
            return True

    # ------------------------------------------------------------------ session
    # (broadcast: broadcast.py; election, membership, handover: election.py;
    # catch-up and the watch: replication.py)

    def _new_session(self, deadline: Deadline) -> None:
        client = self._client
        assert client is not None
        cfg = self._config
        if self._session is None:
            self._session = Session(
                client,
                ttl=cfg.election_timeout,
                interval=cfg.heartbeat_timeout,
                send_timeout=cfg.send_timeout,
                on_lost=self._on_session_lost,
                on_tick=self._on_tick,
                name=f"etcdraft-session-{self._id}",
            )
        lease = self._session.grant(deadline)
        with self._lock:
            self._lease = lease
            self._my_key = self._keys.election(lease)
            self._my_rev = 0
            self._claimed = 0
        self._session_lost.clear()
        self._last_progress = None
        self._report_progress(deadline)

    def _on_session_lost(self, lease: int) -> None:
        self._session_lost.set()
        self._step_down("session lease expired")
        self._changed.set()

    def _on_tick(self) -> None:
        if self._session_lost.is_set() or self._stopping.is_set():
            return
        try:
            self._report_progress(Deadline(self._config.send_timeout, self._stopping))
        except EtcdraftError as exc:
            self._warn_once("progress", "progress report failed: %s", exc)
        now = time.monotonic()
        if now - self._last_snapshot >= SNAPSHOT_INTERVAL:
            self._last_snapshot = now
            try:
                self._fsm.save_snapshot()
            except OSError as exc:
                self._warn_once("snapshot", "cannot write a local snapshot: %s", exc)
        self._changed.set()

    def _report_progress(self, deadline: Deadline) -> None:
        client = self._client
        if client is None or not self._lease:
            return
        progress = Progress(self._fsm.index, self._fsm.height)
        if progress == self._last_progress:
            return
        now = time.monotonic()
        if (
            self._last_progress is not None
            and self._id not in self._view.members
            and now - self._last_progress_at
            < NON_MEMBER_PROGRESS_EVERY * self._config.heartbeat_timeout
        ):
            # every node watches every report: N nodes reporting each heartbeat cost
            # N^2 watch events; a node that can never lead reports rarely
            return
        client.put(
            self._keys.alive(self._id), progress.encode(), deadline, self._lease, lane="control"
        )
        self._last_progress = progress
        self._last_progress_at = now
