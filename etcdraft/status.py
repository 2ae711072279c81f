"""Operator tools that work on etcd directly, without a running :class:`~etcdraft.Node`.

This is what ``etcdraft status``, ``watch``, ``members`` and ``resign`` use. Everything
here reads or writes the keys of :mod:`etcdraft.keys` with plain etcd range reads and
transactions, with the same semantics as the corresponding ``Node`` methods:

* :func:`read_status`: leader, term, height and every member's address, liveness,
  applied height and lag, read at one etcd revision;
* :func:`add_member` / :func:`remove_member`: ``Node.add_peer`` / ``Node.remove_peer``;
* :func:`force_resign`: a *forced* step-down of the current leader (see its doc);
* :class:`LogFollower`: the stream of replicated blocks, from a height or from now.

::

    from etcdraft.status import connect, read_status

    client, keys = connect(endpoints=["http://127.0.0.1:2379"], namespace="/etcdraft/x")
    print(read_status(client, keys).to_dict())
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from etcdraft import membership
from etcdraft._deadline import Deadline
from etcdraft.config import Config
from etcdraft.errors import ConfigError, EtcdTimeoutError, HandoverError
from etcdraft.etcd import (
    KV,
    EtcdClient,
    cmp_create,
    op_delete,
    prefix_end,
)
from etcdraft.fsm import decode_state
from etcdraft.keys import Keys
from etcdraft.proto import RaftBlockState
from etcdraft.view import Candidate, Progress, View
from etcdraft.watch import Watcher, WatchEvent

__all__ = [
    "ClusterStatus",
    "LogEntry",
    "LogFollower",
    "MemberStatus",
    "ResignResult",
    "add_member",
    "client_for",
    "connect",
    "force_resign",
    "list_members",
    "read_status",
    "remove_member",
]

#: Default deadline of one command's etcd requests, in seconds.
DEFAULT_TIMEOUT = 5.0


def client_for(config: Config, name: str = "etcdraft-cli") -> EtcdClient:
    """An :class:`EtcdClient` for ``config``'s endpoints, TLS and auth."""
    if not config.endpoints:
        raise ConfigError(
            "no etcd endpoints: pass --endpoints or set ETCDRAFT_ENDPOINTS "
            "(e.g. http://127.0.0.1:2379)",
            field="endpoints",
        )
    return EtcdClient.from_config(config, name=name)


def connect(**fields: Any) -> tuple[EtcdClient, Keys]:
    """A client and the key layout from connection fields of :class:`Config`
    (``endpoints``, ``namespace``, ``tls_*``, ``username``, ``password``; anything
    not given is read from ``ETCDRAFT_*`` like ``Config`` does). No I/O.

    Raises:
        ConfigError: a field is missing or malformed.
    """
    fields.setdefault("node_id", "etcdraft-cli")
    config = Config(**fields)
    return client_for(config), Keys(config.namespace)


# ---------------------------------------------------------------------------- status


@dataclass(frozen=True)
class MemberStatus:
    """One node as seen in etcd. ``member`` is False for a live node that is not in
    the membership (it follows but never campaigns)."""

    node_id: str
    address: str
    member: bool
    alive: bool
    candidate: bool
    leader: bool
    applied_index: int | None
    applied_height: int | None
    lag: int | None


@dataclass(frozen=True)
class ClusterStatus:
    """The cluster as read from etcd at ``revision``.

    ``leader`` is the node that holds the current term (its election key is first in
    line and it wrote the term record); ``""`` while an election is in progress or no
    node campaigns. ``next_in_line`` is the first candidate (it will lead next, or is
    about to claim). ``term`` is the latest term record (0 before any).
    """

    namespace: str
    revision: int
    leader: str
    term: int
    term_holder: str
    next_in_line: str
    height: int
    pruned: int
    members: list[MemberStatus] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def member(self, node_id: str) -> MemberStatus | None:
        for m in self.members:
            if m.node_id == node_id:
                return m
        return None


def _range_all(
    client: EtcdClient, prefix: bytes, deadline: Deadline, revision: int = 0
) -> tuple[list[KV], int]:
    kvs: list[KV] = []
    start = prefix
    end = prefix_end(prefix)
    rev = revision
    while True:
        res = client.range(start, end, deadline, revision=rev, limit=1000)
        rev = rev or res.revision
        kvs.extend(res.kvs)
        if not res.more or not res.kvs:
            return kvs, rev
        start = res.kvs[-1].key + b"\x00"


