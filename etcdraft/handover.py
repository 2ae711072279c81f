"""Handing leadership over to a chosen successor (``Node.resign_leader``; Go:
``raft.Node`` ``leadershipTransfer``).

One fenced transaction names the successor (the oldest live candidate that has
applied everything) and deletes this node's election key; the successor claims the
next term as soon as it sees that, without waiting for the heartbeat timeout. This
node holds its own re-campaign until the successor has claimed. The transaction and
the choice of successor are the protocol's (:mod:`etcdraft.protocol`,
:meth:`etcdraft.view.View.handover_target`), shared with ``etcdraft resign``."""

from __future__ import annotations

import contextlib

from etcdraft import protocol
from etcdraft._context import NodeContext
from etcdraft._deadline import Deadline
from etcdraft.cluster_view import ClusterView
from etcdraft.elector import Elector
from etcdraft.errors import EtcdTimeoutError, HandoverError

__all__ = ["Handover"]


class Handover:
    """Owns nothing but the procedure; runs on the caller's thread."""

    def __init__(self, ctx: NodeContext, cluster: ClusterView, elector: Elector) -> None:
        self._ctx = ctx
        self._cluster = cluster
        self._elector = elector

    def resign(
        self, timeout: float | None, exclusive: contextlib.AbstractContextManager[object]
    ) -> None:
        """See ``Node.resign_leader``; ``exclusive`` keeps broadcasts out while the
        handover transaction runs."""
        elector = self._elector
        if not elector.holds_term():
            return
        ctx = self._ctx
        client = ctx.require_client()
        cfg = ctx.config
        wait = cfg.send_timeout * 5 if timeout is None else timeout
        deadline = Deadline(wait)
        with exclusive:
            lead, view = elector.snapshot()
            old_term, my_key = lead.term, lead.key
            target = view.handover_target(my_key, ctx.id)
            if target is None:
                # the watch may not have delivered a fresh candidate yet: ask etcd
                view = protocol.read_view(client, ctx.keys, deadline.sub(cfg.send_timeout))
                target = view.handover_target(my_key, ctx.id)
            if target is None:
                raise HandoverError(
                    f"no live member can take leadership over from {ctx.id}: start "
                    "another member or add one with add_peer()"
                )
            compare, ops = protocol.handover_txn(ctx.keys, view, my_key, old_term, target, ctx.id)
            ctx.log.info(
                "handing leadership over to %s (term %d)",
                target.node_id,
                old_term,
                extra=ctx.extra(term=old_term),
            )
            elector.hold_campaign(wait)  # until the successor has claimed
            result = client.txn(compare, ops, deadline=deadline.sub(cfg.send_timeout))
            if not result.succeeded:
                elector.hold_campaign(0)
                kv = client.get(my_key, deadline)
                if kv is None or kv.create_revision != old_term:
                    elector.step_down("leadership lost during handover")
                    return
                raise HandoverError(
                    f"handover to {target.node_id} failed: it is no longer a candidate (or "
                    "the cluster was paused or resumed meanwhile); retry"
                )
            elector.step_down(f"handed over to {target.node_id}")

        def taken() -> bool:
            new_term, holder = self._cluster.latest_term()
            return new_term > old_term and holder != ctx.id

        if not self._cluster.wait(taken, deadline.remaining()):
            raise EtcdTimeoutError(
                f"resign_leader: {target.node_id} did not take leadership within {wait:.3g}s"
            )
        elector.hold_campaign(0)
        elector.wake()
