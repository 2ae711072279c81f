"""The etcdraft benchmark: ``python -m bench`` (or ``python bench/run.py``).

Runs on embedded etcd clusters (1 and 3 members, etcd's default raft timing
100 ms / 1000 ms, fsync on), every node in its own process, and prints the targets of
issue #12 and a table with ratios against the raw baseline (``--raw grpc``, the
default: the cheapest client there is, grpcio with etcd's generated stubs; ``--raw
etcd3gw``: the JSON-gateway baseline of before, for history), writes
``bench/results.json`` and PNG plots into ``docs/bench/``. Every round alternates the
sides so machine drift cancels; the figures are medians over rounds. See
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# the benchmark starts processes (fork + exec) after its own gRPC calls (the floor, the
# long run's sampling): grpc's fork handlers would only log that they are skipped.
# Set before grpc is imported; the children never fork.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

if __package__ in (None, ""):  # python bench/run.py
    sys.path.append(str(Path(__file__).resolve().parent.parent))

from bench.common import (
    REPO_DIR,
    Child,
    cpu_seconds,
    etcd_binary,
    kill_children,
    machine,
    median,
    parse_size,
    pct,
    rss_bytes,
    wait_for,
)
from bench.report import ab_table, table, targets
from bench.sides import (
    PEERS3,
    RAW_LABELS,
    log,
    node_args,
    run_side,
    spawn_nodes,
    spawn_raw,
    start_cluster,
    wait_ready,
)

#: Every section, in the order they run (the default of --only).
SECTIONS = ("broadcast", "large", "large-long", "failover", "idle", "startup", "aio", "long")


def summarize(xs: list[float]) -> dict[str, float]:
    return {
        "n": len(xs),
        "p50": pct(xs, 50),
        "p90": pct(xs, 90),
        "p99": pct(xs, 99),
        "max": max(xs) if xs else math.nan,
    }


# =============================================================================== broadcast


def bench_broadcast(
    size: int, opts: argparse.Namespace, work: Path, sides: dict[str, str | None] | None = None
) -> dict[str, Any]:
    """Sequential writes, side by side: ``sides`` maps a side name to ``"raw"`` (the raw
    client of ``--raw``: gRPC by default) or to the PYTHONPATH entry of an etcdraft copy
    (None: the installed one). Each side has its writer process and two receiver
    processes (etcdraft follower nodes, or raw watchers). Rounds alternate the sides.
    Measures write latency and rate, client CPU, and delivery to the receivers under
    load and for isolated writes (one every 150 ms); then the floor (``bench/floor.py``)
    on the same etcd."""
    sides = sides or {"etcdraft": opts.lib, "raw": "raw"}
    names = list(sides)
    log(f"broadcast: {size}-member etcd, {' vs '.join(names)} (raw client: {opts.raw})")
    d = work / f"bcast{size}-{'-'.join(names)}"
    d.mkdir(parents=True, exist_ok=True)
    cluster = start_cluster(size, fsync=not opts.no_fsync)
    procs: dict[str, tuple[Child, list[Child]]] = {}
    try:
        for side, spec in sides.items():
            if spec == "raw":
                prefix = f"/bench-raw/b{size}-{side}"
                procs[side] = spawn_raw(cluster, d, side, prefix, opts.raw)
            else:
                procs[side] = spawn_nodes(cluster, d, side, f"/bench/bcast{size}-{side}", spec)
        wait_ready(procs)

        def one_run(side: str, n: int, interval: float, tag: str) -> dict[str, Any]:
            return run_side(procs[side], d, n, interval, tag)

        # warm-up (connections, caches, etcd's own warm-up); not counted
        for side in names:
            one_run(side, opts.warmup, 0.0, "warmup")
        load_rounds: list[dict[str, Any]] = []
        a, b = names
        for r in range(opts.rounds):
            order = names if r % 2 == 0 else names[::-1]
            res = {side: one_run(side, opts.n, 0.0, f"load{r}") for side in order}
            load_rounds.append(res)
            e, w = res[a], res[b]
            log(
                f"  round {r + 1}/{opts.rounds}: {a} {e['rate']:.0f}/s p50 {e['p50']:.3f} ms "
                f"cpu {e['cpu_us_per_op']:.0f} us | {b} {w['rate']:.0f}/s p50 {w['p50']:.3f} ms "
                f"cpu {w['cpu_us_per_op']:.0f} us | delivery p50 {e['deliver_p50']:.2f} / "
                f"{w['deliver_p50']:.2f} ms"
            )
        iso_rounds: list[dict[str, Any]] = []
        for r in range(opts.iso_rounds):
            order = names[::-1] if r % 2 == 0 else names
            res = {side: one_run(side, opts.iso_n, 0.15, f"iso{r}") for side in order}
            iso_rounds.append(res)
            e, w = res[a], res[b]
            log(
                f"  isolated {r + 1}/{opts.iso_rounds}: delivery p50 {e['deliver_p50']:.2f} / "
                f"{w['deliver_p50']:.2f} ms, p99 {e['deliver_p99']:.2f} / {w['deliver_p99']:.2f}"
                f" | write p50 {e['p50']:.3f} / {w['p50']:.3f} ms"
            )
        quorum = {}
        for side, spec in sides.items():
            if spec != "raw":
                q = procs[side][0].call("quorum", n=opts.quorum_n, timeout=120)
                quorum[side] = {
                    "p50": pct(q["lat_ms"], 50),
                    "p99": pct(q["lat_ms"], 99),
                    "ok": q["ok"],
                    "n": opts.quorum_n,
                }
        # the floor: the cheapest client (raw gRPC) on the same etcd, same conditions
        from bench.floor import bench_floor

        floor = bench_floor(cluster, opts.iso_rounds, opts.iso_n, log=log)
        return {
            "size": size,
            "sides": names,
            "raw_client": opts.raw,
            "fsync": not opts.no_fsync,
            "load": load_rounds,
            "isolated": iso_rounds,
            "etcd_version": ".".join(map(str, cluster.version)),
            "has_quorum": quorum,
            "floor": floor,
        }
    finally:
        for sender, receivers in procs.values():
            for c in [sender, *receivers]:
                c.stop(timeout=5)
        cluster.close()


def reduce_broadcast(res: dict[str, Any]) -> dict[str, Any]:
    """Medians over rounds (paired ratios/differences per round)."""
    a, b = res["sides"]
    out: dict[str, Any] = {
        "size": res["size"],
        "etcd_version": res["etcd_version"],
        "sides": [a, b],
        "raw_client": res.get("raw_client", "grpc"),
        "fsync": res.get("fsync", True),
        "has_quorum": res.get("has_quorum", {}),
        "floor": res.get("floor"),
    }
    for kind in ("load", "isolated"):
        rounds = res[kind]
        e = [r[a] for r in rounds]
        w = [r[b] for r in rounds]
        out[kind] = {
            "rounds": len(rounds),
            a: {
                k: median(x[k] for x in e)
                for k in (
                    "rate",
                    "p50",
                    "p99",
                    "cpu_us_per_op",
                    "recv_cpu_us_per_op",
                    "deliver_p50",
                    "deliver_p99",
                )
            },
            b: {
                k: median(x[k] for x in w)
                for k in (
                    "rate",
                    "p50",
                    "p99",
                    "cpu_us_per_op",
                    "recv_cpu_us_per_op",
                    "deliver_p50",
                    "deliver_p99",
                )
            },
            "rate_ratio": median(a["rate"] / b["rate"] for a, b in zip(e, w, strict=True)),
            "p50_overhead_ms": median(a["p50"] - b["p50"] for a, b in zip(e, w, strict=True)),
            "p99_overhead_ms": median(a["p99"] - b["p99"] for a, b in zip(e, w, strict=True)),
            "deliver_ratio_p50": median(
                x["deliver_p50"] / y["deliver_p50"] for x, y in zip(e, w, strict=True)
            ),
            "cpu_ratio": median(
                x["cpu_us_per_op"] / y["cpu_us_per_op"] for x, y in zip(e, w, strict=True)
            ),
            "deliver_missing": sum(x["deliver_missing"] for x in e + w),
            "per_round": [
                {
                    side: {
                        k: r[side][k]
                        for k in (
                            "rate",
                            "p50",
                            "p99",
                            "cpu_us_per_op",
                            "recv_cpu_us_per_op",
                            "deliver_p50",
                            "deliver_p99",
                        )
                    }
                    for side in (a, b)
                }
                for r in rounds
            ],
        }
    floor = res.get("floor") or {}
    if floor.get("grpc"):
        # the isolated apply at a follower process against the raw put-and-watch floor
        iso = out["isolated"][a]
        out["apply_vs_floor"] = iso["deliver_p50"] / floor["grpc"]["deliver_p50"]
        out["apply_vs_floor_txn"] = iso["deliver_p50"] / floor["grpc_txn"]["deliver_p50"]
    return out


# =============================================================================== failover


class Tail:
    """Incremental reader of a whitespace-separated record file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pos = 0
        self.rows: list[list[str]] = []
        self._partial = ""

    def poll(self) -> list[list[str]]:
        try:
            with open(self.path) as fh:
                fh.seek(self.pos)
                data = fh.read()
                self.pos = fh.tell()
        except OSError:
            return []
        data = self._partial + data
        lines = data.split("\n")
        self._partial = lines.pop()
        new = [ln.split() for ln in lines if ln.strip()]
        self.rows += new
        return new


