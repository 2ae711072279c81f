"""Log retention for the leader (a part of :class:`~etcdraft.Node`, run by the
elector's control thread): delete old log entries with their large blocks' pieces and
the term records no remaining entry needs, and sweep the pieces of large-block
attempts that never committed. Every write is fenced on the leader's term."""

from __future__ import annotations

import bisect
import contextlib
import time
from typing import Any

from etcdraft._context import NodeContext
from etcdraft._deadline import Deadline
from etcdraft.blocks import is_manifest, parse_manifest
from etcdraft.cluster_view import ClusterView
from etcdraft.errors import CorruptDataError, EtcdraftError
from etcdraft.etcd import EtcdClient, cmp_create, op_delete, op_put, prefix_end
from etcdraft.fsm import FSM
from etcdraft.view import View

__all__ = ["PIECE_SWEEP_EVERY", "PRUNE_BATCH", "Pruner"]

#: Heights deleted per pruning transaction.
PRUNE_BATCH = 1000
#: Seconds between two sweeps of uncommitted large-block pieces by the leader.
PIECE_SWEEP_EVERY = 5.0


class Pruner:
    """Owns: when the pieces were last swept, and the count of pieces removed."""

    def __init__(self, ctx: NodeContext, cluster: ClusterView, fsm: FSM) -> None:
        self._ctx = ctx
        self._cluster = cluster
        self._fsm = fsm
        self._last_sweep = -float("inf")
        self.pieces_cleaned = 0

    def figures(self) -> dict[str, Any]:
        """This part's fields of :class:`~etcdraft.stats.NodeStats`."""
        return {"pieces_cleaned": self.pieces_cleaned}

    def retain(self, client: EtcdClient, key: bytes, term: int) -> bool:
        """One step of the leader's control loop: pruning and the piece sweep, which
        must never hold up the next heartbeat: with fast takeover their I/O gets at
        most half a ``heartbeat_timeout`` (a range delete and a keys-only read), and a
        failure is retried on a later step without the control loop's back-off.
        Returns True when it pruned (look again at once)."""
        cfg = self._ctx.config
        budget = min(cfg.send_timeout, cfg.heartbeat_timeout / 2) if cfg.fast_takeover else None
        deadline = Deadline(budget or cfg.send_timeout, self._ctx.stopping)
        try:
            return self.maybe_prune(client, deadline, key, term)
        except EtcdraftError as exc:
            self._ctx.warn_once("prune", "pruning failed (will retry): %s", exc)
            return False

    def maybe_prune(self, client: EtcdClient, deadline: Deadline, key: bytes, term: int) -> bool:
        """Delete old log entries (and their large blocks' pieces): keep the newest
        ``trailing_logs`` entries, and at most ``trailing_bytes`` of them; prune once
        ``snapshot_threshold`` extra entries (or a quarter of ``trailing_bytes``) have
        accumulated. Fenced on this node's term (``key``, ``term``) like every leader write.
        Returns True when it pruned."""
        cfg = self._ctx.config
        view = self._cluster.snapshot()
        pruned = view.pruned
        self._fsm.forget_sizes(pruned)
        head = self._fsm.height
        count_cut = head - cfg.trailing_logs
        byte_cut = self._fsm.byte_cut(cfg.trailing_bytes)
        over_count = head - pruned > cfg.trailing_logs + cfg.snapshot_threshold
        over_bytes = byte_cut > pruned and self._fsm.byte_cut(cfg.trailing_bytes * 5 // 4) > pruned
        if not (over_count or over_bytes):
            self._maybe_clean_pieces(client, deadline, key, term, head)
            return False
        cut = max(count_cut, byte_cut)
        upto = min(cut, pruned + PRUNE_BATCH)
        k = self._ctx.keys
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
            self._ctx.log.debug("pruned log heights %d..%d", pruned + 1, upto)
            self._fsm.forget_sizes(upto)
            self._prune_terms(client, deadline, key, term, upto, view)
            return True
        return False

    def _maybe_clean_pieces(
        self, client: EtcdClient, deadline: Deadline, key: bytes, term: int, head: int
    ) -> None:
        """Remove the pieces of large-block attempts that never committed (a failed
        broadcast, a deposed or dead leader): any attempt at a height at or below the
        applied head whose nonce is not the one of that height's committed manifest.
        Runs at most every PIECE_SWEEP_EVERY seconds on the leader."""
        now = time.monotonic()
        if now - self._last_sweep < PIECE_SWEEP_EVERY:
            return
        self._last_sweep = now
        k = self._ctx.keys
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
            self._ctx.log.info(
                "removed the pieces of %d large-block attempt(s) that never committed "
                "(heights %d..%d)",
                len(ops),
                garbage[0][0],
                garbage[min(len(garbage), PRUNE_BATCH // 10) - 1][0],
                extra=self._ctx.extra(),
            )

    def _prune_terms(
        self,
        client: EtcdClient,
        deadline: Deadline,
        key: bytes,
        term: int,
        upto: int,
        view: View,
    ) -> None:
        """Delete term records no remaining log entry needs: all but the one in force
        at the oldest entry left in etcd, and the later ones."""
        k = self._ctx.keys
        oldest = client.range(k.log(upto + 1), prefix_end(k.log_prefix), deadline, limit=1)
        if not oldest.kvs:
            return
        revs, terms = view.term_revs, view.terms
        needed = bisect.bisect_left(revs, oldest.kvs[0].mod_revision) - 1
        stale = terms[: max(0, needed)][: PRUNE_BATCH // 10]
        if stale:
            client.txn(
                [cmp_create(key, "EQUAL", term)],
                [op_delete(k.term(t)) for t in stale],
                deadline=deadline,
            )
