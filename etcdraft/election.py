"""Election, membership and handover for :class:`~etcdraft.Node`.

Campaign with a key bound to the session lease under ``<ns>/election/`` (etcd's own
election recipe: the smallest create revision leads); claim the term by re-checking
the key and its lease in a transaction that also records ``<ns>/terms/<term>``;
heartbeat and depose a silent leader (fast takeover); prune the log; hand
leadership over; edit membership. Runs in the node's control thread, except the
public methods.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import time

from etcdraft import protocol
from etcdraft._deadline import Deadline
from etcdraft._node_core import NodeCore
from etcdraft.blocks import is_manifest, parse_manifest
from etcdraft.errors import (
    ConfigError,
    CorruptDataError,
    EtcdraftError,
    EtcdTimeoutError,
    HandoverError,
)
from etcdraft.etcd import (
    EtcdClient,
    cmp_create,
    cmp_lease,
    cmp_mod,
    op_delete,
    op_put,
    op_range,
    prefix_end,
)
from etcdraft.membership import add_member, check_member_id, remove_member
from etcdraft.view import Candidate, Succession, TermRecord

__all__ = ["ElectionMixin"]

#: Heights deleted per pruning transaction.
PRUNE_BATCH = 1000
#: Seconds between two sweeps of uncommitted large-block pieces by the leader.
PIECE_SWEEP_EVERY = 5.0


class ElectionMixin(NodeCore):
    """The election part of ``Node``."""

    def add_peer(self, node_id: str, addr: str) -> None:
        """Add a member (a node allowed to lead). Same id and addr: no-op; same id or
        same addr with a different partner: the old entry is replaced. Works on any
        node.

        Raises:
            ConfigError: empty or malformed id or address (also a ``ValueError``).
            EtcdUnavailableError: etcd did not answer in time.
        """
        client = self._require_client()
        deadline = Deadline(self._config.send_timeout * 3, self._stopping)
        if add_member(client, self._keys, node_id, addr, deadline):
            self._log.info("member %s added at %s", node_id, addr, extra=self._extra())

    def remove_peer(self, node_id: str) -> None:
        """Remove a member; a removed leader steps down and its writes are fenced
        (its candidacy is deleted in the same step). Unknown ids are a no-op.

        Raises:
            EtcdUnavailableError: etcd did not answer in time.
        """
        check_member_id(node_id)
        client = self._require_client()
        deadline = Deadline(self._config.send_timeout * 3, self._stopping)
        remove_member(client, self._keys, node_id, deadline)
        self._log.info("member %s removed", node_id, extra=self._extra())

    def resign_leader(self, *, timeout: float | None = None) -> None:
        """Hand leadership to the most up-to-date live member; return once another
        node holds it. No-op when not leader.

        Raises:
            HandoverError: no live member can take over (this node stays leader).
            TimeoutError: no other node took over within ``timeout``
                (default 5 * ``send_timeout``).
        """
        if not self._holds_term():
            return
        client = self._require_client()
        wait = self._config.send_timeout * 5 if timeout is None else timeout
        deadline = Deadline(wait)
        with self._bcast_lock:
            with self._lock:
                old_term, my_key = self._term, self._my_key
                view = self._view
                target = view.handover_target(my_key, self._id)
            if target is None:
                # the watch may not have delivered a fresh candidate yet: ask etcd
                view = self._read_view(client, deadline.sub(self._config.send_timeout))
                target = view.handover_target(my_key, self._id)
            if target is None:
                raise HandoverError(
                    f"no live member can take leadership over from {self._id}: start "
                    "another member or add one with add_peer()"
                )
            compare, ops = protocol.handover_txn(
                self._keys, view, my_key, old_term, target, self._id
            )
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
                    f"handover to {target.node_id} failed: it is no longer a candidate (or "
                    "the cluster was paused or resumed meanwhile); retry"
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
            due = self._heartbeat.next_due(now)
        else:
            due = self._heartbeat.seen.since + cfg.heartbeat_timeout - now
            if due <= 0:  # silence deadline passed: re-check at the heartbeat rhythm
                due = self._heartbeat.interval
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
            pause = view.pause  # maintenance mode (etcdraft pause), None when off
            cause = view.claim_cause()  # how a term claimed now begins (history)
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
            if pause is not None and pause.handover != mine.create_revision:
                # paused: first in line, but only a handover's named successor claims;
                # a lost leader is not replaced until `etcdraft resume` deletes the
                # key (its deletion wakes this loop through the watch)
                return
            # we are first in line: prove the key is still ours (etcd issue 19597) and
            # record the term; leadership starts when the watch delivers the record,
            # i.e. after every earlier entry has been applied.
            # the record says how the term began (etcdraft history)
            record = TermRecord(self._id, cause)
            ops = [op_put(self._keys.term(mine.create_revision), record.encode())]
            if cfg.fast_takeover:  # the term's first heartbeat, so belief can start
                ops.append(op_put(self._keys.heartbeat, str(mine.create_revision).encode()))
            sent = time.monotonic()
            result = client.txn(
                [
                    cmp_create(my_key, "EQUAL", mine.create_revision),
                    cmp_lease(my_key, "EQUAL", lease),
                ],
                ops,
                deadline=deadline,
            )
            if result.succeeded:
                self._heartbeat.new_term(sent)  # only this term's heartbeats count
                with self._cond:
                    self._claimed = mine.create_revision
                    self._refresh_leadership()
            return
        if self._holds_term():
            if cfg.fast_takeover:
                self._send_heartbeat(client, deadline)
            self._maybe_prune(client, deadline)
        elif cfg.fast_takeover and pause is None and leader is not None and leader is not mine:
            self._maybe_depose(client, deadline, leader, mine)  # never while paused

    def _send_heartbeat(self, client: EtcdClient, deadline: Deadline) -> None:
        if self._heartbeat.next_due(time.monotonic()) > 0:
            return
        with self._lock:
            key, term = self._my_key, self._term
        if not term:
            return
        sent = time.monotonic()
        self._heartbeat.sent(sent)
        result = client.txn(
            [cmp_create(key, "EQUAL", term)],
            [op_put(self._keys.heartbeat, str(term).encode())],
            deadline=deadline,
            lane="control",
        )
        if result.succeeded:
            self._heartbeat.acked(sent)
        else:
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
        seen = self._heartbeat.seen
        hb_rev, seen_at = seen.revision, seen.since
        same_leader = seen.leader_key == leader.key
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
            [
                op_delete(leader.key),
                op_put(
                    self._keys.succession,
                    Succession(leader.create_revision, "takeover", self._id).encode(),
                ),
            ],
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
        else:  # it spoke meanwhile: give it a fresh period
            self._heartbeat.spoke()

    def _maybe_prune(self, client: EtcdClient, deadline: Deadline) -> None:
        """Delete old log entries (and their large blocks' pieces): keep the newest
        ``trailing_logs`` entries, and at most ``trailing_bytes`` of them; prune once
        ``snapshot_threshold`` extra entries (or a quarter of ``trailing_bytes``) have
        accumulated. Fenced on this node's term like every leader write."""
        cfg = self._config
        with self._lock:
            pruned = self._view.pruned
            key, term = self._my_key, self._term
        self._fsm.forget_sizes(pruned)
        head = self._fsm.height
        count_cut = head - cfg.trailing_logs
        byte_cut = self._fsm.byte_cut(cfg.trailing_bytes)
        over_count = head - pruned > cfg.trailing_logs + cfg.snapshot_threshold
        over_bytes = byte_cut > pruned and self._fsm.byte_cut(cfg.trailing_bytes * 5 // 4) > pruned
        if not (over_count or over_bytes):
            self._maybe_clean_pieces(client, deadline, key, term, head)
            return
        cut = max(count_cut, byte_cut)
        upto = min(cut, pruned + PRUNE_BATCH)
        k = self._keys
        result = client.txn(
            [cmp_create(key, "EQUAL", term)],
            [
                op_delete(k.log(pruned + 1), k.log(upto + 1)),
                op_delete(k.blocks(pruned + 1), k.blocks(upto + 1)),
                op_put(k.pruned, str(upto).encode()),
            ],
            deadline=deadline,
        )
        if result.succeeded:
            self._log.debug("pruned log heights %d..%d", pruned + 1, upto)
            self._fsm.forget_sizes(upto)
            self._prune_terms(client, deadline, key, term, upto)
            self._changed.set()

    def _maybe_clean_pieces(
        self, client: EtcdClient, deadline: Deadline, key: bytes, term: int, head: int
    ) -> None:
        """Remove the pieces of large-block attempts that never committed (a failed
        broadcast, a deposed or dead leader): any attempt at a height at or below the
        applied head whose nonce is not the one of that height's committed manifest.
        Runs at most every PIECE_SWEEP_EVERY seconds on the leader."""
        now = time.monotonic()
        if now - self._last_piece_sweep < PIECE_SWEEP_EVERY:
            return
        self._last_piece_sweep = now
        k = self._keys
        res = client.range(
            k.blocks_prefix, k.blocks(head + 1), deadline, keys_only=True, limit=PRUNE_BATCH
        )
        attempts: set[tuple[int, str]] = set()
        for kv in res.kvs:
            parsed = k.parse(kv.key)
            if parsed.kind == "piece":
                attempts.add((parsed.number, parsed.name))
        if not attempts:
            return
        heights = sorted({h for h, _ in attempts})
        logs = client.range(k.log(heights[0]), k.log(heights[-1] + 1), deadline)
        committed: dict[int, str] = {}
        for kv in logs.kvs:
            if is_manifest(kv.value):
                with contextlib.suppress(CorruptDataError):
                    committed[k.parse(kv.key).number] = parse_manifest(kv.value).nonce
        garbage = sorted((h, n) for h, n in attempts if committed.get(h) != n)
        if not garbage:
            return
        ops = [
            op_delete(k.pieces(h, n), prefix_end(k.pieces(h, n)))
            for h, n in garbage[: PRUNE_BATCH // 10]
        ]
        if client.txn([cmp_create(key, "EQUAL", term)], ops, deadline=deadline).succeeded:
            self.pieces_cleaned += len(ops)
            self._log.info(
                "removed the pieces of %d large-block attempt(s) that never committed "
                "(heights %d..%d)",
                len(ops),
                garbage[0][0],
                garbage[min(len(garbage), PRUNE_BATCH // 10) - 1][0],
                extra=self._extra(),
            )

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
        """Write the initial membership if the namespace has none: one transaction
        comparing the whole members prefix, so two groups bootstrapping at once cannot
        merge. A namespace whose members are none of this node's peers belongs to
        another cluster: refuse to start.

        Raises:
            ConfigError: another cluster owns the namespace.
        """
        client = self._client
        assert client is not None
        k = self._keys
        cfg = self._config
        peers = {p.node_id: p.addr for p in cfg.peer_list()}
        peers.setdefault(self._id, cfg.raft_addr)
        members_end = prefix_end(k.members_prefix)
        result = client.txn(
            [cmp_create(k.members_prefix, "EQUAL", 0, range_end=members_end)],
            [op_put(k.member(nid), addr.encode()) for nid, addr in sorted(peers.items())],
            [op_range(k.members_prefix, members_end)],
            deadline=deadline,
        )
        if result.succeeded:
            with self._cond:
                for nid, addr in peers.items():
                    self._view.members[nid] = addr
            self._log.info("bootstrapped membership: %s", ", ".join(sorted(peers)))
            return
        existing = sorted(k.parse(kv.key).name for kv in result.range_kvs(0))
        if existing and set(existing).isdisjoint(peers):
            raise ConfigError(
                f"namespace {k.namespace!r} already holds another etcdraft cluster (members "
                f"{', '.join(existing)}), none of which is among this node's peers "
                f"({', '.join(sorted(peers))}): two clusters must not share a namespace. Give "
                "this cluster a namespace of its own; to join that cluster instead, start "
                "with bootstrap=False and have one of its members call add_peer().",
                field="namespace",
            )
