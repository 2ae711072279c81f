"""Progress reports and local snapshots (a part of :class:`~etcdraft.Node`, run by the
session thread every keep-alive round): put ``<ns>/alive/<id>`` with the applied index
and height when they changed (bound to the session lease; members rank handover
targets by it), and write a local snapshot at most every SNAPSHOT_INTERVAL. The node's
start loads the latest local snapshot through it, and its stop writes a last one."""

from __future__ import annotations

import math
import time

from etcdraft._context import NodeContext
from etcdraft._deadline import Deadline
from etcdraft.cluster_view import ClusterView
from etcdraft.errors import EtcdraftError
from etcdraft.fsm import FSM
from etcdraft.view import Progress

__all__ = ["NON_MEMBER_PROGRESS_EVERY", "SNAPSHOT_INTERVAL", "ProgressReporter"]

#: Minimum pause between local snapshots.
SNAPSHOT_INTERVAL = 1.0
#: A node outside the membership reports its progress at most every this many
#: heartbeat_timeout periods (members: every period, for handover ranking).
NON_MEMBER_PROGRESS_EVERY = 10


class ProgressReporter:
    """Owns: the last progress reported and when, and when the last local snapshot
    was written. Called from one thread at a time (start, then the session thread)."""

    def __init__(self, ctx: NodeContext, cluster: ClusterView, fsm: FSM) -> None:
        self._ctx = ctx
        self._cluster = cluster
        self._fsm = fsm
        self._last: Progress | None = None
        self._last_at = -math.inf
        self._last_snapshot = -math.inf

    def load_snapshot(self) -> None:
        """At start, before catching up: restore the FSM from the latest local
        snapshot, if there is one (logged)."""
        snap = self._fsm.load_snapshot()
        if snap is not None:
            height = snap.state.height
            self._ctx.log.info(
                "loaded local snapshot: height %d index %d",
                height,
                snap.index,
                extra=self._ctx.extra(height=height, index=snap.index),
            )

    def final_snapshot(self) -> None:
        """At stop, after the threads ended: write a last local snapshot (a failure
        is logged)."""
        try:
            self._fsm.save_snapshot()
        except OSError as exc:
            self._ctx.log.warning(
                "could not write the final snapshot: %s", exc, extra=self._ctx.extra()
            )

    def new_session(self, deadline: Deadline, lease: int) -> None:
        """A fresh lease: its alive key does not exist yet; report now."""
        self._last = None
        self.report(deadline, lease)

    def report(self, deadline: Deadline, lease: int) -> None:
        client = self._ctx.client
        if client is None or not lease:
            return
        progress = Progress(self._fsm.index, self._fsm.height)
        if progress == self._last:
            return
        now = time.monotonic()
        cfg = self._ctx.config
        if (
            self._last is not None
            and not self._cluster.is_member(self._ctx.id)
            and now - self._last_at < NON_MEMBER_PROGRESS_EVERY * cfg.heartbeat_timeout
        ):
            # every node watches every report: N nodes reporting each heartbeat cost
            # N^2 watch events; a node that can never lead reports rarely
            return
        client.put(
            self._ctx.keys.alive(self._ctx.id), progress.encode(), deadline, lease, lane="control"
        )
        self._last = progress
        self._last_at = now

    def tick(self, lease: int) -> None:
        """One keep-alive round: report progress, maybe write a local snapshot."""
        ctx = self._ctx
        try:
            self.report(Deadline(ctx.config.send_timeout, ctx.stopping), lease)
        except EtcdraftError as exc:
            ctx.warn_once("progress", "progress report failed: %s", exc)
        now = time.monotonic()
        if now - self._last_snapshot >= SNAPSHOT_INTERVAL:
            self._last_snapshot = now
            try:
                self._fsm.save_snapshot()
            except OSError as exc:
                ctx.warn_once("snapshot", "cannot write a local snapshot: %s", exc)