def _read_view(client: EtcdClient, keys: Keys, deadline: Deadline) -> View:
    """Candidates, members, liveness and the latest term, at one revision."""
    first, rev = _range_all(client, keys.election_prefix, deadline)
    view = View(revision=rev)
    for kv in first:
        parsed = keys.parse(kv.key)
        if parsed.kind == "election":
            view.candidates[kv.key] = Candidate(
                kv.key, kv.create_revision, kv.value.decode(errors="replace"), kv.lease
            )
    members, _ = _range_all(client, keys.members_prefix, deadline, rev)
    for kv in members:
        parsed = keys.parse(kv.key)
        if parsed.kind == "member":
            view.members[parsed.name] = kv.value.decode(errors="replace")
    alive, _ = _range_all(client, keys.alive_prefix, deadline, rev)
    for kv in alive:
        parsed = keys.parse(kv.key)
        if parsed.kind == "alive":
            view.alive[parsed.name] = Progress.parse(kv.value)
    terms = client.range(
        keys.terms_prefix,
        prefix_end(keys.terms_prefix),
        deadline,
        revision=rev,
        limit=1,
        descending=True,
    )
    for kv in terms.kvs:
        parsed = keys.parse(kv.key)
        if parsed.kind == "term":
            view.add_term(kv.create_revision, parsed.number, kv.value.decode(errors="replace"))
    pruned = client.range(keys.pruned, None, deadline, revision=rev)
    for kv in pruned.kvs:
        with contextlib.suppress(ValueError):
            view.pruned = int(kv.value)
    return view


def _confirmed_leader(view: View) -> Candidate | None:
    first = view.leader()
    term, holder = view.latest_term()
    if first is not None and term == first.create_revision and holder == first.node_id:
        return first
    return None


def read_status(client: EtcdClient, keys: Keys, timeout: float = DEFAULT_TIMEOUT) -> ClusterStatus:
    """Read the cluster's state from etcd (a handful of range reads at one revision).

    Raises:
        EtcdUnavailableError: etcd could not be reached within ``timeout``.
        EtcdAuthError: credentials rejected or no permission on the namespace.
    """
    deadline = Deadline(timeout)
    view = _read_view(client, keys, deadline)
    head = client.range(
        keys.log_prefix,
        prefix_end(keys.log_prefix),
        deadline,
        revision=view.revision,
        limit=1,
        keys_only=True,
        descending=True,
    )
    height = 0
    for kv in head.kvs:
        parsed = keys.parse(kv.key)
        if parsed.kind == "log":
            height = parsed.number
    height = max(height, view.pruned)
    leader = _confirmed_leader(view)
    first = view.leader()
    term, holder = view.latest_term()
    ordered = sorted(view.candidates.values(), key=lambda c: c.create_revision)
    candidate_ids = [c.node_id for c in ordered]
    members: list[MemberStatus] = []
    for node_id in sorted(set(view.members) | set(view.alive)):
        prog = view.alive.get(node_id)
        alive = node_id in view.alive
        members.append(
            MemberStatus(
                node_id=node_id,
                address=view.members.get(node_id, ""),
                member=node_id in view.members,
                alive=alive,
                candidate=node_id in candidate_ids,
                leader=leader is not None and leader.node_id == node_id,
                applied_index=prog.index if prog is not None else None,
                applied_height=prog.height if prog is not None else None,
                lag=max(0, height - prog.height) if prog is not None else None,
            )
        )
    return ClusterStatus(
        namespace=keys.namespace,
        revision=view.revision,
        leader=leader.node_id if leader is not None else "",
        term=term,
        term_holder=holder,
        next_in_line=first.node_id if first is not None else "",
        height=height,
        pruned=view.pruned,
        members=members,
        candidates=candidate_ids,
    )


# ---------------------------------------------------------------------------- members


def list_members(
    client: EtcdClient, keys: Keys, timeout: float = DEFAULT_TIMEOUT
) -> dict[str, str]:
    """Membership: node id → advertised address."""
    kvs, _ = _range_all(client, keys.members_prefix, Deadline(timeout))
    out: dict[str, str] = {}
    for kv in kvs:
        parsed = keys.parse(kv.key)
        if parsed.kind == "member":
            out[parsed.name] = kv.value.decode(errors="replace")
    return out


def add_member(
    client: EtcdClient, keys: Keys, node_id: str, addr: str, timeout: float = DEFAULT_TIMEOUT
) -> bool:
    """Add a member, exactly like ``Node.add_peer`` (see
    :func:`etcdraft.membership.add_member`). Returns True when something changed."""
    return membership.add_member(client, keys, node_id, addr, Deadline(timeout))