class Group:
    """Three node processes producing blocks on one namespace (one takeover mode)."""

    def __init__(self, name: str, fast: bool, eps: str, d: Path, lib: str | None) -> None:
        self.name, self.fast, self.eps, self.lib = name, fast, eps, lib
        self.dir = d / name
        self.ns = f"/bench/failover-{name}"
        self.procs: dict[str, Child] = {}
        self.acks = {f"n{i}": Tail(self.dir / f"n{i}" / "acks.txt") for i in (1, 2, 3)}
        self.events = {f"n{i}": Tail(self.dir / f"n{i}" / "events.txt") for i in (1, 2, 3)}
        self.restarts = 0

    def spawn(self, nid: str, bootstrap: bool = False) -> None:
        args = node_args(
            nid,
            self.eps,
            self.ns,
            "--peers",
            PEERS3,
            "--produce",
            "0.05",
            "--fast-takeover",
            "true" if self.fast else "false",
            "--record",
            str(self.dir / nid),
        )
        if bootstrap:
            args.append("--bootstrap")
        env = {"ETCDRAFT_FAST_TAKEOVER": "true" if self.fast else "false"}
        self.procs[nid] = Child(
            "bench.node_proc",
            args,
            log_dir=self.dir,
            name=f"{nid}-{self.restarts}",
            env=env,
            pythonpath=self.lib,
        )
        self.restarts += 1

    def start(self) -> None:
        self.spawn("n1", bootstrap=True)
        self.procs["n1"].call("wait_leader", timeout=60)
        self.spawn("n2")
        self.spawn("n3")
        self.ready()

    def ready(self) -> None:
        for p in self.procs.values():
            p.call("status", timeout=60)

    def leader(self, timeout: float = 20.0) -> str:
        def find() -> str | None:
            for nid, p in self.procs.items():
                if p.alive() and p.call("status", timeout=5).get("leader"):
                    return nid
            return None

        return str(wait_for(find, timeout, f"{self.name}: a leader", interval=0.05))

    def first_ack_after(self, t0: float, exclude: str, timeout: float) -> tuple[str, float, float]:
        """(node, t_start, t_end) of the first acknowledged broadcast by another node
        whose broadcast ended after t0."""

        def find() -> tuple[str, float, float] | None:
            best = None
            for nid, tail in self.acks.items():
                tail.poll()
                if nid == exclude:
                    continue
                for _h, a, b in (row[:3] for row in reversed(tail.rows)):
                    if float(b) <= t0:
                        break
                    if best is None or float(b) < best[2]:
                        best = (nid, float(a), float(b))
            return best

        found: tuple[str, float, float] = wait_for(
            find, timeout, f"{self.name}: first broadcast of a new leader", 0.005
        )
        return found

    def leader_event_after(self, t0: float, nid: str) -> float | None:
        tail = self.events[nid]
        tail.poll()
        for row in tail.rows:
            if row[0] == "leader" and float(row[1]) > t0:
                return float(row[1])
        return None

    def stop(self) -> None:
        for p in self.procs.values():
            p.stop(timeout=5)


