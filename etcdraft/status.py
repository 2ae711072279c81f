"""Operator tools that work on etcd directly, without a running :class:`~etcdraft.Node`.

This is what ``etcdraft status`` uses; it also re-exports the actions of
:mod:`etcdraft.admin` and the log follower of :mod:`etcdraft.follow` (what ``members``,
``resign``, ``pause``, ``resume`` and ``watch`` use), so ``etcdraft.status`` stays the
one import for operator tools. Reads and transactions come from
:mod:`etcdraft.protocol`, the layer ``Node`` uses too:

* :func:`read_status`: leader, term, height and every member's address, liveness,
  applied height and lag, read at one etcd revision;
* :func:`read_etcd`: etcd's own side: each endpoint's status (version, raft leader and
  term, database size, quota) and the cluster's alarms (``NOSPACE``...);
* :func:`read_history` (from :mod:`etcdraft.history`): the terms etcd still records;
* from :mod:`etcdraft.admin`: :func:`add_member` / :func:`remove_member`,
  :func:`force_resign`, :func:`pause` / :func:`resume`;
* from :mod:`etcdraft.follow`: :class:`LogFollower`, the stream of replicated blocks.

::

    from etcdraft.status import connect, read_status

    client, keys = connect(endpoints=["http://127.0.0.1:2379"], namespace="/etcdraft/x")
    print(read_status(client, keys).to_dict())
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from etcdraft import protocol
from etcdraft._deadline import Deadline
from etcdraft.admin import (
    PauseStatus,
    ResignResult,
    add_member,
    force_resign,
    list_members,
    pause,
    read_pause,
    remove_member,
    resume,
)
from etcdraft.config import Config
from etcdraft.errors import ConfigError, EtcdraftError
from etcdraft.etcd import EtcdClient
from etcdraft.follow import LogEntry, LogFollower
from etcdraft.history import TermInfo, read_history
from etcdraft.keys import Keys
from etcdraft.protocol import DEFAULT_TIMEOUT

__all__ = [
    "DEFAULT_TIMEOUT",
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
    "unreachable_reason",
]


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
    fields.setdefault("raft_addr", "")  # a tool is no member (see cli._connect)
    config = Config(**fields)
    return client_for(config), Keys(config.namespace)


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


def read_status(client: EtcdClient, keys: Keys, timeout: float = DEFAULT_TIMEOUT) -> ClusterStatus:
    """Read the cluster's state from etcd (a handful of range reads at one revision).

    Raises:
        EtcdUnavailableError: etcd could not be reached within ``timeout``.
        EtcdAuthError: credentials rejected or no permission on the namespace.
    """
    deadline = Deadline(timeout)
    view = protocol.read_view(client, keys, deadline)
    height = protocol.log_head(client, keys, deadline, view.revision)
    height = max(height, view.pruned)
    leader = view.confirmed_leader()
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


#: What the operator tools say of an unreachable etcd, by the error's ``reason``.
UNREACHABLE = {
    "refused": "connection refused",
    "unknown_host": "unknown host",
    "timeout": "no answer in time",
    "no_leader": "etcd has no leader (lost quorum?)",
    "deadline": "deadline too short",
    "not_etcd": "not etcd's client port",
    "closed": "connection closed",
}


def unreachable_reason(exc: BaseException) -> str:
    """One short phrase for why etcd could not be reached (``status``, the CLI's
    errors): by the error's ``reason``, else the last error its message names."""
    reason = getattr(exc, "reason", "")
    if reason in UNREACHABLE:
        return UNREACHABLE[reason]
    return " ".join(str(exc).split()).rsplit("last error:", 1)[-1].strip()[:160]


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
            return EtcdEndpointStatus(endpoint=url, reachable=False, error=unreachable_reason(exc))
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
        alarms_error = unreachable_reason(exc)
    return EtcdStatus(endpoints, alarms, alarms_error)
