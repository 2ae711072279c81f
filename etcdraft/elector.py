"""The election part of a :class:`~etcdraft.Node`: its session lease, its candidacy,
its term, and the control thread that acts on them.

Campaign with a key bound to the session lease under ``<ns>/election/`` (etcd's own
election recipe: the smallest create revision leads); claim the term by re-checking
the key and its lease in a transaction that also records ``<ns>/terms/<term>``;
heartbeat and depose a silent leader (fast takeover); prune the log (through the
:class:`~etcdraft.pruner.Pruner`); hand leadership over.

The elector owns the leadership state and publishes it as an immutable
:class:`Leadership`; the other parts read that snapshot, or call :meth:`step_down`,
:meth:`refresh` and :meth:`wake`. Lock order: the elector's lock, then the view's.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from etcdraft._context import NodeContext
from etcdraft._deadline import Deadline
from etcdraft._worker import Worker
from etcdraft.cluster_view import ClusterView
from etcdraft.errors import EtcdraftError
from etcdraft.etcd import EtcdClient, cmp_create, cmp_lease, cmp_mod, op_delete, op_put, op_range
from etcdraft.fsm import FSM
from etcdraft.heartbeat import Heartbeat
from etcdraft.pruner import Pruner
from etcdraft.session import Session
from etcdraft.view import Candidate, Succession, TermRecord, View

__all__ = ["Elector", "Leadership"]


@dataclass(frozen=True, slots=True)
class Leadership:
    """This node's place in the election, as last derived (immutable).

    ``key``/``lease``: its election key and session lease (empty/0 before a session);
    ``rev``: the key's create revision while it exists (0: not campaigning);
    ``claimed``: the term whose record it wrote; ``term``: the term while it leads,
    else 0."""

    key: bytes = b""
    lease: int = 0
    rev: int = 0
    claimed: int = 0
    term: int = 0


class Elector(Worker):
    """Owns: the session, :class:`Leadership`, the campaign hold, the control thread
    (this worker's thread) and the count of deposed leaders."""

    def __init__(
        self,
        ctx: NodeContext,
        cluster: ClusterView,
        fsm: FSM,
        heartbeat: Heartbeat,
        pruner: Pruner,
        *,
        on_new_session: Callable[[Deadline, int], None],
        on_tick: Callable[[int], None],
    ) -> None:
        super().__init__(f"etcdraft-control-{ctx.id}")
        self._ctx = ctx
        self._cluster = cluster
        self._fsm = fsm
        self._heartbeat = heartbeat
        self._pruner = pruner
        self._on_new_session = on_new_session
        self._on_tick_hook = on_tick
        self._lock = threading.RLock()
        self._leadership = Leadership()
        self._hold_campaign_until = -math.inf
        self.session: Session | None = None
        self.session_lost = threading.Event()
        self.retiring = threading.Event()  # stop(): no more campaigning
        self._changed = threading.Event()  # wakes the control thread
        self.deposed = 0

    # -- what the other parts read ---------------------------------------------------

    @property
    def leadership(self) -> Leadership:
        return self._leadership

    def holds_term(self) -> bool:
        """This node has a term and its lease cannot have expired yet (what its own
        fenced writes may act on: heartbeats, pruning, handover)."""
        session = self.session
        if not self._leadership.term or session is None or self._ctx.stopping.is_set():
            return False
        cfg = self._ctx.config
        return time.monotonic() < session.expires_at() - cfg.leader_lease_timeout

    def is_leader(self) -> bool:
        """See ``Node.is_leader``."""
        if not self.holds_term():
            return False
        if self._ctx.config.fast_takeover:
            return time.monotonic() < self._heartbeat.belief_until()
        return True

    def leader_until(self) -> float | None:
        """While leader: the monotonic time belief ends, unless etcd acknowledges
        again; None when not leader."""
        session = self.session
        if not self.is_leader() or session is None:
            return None
        until = session.expires_at() - self._ctx.config.leader_lease_timeout
        if self._ctx.config.fast_takeover:
            until = min(until, self._heartbeat.belief_until())
        return until

    def leader_id(self) -> str:
        """See ``Node.leader_id``."""
        return self._leader_id(self.is_leader())

    def _leader_id(self, leading: bool) -> str:
        if leading:
            return self._ctx.id
        cand = self._cluster.leader()
        return cand.node_id if cand is not None else ""

    def session_live(self) -> bool:
        """This node has an etcd session whose lease cannot have expired (the
        readiness probe's ``NodeHealth.session_live``)."""
        session = self.session
        if session is None or self._ctx.client is None or self.session_lost.is_set():
            return False
        return session.expires_at() > time.monotonic()

    def figures(self, now: float, *, running: bool) -> dict[str, Any]:
        """This part's fields of :class:`~etcdraft.stats.NodeStats`: the role, the
        term and the leader, the session's and the leadership's. ``running``: the
        node is started and not closed (else its role is ``stopped``)."""
        until = self.leader_until()  # None unless leading: one reading for every field
        leader = until is not None
        lead = self._leadership
        role = "leader" if leader else "candidate" if lead.rev else "follower"
        session = self.session
        acked = self._heartbeat.acked_at
        leading = until is not None and self._ctx.config.fast_takeover
        return {
            "role": role if running else "stopped",
            "term": lead.term if leader else 0,
            "leader_id": self._leader_id(leader),
            "lease_remaining": (session.expires_at() - now) if session is not None else 0.0,
            "lease_ttl": float(session.ttl) if session is not None else 0.0,
            "keepalive_latency": session.last_keepalive_latency if session is not None else 0.0,
            "keepalive_failures": session.keepalive_failures if session is not None else 0,
            "leader_remaining": until - now if until is not None else None,
            "last_heartbeat_age": now - acked if leading and acked > float("-inf") else None,
            "deposed": self.deposed,
        }

    def threads(self) -> dict[str, threading.Thread | None]:
        """The threads this part owns, by role (for the node's liveness probe)."""
        session = self.session
        return {"control": self.thread, "session": session.thread if session else None}

    def wake(self) -> None:
        """Let the control thread look at the view again now."""
        self._changed.set()

    # -- changes of leadership ---------------------------------------------------------

    def _publish(self, **changes: int | bytes) -> None:
        """Replace the snapshot (with the lock held)."""
        self._leadership = replace(self._leadership, **changes)  # type: ignore[arg-type]

    def step_down(self, reason: str) -> None:
        with self._lock:
            term = self._leadership.term
            if term:
                self._publish(term=0)
        self._cluster.notify()
        if term:
            self._ctx.log.info(
                "node %s stepped down (term %d): %s",
                self._ctx.id,
                term,
                reason,
                extra=self._ctx.extra(term=term),
            )

    def refresh(self) -> None:
        """Derive leadership from the view: step down when the key is gone; lead once
        the key is first in line, this node wrote the latest term record for it, and
        the watch delivered that record (after every earlier entry was applied)."""
        became = 0
        with self._lock:
            lead = self._leadership
            view = self._cluster.snapshot()
            mine = view.candidates.get(lead.key) if lead.key else None
            if mine is None:
                if lead.rev:
                    self._publish(rev=0, claimed=0)
                if lead.term:
                    self.step_down("election key deleted")
                return
            if lead.rev != mine.create_revision:
                self._publish(rev=mine.create_revision)
            if lead.term:
                return
            first = view.leader()
            term, holder = view.latest_term()
            if (
                first is not None
                and first.key == mine.key
                and lead.claimed == mine.create_revision
                and term == mine.create_revision
                and holder == self._ctx.id
                and not self.retiring.is_set()
            ):
                self._publish(term=term)
                became = term
        if became:
            self._cluster.notify()
            self._ctx.log.info(
                "node %s became leader: term %d, height %d",
                self._ctx.id,
                became,
                self._fsm.height,
                extra=self._ctx.extra(term=became, height=self._fsm.height),
            )

    # -- the session -------------------------------------------------------------------

    def new_session(self, deadline: Deadline) -> None:
        """Grant a fresh lease: a new election key (not campaigning yet)."""
        client = self._ctx.client
        assert client is not None
        cfg = self._ctx.config
        if self.session is None:
            self.session = Session(
                client,
                ttl=cfg.election_timeout,
                interval=cfg.heartbeat_timeout,
                send_timeout=cfg.send_timeout,
                on_lost=self._on_session_lost,
                on_tick=self._on_tick,
                name=f"etcdraft-session-{self._ctx.id}",
            )
        lease = self.session.grant(deadline)
        with self._lock:
            self._publish(key=self._ctx.keys.election(lease), lease=lease, rev=0, claimed=0)
        self.session_lost.clear()
        self._on_new_session(deadline, lease)

    def _on_session_lost(self, lease: int) -> None:
        self.session_lost.set()
        self.step_down("session lease expired")
        self.wake()

    def _on_tick(self) -> None:
        """Every keep-alive round (session thread)."""
        if self.session_lost.is_set() or self._ctx.stopping.is_set():
            return
        self._on_tick_hook(self._leadership.lease)
        self.wake()

    # -- the control thread ------------------------------------------------------------

    def start(self) -> None:
        """Start the session's keep-alive thread, then the control thread (after
        :meth:`new_session`)."""
        session = self.session
        assert session is not None
        session.start()
        super().start()

    def signal_stop(self) -> None:
        """Ask the control thread and the session's thread to end."""
        super().signal_stop()
        self._changed.set()
        if self.session is not None:
            self.session.signal_stop()

    def revoke_session(self, timeout: float) -> None:
        """Revoke the session lease, so others take over at once; when etcd does not
        answer within ``timeout`` the lease expires on its own (logged)."""
        session = self.session
        if session is None:
            return
        try:
            session.revoke(Deadline(timeout))
        except EtcdraftError as exc:
            self._ctx.log.warning(
                "could not revoke the session lease (it expires in %ds): %s",
                session.ttl,
                exc,
                extra=self._ctx.extra(),
            )

    def _run(self) -> None:
        cfg = self._ctx.config
        stopping = self._ctx.stopping
        while not stopping.is_set() and not self.stop_event.is_set():
            self._changed.wait(self._control_wait())
            self._changed.clear()
            if stopping.is_set() or self.stop_event.is_set():
                return
            try:
                self.control_step()
            except EtcdraftError as exc:
                self._ctx.warn_once("control", "election step failed (will retry): %s", exc)
                stopping.wait(min(0.2, cfg.heartbeat_timeout))
            except Exception:
                self._ctx.log.exception(
                    "election step crashed (will retry)", extra=self._ctx.extra()
                )
                stopping.wait(cfg.heartbeat_timeout)

    def _control_wait(self) -> float:
        """How long the control loop may sleep: until the next heartbeat is due
        (leader) or the leader's silence would reach heartbeat_timeout (others)."""
        cfg = self._ctx.config
        if not cfg.fast_takeover:
            return cfg.heartbeat_timeout
        now = time.monotonic()
        if self._leadership.term:
            due = self._heartbeat.next_due(now)
        else:
            due = self._heartbeat.seen.since + cfg.heartbeat_timeout - now
            if due <= 0:  # silence deadline passed: re-check at the heartbeat rhythm
                due = self._heartbeat.interval
        return min(max(due, 0.002), cfg.heartbeat_timeout)

    def control_step(self) -> None:
        """One look at the view: withdraw, campaign, claim, heartbeat and prune, or
        depose a silent leader."""
        ctx = self._ctx
        cfg = ctx.config
        client = ctx.client
        assert client is not None
        deadline = Deadline(cfg.send_timeout, ctx.stopping)
        if self.session_lost.is_set():
            self.new_session(Deadline(cfg.send_timeout * 2, ctx.stopping))
        with self._lock:
            lead = self._leadership
            view = self._cluster.snapshot()
        member = ctx.id in view.members
        mine = view.candidates.get(lead.key)
        leader = view.leader()
        pause = view.pause  # maintenance mode (etcdraft pause), None when off
        if not member:
            if mine is not None:
                ctx.log.info("node %s is not a member: withdrawing", ctx.id)
                client.txn(
                    [cmp_create(lead.key, "EQUAL", mine.create_revision)],
                    [op_delete(lead.key)],
                    deadline=deadline,
                )
            return
        if mine is None:
            if self.retiring.is_set() or time.monotonic() < self._hold_campaign_until:
                return
            result = client.txn(
                [cmp_create(lead.key, "EQUAL", 0)],
                [op_put(lead.key, ctx.id.encode(), lead.lease)],
                deadline=deadline,
            )
            if result.succeeded:
                ctx.log.debug("campaigning with %r", lead.key)
            return
        if leader is not None and leader.key == mine.key and lead.claimed != mine.create_revision:
            if pause is not None and pause.handover != mine.create_revision:
                # paused: first in line, but only a handover's named successor claims;
                # a lost leader is not replaced until `etcdraft resume` deletes the
                # key (its deletion wakes this loop through the watch)
                return
            self._claim(client, deadline, mine, lead.lease, view.claim_cause())
            return
        if self.holds_term():
            if cfg.fast_takeover:
                self._send_heartbeat(client, deadline)
            if self._pruner.retain(client, lead.key, lead.term):
                self.wake()
        elif cfg.fast_takeover and pause is None and leader is not None and leader.key != mine.key:
            self._maybe_depose(client, deadline, leader, mine)  # never while paused

    def _claim(
        self, client: EtcdClient, deadline: Deadline, mine: Candidate, lease: int, cause: str
    ) -> None:
        """We are first in line: prove the key is still ours (etcd issue 19597) and
        record the term; leadership starts when the watch delivers the record, i.e.
        after every earlier entry has been applied."""
        keys = self._ctx.keys
        # the record says how the term began (etcdraft history)
        record = TermRecord(self._ctx.id, cause)
        ops = [op_put(keys.term(mine.create_revision), record.encode())]
        if self._ctx.config.fast_takeover:  # the term's first heartbeat: belief can start
            ops.append(op_put(keys.heartbeat, str(mine.create_revision).encode()))
        sent = time.monotonic()
        result = client.txn(
            [
                cmp_create(mine.key, "EQUAL", mine.create_revision),
                cmp_lease(mine.key, "EQUAL", lease),
            ],
            ops,
            deadline=deadline,
        )
        if result.succeeded:
            self._heartbeat.new_term(sent)  # only this term's heartbeats count
            with self._lock:
                self._publish(claimed=mine.create_revision)
                self.refresh()

    def _send_heartbeat(self, client: EtcdClient, deadline: Deadline) -> None:
        if self._heartbeat.next_due(time.monotonic()) > 0:
            return
        lead = self._leadership
        if not lead.term:
            return
        sent = time.monotonic()
        self._heartbeat.sent(sent)
        result = client.txn(
            [cmp_create(lead.key, "EQUAL", lead.term)],
            [op_put(self._ctx.keys.heartbeat, str(lead.term).encode())],
            deadline=deadline,
            lane="control",
        )
        if result.succeeded:
            self._heartbeat.acked(sent)
        else:
            self.step_down("heartbeat rejected: election key gone")

    def _maybe_depose(
        self, client: EtcdClient, deadline: Deadline, leader: Candidate, mine: Candidate
    ) -> None:
        """Depose a leader that stopped heartbeating. The next candidate in line acts
        after ``heartbeat_timeout`` of silence, the others after twice that (in case
        it is dead too). The transaction compares the leader key's create revision
        and the heartbeat's mod revision last seen, so a leader that is merely slow
        (its heartbeat landed meanwhile) keeps leading."""
        cfg = self._ctx.config
        queue = sorted(
            self._cluster.snapshot().candidates.values(), key=lambda c: c.create_revision
        )
        seen = self._heartbeat.seen
        if seen.leader_key != leader.key:
            return
        rank = next((i for i, c in enumerate(queue) if c.key == mine.key), None)
        if rank is None or rank == 0:
            return
        silence = time.monotonic() - seen.since
        if silence < cfg.heartbeat_timeout * (1 if rank == 1 else 2):
            return
        result = client.txn(
            [
                cmp_create(leader.key, "EQUAL", leader.create_revision),
                cmp_mod(self._ctx.keys.heartbeat, "EQUAL", seen.revision),
            ],
            [
                op_delete(leader.key),
                op_put(
                    self._ctx.keys.succession,
                    Succession(leader.create_revision, "takeover", self._ctx.id).encode(),
                ),
            ],
            deadline=deadline,
        )
        if result.succeeded:
            with self._lock:
                self.deposed += 1
            self._ctx.log.info(
                "deposed silent leader %s (no heartbeat for %.0f ms)",
                leader.node_id,
                silence * 1000,
                extra=self._ctx.extra(),
            )
        else:  # it spoke meanwhile: give it a fresh period
            self._heartbeat.spoke()

    # -- handover ----------------------------------------------------------------------

    def snapshot(self) -> tuple[Leadership, View]:
        """The leadership and the view, read together (consistent with each other)."""
        with self._lock:
            return self._leadership, self._cluster.snapshot()

    def hold_campaign(self, seconds: float) -> None:
        """Do not campaign for ``seconds`` (0: campaign again at once); a handover
        holds our own re-campaign until the successor has claimed."""
        with self._lock:
            self._hold_campaign_until = time.monotonic() + seconds if seconds else -math.inf

    def confirm(self) -> bool:
        """``has_quorum``'s round trip: etcd confirms, through a linearizable (quorum)
        transaction within ``send_timeout``, that our key still holds the term."""
        client = self._ctx.client
        if client is None:
            return False
        lead = self._leadership
        try:
            # A txn without operations counts as serializable to etcd: any member
            # answers it from its own store, even without quorum. A range op makes it
            # a linearizable read (ReadIndex), which needs an etcd quorum.
            result = client.txn(
                [cmp_create(lead.key, "EQUAL", lead.term)],
                [op_range(lead.key)],
                deadline=Deadline(self._ctx.config.send_timeout, self._ctx.stopping),
                lane="control",
            )
        except Exception as exc:
            self._ctx.warn_once("quorum", "has_quorum: etcd did not confirm leadership: %s", exc)
            return False
        if not result.succeeded:
            self.step_down("has_quorum: election key gone")
        return result.succeeded
