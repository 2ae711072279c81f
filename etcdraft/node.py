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

import bisect
import logging
import math
import threading
import time
from types import TracebackType
from typing import Any

import tenacity

from etcdraft._deadline import Deadline
from etcdraft.config import Config, parse_peer
from etcdraft.errors import (
    ConfigError,
    EtcdraftError,
    EtcdRequestError,
    EtcdTimeoutError,
    EtcdUnavailableError,
    HandoverError,
    HeightConflictError,
    InvalidStateError,
    LeadershipLostError,
    NotLeaderError,
)
from etcdraft.etcd import (
    KV,
    EtcdClient,
    cmp_create,
    cmp_lease,
    cmp_mod,
    cmp_value,
    cmp_version,
    op_delete,
    op_put,
    op_range,
    prefix_end,
)
from etcdraft.fsm import FSM, ApplyQueue, Snapshot, SnapshotStore, decode_state, short_hash
from etcdraft.keys import Keys
from etcdraft.proto import RaftBlockState
from etcdraft.session import Session
from etcdraft.view import Candidate, Progress, View
from etcdraft.watch import Watcher, WatchEvent

__all__ = ["MAX_ENTRY_BYTES", "Node"]

log = logging.getLogger(__name__)

#: etcd's default ``--max-request-bytes`` (1.5 MiB) less room for the transaction.
MAX_ENTRY_BYTES = 1572864 - 1024
#: Heights deleted per pruning transaction.
PRUNE_BATCH = 1000
#: Log entries fetched per range request when catching up.
CATCHUP_PAGE = 64
#: Minimum pause between local snapshots.
SNAPSHOT_INTERVAL = 1.0