def remove_member(
    client: EtcdClient, keys: Keys, node_id: str, timeout: float = DEFAULT_TIMEOUT
) -> bool:
    """Remove a member, exactly like ``Node.remove_peer`` (see
    :func:`etcdraft.membership.remove_member`). Returns False when ``node_id`` was not
    a member (nothing to do)."""
    membership.check_member_id(node_id)
    deadline = Deadline(timeout)
    was_member = client.get(keys.member(node_id), deadline) is not None
    had_candidacy = membership.remove_member(client, keys, node_id, deadline)
    return was_member or had_candidacy


# ---------------------------------------------------------------------------- resign


@dataclass(frozen=True)
class ResignResult:
    old_leader: str
    old_term: int
    new_leader: str
    new_term: int
    seconds: float


def _latest_term(client: EtcdClient, keys: Keys, deadline: Deadline) -> tuple[int, str]:
    res = client.range(
        keys.terms_prefix, prefix_end(keys.terms_prefix), deadline, limit=1, descending=True
    )
    for kv in res.kvs:
        parsed = keys.parse(kv.key)
        if parsed.kind == "term":
            return parsed.number, kv.value.decode(errors="replace")
    return 0, ""


def force_resign(
    client: EtcdClient,
    keys: Keys,
    *,
    to: str | None = None,
    timeout: float = 10.0,
) -> ResignResult:
    """Force the current leader to step down and wait for the successor.

    The leader process cannot be called from outside, so this does what
    ``Node.resign_leader`` does on its behalf, in one etcd transaction: it deletes
    the leader's election key (and the keys of any candidates queued before the
    successor), compared on their create revisions. From that revision on the old
    leader's writes are fenced (every broadcast compares its key), it steps down as
    soon as its watch sees the deletion and queues up again; the successor claims the
    next term. The successor is ``to`` or, by default, the live member candidate that
    has applied the most (ties: the earliest in line).

    Unlike ``Node.resign_leader`` the old leader gets no warning: a broadcast in
    flight fails with ``LeadershipLostError`` (nothing written) and its producer
    retries on the new leader. Use ``stop()`` on the leader process for a graceful
    handover.

    Raises:
        HandoverError: no confirmed leader, or no live member candidate to take over
            (nothing changed), or the leadership changed meanwhile.
        EtcdTimeoutError: the successor did not claim the term within ``timeout``
            (the old leader was deposed all the same).
    """
    started = time.monotonic()
    deadline = Deadline(timeout)
    view = _read_view(client, keys, deadline)
    leader = _confirmed_leader(view)
    if leader is None:
        raise HandoverError(
            "there is no confirmed leader to resign (an election is in progress or no "
            "member campaigns); see `etcdraft status`"
        )
    best: tuple[int, int, Candidate] | None = None
    for cand in view.candidates.values():
        if cand.key == leader.key or cand.node_id == leader.node_id:
            continue
        if cand.node_id not in view.members or cand.node_id not in view.alive:
            continue
        if to is not None and cand.node_id != to:
            continue
        prog = view.alive.get(cand.node_id)
        rank = (prog.index if prog is not None else 0, -cand.create_revision, cand)
        if best is None or rank[:2] > best[:2]:
            best = rank
    if best is None:
        who = f"{to!r} is not a live member candidate" if to else "no other live member"
        raise HandoverError(
            f"cannot resign {leader.node_id}: {who} can take over; nothing changed "
            "(start another member or add one with `etcdraft members add`)"
        )
    target = best[2]
    ahead = [
        c
        for c in view.candidates.values()
        if c.create_revision < target.create_revision and c.key != leader.key
    ]
    result = client.txn(
        [
            cmp_create(leader.key, "EQUAL", leader.create_revision),
            cmp_create(target.key, "EQUAL", target.create_revision),
        ],
        [op_delete(leader.key)] + [op_delete(c.key) for c in ahead],
        deadline=deadline,
    )
    if not result.succeeded:
        raise HandoverError(
            "the leadership or the successor changed meanwhile; nothing done; retry"
        )
    old_term = leader.create_revision
    while True:
        term, holder = _latest_term(client, keys, deadline)
        if term > old_term:
            return ResignResult(leader.node_id, old_term, holder, term, time.monotonic() - started)
        if deadline.expired():
            raise EtcdTimeoutError(
                f"{leader.node_id} was deposed but {target.node_id} did not claim the term "
                f"within {timeout:g}s; see `etcdraft status`"
            )
        deadline.sleep(0.02)


