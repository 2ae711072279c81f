"""Membership transactions under ``<ns>/members/``, shared by ``Node.add_peer`` /
``Node.remove_peer`` (:func:`add_peer`, :func:`remove_peer`: the node's deadline and
log line around them) and the ``etcdraft members`` command, and the bootstrap of a
namespace's first membership."""

from __future__ import annotations

import logging

from etcdraft._config_values import check_node_id
from etcdraft._context import NodeContext
from etcdraft._deadline import Deadline
from etcdraft.config import Config, parse_peer
from etcdraft.errors import ConfigError, EtcdTimeoutError
from etcdraft.etcd import (
    Compare,
    EtcdClient,
    RequestOp,
    cmp_create,
    cmp_value,
    op_delete,
    op_put,
    op_range,
    prefix_end,
)
from etcdraft.keys import Keys

__all__ = [
    "add_member",
    "add_peer",
    "bootstrap",
    "check_member_id",
    "remove_member",
    "remove_peer",
]

log = logging.getLogger("etcdraft.node")


def check_member_id(node_id: str) -> None:
    """Raise ``ConfigError`` for an id that cannot name a member: the same rule as
    ``Config.node_id`` and the ids of ``Config.peers``."""
    try:
        check_node_id(node_id, "node id")
    except ConfigError as exc:
        raise ConfigError(str(exc), field="node_id") from None


def add_member(client: EtcdClient, keys: Keys, node_id: str, addr: str, deadline: Deadline) -> bool:
    """Add a member: same id and address is a no-op (returns False); a member with the
    same id or the same address is replaced, in one transaction. True when something
    changed.

    Raises:
        ConfigError: empty or malformed id or address.
        EtcdTimeoutError: membership kept changing until ``deadline``.
    """
    parse_peer(f"{node_id}@{addr}")  # same rules as Config.peers
    while True:
        res = client.range(keys.members_prefix, prefix_end(keys.members_prefix), deadline)
        current = {keys.parse(kv.key).name: kv for kv in res.kvs}
        if node_id in current and current[node_id].value == addr.encode():
            return False
        compare: list[Compare] = []
        ops: list[RequestOp] = []
        for other, kv in current.items():
            if other != node_id and kv.value == addr.encode():
                compare.append(cmp_value(kv.key, "EQUAL", kv.value))
                ops.append(op_delete(kv.key))
        member_key = keys.member(node_id)
        prev = current.get(node_id)
        compare.append(cmp_create(member_key, "EQUAL", prev.create_revision if prev else 0))
        ops.append(op_put(member_key, addr.encode()))
        if client.txn(compare, ops, deadline=deadline).succeeded:
            return True
        if deadline.expired():
            raise EtcdTimeoutError(f"adding member {node_id}: membership kept changing; try again")


def remove_member(client: EtcdClient, keys: Keys, node_id: str, deadline: Deadline) -> bool:
    """Remove a member and, in the same transaction, its candidacy, so a removed leader
    is fenced at once. True when an election key of that node was deleted.

    Raises:
        ConfigError: empty id or an id with ``/``.
    """
    check_member_id(node_id)
    res = client.range(keys.election_prefix, prefix_end(keys.election_prefix), deadline)
    ops = [op_delete(keys.member(node_id))]
    compare = []
    for kv in res.kvs:
        if kv.value == node_id.encode():
            compare.append(cmp_value(kv.key, "EQUAL", kv.value))
            ops.append(op_delete(kv.key))
    result = client.txn(compare, ops, deadline=deadline)
    if not result.succeeded:  # a candidacy changed meanwhile: delete what is there
        client.txn([], [op_delete(keys.member(node_id))], deadline=deadline)
    return len(ops) > 1


def add_peer(ctx: NodeContext, node_id: str, addr: str) -> None:
    """``Node.add_peer``: :func:`add_member` within three ``send_timeout``, logged
    when something changed."""
    client = ctx.require_client()
    deadline = Deadline(ctx.config.send_timeout * 3, ctx.stopping)
    if add_member(client, ctx.keys, node_id, addr, deadline):
        ctx.log.info("member %s added at %s", node_id, addr, extra=ctx.extra())


def remove_peer(ctx: NodeContext, node_id: str) -> None:
    """``Node.remove_peer``: :func:`remove_member` within three ``send_timeout``,
    logged (the id is checked before anything else)."""
    check_member_id(node_id)
    client = ctx.require_client()
    deadline = Deadline(ctx.config.send_timeout * 3, ctx.stopping)
    remove_member(client, ctx.keys, node_id, deadline)
    ctx.log.info("member %s removed", node_id, extra=ctx.extra())


def bootstrap(
    client: EtcdClient,
    keys: Keys,
    config: Config,
    deadline: Deadline,
    logger: logging.Logger = log,
) -> dict[str, str] | None:
    """Write the initial membership if the namespace has none: one transaction
    comparing the whole members prefix, so two groups bootstrapping at once cannot
    merge. A namespace whose members are none of this node's peers belongs to
    another cluster: refuse to start.

    Returns the membership written (None: the namespace had members).

    Raises:
        ConfigError: another cluster owns the namespace.
    """
    k = keys
    peers = {p.node_id: p.addr for p in config.peer_list()}
    peers.setdefault(config.node_id, config.raft_addr)
    members_end = prefix_end(k.members_prefix)
    result = client.txn(
        [cmp_create(k.members_prefix, "EQUAL", 0, range_end=members_end)],
        [op_put(k.member(nid), addr.encode()) for nid, addr in sorted(peers.items())],
        [op_range(k.members_prefix, members_end)],
        deadline=deadline,
    )
    if result.succeeded:
        logger.info("bootstrapped membership: %s", ", ".join(sorted(peers)))
        return peers
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
    return None
