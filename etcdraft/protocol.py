"""The protocol on etcd, written once for :class:`~etcdraft.Node` and the operator
tools (:mod:`etcdraft.status`, :mod:`etcdraft.admin`, :mod:`etcdraft.follow`,
:mod:`etcdraft.history`).

The key shapes are in :mod:`etcdraft.keys`, the rules that read a view (the leader,
the confirmed leader, the handover target, the cause of a claim) in
:mod:`etcdraft.view`; this module holds the reads and transactions built on them:
paged range reads, the view read at one revision, the log's head (its height, or
the revision that wrote it), the latest term record, and the handover transaction.
Nothing here keeps state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from etcdraft._deadline import Deadline
from etcdraft.etcd import (
    KV,
    Compare,
    EtcdClient,
    RequestOp,
    cmp_create,
    cmp_mod,
    op_delete,
    op_put,
    prefix_end,
)
from etcdraft.keys import Keys
from etcdraft.view import Candidate, Succession, TermRecord, View

__all__ = [
    "DEFAULT_TIMEOUT",
    "PAGE",
    "handover_txn",
    "latest_term",
    "log_head",
    "log_head_revision",
    "pages",
    "range_all",
    "read_view",
]

#: Keys per range request of a paged read.
PAGE = 1000
#: Default deadline of one operator command's etcd requests, in seconds.
DEFAULT_TIMEOUT = 5.0


def pages(
    client: EtcdClient,
    start: bytes,
    end: bytes,
    deadline: Deadline,
    revision: int = 0,
    *,
    limit: int = PAGE,
    keys_only: bool = False,
) -> Iterator[tuple[list[KV], int]]:
    """The keys in ``[start, end)`` page by page, all at one revision (``revision``,
    or the first page's when 0): yields ``(kvs, revision)`` per page."""
    rev = revision
    while True:
        res = client.range(start, end, deadline, revision=rev, limit=limit, keys_only=keys_only)
        rev = rev or res.revision
        yield list(res.kvs), rev
        if not res.more or not res.kvs:
            return
        start = res.kvs[-1].key + b"\x00"


def range_all(
    client: EtcdClient,
    prefix: bytes,
    deadline: Deadline,
    revision: int = 0,
    *,
    keys_only: bool = False,
) -> tuple[list[KV], int]:
    """Every key under ``prefix`` at one revision (paged), and that revision."""
    kvs: list[KV] = []
    rev = revision
    for page, page_rev in pages(
        client, prefix, prefix_end(prefix), deadline, revision, keys_only=keys_only
    ):
        kvs.extend(page)
        rev = page_rev
    return kvs, rev


def read_view(
    client: EtcdClient,
    keys: Keys,
    deadline: Deadline,
    *,
    on_foreign: Callable[[bytes, str], None] | None = None,
) -> View:
    """Everything a view holds (candidates, members, liveness, term records, the
    pruned marker, the heartbeat, the pause, the succession record), read from etcd
    at one revision. ``on_foreign(key, why)`` hears of keys it ignores."""
    first, rev = range_all(client, keys.election_prefix, deadline)
    kvs = list(first)
    for prefix in (keys.members_prefix, keys.alive_prefix, keys.terms_prefix):
        kvs += range_all(client, prefix, deadline, rev)[0]
    for key in (keys.pruned, keys.heartbeat, keys.paused, keys.succession):
        kvs += client.range(key, None, deadline, revision=rev).kvs
    view = View(revision=rev)
    for kv in kvs:
        why = view.put(keys, kv)
        if why and on_foreign is not None:
            on_foreign(kv.key, why)
    return view


def _last_log_key(client: EtcdClient, keys: Keys, deadline: Deadline, revision: int) -> KV | None:
    """The log's last key at ``revision`` (keys only; None: the log is empty)."""
    res = client.range(
        keys.log_prefix,
        prefix_end(keys.log_prefix),
        deadline,
        revision=revision,
        limit=1,
        keys_only=True,
        descending=True,
    )
    return res.kvs[0] if res.kvs else None


def log_head(client: EtcdClient, keys: Keys, deadline: Deadline, revision: int = 0) -> int:
    """The highest height in the log at ``revision`` (0: none left)."""
    kv = _last_log_key(client, keys, deadline, revision)
    if kv is None:
        return 0
    parsed = keys.parse(kv.key)
    return parsed.number if parsed.kind == "log" else 0


def log_head_revision(client: EtcdClient, keys: Keys, deadline: Deadline) -> int:
    """The revision that wrote the log's last entry, now (0: the log is empty): every
    entry committed before this read is applied once the FSM reaches it."""
    kv = _last_log_key(client, keys, deadline, 0)
    return kv.mod_revision if kv is not None else 0


def latest_term(client: EtcdClient, keys: Keys, deadline: Deadline) -> tuple[int, str]:
    """The latest term record: (term, its leader's node id); (0, "") before any."""
    res = client.range(
        keys.terms_prefix, prefix_end(keys.terms_prefix), deadline, limit=1, descending=True
    )
    for kv in res.kvs:
        parsed = keys.parse(kv.key)
        if parsed.kind == "term":
            return parsed.number, TermRecord.parse(kv.value).node_id
    return 0, ""


def handover_txn(
    keys: Keys,
    view: View,
    leader_key: bytes,
    leader_term: int,
    target: Candidate,
    by: str,
) -> tuple[list[Compare], list[RequestOp]]:
    """The handover transaction (``Node.resign_leader``, ``stop()``, ``etcdraft
    resign``): delete the leader's key (compared on its create revision, the term)
    and the keys queued ahead of ``target``, so ``target`` is first in line; record
    the succession (``handover``, by ``by``); while paused, name ``target`` as the one
    candidate allowed to claim. Compared on ``<ns>/paused`` as read, so a pause or
    resume meanwhile fails it."""
    ahead = [
        c
        for c in view.candidates.values()
        if c.create_revision < target.create_revision and c.key != leader_key
    ]
    pause = view.pause
    compare = [
        cmp_create(leader_key, "EQUAL", leader_term),
        cmp_create(target.key, "EQUAL", target.create_revision),
        cmp_mod(keys.paused, "EQUAL", pause.mod_revision if pause is not None else 0),
    ]
    ops = [op_delete(leader_key)] + [op_delete(c.key) for c in ahead]
    ops.append(op_put(keys.succession, Succession(leader_term, "handover", by).encode()))
    if pause is not None:
        ops.append(op_put(keys.paused, pause.with_handover(target.create_revision)))
    return compare, ops