class Node:
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
        self._last_snapshot = -math.inf
        self._warned: dict[str, float] = {}
        # counters
        self.fenced_rejections = 0
        self.foreign_keys = 0
        self.broadcasts = 0
        self._ambiguous = False  # a broadcast may have committed without our knowing
        # fast takeover: the leader's heartbeat as this node last saw it
        self._hb_interval = config.heartbeat_timeout / 4
        self._last_hb_sent = -math.inf  # monotonic, leader side
        self._hb_seen_at = time.monotonic()  # monotonic, when heartbeat/leader changed
        self._hb_seen_rev = 0
        self._hb_leader_key = b""
        self.deposed = 0

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
        """
        with self._start_lock:
            if self._started:
                return
            if self._closed:
                raise RuntimeError("this Node was stopped; create a new Node to start again")
            cfg = self._config
            self._client = EtcdClient(
                cfg.endpoints,
                ca_file=cfg.tls_ca_file,
                cert_file=cfg.tls_cert_file,
                key_file=cfg.tls_key_file,
                username=cfg.username,
                password=cfg.password.get_secret_value() if cfg.password else None,
                name=self._id,
            )
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
                self._new_session(deadline)
                if cfg.bootstrap:
                    self._bootstrap(deadline)
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
            if self.is_leader():
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
        """True only while this node holds leadership and its lease cannot yet have
        expired at etcd (minus ``leader_lease_timeout``). Local; never blocks."""
        session = self._session
        if not self._term or session is None or self._stopping.is_set():
            return False
        return time.monotonic() < session.expires_at() - self._config.leader_lease_timeout

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
            )
        except Exception as exc:
            self._warn_once("quorum", "has_quorum: etcd did not confirm leadership: %s", exc)
            return False
        if not result.succeeded:
            self._step_down("has_quorum: election key gone")
        return result.succeeded

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

    # ------------------------------------------------------------------ broadcast

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
        if not isinstance(state, RaftBlockState):
            raise TypeError(f"state must be a RaftBlockState, not {type(state).__name__}")
        with self._bcast_lock:
            if not self.is_leader():
                raise NotLeaderError(
                    f"node {self._id} is not the leader (leader: {self.leader_id() or 'unknown'}); "
                    "send blocks to the leader"
                )
            client = self._require_client()
            deadline = Deadline(
                self._config.send_timeout if timeout is None else timeout, self._stopping
            )
            data = state.SerializeToString()
            height = state.height
            head_height, head_ts, _ = self._fsm.head()
            if height <= head_height:
                self._check_retry(client, state, data, deadline, head_height)
                return
            if state.timestamp <= head_ts:
                raise InvalidStateError(
                    f"timestamp {state.timestamp} of height {height} does not strictly increase "
                    f"(replicated height {head_height} has timestamp {head_ts})"
                )
            if len(data) > MAX_ENTRY_BYTES:
                raise InvalidStateError(
                    f"state at height {height} encodes to {len(data)} bytes, over etcd's request "
                    f"limit ({MAX_ENTRY_BYTES} usable of --max-request-bytes 1.5 MiB); keep "
                    "block payloads out of the replicated state"
                )
            with self._lock:
                key, term = self._my_key, self._term
            log_key = self._keys.log(height)
            try:
                result = client.txn(
                    [
                        cmp_create(key, "EQUAL", term),
                        cmp_version(self._keys.member(self._id), "GREATER", 0),
                        cmp_create(log_key, "EQUAL", 0),
                    ],
                    self._with_heartbeat([op_put(log_key, data)], term),
                    [op_range(log_key)],
                    deadline=deadline,
                )
            except EtcdRequestError as exc:
                if "too large" in str(exc):
                    raise InvalidStateError(
                        f"state at height {height} ({len(data)} bytes) is too large for etcd: {exc}"
                    ) from exc
                raise
            except EtcdUnavailableError:
                # the write may have been committed: until the watch has caught up,
                # let it apply our writes in revision order
                self._ambiguous = True
                raise
            if result.succeeded:
                self.broadcasts += 1
                self._land(state, data, result.revision, term, deadline)
                return
            existing = result.range_kvs(0)
            if existing:
                if existing[0].value == data:
                    # our own write, committed before a lost reply
                    self._land(state, data, existing[0].mod_revision, term, deadline)
                    return
                raise HeightConflictError(
                    f"a different block is already replicated at height {height} "
                    f"(hash {_hash_of(existing[0].value)}); resynchronise from get_state()",
                    height=height,
                )
            self.fenced_rejections += 1
            self._step_down("fenced write rejected by etcd")
            raise LeadershipLostError()

    def _with_heartbeat(self, ops: list[dict[str, Any]], term: int) -> list[dict[str, Any]]:
        """Add the leader's heartbeat put to a leader write when one is due."""
        if self._config.fast_takeover:
            now = time.monotonic()
            if now - self._last_hb_sent >= self._hb_interval:
                self._last_hb_sent = now
                ops = [*ops, op_put(self._keys.heartbeat, str(term).encode())]
        return ops

    def _land(
        self, state: RaftBlockState, data: bytes, revision: int, term: int, deadline: Deadline
    ) -> None:
        """Apply the leader's own committed write locally. Directly when every
        earlier write is known applied; otherwise (after an ambiguous failure) wait
        for the watch to apply it in revision order, so no entry is skipped."""
        if not self._ambiguous:
            self._fsm.apply(state, revision, term, encoded=data)
        elif self._fsm.wait_applied(revision, deadline.remaining(), self._stopping):
            self._ambiguous = False

    def _check_retry(
        self,
        client: EtcdClient,
        state: RaftBlockState,
        data: bytes,
        deadline: Deadline,
        head_height: int,
    ) -> None:
        height = state.height
        kv = client.get(self._keys.log(height), deadline)
        if kv is None:
            raise InvalidStateError(
                f"height {height} is at or below the replicated height {head_height} and no "
                "block is stored there (pruned, or skipped by an earlier gap); produce the "
                f"next block above height {head_height}"
            )
        if kv.value != data:
            raise HeightConflictError(
                f"a different block is already replicated at height {height} "
                f"(hash {_hash_of(kv.value)}, yours {short_hash(state)}); resynchronise from "
                "get_state()",
                height=height,
            )

    # ------------------------------------------------------------------ membership

    def add_peer(self, node_id: str, addr: str) -> None:
        """Add a member (a node allowed to lead). Same id and addr: no-op; same id or
        same addr with a different partner: the old entry is replaced. Works on any
        node.

        Raises:
            ConfigError: empty or malformed id or address (also a ``ValueError``).
            EtcdUnavailableError: etcd did not answer in time.
        """
        parse_peer(f"{node_id}@{addr}")  # same rules as Config.peers
        client = self._require_client()
        deadline = Deadline(self._config.send_timeout * 3, self._stopping)
        while True:
            res = client.range(
                self._keys.members_prefix, prefix_end(self._keys.members_prefix), deadline
            )
            current = {self._keys.parse(kv.key).name: kv for kv in res.kvs}
            if node_id in current and current[node_id].value == addr.encode():
                return
            compare: list[dict[str, Any]] = []
            ops: list[dict[str, Any]] = []
            for other, kv in current.items():
                if other != node_id and kv.value == addr.encode():
                    compare.append(cmp_value(kv.key, "EQUAL", kv.value))
                    ops.append(op_delete(kv.key))
            member_key = self._keys.member(node_id)
            prev = current.get(node_id)
            compare.append(cmp_create(member_key, "EQUAL", prev.create_revision if prev else 0))
            ops.append(op_put(member_key, addr.encode()))
            if client.txn(compare, ops, deadline=deadline).succeeded:
                self._log.info("member %s added at %s", node_id, addr, extra=self._extra())
                return
            if deadline.expired():
                raise EtcdTimeoutError("add_peer: membership kept changing; try again")

    def remove_peer(self, node_id: str) -> None:
        """Remove a member; a removed leader steps down and its writes are fenced
        (its candidacy is deleted in the same step). Unknown ids are a no-op.

        Raises:
            EtcdUnavailableError: etcd did not answer in time.
        """
        if not node_id or "/" in node_id:
            raise ConfigError(
                f"remove_peer: invalid node id {node_id!r}: non-empty, without '/'",
                field="node_id",
            )
        client = self._require_client()
        deadline = Deadline(self._config.send_timeout * 3, self._stopping)
        res = client.range(
            self._keys.election_prefix, prefix_end(self._keys.election_prefix), deadline
        )
        ops = [op_delete(self._keys.member(node_id))]
        compare = []
        for kv in res.kvs:
            if kv.value == node_id.encode():
                compare.append(cmp_value(kv.key, "EQUAL", kv.value))
                ops.append(op_delete(kv.key))
        result = client.txn(compare, ops, deadline=deadline)
        if not result.succeeded:  # a candidacy changed meanwhile: delete what is there
            client.txn([], [op_delete(self._keys.member(node_id))], deadline=deadline)
        self._log.info("member %s removed", node_id, extra=self._extra())

    # ------------------------------------------------------------------ handover

    def resign_leader(self, *, timeout: float | None = None) -> None:
        """Hand leadership to the most up-to-date live member; return once another
        node holds it. No-op when not leader.

        Raises:
            HandoverError: no live member can take over (this node stays leader).
            TimeoutError: no other node took over within ``timeout``
                (default 5 * ``send_timeout``).
        """
        if not self.is_leader():
            return
        client = self._require_client()
        wait = self._config.send_timeout * 5 if timeout is None else timeout
        deadline = Deadline(wait)
        with self._bcast_lock:
            with self._lock:
                old_term, my_key = self._term, self._my_key
                view = self._view
                target = self._handover_target(view)
            if target is None:
                # the watch may not have delivered a fresh candidate yet: ask etcd
                view = self._read_view(client, deadline.sub(self._config.send_timeout))
                target = self._handover_target(view)
            if target is None:
                raise HandoverError(
                    f"no live member can take leadership over from {self._id}: start "
                    "another member or add one with add_peer()"
                )
            ahead = [
                c
                for c in view.candidates.values()
                if c.create_revision < target.create_revision and c.key != my_key
            ]
            compare = [
                cmp_create(my_key, "EQUAL", old_term),
                cmp_create(target.key, "EQUAL", target.create_revision),
            ]
            ops = [op_delete(my_key)] + [op_delete(c.key) for c in ahead]
            self._log.info(
                "handing leadership over to %s (term %d)",
                target.node_id,
                old_term,
                extra=self._extra(term=old_term),
            )
            # hold our own re-campaign until the successor has claimed
            self._hold_campaign_until = time.monotonic() + wait
            result = client.txn(compare, ops, deadline=deadline.sub(self._config.send_timeout))
            if not result.succeeded:
                self._hold_campaign_until = -math.inf
                if not self._still_candidate_in_etcd(client, my_key, old_term, deadline):
                    self._step_down("leadership lost during handover")
                    return
                raise HandoverError(
                    f"handover to {target.node_id} failed: it is no longer a candidate; retry"
                )
            self._step_down(f"handed over to {target.node_id}")
        with self._cond:
            while True:
                new_term, holder = self._view.latest_term()
                if new_term > old_term and holder != self._id:
                    break
                left = deadline.remaining()
                if left <= 0:
                    raise EtcdTimeoutError(
                        f"resign_leader: {target.node_id} did not take leadership within "
                        f"{wait:.3g}s"
                    )
                self._cond.wait(min(left, 0.1))
        self._hold_campaign_until = -math.inf
        self._changed.set()

    def _still_candidate_in_etcd(
        self, client: EtcdClient, key: bytes, rev: int, deadline: Deadline
    ) -> bool:
        kv = client.get(key, deadline)
        return kv is not None and kv.create_revision == rev

    def _read_view(self, client: EtcdClient, deadline: Deadline) -> View:
        """Candidates, members and liveness read from etcd at one revision."""
        k = self._keys
        first = client.range(k.election_prefix, prefix_end(k.election_prefix), deadline)
        view = View(revision=first.revision)
        kvs = list(first.kvs)
        for prefix in (k.members_prefix, k.alive_prefix):
            kvs += client.range(prefix, prefix_end(prefix), deadline, revision=first.revision).kvs
        for kv in kvs:
            self._view_put(view, kv)
        return view

    def _handover_target(self, view: View) -> Candidate | None:
        best: tuple[int, int, Candidate] | None = None
        for cand in view.candidates.values():
            if cand.node_id == self._id or cand.node_id not in view.members:
                continue
            if cand.node_id not in view.alive:
                continue
            prog = view.alive.get(cand.node_id)
            index = prog.index if prog is not None else 0
            rank = (index, -cand.create_revision, cand)
            if best is None or rank[:2] > best[:2]:
                best = rank
        return best[2] if best is not None else None

    # ------------------------------------------------------------------ internals

    def _require_client(self) -> EtcdClient:
        client = self._client
        if client is None or not self._started:
            raise EtcdUnavailableError(f"node {self._id} is not started; call start() first")
        return client

    def _extra(self, **fields: Any) -> dict[str, Any]:
        fields.setdefault("node_id", self._id)
        fields.setdefault("term", self._term)
        return fields

    def _warn_once(self, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._warned.get(key, -math.inf) >= 10.0:
            self._warned[key] = now
            self._log.warning(msg, *args, extra=self._extra())

    def _step_down(self, reason: str) -> None:
        with self._cond:
            term, self._term = self._term, 0
            self._cond.notify_all()
        if term:
            self._log.info(
                "node %s stepped down (term %d): %s",
                self._id,
                term,
                reason,
                extra=self._extra(term=term),
            )

    # -- catch-up --------------------------------------------------------------------

    def _resync(self, deadline: Deadline) -> int:
        """Read the namespace at one revision, rebuild the view and apply every log
        entry above the applied height (or restore the latest, when pruned).
        Returns the revision read at."""
        client = self._require_client() if self._started else self._client
        assert client is not None
        k = self._keys
        first = client.range(k.election_prefix, prefix_end(k.election_prefix), deadline)
        rev = first.revision
        view = View(revision=rev)
        for kv in first.kvs:
            self._view_put(view, kv)
        for prefix in (k.members_prefix, k.alive_prefix, k.terms_prefix):
            res = client.range(prefix, prefix_end(prefix), deadline, revision=rev)
            for kv in res.kvs:
                self._view_put(view, kv)
        pruned = client.range(k.pruned, None, deadline, revision=rev)
        for kv in pruned.kvs:
            self._view_put(view, kv)
        for kv in client.range(k.heartbeat, None, deadline, revision=rev).kvs:
            self._view_put(view, kv)
        with self._cond:
            self._view = view
            self._note_heartbeat(view)
            self._cond.notify_all()
        self._catch_up(client, view, rev, deadline)
        self._refresh_leadership()
        return rev

    def _catch_up(self, client: EtcdClient, view: View, rev: int, deadline: Deadline) -> None:
        k = self._keys
        height = self._fsm.height
        end = prefix_end(k.log_prefix)
        if view.pruned > height:
            res = client.range(k.log_prefix, end, deadline, revision=rev, limit=1, descending=True)
            if res.kvs and self._restore_from(res.kvs[0], view, height):
                return
        start = k.log(height + 1)
        while True:
            res = client.range(start, end, deadline, revision=rev, limit=CATCHUP_PAGE)
            for kv in res.kvs:
                parsed = k.parse(kv.key)
                if parsed.kind == "log":
                    self._fsm.apply_entry(
                        parsed.number, kv.value, kv.mod_revision, view.term_at(kv.mod_revision)
                    )
            if not res.more or not res.kvs:
                return
            start = res.kvs[-1].key + b"\x00"

    def _restore_from(self, kv: KV, view: View, height: int) -> bool:
        try:
            state = decode_state(kv.value)
        except ValueError as exc:
            self._warn_once("restore", "cannot restore from corrupt %r: %s", kv.key, exc)
            return False
        if state.height <= height:
            return False
        self._log.warning(
            "entries after height %d were pruned from etcd; restoring the latest state "
            "(height %d) as a snapshot",
            height,
            state.height,
            extra=self._extra(height=state.height),
        )
        self._fsm.restore(
            Snapshot(kv.mod_revision, view.term_at(kv.mod_revision), state), notify=True
        )
        return True

    def _on_compacted(self, compact_revision: int) -> int:
        """Heal after the watch's next revision was compacted: re-read the namespace
        (retried with backoff on transient failures, bounded, interruptible)."""
        budget = max(self._config.shutdown_timeout, 5.0)
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(EtcdUnavailableError),
            stop=tenacity.stop_any(
                tenacity.stop_after_delay(budget), tenacity.stop_when_event_set(self._stopping)
            ),
            wait=tenacity.wait_exponential(multiplier=0.05, max=0.5),
            sleep=tenacity.sleep_using_event(self._stopping),
            reraise=True,
        )
        return retrying(self._resync, Deadline(budget, self._stopping))

    # -- the watch -------------------------------------------------------------------

    def _view_put(self, view: View, kv: KV) -> None:
        parsed = self._keys.parse(kv.key)
        kind = parsed.kind
        if kind == "election":
            view.candidates[kv.key] = Candidate(
                kv.key, kv.create_revision, kv.value.decode(errors="replace"), kv.lease
            )
        elif kind == "member":
            view.members[parsed.name] = kv.value.decode(errors="replace")
        elif kind == "alive":
            view.alive[parsed.name] = Progress.parse(kv.value)
        elif kind == "term":
            view.add_term(kv.create_revision, parsed.number, kv.value.decode(errors="replace"))
        elif kind == "heartbeat":
            view.heartbeat_rev = kv.mod_revision
        elif kind == "pruned":
            try:
                view.pruned = max(view.pruned, int(kv.value))
            except ValueError:
                self._foreign(kv.key, "pruned marker is not a number")
        elif kind == "foreign":
            self._foreign(kv.key, "unknown key shape")

    def _foreign(self, key: bytes, why: str) -> None:
        self.foreign_keys += 1
        self._warn_once(
            "foreign",
            "ignoring foreign key %r under the namespace (%s); another program writes here",
            key,
            why,
        )

    def _on_events(self, events: list[WatchEvent], top: int) -> None:
        k = self._keys
        entries: list[tuple[int, bytes, int]] = []  # (height, value, revision)
        with self._cond:
            view = self._view
            for ev in events:
                kv = ev.kv
                parsed = k.parse(kv.key)
                if parsed.kind == "log":
                    if not ev.deleted:
                        entries.append((parsed.number, kv.value, kv.mod_revision))
                    continue
                if not ev.deleted:
                    self._view_put(view, kv)
                elif parsed.kind == "election":
                    view.candidates.pop(kv.key, None)
                elif parsed.kind == "member":
                    view.members.pop(parsed.name, None)
                elif parsed.kind == "alive":
                    view.alive.pop(parsed.name, None)
                elif parsed.kind == "term":
                    view.remove_term(parsed.number)
            terms = [view.term_at(rev) for _, _, rev in entries]
        # Apply outside the node's lock (the apply queue is user code), and before
        # leadership is derived from this batch: a term record delivered here must
        # not make this node leader until every earlier entry is applied.
        for (height, value, rev), term in zip(entries, terms, strict=True):
            self._fsm.apply_entry(height, value, rev, term)
        with self._cond:
            view.revision = top
            self._note_heartbeat(view)
            self._refresh_leadership()
            self._cond.notify_all()
        self._changed.set()

    def _note_heartbeat(self, view: View) -> None:
        """Restart the silence timer when the leader or its heartbeat changed."""
        leader = view.leader()
        leader_key = leader.key if leader is not None else b""
        if view.heartbeat_rev != self._hb_seen_rev or leader_key != self._hb_leader_key:
            self._hb_seen_rev = view.heartbeat_rev
            self._hb_leader_key = leader_key
            self._hb_seen_at = time.monotonic()

    def _refresh_leadership(self) -> None:
        """Derive leadership from the view (called with the lock held, or at start)."""
        with self._cond:
            view = self._view
            mine = view.candidates.get(self._my_key) if self._my_key else None
            if mine is None:
                if self._my_rev:
                    self._my_rev = 0
                    self._claimed = 0
                if self._term:
                    self._step_down("election key deleted")
                return
            self._my_rev = mine.create_revision
            if self._term:
                return
            leader = view.leader()
            term, holder = view.latest_term()
            if (
                leader is mine
                and self._claimed == mine.create_revision
                and term == mine.create_revision
                and holder == self._id
                and not self._retiring.is_set()
            ):
                self._term = term
                self._cond.notify_all()
                self._log.info(
                    "node %s became leader: term %d, height %d",
                    self._id,
                    term,
                    self._fsm.height,
                    extra=self._extra(term=term, height=self._fsm.height),
                )

    # -- session & control ---------------------------------------------------------

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
        client.put(self._keys.alive(self._id), progress.encode(), deadline, lease=self._lease)
        self._last_progress = progress

    def _control_loop(self) -> None:
        cfg = self._config
        while not self._stopping.is_set():
            self._changed.wait(self._control_wait())
            self._changed.clear()
            if self._stopping.is_set():
                return
            try:
                self._control_step()
            except EtcdraftError as exc:
                self._warn_once("control", "election step failed (will retry): %s", exc)
                self._stopping.wait(min(0.2, cfg.heartbeat_timeout))
            except Exception:
                self._log.exception("election step crashed (will retry)", extra=self._extra())
                self._stopping.wait(cfg.heartbeat_timeout)

    def _control_wait(self) -> float:
        """How long the control loop may sleep: until the next heartbeat is due
        (leader) or the leader's silence would reach heartbeat_timeout (others)."""
        cfg = self._config
        if not cfg.fast_takeover:
            return cfg.heartbeat_timeout
        now = time.monotonic()
        if self._term:
            due = self._last_hb_sent + self._hb_interval - now
        else:
            due = self._hb_seen_at + cfg.heartbeat_timeout - now
            if due <= 0:  # silence deadline passed: re-check at the heartbeat rhythm
                due = self._hb_interval
        return min(max(due, 0.002), cfg.heartbeat_timeout)

    def _control_step(self) -> None:
        cfg = self._config
        client = self._client
        assert client is not None
        deadline = Deadline(cfg.send_timeout, self._stopping)
        if self._session_lost.is_set():
            self._new_session(Deadline(cfg.send_timeout * 2, self._stopping))
        with self._lock:
            view = self._view
            member = self._id in view.members
            mine = view.candidates.get(self._my_key)
            leader = view.leader()
            my_key, lease, claimed = self._my_key, self._lease, self._claimed
        if not member:
            if mine is not None:
                self._log.info("node %s is not a member: withdrawing", self._id)
                client.txn(
                    [cmp_create(my_key, "EQUAL", mine.create_revision)],
                    [op_delete(my_key)],
                    deadline=deadline,
                )
            return
        if mine is None:
            if self._retiring.is_set() or time.monotonic() < self._hold_campaign_until:
                return
            result = client.txn(
                [cmp_create(my_key, "EQUAL", 0)],
                [op_put(my_key, self._id.encode(), lease)],
                deadline=deadline,
            )
            if result.succeeded:
                self._log.debug("campaigning with %r", my_key)
            return
        if leader is mine and claimed != mine.create_revision:
            # we are first in line: prove the key is still ours (etcd issue 19597) and
            # record the term; leadership starts when the watch delivers the record,
            # i.e. after every earlier entry has been applied.
            result = client.txn(
                [
                    cmp_create(my_key, "EQUAL", mine.create_revision),
                    cmp_lease(my_key, "EQUAL", lease),
                ],
                [op_put(self._keys.term(mine.create_revision), self._id.encode())],
                deadline=deadline,
            )
            if result.succeeded:
                with self._cond:
                    self._claimed = mine.create_revision
                    self._refresh_leadership()
            return
        if self.is_leader():
            if cfg.fast_takeover:
                self._send_heartbeat(client, deadline)
            self._maybe_prune(client, deadline)
        elif cfg.fast_takeover and leader is not None and leader is not mine:
            self._maybe_depose(client, deadline, leader, mine)

    def _send_heartbeat(self, client: EtcdClient, deadline: Deadline) -> None:
        if time.monotonic() - self._last_hb_sent < self._hb_interval:
            return
        with self._lock:
            key, term = self._my_key, self._term
        if not term:
            return
        self._last_hb_sent = time.monotonic()
        result = client.txn(
            [cmp_create(key, "EQUAL", term)],
            [op_put(self._keys.heartbeat, str(term).encode())],
            deadline=deadline,
        )
        if not result.succeeded:
            self._step_down("heartbeat rejected: election key gone")

    def _maybe_depose(
        self, client: EtcdClient, deadline: Deadline, leader: Candidate, mine: Candidate
    ) -> None:
        """Depose a leader that stopped heartbeating. The next candidate in line acts
        after ``heartbeat_timeout`` of silence, the others after twice that (in case
        it is dead too). The transaction compares the leader key's create revision
        and the heartbeat's mod revision last seen, so a leader that is merely slow
        (its heartbeat landed meanwhile) keeps leading."""
        cfg = self._config
        with self._lock:
            queue = sorted(self._view.candidates.values(), key=lambda c: c.create_revision)
            hb_rev, seen_at = self._hb_seen_rev, self._hb_seen_at
            same_leader = self._hb_leader_key == leader.key
        if not same_leader:
            return
        rank = next((i for i, c in enumerate(queue) if c.key == mine.key), None)
        if rank is None or rank == 0:
            return
        silence = time.monotonic() - seen_at
        if silence < cfg.heartbeat_timeout * (1 if rank == 1 else 2):
            return
        result = client.txn(
            [
                cmp_create(leader.key, "EQUAL", leader.create_revision),
                cmp_mod(self._keys.heartbeat, "EQUAL", hb_rev),
            ],
            [op_delete(leader.key)],
            deadline=deadline,
        )
        if result.succeeded:
            self.deposed += 1
            self._log.info(
                "deposed silent leader %s (no heartbeat for %.0f ms)",
                leader.node_id,
                silence * 1000,
                extra=self._extra(),
            )
        else:
            with self._lock:  # it spoke meanwhile: give it a fresh period
                self._hb_seen_at = max(self._hb_seen_at, time.monotonic())

    def _maybe_prune(self, client: EtcdClient, deadline: Deadline) -> None:
        cfg = self._config
        with self._lock:
            pruned = self._view.pruned
            key, term = self._my_key, self._term
        head = self._fsm.height
        if head - pruned <= cfg.trailing_logs + cfg.snapshot_threshold:
            return
        cut = head - cfg.trailing_logs
        upto = min(cut, pruned + PRUNE_BATCH)
        result = client.txn(
            [cmp_create(key, "EQUAL", term)],
            [
                op_delete(self._keys.log(pruned + 1), self._keys.log(upto + 1)),
                op_put(self._keys.pruned, str(upto).encode()),
            ],
            deadline=deadline,
        )
        if result.succeeded:
            self._log.debug("pruned log heights %d..%d", pruned + 1, upto)
            self._prune_terms(client, deadline, key, term, upto)
            self._changed.set()

    def _prune_terms(
        self, client: EtcdClient, deadline: Deadline, key: bytes, term: int, upto: int
    ) -> None:
        """Delete term records no remaining log entry needs: all but the one in force
        at the oldest entry left in etcd, and the later ones."""
        k = self._keys
        oldest = client.range(k.log(upto + 1), prefix_end(k.log_prefix), deadline, limit=1)
        if not oldest.kvs:
            return
        with self._lock:
            revs, terms = list(self._view.term_revs), list(self._view.terms)
        needed = bisect.bisect_left(revs, oldest.kvs[0].mod_revision) - 1
        stale = terms[: max(0, needed)][: PRUNE_BATCH // 10]
        if stale:
            client.txn(
                [cmp_create(key, "EQUAL", term)],
                [op_delete(k.term(t)) for t in stale],
                deadline=deadline,
            )

    def _bootstrap(self, deadline: Deadline) -> None:
        client = self._client
        assert client is not None
        k = self._keys
        existing = client.range(
            k.members_prefix, prefix_end(k.members_prefix), deadline, count_only=True
        )
        if existing.count:
            return
        cfg = self._config
        peers = {p.node_id: p.addr for p in cfg.peer_list()}
        peers.setdefault(self._id, cfg.raft_addr)
        result = client.txn(
            [cmp_create(k.member(nid), "EQUAL", 0) for nid in sorted(peers)],
            [op_put(k.member(nid), addr.encode()) for nid, addr in sorted(peers.items())],
            deadline=deadline,
        )
        if result.succeeded:
            with self._cond:
                for nid, addr in peers.items():
                    self._view.members[nid] = addr
            self._log.info("bootstrapped membership: %s", ", ".join(sorted(peers)))


def _hash_of(data: bytes) -> str:
    try:
        return short_hash(decode_state(data))
    except ValueError:
        return "corrupt"
