"""``Node.stats()``: one consistent, immutable snapshot of what a node knows about
itself, for metrics, health endpoints and operators (no private attributes needed)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:
    from etcdraft.node import Node

__all__ = ["NodeHealth", "NodeStats"]


@dataclass(frozen=True, slots=True)
class NodeStats:
    """A snapshot of one node (all local, no I/O).

    Attributes:
        node_id: this node.
        role: ``"leader"`` (``is_leader()``), ``"candidate"`` (queued in the election),
            ``"follower"``, or ``"stopped"``.
        term: the current term while leader, else 0.
        leader_id: the leader as last seen (``""`` when unknown).
        applied_index: etcd revision of the last applied entry.
        applied_height: height of the last applied state.
        observed_revision: the highest etcd revision this node has seen (a lower bound
            of what etcd committed).
        lease_remaining: seconds before etcd could expire this node's lease, from the
            send time of the last answered keep-alive (negative or 0: none valid).
        last_heartbeat_age: seconds since the send time of the last heartbeat etcd
            acknowledged in this term (leader with fast takeover), else None.
        broadcasts, fenced_rejections, deposed, foreign_keys, applied, dropped,
        skipped, corrupt_blocks, pieces_written, pieces_cleaned, watch_reconnects,
        watch_resyncs, keepalive_failures, endpoint_failovers: counters since start.
        etcd_full: the last write failed on etcd's NOSPACE alarm.
        applied_term: term of the last applied entry.
        members, live_nodes: members, and nodes with a live session, in the view.
        paused: the cluster is in maintenance mode (``etcdraft pause``), as seen.
        leader_remaining: while leader, seconds before this node stops believing it
            leads (``is_leader()`` turns False) unless etcd acknowledges it again: the
            earlier of its lease deadline and, with fast takeover, the heartbeat
            deadline; None when not leader.
        lease_ttl: the TTL etcd granted to the session lease (0 before start).
        keepalive_latency: round trip of the last answered keep-alive (seconds).
        watch_connected: the watch stream is open.
        watch_gap_entries: log entries the watch never delivered, found and applied
            by the range read that precedes every reopened watch (an etcd watch
            fault; see docs/operations.md).
    """

    node_id: str
    role: str
    term: int
    leader_id: str
    applied_index: int
    applied_height: int
    observed_revision: int
    lease_remaining: float
    last_heartbeat_age: float | None
    broadcasts: int
    fenced_rejections: int
    deposed: int
    foreign_keys: int
    applied: int
    dropped: int
    skipped: int
    corrupt_blocks: int
    pieces_written: int
    pieces_cleaned: int
    watch_reconnects: int
    watch_resyncs: int
    keepalive_failures: int
    endpoint_failovers: int
    etcd_full: bool
    applied_term: int = 0
    members: int = 0
    live_nodes: int = 0
    paused: bool = False
    leader_remaining: float | None = None
    lease_ttl: float = 0.0
    keepalive_latency: float = 0.0
    watch_connected: bool = False
    watch_gap_entries: int = 0


@dataclass(frozen=True, slots=True)
class NodeHealth:
    """What liveness and readiness probes need (``etcdraft.http_api``).

    Attributes:
        stopping: ``stop()``/``shutdown()`` has begun (or the node is closed).
        dead_threads: the node's threads that are not running (``control``,
            ``session``, ``watch``, ``apply``).
        session_live: the node has an etcd session whose lease cannot have expired.
        answering: the node's view answered within the probe's timeout (no thread
            holds it stuck).
    """

    stopping: bool
    dead_threads: tuple[str, ...]
    session_live: bool
    answering: bool


class Counter(property):
    """A read-only ``int`` property of :class:`~etcdraft.Node` whose value one of its
    parts keeps (the counters a node offers besides ``stats()``)::

        broadcasts = Counter(lambda node: node._broadcaster.broadcasts)
    """

    def __init__(self, read: Callable[[Node], int]) -> None:
        super().__init__(read)
        self._read = read

    @overload
    def __get__(self, node: None, owner: type | None = None, /) -> Counter: ...
    @overload
    def __get__(self, node: Any, owner: type | None = None, /) -> int: ...
    def __get__(self, node: Any, owner: type | None = None, /) -> Counter | int:
        return self if node is None else self._read(node)