# ---------------------------------------------------------------------------- watch


@dataclass(frozen=True)
class LogEntry:
    """One replicated block: ``index`` is its etcd revision, ``term`` the term it was
    written in and ``leader`` that term's leader."""

    height: int
    index: int
    term: int
    leader: str
    state: RaftBlockState

    def to_dict(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "index": self.index,
            "term": self.term,
            "leader": self.leader,
            "hash": self.state.hash.hex(),
            "timestamp": self.state.timestamp,
            "size": self.state.ByteSize(),
        }


class LogFollower:
    """The stream of replicated blocks of a namespace, in order, from a watch.

    ``start(from_height)`` first reads the entries from ``from_height`` on (when
    given), then follows new ones; :meth:`get` returns them one at a time. Corrupt or
    foreign entries are skipped. After a compaction of the watched revision the entries
    in between are re-read, so none is missed.
    """

    def __init__(self, client: EtcdClient, keys: Keys, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.client = client
        self.keys = keys
        self.timeout = timeout
        self._view = View()
        self._lock = threading.Lock()
        self._queue: queue.Queue[LogEntry] = queue.Queue()
        self._last_height = 0
        self._watcher: Watcher | None = None

    def start(self, from_height: int | None = None) -> None:
        rev = self._read(from_height, 0)
        self._watcher = Watcher(
            self.client,
            self.keys.root,
            rev + 1,
            self._on_events,
            self._on_compacted,
            name="etcdraft-cli-watch",
            probe_after=2.0,
            probe_timeout=min(self.timeout, 2.0),
        )
        self._watcher.start()

    @property
    def connected(self) -> bool:
        return self._watcher is not None and self._watcher.connected.is_set()

    def get(self, timeout: float) -> LogEntry | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()

    def _read(self, from_height: int | None, revision: int) -> int:
        """Terms, then (when ``from_height``) the log from there, at one revision."""
        deadline = Deadline(self.timeout)
        k = self.keys
        terms, rev = _range_all(self.client, k.terms_prefix, deadline, revision)
        if not rev:
            rev = self.client.range(k.pruned, None, deadline).revision
        with self._lock:
            for kv in terms:
                parsed = k.parse(kv.key)
                if parsed.kind == "term":
                    self._view.add_term(
                        kv.create_revision, parsed.number, kv.value.decode(errors="replace")
                    )
        if from_height is not None:
            start = k.log(max(1, from_height))
            end = prefix_end(k.log_prefix)
            while True:
                res = self.client.range(start, end, deadline, revision=rev, limit=256)
                self._emit([(kv, False) for kv in res.kvs])
                if not res.more or not res.kvs:
                    break
                start = res.kvs[-1].key + b"\x00"
        else:
            head = self.client.range(
                k.log_prefix,
                prefix_end(k.log_prefix),
                deadline,
                revision=rev,
                limit=1,
                keys_only=True,
                descending=True,
            )
            for kv in head.kvs:
                parsed = k.parse(kv.key)
                if parsed.kind == "log":
                    self._last_height = parsed.number
        return rev

    def _emit(self, kvs: list[tuple[KV, bool]]) -> None:
        k = self.keys
        for kv, deleted in kvs:
            parsed = k.parse(kv.key)
            if parsed.kind == "term":
                with self._lock:
                    if deleted:
                        self._view.remove_term(parsed.number)
                    else:
                        self._view.add_term(
                            kv.create_revision, parsed.number, kv.value.decode(errors="replace")
                        )
                continue
            if parsed.kind != "log" or deleted or parsed.number <= self._last_height:
                continue
            try:
                state = decode_state(kv.value)
            except ValueError:
                continue
            with self._lock:
                term = self._view.term_at(kv.mod_revision)
                i = self._view.terms.index(term) if term in self._view.terms else -1
                leader = self._view.term_nodes[i] if i >= 0 else ""
            self._last_height = parsed.number
            self._queue.put(LogEntry(parsed.number, kv.mod_revision, term, leader, state))

    def _on_events(self, events: list[WatchEvent], top: int) -> None:
        self._emit([(ev.kv, ev.deleted) for ev in events])

    def _on_compacted(self, compact_revision: int) -> int:
        # re-read what the compaction took; on failure the watch loop tries again
        return self._read(self._last_height + 1, 0)