def bench_failover(opts: argparse.Namespace, work: Path) -> dict[str, Any]:
    log("failover: 3-member etcd (etcd default flags 100/1000), 3 node processes per mode")
    d = work / "failover"
    cluster = start_cluster(3, fsync=not opts.no_fsync)
    rng = random.Random(opts.seed)
    groups = {
        "fast": Group("fast", True, ",".join(cluster.endpoints), d, opts.lib),
        "lease": Group("lease", False, ",".join(cluster.endpoints), d, opts.lib),
    }
    results: dict[str, list[dict[str, Any]]] = {
        "crash_fast": [],
        "crash_lease": [],
        "resign_fast": [],
        "resign_lease": [],
    }
    try:
        for g in groups.values():
            g.start()
        time.sleep(1.0)
        for r in range(opts.failover_rounds):
            order = ["fast", "lease"] if r % 2 == 0 else ["lease", "fast"]
            for gname in order:
                g = groups[gname]
                g.ready()
                old = g.leader()
                # random kill phase relative to the leader's heartbeat and blocks
                time.sleep(1.0 + rng.uniform(0.0, 0.5))
                proc = g.procs[old]
                t0 = time.monotonic()
                proc.kill()
                proc.proc.wait(10)
                nid, a, b = g.first_ack_after(t0, old, timeout=30)
                ev = g.leader_event_after(t0, nid)
                rec = {
                    "round": r,
                    "old": old,
                    "new": nid,
                    "t_kill": t0,
                    "to_leader_ms": (ev - t0) * 1e3 if ev else None,
                    "to_first_broadcast_ms": (b - t0) * 1e3,
                    "first_broadcast_ms": (b - a) * 1e3,
                }
                results[f"crash_{gname}"].append(rec)
                log(
                    f"  crash {gname:5s} round {r + 1}: {old}->{nid} leader "
                    f"{rec['to_leader_ms'] or float('nan'):.0f} ms, first broadcast "
                    f"{rec['to_first_broadcast_ms']:.0f} ms"
                )
                proc.stop(timeout=1)
                g.spawn(old)
        for g in groups.values():
            g.ready()
        time.sleep(1.0)
        for r in range(opts.resign_rounds):
            order = ["fast", "lease"] if r % 2 == 0 else ["lease", "fast"]
            for gname in order:
                g = groups[gname]
                old = g.leader()
                time.sleep(0.3 + rng.uniform(0.0, 0.2))
                reply = g.procs[old].call("resign", timeout=30)
                t0 = float(reply["t"])
                nid, a, b = g.first_ack_after(t0, old, timeout=30)
                ev = g.leader_event_after(t0, nid)
                rec = {
                    "round": r,
                    "old": old,
                    "new": nid,
                    "to_leader_ms": (ev - t0) * 1e3 if ev else None,
                    "to_first_broadcast_ms": (b - t0) * 1e3,
                    "resign_call_ms": (float(reply["t_done"]) - t0) * 1e3,
                }
                results[f"resign_{gname}"].append(rec)
                log(
                    f"  resign {gname:5s} round {r + 1}: {old}->{nid} first broadcast "
                    f"{rec['to_first_broadcast_ms']:.1f} ms"
                )
    finally:
        for g in groups.values():
            g.stop()
        cluster.close()
    summary = {}
    for k, recs in results.items():
        xs = [x["to_first_broadcast_ms"] for x in recs]
        ls = [x["to_leader_ms"] for x in recs if x["to_leader_ms"] is not None]
        summary[k] = {
            "rounds": len(recs),
            "p50": median(xs),
            "min": min(xs, default=math.nan),
            "max": max(xs, default=math.nan),
            "to_leader_p50": median(ls),
        }
    return {"rounds": results, "summary": summary}


