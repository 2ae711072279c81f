"""Prometheus metrics for etcdraft nodes (optional: ``pip install 'etcdraft[metrics]'``).

:class:`NodeMetrics` is a custom collector: it reads the node's state when scraped, so
it costs nothing between scrapes and never blocks the node. Expose it with
:func:`serve` (a small HTTP server on loopback by default)::

    from etcdraft.metrics import serve

    server = serve(node, port=9464)          # http://127.0.0.1:9464/metrics
    ...
    server.close()

or register it in your own registry (``NodeMetrics(node, registry=REGISTRY)``) when
your program already exposes Prometheus metrics. Every series has a ``node_id`` label;
one collector can follow several nodes (``NodeMetrics(n1, n2)`` or ``add_node``).

============================================  =====  ======================================
metric                                        type   meaning
============================================  =====  ======================================
``etcdraft_is_leader``                        gauge  1 while ``is_leader()``
``etcdraft_term``                             gauge  current term while leader, else 0
``etcdraft_applied_term``                     gauge  term of the last applied entry
``etcdraft_applied_index``                    gauge  etcd revision of the last applied entry
``etcdraft_applied_height``                   gauge  height of the applied state
``etcdraft_members``                          gauge  members in the node's view
``etcdraft_live_nodes``                       gauge  nodes with a live session
``etcdraft_broadcasts_total``                 ctr    broadcasts that wrote a block
``etcdraft_broadcast_outcomes_total``         ctr    broadcasts by ``outcome`` (see below)
``etcdraft_broadcast_duration_seconds``       hist   broadcast latency (see below)
``etcdraft_applied_total``                    ctr    entries applied
``etcdraft_apply_dropped_total``              ctr    apply notifications dropped (full queue)
``etcdraft_apply_skipped_total``              ctr    entries skipped (corrupt or foreign)
``etcdraft_fenced_rejections_total``          ctr    writes etcd refused: leadership lost
``etcdraft_foreign_keys_total``               ctr    unknown keys seen under the namespace
``etcdraft_keepalive_latency_seconds``        gauge  round trip of the last lease keep-alive
``etcdraft_keepalive_failures``               gauge  keep-alives failed in a row
``etcdraft_lease_ttl_seconds``                gauge  TTL etcd granted to the session lease
``etcdraft_lease_remaining_seconds``          gauge  time before etcd could expire the lease
``etcdraft_watch_connected``                  gauge  1 while the watch stream is open
``etcdraft_watch_reconnects_total``           ctr    watch streams reopened
``etcdraft_watch_resyncs_total``              ctr    resynchronisations after compaction
``etcdraft_watch_gap_entries_total``          ctr    entries the watch skipped (etcd fault),
                                                     applied from a range read
``etcdraft_etcd_endpoint_failovers_total``    ctr    switches to another etcd endpoint
``etcdraft_deposed_total``                    ctr    silent leaders deposed (fast takeover)
``etcdraft_paused``                           gauge  1 while the cluster is paused
                                                     (``etcdraft pause``), as the node sees it
============================================  =====  ======================================

Broadcast outcomes and latency come from :meth:`NodeMetrics.observe_broadcast`. It is
fed automatically when the node offers ``add_broadcast_observer`` (outcomes ``ok``,
``duplicate``, ``not_leader``, ``lost``, ``conflict``, ``invalid``, ``unavailable``,
``error``); otherwise call it yourself around ``node.broadcast`` or use
:meth:`NodeMetrics.broadcast`, which does.

:class:`ClusterMetrics` is the Node-less counterpart: it reads the cluster's state from
etcd at each scrape (what ``etcdraft status`` shows); ``etcdraft demo
--metrics-port`` serves it.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

try:
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "etcdraft.metrics needs prometheus-client: pip install 'etcdraft[metrics]'"
    ) from _exc

from etcdraft.errors import (
    EtcdraftError,
    EtcdUnavailableError,
    HeightConflictError,
    InvalidStateError,
    LeadershipLostError,
    NotLeaderError,
)

if TYPE_CHECKING:
    from etcdraft.etcd import EtcdClient
    from etcdraft.keys import Keys
    from etcdraft.node import Node
    from etcdraft.proto import RaftBlockState

__all__ = [
    "BROADCAST_BUCKETS",
    "BROADCAST_OUTCOMES",
    "ClusterMetrics",
    "MetricsServer",
    "NodeMetrics",
    "serve",
    "serve_cluster",
]

#: Upper bounds (seconds) of the broadcast latency histogram.
BROADCAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Outcomes of ``etcdraft_broadcast_outcomes_total``.
BROADCAST_OUTCOMES = (
    "ok",
    "duplicate",
    "not_leader",
    "lost",
    "conflict",
    "invalid",
    "unavailable",
    "error",
)


#: Series read as they are from one ``NodeStats``: series name → field.
_FROM_STATS = {
    "term": "term",
    "applied_term": "applied_term",
    "applied_index": "applied_index",
    "applied_height": "applied_height",
    "members": "members",
    "live_nodes": "live_nodes",
    "broadcasts": "broadcasts",
    "applied": "applied",
    "apply_dropped": "dropped",
    "apply_skipped": "skipped",
    "fenced_rejections": "fenced_rejections",
    "foreign_keys": "foreign_keys",
    "keepalive_latency_seconds": "keepalive_latency",
    "keepalive_failures": "keepalive_failures",
    "lease_ttl_seconds": "lease_ttl",
    "watch_connected": "watch_connected",
    "watch_reconnects": "watch_reconnects",
    "watch_resyncs": "watch_resyncs",
    "watch_gap_entries": "watch_gap_entries",
    "etcd_endpoint_failovers": "endpoint_failovers",
    "deposed": "deposed",
    "paused": "paused",
}


def outcome_of(exc: BaseException | None) -> str:
    """The ``outcome`` label for a broadcast that raised ``exc`` (None: ``ok``)."""
    if exc is None:
        return "ok"
    if isinstance(exc, LeadershipLostError):
        return "lost"
    if isinstance(exc, NotLeaderError):
        return "not_leader"
    if isinstance(exc, HeightConflictError):
        return "conflict"
    if isinstance(exc, InvalidStateError):
        return "invalid"
    if isinstance(exc, EtcdUnavailableError):
        return "unavailable"
    return "error"


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(BROADCAST_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BROADCAST_BUCKETS, seconds)] += 1
        self.total += seconds

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        acc = 0
        for bound, n in zip((*BROADCAST_BUCKETS, math.inf), self.counts, strict=True):
            acc += n
            out.append(("+Inf" if bound == math.inf else repr(bound), float(acc)))
        return out


class NodeMetrics:
    """A Prometheus collector over one or more :class:`~etcdraft.Node` objects.

    Args:
        *nodes: the nodes to report (more can be added with :meth:`add_node`).
        registry: register in this registry (e.g. ``prometheus_client.REGISTRY``);
            None: do not register.
    """

    def __init__(self, *nodes: Node, registry: CollectorRegistry | None = None) -> None:
        self._lock = threading.Lock()
        self._nodes: list[Node] = []
        self._outcomes: dict[tuple[str, str], int] = {}
        self._latency: dict[str, _Histogram] = {}
        for node in nodes:
            self.add_node(node)
        if registry is not None:
            registry.register(self)

    def add_node(self, node: Node) -> None:
        """Report ``node`` too; hooks into its broadcasts if it offers observers."""
        with self._lock:
            if any(n is node for n in self._nodes):
                return
            self._nodes.append(node)
        hook: Callable[[Callable[[str, float], None]], None] | None = getattr(
            node, "add_broadcast_observer", None
        )
        if hook is not None:
            node_id = node.node_id
            hook(lambda outcome, seconds: self.observe_broadcast(node_id, outcome, seconds))

    def observe_broadcast(self, node_id: str, outcome: str, seconds: float) -> None:
        """Count one broadcast of ``node_id`` with its ``outcome`` and latency."""
        with self._lock:
            key = (node_id, outcome)
            self._outcomes[key] = self._outcomes.get(key, 0) + 1
            self._latency.setdefault(node_id, _Histogram()).observe(seconds)

    def broadcast(self, node: Node, state: RaftBlockState, *, timeout: float | None = None) -> None:
        """``node.broadcast(state)``, observed (for nodes without observer hooks)."""
        started = time.monotonic()
        try:
            node.broadcast(state, timeout=timeout)
        except BaseException as exc:
            self.observe_broadcast(node.node_id, outcome_of(exc), time.monotonic() - started)
            raise
        self.observe_broadcast(node.node_id, "ok", time.monotonic() - started)

    # -- the collector ----------------------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        return list(self._families().values())

    def collect(self) -> Iterable[Metric]:
        fams = self._families()
        with self._lock:
            nodes = list(self._nodes)
            outcomes = dict(self._outcomes)
            latency = {k: (h.buckets(), h.total) for k, h in self._latency.items()}
        for node in nodes:
            labels = [node.node_id]
            for name, value in self._sample(node):
                fam = fams[name]
                fam.add_metric(labels, value)
        for (node_id, outcome), n in sorted(outcomes.items()):
            fams["broadcast_outcomes"].add_metric([node_id, outcome], float(n))
        hist = fams["broadcast_duration_seconds"]
        assert isinstance(hist, HistogramMetricFamily)
        for node_id, (buckets, total) in sorted(latency.items()):
            hist.add_metric([node_id], buckets, total)
        return list(fams.values())

    @staticmethod
    def _families() -> dict[str, Any]:
        def g(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"etcdraft_{name}", doc, labels=["node_id"])

        def c(name: str, doc: str) -> CounterMetricFamily:
            return CounterMetricFamily(f"etcdraft_{name}", doc, labels=["node_id"])

        fams: dict[str, Any] = {
            "is_leader": g("is_leader", "1 while this node leads (is_leader())."),
            "term": g("term", "Current term while leader, else 0."),
            "applied_term": g("applied_term", "Term of the last applied entry."),
            "applied_index": g("applied_index", "etcd revision of the last applied entry."),
            "applied_height": g("applied_height", "Height of the applied state."),
            "members": g("members", "Members in the node's view."),
            "live_nodes": g("live_nodes", "Nodes with a live session in the node's view."),
            "broadcasts": c("broadcasts", "Broadcasts that wrote a block."),
            "applied": c("applied", "Entries applied."),
            "apply_dropped": c("apply_dropped", "Apply notifications dropped (queue full)."),
            "apply_skipped": c("apply_skipped", "Entries skipped (corrupt or foreign)."),
            "fenced_rejections": c(
                "fenced_rejections", "Writes etcd refused because leadership was lost."
            ),
            "foreign_keys": c("foreign_keys", "Unknown keys seen under the namespace."),
            "keepalive_latency_seconds": g(
                "keepalive_latency_seconds", "Round trip of the last lease keep-alive."
            ),
            "keepalive_failures": g("keepalive_failures", "Lease keep-alives failed in a row."),
            "lease_ttl_seconds": g("lease_ttl_seconds", "TTL etcd granted to the session lease."),
            "lease_remaining_seconds": g(
                "lease_remaining_seconds", "Time before etcd could expire the session lease."
            ),
            "watch_connected": g("watch_connected", "1 while the watch stream is open."),
            "watch_reconnects": c("watch_reconnects", "Watch streams reopened."),
            "watch_resyncs": c("watch_resyncs", "Resynchronisations after a compaction."),
            "watch_gap_entries": c(
                "watch_gap_entries",
                "Log entries the watch never delivered (an etcd fault), applied from a read.",
            ),
            "etcd_endpoint_failovers": c(
                "etcd_endpoint_failovers", "Switches to another etcd endpoint."
            ),
            "deposed": c("deposed", "Silent leaders this node deposed (fast takeover)."),
            "paused": g(
                "paused",
                "1 while the cluster is paused (etcdraft pause: no failover), as the node sees it.",
            ),
            "broadcast_outcomes": CounterMetricFamily(
                "etcdraft_broadcast_outcomes",
                "Broadcasts by outcome.",
                labels=["node_id", "outcome"],
            ),
            "broadcast_duration_seconds": HistogramMetricFamily(
                "etcdraft_broadcast_duration_seconds",
                "Latency of broadcast() calls.",
                labels=["node_id"],
            ),
        }
        return fams

    @staticmethod
    def _sample(node: Node) -> Iterator[tuple[str, float]]:
        """Everything from one ``node.stats()`` snapshot (no private attributes)."""
        st = node.stats()
        yield "is_leader", 1.0 if st.role == "leader" else 0.0
        for name, field in _FROM_STATS.items():
            yield name, float(getattr(st, field))  # a bool counts 1.0 or 0.0
        yield "lease_remaining_seconds", max(0.0, st.lease_remaining)


class ClusterMetrics:
    """A Prometheus collector that reads the cluster's state from etcd when scraped
    (no Node needed): ``etcdraft_cluster_*`` series for leader, maintenance mode, term,
    height and each node's liveness, applied height and lag."""

    def __init__(
        self,
        client: EtcdClient,
        keys: Keys,
        *,
        timeout: float = 2.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.timeout = timeout
        if registry is not None:
            registry.register(self)

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        from etcdraft.status import read_status

        ok = GaugeMetricFamily("etcdraft_cluster_up", "1 when etcd answered the scrape.")
        try:
            st = read_status(self.client, self.keys, timeout=self.timeout)
        except EtcdraftError:
            ok.add_metric([], 0.0)
            return [ok]
        ok.add_metric([], 1.0)
        has_leader = GaugeMetricFamily(
            "etcdraft_cluster_has_leader", "1 when a node holds the current term."
        )
        has_leader.add_metric([], 1.0 if st.leader else 0.0)
        paused = GaugeMetricFamily(
            "etcdraft_cluster_paused", "1 while the cluster is paused (etcdraft pause)."
        )
        paused.add_metric([], 0.0 if st.paused is None else 1.0)
        term = GaugeMetricFamily("etcdraft_cluster_term", "Latest term (etcd revision).")
        term.add_metric([], float(st.term))
        height = GaugeMetricFamily("etcdraft_cluster_height", "Height of the log head in etcd.")
        height.add_metric([], float(st.height))
        lbl = ["node_id"]
        leader = GaugeMetricFamily("etcdraft_cluster_leader", "1 for the leader.", labels=lbl)
        member = GaugeMetricFamily("etcdraft_cluster_member", "1 for members.", labels=lbl)
        alive = GaugeMetricFamily("etcdraft_cluster_alive", "1 with a live session.", labels=lbl)
        applied = GaugeMetricFamily(
            "etcdraft_cluster_applied_height", "Applied height as reported.", labels=lbl
        )
        lag = GaugeMetricFamily("etcdraft_cluster_lag", "Heights behind the log head.", labels=lbl)
        for m in st.members:
            leader.add_metric([m.node_id], 1.0 if m.leader else 0.0)
            member.add_metric([m.node_id], 1.0 if m.member else 0.0)
            alive.add_metric([m.node_id], 1.0 if m.alive else 0.0)
            if m.applied_height is not None:
                applied.add_metric([m.node_id], float(m.applied_height))
            if m.lag is not None:
                lag.add_metric([m.node_id], float(m.lag))
        return [ok, has_leader, paused, term, height, leader, member, alive, applied, lag]


@dataclass
class MetricsServer:
    """A running metrics HTTP server; :meth:`close` stops it."""

    port: int
    addr: str
    registry: CollectorRegistry
    _server: Any
    _thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.addr}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _start(registry: CollectorRegistry, port: int, addr: str) -> MetricsServer:
    server, thread = start_http_server(port, addr=addr, registry=registry)
    return MetricsServer(int(server.server_port), addr, registry, server, thread)


def serve(
    node: Node,
    port: int = 0,
    addr: str = "127.0.0.1",
    *,
    registry: CollectorRegistry | None = None,
) -> MetricsServer:
    """Serve ``node``'s metrics on ``http://addr:port/metrics`` (port 0: any free
    port; see ``MetricsServer.port``). Uses a registry of its own unless one is
    given. Bind to a non-loopback ``addr`` only behind your own access control."""
    reg = registry if registry is not None else CollectorRegistry()
    NodeMetrics(node, registry=reg)
    return _start(reg, port, addr)


def serve_cluster(
    client: EtcdClient,
    keys: Keys,
    port: int = 0,
    addr: str = "127.0.0.1",
    *,
    timeout: float = 2.0,
) -> MetricsServer:
    """Serve :class:`ClusterMetrics` for a namespace on ``http://addr:port/metrics``
    (``timeout``: deadline of the etcd reads of one scrape)."""
    reg = CollectorRegistry()
    ClusterMetrics(client, keys, timeout=timeout, registry=reg)
    return _start(reg, port, addr)
