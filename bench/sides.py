"""The sides of a side-by-side benchmark, each a writer process and receiver
processes: etcdraft nodes (a leader and two followers, ``bench/node_proc.py``) or the
raw client (a writer and two watchers, ``bench/raw_proc.py``). Shared by the broadcast
and the large-state sections of ``bench/run.py``."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    ETCD_ELECTION_MS,
    ETCD_HEARTBEAT_MS,
    Child,
    cpu_seconds,
    etcd_binary,
    pct,
    read_rows,
    wait_for,
)

PEERS3 = "n1@n1:1,n2@n2:1,n3@n3:1"
#: The raw clients ``--raw`` may pick, and how the report names them.
RAW_LABELS = {"grpc": "raw gRPC", "etcd3gw": "raw etcd3gw"}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def start_cluster(size: int, *, fsync: bool = True, **kw: Any) -> Any:
    """An embedded etcd of ``size`` members with etcd's default raft timing; ``fsync``
    on unless told otherwise (``--unsafe-no-fsync`` only for comparisons)."""
    from etcdraft.embedded import EtcdCluster

    cluster = EtcdCluster(
        size=size,
        binary=etcd_binary(),
        heartbeat_interval_ms=ETCD_HEARTBEAT_MS,
        election_timeout_ms=ETCD_ELECTION_MS,
        unsafe_no_fsync=not fsync,
        **kw,
    )
    cluster.start()
    return cluster


def node_args(node_id: str, endpoints: str, namespace: str, *extra: str) -> list[str]:
    return ["--node-id", node_id, "--endpoints", endpoints, "--namespace", namespace, *extra]


Side = tuple[Child, list[Child]]


def spawn_nodes(cluster: Any, d: Path, name: str, ns: str, lib: str | None) -> Side:
    """A leader (``n1``, bootstrapping, waited for) and two followers on ``ns``."""
    eps = ",".join(cluster.endpoints)
    sender = Child(
        "bench.node_proc",
        node_args("n1", eps, ns, "--peers", PEERS3, "--bootstrap"),
        log_dir=d,
        name=f"{name}-n1",
        pythonpath=lib,
    )
    sender.call("wait_leader", timeout=60)
    receivers = [
        Child(
            "bench.node_proc",
            node_args(f"n{i}", eps, ns, "--peers", PEERS3),
            log_dir=d,
            name=f"{name}-n{i}",
            pythonpath=lib,
        )
        for i in (2, 3)
    ]
    return sender, receivers


def spawn_raw(cluster: Any, d: Path, name: str, prefix: str, client: str) -> Side:
    """A raw writer and two raw watchers on ``prefix``, all on the first endpoint."""
    common = ["--client", client, "--endpoint", cluster.endpoints[0], "--prefix", prefix]
    sender = Child("bench.raw_proc", ["--role", "txn", *common], log_dir=d, name=f"{name}-txn")
    receivers = [
        Child("bench.raw_proc", ["--role", "watch", *common], log_dir=d, name=f"{name}-watch{i}")
        for i in (1, 2)
    ]
    return sender, receivers


def wait_ready(procs: dict[str, Side]) -> None:
    for sender, receivers in procs.values():
        for c in [sender, *receivers]:

            def ready(c: Child = c) -> bool:
                return bool(c.call("status", timeout=60).get("ready", True))

            wait_for(ready, 20, f"{c.name} ready")


def run_side(
    side: Side,
    d: Path,
    n: int,
    interval: float,
    tag: str,
    settle: float = 0.3,
    timeout: float = 60.0,
    **run_kw: Any,
) -> dict[str, Any]:
    """One timed run of a side: ``n`` writes by its writer, then the receivers' stamps.
    ``run_kw`` go to the writer's ``run`` (``op``, ``state_bytes``). A run the writer
    refused (a node's ``InvalidStateError``) returns ``{"refused": <message>}``.
    ``deliver_*``: write start -> each receiver had it (both receivers' samples pooled);
    ``every_*``: write start -> the last receiver had it (per height, the later one)."""
    sender, receivers = side
    name = sender.name
    out = d / f"{tag}-{name}-send.txt"
    cpu0 = cpu_seconds(sender.pid)
    rcpu0 = [cpu_seconds(r.pid) for r in receivers]
    reply = sender.call(
        "run", n=n, interval=interval, out=str(out), timeout=timeout + n * 0.05, **run_kw
    )
    if reply.get("refused"):
        return {"refused": reply["refused"]}
    cpu1 = cpu_seconds(sender.pid)
    rows = [(int(h), float(a), float(b)) for h, a, b in read_rows(out)]
    start = {h: a for h, a, _ in rows}
    lat = [(b - a) * 1e3 for _, a, b in rows]
    span = rows[-1][2] - rows[0][1]
    # let the receivers catch up, then collect their stamps
    deliver: list[float] = []
    missing = 0
    last: dict[int, float] = {}  # height -> when the last receiver had it
    time.sleep(settle)
    rcpu = sum(cpu_seconds(r.pid) - c0 for r, c0 in zip(receivers, rcpu0, strict=True))
    for i, r in enumerate(receivers):
        rout = d / f"{tag}-{name}-recv{i}.txt"
        r.call("flush", out=str(rout))
        got = {int(h): float(t) for h, t in read_rows(rout)}
        for h, a in start.items():
            if h in got:
                deliver.append((got[h] - a) * 1e3)
                if i == 0 or h in last:
                    last[h] = max(last.get(h, got[h]), got[h])
            else:
                missing += 1
                last.pop(h, None)
    # start -> every receiver had it (heights some receiver missed are left out)
    every = [(last[h] - a) * 1e3 for h, a in start.items() if h in last]
    return {
        "n": n,
        "rate": n / span if span > 0 else math.nan,
        "lat_ms": lat,
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
        "cpu_us_per_op": (cpu1 - cpu0) / n * 1e6,
        "recv_cpu_us_per_op": rcpu / (n * len(receivers)) * 1e6,
        "deliver_ms": deliver,
        "deliver_p50": pct(deliver, 50),
        "deliver_p99": pct(deliver, 99),
        "deliver_missing": missing,
        "every_ms": every,
        "every_p50": pct(every, 50),
        "every_p99": pct(every, 99),
    }
