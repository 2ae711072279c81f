"""Operator tools that work on etcd directly, without a running :class:`~etcdraft.Node`.

This is what ``etcdraft status``, ``watch``, ``members`` and ``resign`` use. Everything
here reads or writes the keys of :mod:`etcdraft.keys` with plain etcd range reads and
transactions, with the same semantics as the corresponding ``Node`` methods:

* :func:`read_status`: leader, term, height and every member's address, liveness,
  applied height and lag, read at one etcd revision;
* :func:`add_member` / :func:`remove_member`: ``Node.add_peer`` / ``Node.remove_peer``;
* :func:`force_resign`: a *forced* step-down of the current leader (see its doc);
* :func:`pause` / :func:`resume`: maintenance mode (``<ns>/paused``): no term claims and
  no deposing while it is set, except a handover's named successor;
* :func:`read_etcd`: etcd's own side: each endpoint's status (version, raft leader and
  term, database size, quota) and the cluster's alarms (``NOSPACE``...);
* :func:`read_history` (from :mod:`etcdraft.history`): the terms etcd still records;
* :class:`LogFollower`: the stream of replicated blocks, from a height or from now.

::

    from etcdraft.status import connect, read_status

    client, keys = connect(endpoints=["http://127.0.0.1:2379"], namespace="/etcdraft/x")
    print(read_status(client, keys).to_dict())
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import queue
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from etcdraft import membership
from etcdraft._deadline import Deadline
from etcdraft.blocks import summarize
from etcdraft.config import Config
from etcdraft.errors import ConfigError, EtcdraftError, EtcdTimeoutError, HandoverError
from etcdraft.etcd import (
    KV,
    EtcdClient,
    cmp_create,
    cmp_mod,
    op_delete,
    op_put,
    prefix_end,
)
from etcdraft.history import TermInfo, read_history
from etcdraft.keys import Keys
from etcdraft.proto import RaftBlockState
from etcdraft.view import Candidate, Pause, Progress, Succession, TermRecord, View
from etcdraft.watch import Watcher, WatchEvent

__all__ = [
    "ClusterStatus",
    "EtcdEndpointStatus",
    "EtcdStatus",
    "LogEntry",
    "LogFollower",
    "MemberStatus",
    "PauseStatus",
    "ResignResult",
    "TermInfo",
    "add_member",
    "client_for",
    "connect",
    "force_resign",
    "list_members",
    "pause",
    "read_etcd",
    "read_history",
    "read_pause",
    "read_status",
    "remove_member",
    "resume",
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
    about to claim). ``term`` is the latest term record (0 before any). ``paused`` is
    the maintenance mode (``etcdraft pause``), None when off.
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
    paused: PauseStatus | None = None

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
            view.add_term(kv.create_revision, parsed.number, TermRecord.parse(kv.value).node_id)
    pruned = client.range(keys.pruned, None, deadline, revision=rev)
    for kv in pruned.kvs:
        with contextlib.suppress(ValueError):
            view.pruned = int(kv.value)
    for kv in client.range(keys.paused, None, deadline, revision=rev).kvs:
        view.pause = Pause.parse(kv.value, kv.mod_revision)
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
        paused=PauseStatus.of(view.pause),
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
            return parsed.number, TermRecord.parse(kv.value).node_id
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
    ops = [op_delete(leader.key)] + [op_delete(c.key) for c in ahead]
    succ = Succession(leader.create_revision, "handover", "etcdraft resign")
    ops.append(op_put(keys.succession, succ.encode()))
    # paused: name the successor, the one candidate allowed to claim (like the
    # handover of Node.resign_leader); compared, so a pause or resume meanwhile fails
    pause_ = view.pause
    if pause_ is not None:
        ops.append(op_put(keys.paused, pause_.with_handover(target.create_revision)))
    result = client.txn(
        [
            cmp_create(leader.key, "EQUAL", leader.create_revision),
            cmp_create(target.key, "EQUAL", target.create_revision),
            cmp_mod(keys.paused, "EQUAL", pause_.mod_revision if pause_ is not None else 0),
        ],
        ops,
        deadline=deadline,
    )
    if not result.succeeded:
        raise HandoverError(
            "the leadership, the successor or the pause changed meanwhile; nothing done; retry"
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


# ---------------------------------------------------------------------------- pause


@dataclass(frozen=True)
class PauseStatus:
    """The maintenance mode as ``<ns>/paused`` holds it: who paused (``by``), when
    (``at``: only from other tools; etcdraft shows ``revision``), why, the handover's
    successor allowed to claim (``handover``: its election key's create revision, 0: none) and
    the key's mod ``revision``. A value etcdraft did not write still means paused."""

    by: str
    at: str
    reason: str
    handover: int
    revision: int

    @classmethod
    def of(cls, pause: Pause | None) -> PauseStatus | None:
        if pause is None:
            return None
        try:
            data = json.loads(pause.raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            data = {"reason": pause.raw.decode(errors="replace")}

        def text(name: str) -> str:
            value = data.get(name)
            return value if isinstance(value, str) else ""

        return cls(text("by"), text("at"), text("reason"), pause.handover, pause.mod_revision)


def _whoami() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def read_pause(
    client: EtcdClient, keys: Keys, timeout: float = DEFAULT_TIMEOUT
) -> PauseStatus | None:
    """The maintenance mode, None when the cluster is not paused."""
    kv = client.get(keys.paused, Deadline(timeout))
    return None if kv is None else PauseStatus.of(Pause.parse(kv.value, kv.mod_revision))


def pause(
    client: EtcdClient,
    keys: Keys,
    *,
    reason: str = "",
    by: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[bool, PauseStatus]:
    """Put the cluster in maintenance mode: create ``<ns>/paused`` in a transaction
    compared on its absence. From the revision the nodes' watches deliver it, no node
    claims a term or deposes a leader: the leader keeps leading, a handover
    (``Node.resign_leader``, ``stop()``, :func:`force_resign`) still works, and a lost
    leader is not replaced until :func:`resume`.

    Returns:
        (True, the pause) when this call paused; (False, the existing pause) when the
        cluster was already paused (nothing changed).
    """
    deadline = Deadline(timeout)
    value = json.dumps(
        {
            "by": by if by is not None else _whoami(),
            "reason": reason,
        },
        separators=(",", ":"),
    ).encode()
    while True:
        result = client.txn(
            [cmp_create(keys.paused, "EQUAL", 0)], [op_put(keys.paused, value)], deadline=deadline
        )
        if result.succeeded:
            done = PauseStatus.of(Pause.parse(value, result.revision))
            assert done is not None
            return True, done
        current = read_pause(client, keys, deadline.remaining())
        if current is not None:
            return False, current
        if deadline.expired():  # resumed and paused again and again meanwhile
            raise EtcdTimeoutError("pause: the paused key kept changing; retry")


def resume(client: EtcdClient, keys: Keys, timeout: float = DEFAULT_TIMEOUT) -> PauseStatus | None:
    """Leave maintenance mode: delete ``<ns>/paused`` in a transaction compared on the
    mod revision read (a handover may rewrite it meanwhile: then read again). The
    nodes claim and depose again as soon as their watches deliver the deletion.

    Returns:
        The pause that was lifted, None when the cluster was not paused.
    """
    deadline = Deadline(timeout)
    while True:
        kv = client.get(keys.paused, deadline)
        if kv is None:
            return None
        result = client.txn(
            [cmp_mod(keys.paused, "EQUAL", kv.mod_revision)],
            [op_delete(keys.paused)],
            deadline=deadline,
        )
        if result.succeeded:
            return PauseStatus.of(Pause.parse(kv.value, kv.mod_revision))
        if deadline.expired():
            raise EtcdTimeoutError("resume: the paused key kept changing; retry")


# ---------------------------------------------------------------------------- etcd


@dataclass(frozen=True)
class EtcdEndpointStatus:
    """One configured endpoint as its etcd member reports itself (``Maintenance/
    Status``). ``reachable`` False: only ``endpoint`` and ``error`` are set. Sizes are
    in bytes; ``db_size_quota`` is 0 when the member does not report it (etcd < 3.6).
    ``leader`` is the raft leader this member follows (its name when known)."""

    endpoint: str
    reachable: bool
    error: str = ""
    name: str = ""
    member_id: str = ""
    version: str = ""
    leader: str = ""
    is_leader: bool = False
    is_learner: bool = False
    raft_term: int = 0
    raft_index: int = 0
    db_size: int = 0
    db_size_in_use: int = 0
    db_size_quota: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class EtcdStatus:
    """etcd's side: every configured endpoint, and the alarms raised in the cluster
    (``[{"member": name, "member_id": hex, "alarm": "NOSPACE"}]``; ``alarms_error``
    says why they could not be read, ``""`` when they were)."""

    endpoints: list[EtcdEndpointStatus]
    alarms: list[dict[str, str]]
    alarms_error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def problems(self) -> list[str]:
        """What ``etcdraft status --check`` reports: alarms, unreachable endpoints and
        the errors members report."""
        out = [f"etcd alarm {a['alarm']} on {a['member'] or a['member_id']}" for a in self.alarms]
        if self.alarms_error:
            out.append(f"etcd alarms unreadable ({self.alarms_error})")
        for ep in self.endpoints:
            if not ep.reachable:
                out.append(f"etcd endpoint {ep.endpoint} unreachable ({ep.error})")
            elif ep.errors:
                out.append(f"etcd member {ep.name or ep.endpoint}: {'; '.join(ep.errors)}")
        return out


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    low = text.lower()
    if "connection refused" in low:
        return "connection refused"
    if "timed out" in low or "deadline" in low or "did not answer" in low:
        return "no answer in time"
    return text[:160]


def read_etcd(client: EtcdClient, timeout: float = DEFAULT_TIMEOUT) -> EtcdStatus:
    """etcd's own health, as the operator tools show it: each of the client's
    endpoints asked directly (in parallel, no failover) and the cluster's alarms and
    member names through any endpoint. Never raises for an unreachable etcd: that is
    in the result."""
    deadline = Deadline(timeout)
    names: dict[int, str] = {}
    with contextlib.suppress(EtcdraftError):
        names = {m.id: m.name for m in client.admin.member_list(deadline)}

    def one(url: str) -> EtcdEndpointStatus:
        try:
            st = client.admin.status(url, Deadline(deadline.remaining()))
        except EtcdraftError as exc:
            return EtcdEndpointStatus(endpoint=url, reachable=False, error=_short(exc))
        return EtcdEndpointStatus(
            endpoint=url,
            reachable=True,
            name=names.get(st.member_id, ""),
            member_id=format(st.member_id, "x"),
            version=st.version,
            leader=names.get(st.leader, format(st.leader, "x") if st.leader else ""),
            is_leader=st.leader != 0 and st.leader == st.member_id,
            is_learner=st.is_learner,
            raft_term=st.raft_term,
            raft_index=st.raft_index,
            db_size=st.db_size,
            db_size_in_use=st.db_size_in_use,
            db_size_quota=st.db_size_quota,
            errors=list(st.errors),
        )

    urls = client.endpoints
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(urls)))) as pool:
        endpoints = list(pool.map(one, urls))
    alarms: list[dict[str, str]] = []
    alarms_error = ""
    try:
        for a in client.admin.alarms(Deadline(max(deadline.remaining(), 0.001))):
            alarms.append(
                {
                    "member": names.get(a.member_id, ""),
                    "member_id": format(a.member_id, "x"),
                    "alarm": a.alarm,
                }
            )
    except EtcdraftError as exc:
        alarms_error = _short(exc)
    return EtcdStatus(endpoints, alarms, alarms_error)


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
    #: encoded bytes of the whole state (a large block's ``state`` carries no payload)
    size: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "index": self.index,
            "term": self.term,
            "leader": self.leader,
            "hash": self.state.hash.hex(),
            "timestamp": self.state.timestamp,
            "size": self.size or self.state.ByteSize(),
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
                        kv.create_revision, parsed.number, TermRecord.parse(kv.value).node_id
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
                            kv.create_revision, parsed.number, TermRecord.parse(kv.value).node_id
                        )
                continue
            if parsed.kind != "log" or deleted or parsed.number <= self._last_height:
                continue
            try:
                state, size = summarize(kv.value)  # a large block: its manifest, no payload
            except ValueError:
                continue
            with self._lock:
                term = self._view.term_at(kv.mod_revision)
                i = self._view.terms.index(term) if term in self._view.terms else -1
                leader = self._view.term_nodes[i] if i >= 0 else ""
            self._last_height = parsed.number
            self._queue.put(LogEntry(parsed.number, kv.mod_revision, term, leader, state, size))

    def _on_events(self, events: list[WatchEvent], top: int) -> None:
        self._emit([(ev.kv, ev.deleted) for ev in events])

    def _on_compacted(self, compact_revision: int) -> int:
        # re-read what the compaction took; on failure the watch loop tries again
        return self._read(self._last_height + 1, 0)
