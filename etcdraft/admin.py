"""Operator actions on etcd directly, without a running :class:`~etcdraft.Node`
(``etcdraft members``, ``resign``, ``pause`` and ``resume``), with the semantics of
the corresponding ``Node`` methods and the transactions of :mod:`etcdraft.protocol`:

* :func:`list_members`, :func:`add_member` / :func:`remove_member`: ``Node.add_peer`` /
  ``Node.remove_peer``;
* :func:`force_resign`: a *forced* step-down of the current leader (see its doc);
* :func:`pause` / :func:`resume` / :func:`read_pause`: maintenance mode
  (``<ns>/paused``): no term claims and no deposing while it is set, except a
  handover's named successor.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from dataclasses import dataclass

from etcdraft import membership, protocol
from etcdraft._deadline import Deadline
from etcdraft.errors import EtcdTimeoutError, HandoverError
from etcdraft.etcd import EtcdClient, cmp_create, cmp_mod, op_delete, op_put
from etcdraft.keys import Keys
from etcdraft.protocol import DEFAULT_TIMEOUT
from etcdraft.view import Pause

__all__ = [
    "PauseStatus",
    "ResignResult",
    "add_member",
    "force_resign",
    "list_members",
    "pause",
    "read_pause",
    "remove_member",
    "resume",
]


# ---------------------------------------------------------------------------- members


def list_members(
    client: EtcdClient, keys: Keys, timeout: float = DEFAULT_TIMEOUT
) -> dict[str, str]:
    """Membership: node id → advertised address."""
    kvs, _ = protocol.range_all(client, keys.members_prefix, Deadline(timeout))
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
    view = protocol.read_view(client, keys, deadline)
    leader = view.confirmed_leader()
    if leader is None:
        raise HandoverError(
            "there is no confirmed leader to resign (an election is in progress or no "
            "member campaigns); see `etcdraft status`"
        )
    target = view.handover_target(leader.key, leader.node_id, to)
    if target is None:
        who = f"{to!r} is not a live member candidate" if to else "no other live member"
        raise HandoverError(
            f"cannot resign {leader.node_id}: {who} can take over; nothing changed "
            "(start another member or add one with `etcdraft members add`)"
        )
    compare, ops = protocol.handover_txn(
        keys, view, leader.key, leader.create_revision, target, "etcdraft resign"
    )
    result = client.txn(compare, ops, deadline=deadline)
    if not result.succeeded:
        raise HandoverError(
            "the leadership, the successor or the pause changed meanwhile; nothing done; retry"
        )
    old_term = leader.create_revision
    while True:
        term, holder = protocol.latest_term(client, keys, deadline)
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
        return cls(pause.by, pause.at, pause.reason, pause.handover, pause.mod_revision)


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