# =============================================================================== idle


def sample_cpu(pids: dict[str, int], seconds: float) -> dict[str, float]:
    c0 = {k: cpu_seconds(p) for k, p in pids.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    dt = time.monotonic() - t0
    return {k: (cpu_seconds(p) - c0[k]) / dt * 100 for k, p in pids.items()}


def bench_idle(opts: argparse.Namespace, work: Path) -> dict[str, Any]:
    log(f"idle: leader and follower processes, {opts.watchers} watching nodes in one process")
    d = work / "idle"
    cluster = start_cluster(3, fsync=not opts.no_fsync)
    children: list[Child] = []
    try:
        eps = ",".join(cluster.endpoints)
        ns = "/bench/idle"
        leader = Child(
            "bench.node_proc",
            node_args("n1", eps, ns, "--peers", PEERS3, "--bootstrap"),
            log_dir=d,
            name="n1",
            pythonpath=opts.lib,
        )
        children.append(leader)
        leader.call("wait_leader", timeout=60)
        fol = [
            Child(
                "bench.node_proc",
                node_args(f"n{i}", eps, ns, "--peers", PEERS3),
                log_dir=d,
                name=f"n{i}",
                pythonpath=opts.lib,
            )
            for i in (2, 3)
        ]
        children += fol
        for f in fol:
            f.call("status", timeout=60)
        many = Child(
            "bench.watchers_proc",
            ["--count", str(opts.watchers), "--endpoints", eps, "--namespace", ns],
            log_dir=d,
            name="watchers",
            pythonpath=opts.lib,
        )
        children.append(many)
        many.call("status", timeout=120)
        leader.call("run", n=10, interval=0.0, timeout=30)  # some state to hold
        time.sleep(3.0)
        pids = {"leader": leader.pid, "follower": fol[0].pid, "watchers": many.pid}
        for i, m in enumerate(cluster.members):
            pids[f"etcd{i}"] = m.pid
        idle = sample_cpu(pids, opts.idle_seconds)
        rss = {k: rss_bytes(p) / 2**20 for k, p in pids.items()}
        st = many.call("status")
        # the same watchers while the leader writes one block every 150 ms
        n_busy = max(1, int(opts.idle_seconds / 0.15))
        leader.send("run", n=n_busy, interval=0.15)
        busy = sample_cpu(pids, opts.idle_seconds * 0.95)
        leader.reply(timeout=60)
        time.sleep(0.5)
        st2 = many.call("status")
        rss_busy = {k: rss_bytes(p) / 2**20 for k, p in pids.items()}
        res = {
            "seconds": opts.idle_seconds,
            "cpu_pct": idle,
            "rss_mib": rss,
            "busy_cpu_pct": busy,
            "busy_rss_mib": rss_busy,
            "busy_blocks": n_busy,
            "watchers": opts.watchers,
            "watchers_status": {"before": st, "after": {k: st2[k] for k in ("nodes", "applied")}},
        }
        log(
            f"  idle CPU leader {idle['leader']:.2f}% follower {idle['follower']:.2f}% "
            f"{opts.watchers} watchers {idle['watchers']:.1f}% | RSS leader {rss['leader']:.0f} "
            f"MiB follower {rss['follower']:.0f} MiB watchers {rss['watchers']:.0f} MiB"
        )
        return res
    finally:
        for c in children:
            c.stop(timeout=10)
        cluster.close()


# =============================================================================== long run


def bench_long(opts: argparse.Namespace, work: Path) -> dict[str, Any]:
    blocks = opts.long_blocks
    log(f"long run: {blocks} blocks, pruning on (trailing_logs=1000, snapshot_threshold=1000)")
    d = work / "long"
    retention = 10000
    cluster = start_cluster(
        1,
        fsync=not opts.no_fsync,
        extra_args=[
            "--auto-compaction-mode",
            "revision",
            "--auto-compaction-retention",
            str(retention),
        ],
    )
    children: list[Child] = []
    from bench.grpc_raw import new_channel, pb, prefix_end
    from etcdraft.proto import etcd_rpc_pb2_grpc as pb_grpc

    channel = new_channel(cluster.endpoints[0])
    kv = pb_grpc.KVStub(channel)
    maintenance = pb_grpc.MaintenanceStub(channel)
    try:
        eps = ",".join(cluster.endpoints)
        ns = "/bench/long"
        peers = "n1@n1:1,n2@n2:1"
        prune = ["--trailing-logs", "1000", "--snapshot-threshold", "1000"]
        # the producer: back-to-back blocks whenever it leads, up to `blocks`
        leader = Child(
            "bench.node_proc",
            node_args(
                "n1",
                eps,
                ns,
                "--peers",
                peers,
                "--bootstrap",
                *prune,
                "--produce",
                "0",
                "--max-height",
                str(blocks),
                "--record",
                str(d / "n1"),
                "--no-apply-stamps",
            ),
            log_dir=d,
            name="n1",
            pythonpath=opts.lib,
        )
        children.append(leader)
        leader.call("wait_leader", timeout=60)
        fol = Child(
            "bench.node_proc",
            node_args("n2", eps, ns, "--peers", peers, *prune, "--no-apply-stamps"),
            log_dir=d,
            name="n2",
            pythonpath=opts.lib,
        )
        children.append(fol)
        log_prefix = (ns + "/log/").encode()
        count_req = pb.RangeRequest(
            key=log_prefix, range_end=prefix_end(log_prefix), count_only=True
        )
        samples: list[dict[str, Any]] = []
        compacted = 0
        leader.call("status", timeout=60)
        fol.call("status", timeout=60)
        t_start = time.monotonic()
        deadline = t_start + max(120.0, blocks / 50.0)
        done = False
        while not done:
            time.sleep(opts.long_sample)
            now = time.monotonic()
            st = maintenance.Status(pb.StatusRequest(), timeout=5)
            rev = st.header.revision
            # the compaction etcd's --auto-compaction-mode revision would do (it only
            # runs every 5 minutes): keep the last `retention` revisions
            if rev - retention > compacted + 1000:
                compacted = rev - retention
                kv.Compact(pb.CompactionRequest(revision=compacted), timeout=30)
            cnt = kv.Range(count_req, timeout=5)
            fstat = fol.call("status", timeout=10)
            lstat = leader.call("status", timeout=10)
            samples.append(
                {
                    "t": now - t_start,
                    "height": lstat["height"],
                    "follower_height": fstat["height"],
                    "revision": rev,
                    "db_size": st.dbSize,
                    "db_size_in_use": st.dbSizeInUse,
                    "log_keys": cnt.count,
                    "leader_rss": rss_bytes(leader.pid),
                    "follower_rss": rss_bytes(fol.pid),
                    "etcd_rss": rss_bytes(cluster.members[0].pid),
                    "compacted": compacted,
                }
            )
            done = lstat["height"] >= blocks and fstat["height"] >= blocks
            if now > deadline:
                log("  long run: time limit reached, stopping early")
                break
        elapsed = time.monotonic() - t_start
        last = samples[-1]
        log(
            f"  {last['height']} blocks in {elapsed:.0f} s; db {last['db_size'] / 2**20:.1f} MiB "
            f"(in use {last['db_size_in_use'] / 2**20:.1f}); leader RSS "
            f"{last['leader_rss'] / 2**20:.0f} MiB, follower {last['follower_rss'] / 2**20:.0f}"
        )
        first = samples[0]
        rate = (last["height"] - first["height"]) / max(1e-9, last["t"] - first["t"])
        return {
            "blocks": blocks,
            "reached": last["height"],
            "seconds": elapsed,
            "rate": rate,
            "retention": retention,
            "samples": samples,
        }
    finally:
        channel.close()
        for c in children:
            c.stop(timeout=10)
        cluster.close()


def reduce_long(res: dict[str, Any]) -> dict[str, Any]:
    """Steady state: the samples after etcd's first compaction (before it, etcd keeps
    every revision and its database grows by design). Flat = the median of the last
    third of the steady state against the median of its first third."""
    s = [x for x in res["samples"] if x.get("compacted", 0) > 0][1:]
    if len(s) < 3:
        return {}
    third = max(1, len(s) // 3)

    def growth(key: str) -> dict[str, float]:
        a = median(x[key] for x in s[:third]) / 2**20
        b = median(x[key] for x in s[-third:]) / 2**20
        return {
            "first_third_mib": a,
            "last_third_mib": b,
            "min_mib": min(x[key] for x in s) / 2**20,
            "max_mib": max(x[key] for x in s) / 2**20,
        }

    keys = ("db_size", "db_size_in_use", "leader_rss", "follower_rss", "etcd_rss")
    out: dict[str, Any] = {k: growth(k) for k in keys}
    out["steady_from_height"] = s[0]["height"]
    out["log_keys_max"] = max(x["log_keys"] for x in s)
    return out


# =============================================================================== report


# =============================================================================== aio


def bench_aio(opts: argparse.Namespace) -> dict[str, Any] | None:
    """HOOK: the event-loop lag of ``etcdraft.aio`` (issue #17), measured by
    ``bench/aio_lag.py`` (its own module, owned by its author: called here, not
    edited). Skipped with a note when that module is not there."""
    try:
        from bench import aio_lag
    except ImportError as exc:
        log(f"aio: bench/aio_lag.py not available ({exc}); section skipped")
        return None
    log("aio: event-loop lag of an AsyncNode leader (bench/aio_lag.py)")
    res: dict[str, Any] = aio_lag.run(seconds=opts.aio_seconds)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections: {','.join(SECTIONS)}",
    )
    ap.add_argument("--sizes", default="1,3", help="etcd cluster sizes (broadcast, large)")
    ap.add_argument(
        "--raw",
        choices=tuple(RAW_LABELS),
        default="grpc",
        help="the raw baseline: grpc (the cheapest client: grpcio and etcd's generated "
        "stubs) or etcd3gw (JSON gateway; the baseline before gRPC, for history)",
    )
    ap.add_argument(
        "--no-fsync",
        action="store_true",
        help="run etcd with --unsafe-no-fsync (comparisons only; headline figures use fsync)",
    )
    ap.add_argument(
        "--state-sizes",
        default="1MB",
        help="encoded state sizes of the large-state section, e.g. 1MB,2MB,5MB,16MB "
        "(sizes the node refuses are skipped with a note)",
    )
    ap.add_argument("--large-rounds", type=int, default=5)
    ap.add_argument("--large-n", type=int, default=30, help="large writes per side per round")
    ap.add_argument("--large-warmup", type=int, default=5)
    ap.add_argument(
        "--large-max-run-bytes",
        type=float,
        default=160e6,
        help="large: fewer writes per run for big states (n x size at most this)",
    )
    ap.add_argument(
        "--large-etcd-rss-limit",
        type=parse_size,
        default=3 * 2**30,
        help="large: a fresh etcd once a member's RSS passes this (etcd keeps its raft "
        "log in memory); default 3GiB",
    )
    ap.add_argument("--large-iso-rounds", type=int, default=3, help="isolated rounds (large)")
    ap.add_argument("--large-iso-n", type=int, default=10, help="isolated writes per side/round")
    ap.add_argument(
        "--large-iso-interval", type=float, default=0.5, help="seconds between isolated writes"
    )
    ap.add_argument(
        "--long-large-blocks", type=int, default=2000, help="large-long: blocks to broadcast"
    )
    ap.add_argument("--long-large-size", default="1MB", help="large-long: encoded block size")
    ap.add_argument(
        "--long-large-every", type=int, default=100, help="large-long: sample every N blocks"
    )
    ap.add_argument(
        "--long-large-retention",
        default="10s",
        help="large-long: etcd's --auto-compaction-retention (periodic mode)",
    )
    ap.add_argument("--startup-reps", type=int, default=5, help="fresh processes per measure")
    ap.add_argument("--aio-seconds", type=float, default=10.0, help="aio section: load phase")
    ap.add_argument("--rounds", type=int, default=7, help="alternated rounds (broadcast)")
    ap.add_argument("--n", type=int, default=1000, help="sequential writes per side per round")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--quorum-n", type=int, default=200, help="has_quorum() calls timed")
    ap.add_argument("--iso-rounds", type=int, default=3)
    ap.add_argument("--iso-n", type=int, default=20, help="isolated writes per side per round")
    ap.add_argument("--failover-rounds", type=int, default=10)
    ap.add_argument("--resign-rounds", type=int, default=10)
    ap.add_argument("--watchers", type=int, default=50)
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    ap.add_argument("--long", action="store_true", help="the full 200,000-block long run")
    ap.add_argument("--long-blocks", type=int, default=None)
    ap.add_argument("--long-sample", type=float, default=1.0)
    ap.add_argument("--quick", action="store_true", help="a short smoke run (~2 min)")
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--lib", default=None, help="PYTHONPATH entry with another etcdraft copy")
    ap.add_argument("--out", default=str(REPO_DIR / "bench" / "results.json"))
    ap.add_argument("--plots", default=str(REPO_DIR / "docs" / "bench"))
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--plot-prefix", default="", help="prefix of the PNG file names")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument(
        "--samples",
        action="store_true",
        help="also write every latency sample to <out>-samples.json",
    )
    ap.add_argument(
        "--ab",
        metavar="LIB_B",
        default=None,
        help="A/B mode: broadcast section only, the installed etcdraft (or --ab-a) "
        "against the etcdraft package found in LIB_B (a PYTHONPATH entry)",
    )
    ap.add_argument("--ab-a", metavar="LIB_A", default=None)
    opts = ap.parse_args(argv)
    if opts.long_blocks is None:
        opts.long_blocks = 200_000 if opts.long else 20_000
    if opts.quick:
        opts.rounds, opts.n, opts.warmup, opts.quorum_n = 2, 300, 100, 50
        opts.iso_rounds, opts.iso_n = 1, 10
        opts.large_rounds, opts.large_n, opts.large_warmup = 2, 10, 3
        opts.large_iso_rounds, opts.large_iso_n = 1, 5
        opts.long_large_blocks = min(opts.long_large_blocks, 300)
        opts.failover_rounds = opts.resign_rounds = 2
        opts.idle_seconds, opts.watchers = 4.0, 10
        opts.startup_reps, opts.aio_seconds = 2, 4.0
        opts.long_blocks = min(opts.long_blocks, 3000)
        opts.long_sample = 1.0
    opts.state_sizes = [parse_size(x) for x in opts.state_sizes.split(",") if x.strip()]
    sections = [s.strip() for s in opts.only.split(",") if s.strip()]
    if opts.ab:
        sections = ["ab"]
        if opts.out == str(REPO_DIR / "bench" / "results.json"):
            opts.out = str(REPO_DIR / "bench" / "ab-results.json")
        opts.no_plots = True

    def on_signal(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    work = Path(tempfile.mkdtemp(prefix="etcdraft-bench-"))
    import grpc
    from google.protobuf.internal import api_implementation

    import etcdraft
    from etcdraft.embedded import etcd_version

    binary = etcd_binary()
    results: dict[str, Any] = {
        "machine": machine(),
        "etcd_binary": binary,
        "etcd_version": ".".join(map(str, etcd_version(binary))),
        "etcdraft": {"version": etcdraft.__version__, "path": str(Path(etcdraft.__file__).parent)},
        "protobuf_backend": api_implementation.Type(),
        "grpcio": grpc.__version__,
        "raw_client": opts.raw,
        "etcd_fsync": not opts.no_fsync,
        "command": " ".join([Path(sys.executable).name, "-m", "bench", *(argv or sys.argv[1:])]),
        "config": {k: v for k, v in vars(opts).items() if k not in ("out", "plots")},
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    t_all = time.monotonic()
    results["loadavg"] = {}

    def loadavg(section: str) -> None:
        """The machine's 1-minute load average as a section starts (others share it)."""
        results["loadavg"][section] = round(os.getloadavg()[0], 2)

    try:
        if "ab" in sections:
            results["ab"] = {"A": opts.ab_a or "installed", "B": opts.ab}
            for size in [int(x) for x in opts.sizes.split(",")]:
                raw = bench_broadcast(size, opts, work, sides={"A": opts.ab_a, "B": opts.ab})
                results[f"broadcast{size}"] = reduce_broadcast(raw)
        if "broadcast" in sections:
            loadavg("broadcast")
            for size in [int(x) for x in opts.sizes.split(",")]:
                raw = bench_broadcast(size, opts, work)
                results[f"broadcast{size}"] = reduce_broadcast(raw)
                results.setdefault("distributions", {})[f"broadcast{size}"] = {
                    kind: {
                        side: {
                            "lat_ms": [x for r in raw[kind] for x in r[side]["lat_ms"]],
                            "deliver_ms": [x for r in raw[kind] for x in r[side]["deliver_ms"]],
                        }
                        for side in ("etcdraft", "raw")
                    }
                    for kind in ("load", "isolated")
                }
        if "large" in sections:
            loadavg("large")
            from bench.large import bench_large

            for size in [int(x) for x in opts.sizes.split(",")]:
                results[f"large{size}"] = bench_large(size, opts, work)
        if "large-long" in sections:
            loadavg("large-long")
            from bench.large_long import bench_large_long, reduce_large_long

            ll = bench_large_long(opts, work)
            ll["summary"] = reduce_large_long(ll)
            results["large_long"] = ll
        if "failover" in sections:
            loadavg("failover")
            results["failover"] = bench_failover(opts, work)
        if "idle" in sections:
            loadavg("idle")
            results["idle"] = bench_idle(opts, work)
        if "startup" in sections:
            loadavg("startup")
            from bench.startup import bench_startup

            results["startup"] = bench_startup(opts, work)
        if "aio" in sections:
            loadavg("aio")
            results["aio_lag"] = bench_aio(opts)
        if "long" in sections:
            loadavg("long")
            lr = bench_long(opts, work)
            lr["summary"] = reduce_long(lr)
            results["long"] = lr
    finally:
        kill_children()
        results["seconds"] = time.monotonic() - t_all
        results["loadavg"]["end"] = round(os.getloadavg()[0], 2)
        if not opts.ab:
            try:
                results["targets"] = targets(results)
            except Exception as exc:  # a partial run still writes what it has
                log(f"targets not computed: {type(exc).__name__}: {exc}")
        out = Path(opts.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        dists = results.pop("distributions", None)
        out.write_text(json.dumps(results, indent=1, default=str))
        if dists is not None:
            results["distributions"] = dists
        if dists is not None and opts.samples:
            # raw samples beside the summary (for the plots; not needed to read it)
            out.with_name(out.stem + "-samples.json").write_text(json.dumps(dists))
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"work directory kept: {work}")
    print(ab_table(results) if opts.ab else table(results))
    print(f"\nwall time {results['seconds']:.0f} s; results in {opts.out}")
    if not opts.no_plots:
        try:
            from bench.plots import make_plots

            for p in make_plots(results, Path(opts.plots), opts.plot_prefix):
                print(f"plot: {p}")
        except ImportError as exc:
            log(f"no plots ({exc}); install the bench extra: pip install -e '.[bench]'")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    kill_children()
    sys.exit(130)
