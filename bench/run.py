"""The etcdraft benchmark: ``python -m bench`` (or ``python bench/run.py``).

Runs on embedded etcd clusters (1 and 3 members, etcd's default raft timing
100 ms / 1000 ms), every node in its own process, and prints a table with ratios
against raw etcd3gw, writes ``bench/results.json`` and PNG plots into
``docs/bench/``. Every round alternates the two sides so machine drift cancels; the
figures are medians over rounds. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # python bench/run.py
    sys.path.append(str(Path(__file__).resolve().parent.parent))

from bench.common import (
    ETCD_ELECTION_MS,
    ETCD_HEARTBEAT_MS,
    REPO_DIR,
    Child,
    cpu_seconds,
    etcd_binary,
    kill_children,
    machine,
    median,
    pct,
    read_rows,
    rss_bytes,
    wait_for,
)

PEERS3 = "n1@n1:1,n2@n2:1,n3@n3:1"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def start_cluster(size: int, **kw: Any) -> Any:
    from etcdraft.embedded import EtcdCluster

    cluster = EtcdCluster(
        size=size,
        binary=etcd_binary(),
        heartbeat_interval_ms=ETCD_HEARTBEAT_MS,
        election_timeout_ms=ETCD_ELECTION_MS,
        **kw,
    )
    cluster.start()
    return cluster


def node_args(node_id: str, endpoints: str, namespace: str, *extra: str) -> list[str]:
    return ["--node-id", node_id, "--endpoints", endpoints, "--namespace", namespace, *extra]


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
    """Sequential writes, side by side: ``sides`` maps a side name to ``"raw"`` (etcd3gw)
    or to the PYTHONPATH entry of an etcdraft copy (None: the installed one). Each
    side has its writer process and two receiver processes (etcdraft follower nodes,
    or raw etcd3gw watchers). Rounds alternate the sides. Measures write latency and
    rate, client CPU, and delivery to the receivers under load and for isolated
    writes (one every 150 ms)."""
    sides = sides or {"etcdraft": opts.lib, "raw": "raw"}
    names = list(sides)
    log(f"broadcast: {size}-member etcd, {' vs '.join(names)}")
    d = work / f"bcast{size}-{'-'.join(names)}"
    d.mkdir(parents=True, exist_ok=True)
    cluster = start_cluster(size)
    children: list[Child] = []
    try:
        eps = ",".join(cluster.endpoints)
        procs: dict[str, tuple[Child, list[Child]]] = {}
        for side, spec in sides.items():
            if spec == "raw":
                prefix = f"/bench-raw/b{size}-{side}"
                sender = Child(
                    "bench.raw_proc",
                    ["--role", "txn", "--endpoint", cluster.endpoints[0], "--prefix", prefix],
                    log_dir=d,
                    name=f"{side}-txn",
                )
                receivers = [
                    Child(
                        "bench.raw_proc",
                        ["--role", "watch", "--endpoint", cluster.endpoints[0], "--prefix", prefix],
                        log_dir=d,
                        name=f"{side}-watch{i}",
                    )
                    for i in (1, 2)
                ]
                children += [sender, *receivers]
            else:
                ns = f"/bench/bcast{size}-{side}"
                sender = Child(
                    "bench.node_proc",
                    node_args("n1", eps, ns, "--peers", PEERS3, "--bootstrap"),
                    log_dir=d,
                    name=f"{side}-n1",
                    pythonpath=spec,
                )
                children.append(sender)
                sender.call("wait_leader", timeout=60)
                receivers = [
                    Child(
                        "bench.node_proc",
                        node_args(f"n{i}", eps, ns, "--peers", PEERS3),
                        log_dir=d,
                        name=f"{side}-n{i}",
                        pythonpath=spec,
                    )
                    for i in (2, 3)
                ]
                children += receivers
            procs[side] = (sender, receivers)
        for sender, receivers in procs.values():
            for c in [sender, *receivers]:

                def ready(c: Child = c) -> bool:
                    return bool(c.call("status", timeout=60).get("ready", True))

                wait_for(ready, 20, f"{c.name} ready")

        def one_run(side: str, n: int, interval: float, tag: str) -> dict[str, Any]:
            sender, receivers = procs[side]
            out = d / f"{tag}-{side}-send.txt"
            cpu0 = cpu_seconds(sender.pid)
            rcpu0 = [cpu_seconds(r.pid) for r in receivers]
            sender.call("run", n=n, interval=interval, out=str(out), timeout=60 + n * 0.05)
            cpu1 = cpu_seconds(sender.pid)
            rows = [(int(h), float(a), float(b)) for h, a, b in read_rows(out)]
            start = {h: a for h, a, _ in rows}
            lat = [(b - a) * 1e3 for _, a, b in rows]
            span = rows[-1][2] - rows[0][1]
            # let the receivers catch up, then collect their stamps
            deliver: list[float] = []
            missing = 0
            time.sleep(0.3)
            rcpu = sum(cpu_seconds(r.pid) - c0 for r, c0 in zip(receivers, rcpu0, strict=True))
            for i, r in enumerate(receivers):
                rout = d / f"{tag}-{side}-recv{i}.txt"
                r.call("flush", out=str(rout))
                got = {int(h): float(t) for h, t in read_rows(rout)}
                for h, a in start.items():
                    if h in got:
                        deliver.append((got[h] - a) * 1e3)
                    else:
                        missing += 1
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
            }

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
        # the floor: the cheapest clients (gateway, gRPC) on the same etcd, same conditions
        from bench.floor import bench_floor

        floor = bench_floor(cluster, opts.iso_rounds, opts.iso_n, log=log)
        return {
            "size": size,
            "sides": names,
            "load": load_rounds,
            "isolated": iso_rounds,
            "etcd_version": ".".join(map(str, cluster.version)),
            "has_quorum": quorum,
            "floor": floor,
        }
    finally:
        for c in children:
            c.stop(timeout=5)
        cluster.close()


def reduce_broadcast(res: dict[str, Any]) -> dict[str, Any]:
    """Medians over rounds (paired ratios/differences per round)."""
    a, b = res["sides"]
    out: dict[str, Any] = {
        "size": res["size"],
        "etcd_version": res["etcd_version"],
        "sides": [a, b],
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
    cluster = start_cluster(3)
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
    cluster = start_cluster(3)
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


def _post(url: str, body: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        out: dict[str, Any] = json.loads(resp.read() or b"{}")
        return out


def bench_long(opts: argparse.Namespace, work: Path) -> dict[str, Any]:
    blocks = opts.long_blocks
    log(f"long run: {blocks} blocks, pruning on (trailing_logs=1000, snapshot_threshold=1000)")
    d = work / "long"
    retention = 10000
    cluster = start_cluster(
        1,
        extra_args=[
            "--auto-compaction-mode",
            "revision",
            "--auto-compaction-retention",
            str(retention),
        ],
    )
    children: list[Child] = []
    import base64

    try:
        eps = ",".join(cluster.endpoints)
        ep = cluster.endpoints[0]
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
        end = bytearray(log_prefix)
        end[-1] += 1
        count_body = {
            "key": base64.b64encode(log_prefix).decode(),
            "range_end": base64.b64encode(bytes(end)).decode(),
            "count_only": True,
        }
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
            st = _post(ep + "/v3/maintenance/status", {})
            rev = int(st["header"]["revision"])
            # the compaction etcd's --auto-compaction-mode revision would do (it only
            # runs every 5 minutes): keep the last `retention` revisions
            if rev - retention > compacted + 1000:
                compacted = rev - retention
                _post(ep + "/v3/kv/compaction", {"revision": str(compacted)}, timeout=30)
            cnt = _post(ep + "/v3/kv/range", count_body)
            fstat = fol.call("status", timeout=10)
            lstat = leader.call("status", timeout=10)
            samples.append(
                {
                    "t": now - t_start,
                    "height": lstat["height"],
                    "follower_height": fstat["height"],
                    "revision": rev,
                    "db_size": int(st.get("dbSize", 0)),
                    "db_size_in_use": int(st.get("dbSizeInUse", 0)),
                    "log_keys": int(cnt.get("count", 0)),
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


def fmt(x: float, spec: str = ".2f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _row(label: str, *cells: str) -> str:
    return f"  {label:40s}" + "".join(f" {c:>13s}" for c in cells)


def _pair(a: float, b: float, spec: str = ".2f") -> str:
    return f"{fmt(a, spec)}/{fmt(b, spec)}"


def table(results: dict[str, Any]) -> str:
    cfg = results["config"]
    lines = ["", "etcdraft benchmark (medians over rounds; ratios paired per round)", "=" * 96]
    add = lines.append
    for key in ("broadcast1", "broadcast3"):
        b = results.get(key)
        if not b:
            continue
        ld, iso = b["load"], b["isolated"]
        e, w = ld["etcdraft"], ld["raw"]
        ie, iw = iso["etcdraft"], iso["raw"]
        add(
            f"{b['size']}-member etcd {b['etcd_version']}: {ld['rounds']} rounds x {cfg['n']} "
            f"sequential writes per side; isolated: {iso['rounds']} x {cfg['iso_n']} writes "
            "150 ms apart"
        )
        add(_row("", "etcdraft", "raw etcd3gw", "ratio / diff"))
        add(
            _row(
                "broadcast rate (/s)",
                fmt(e["rate"], ".0f"),
                fmt(w["rate"], ".0f"),
                fmt(ld["rate_ratio"], ".3f") + "x",
            )
        )
        add(
            _row(
                "broadcast p50 (ms)",
                fmt(e["p50"], ".3f"),
                fmt(w["p50"], ".3f"),
                fmt(ld["p50_overhead_ms"], "+.3f"),
            )
        )
        add(
            _row(
                "broadcast p99 (ms)",
                fmt(e["p99"], ".3f"),
                fmt(w["p99"], ".3f"),
                fmt(ld["p99_overhead_ms"], "+.3f"),
            )
        )
        add(
            _row(
                "writer CPU per write (us)",
                fmt(e["cpu_us_per_op"], ".0f"),
                fmt(w["cpu_us_per_op"], ".0f"),
                fmt(ld["cpu_ratio"], ".2f") + "x",
            )
        )
        add(
            _row(
                "isolated broadcast p50 (ms)",
                fmt(ie["p50"], ".3f"),
                fmt(iw["p50"], ".3f"),
                fmt(iso["p50_overhead_ms"], "+.3f"),
            )
        )
        add("  apply: write start -> follower's queue (etcdraft) / raw watcher decoded (raw)")
        add(
            _row(
                "  under load p50/p99 (ms)",
                _pair(e["deliver_p50"], e["deliver_p99"]),
                _pair(w["deliver_p50"], w["deliver_p99"]),
            )
        )
        add(
            _row(
                "  isolated p50/p99 (ms)",
                _pair(ie["deliver_p50"], ie["deliver_p99"]),
                _pair(iw["deliver_p50"], iw["deliver_p99"]),
            )
        )
        add(
            _row(
                "  receiver CPU per entry (us)",
                fmt(e["recv_cpu_us_per_op"], ".0f"),
                fmt(w["recv_cpu_us_per_op"], ".0f"),
            )
        )
        q = b.get("has_quorum", {}).get("etcdraft")
        if q:
            add(_row("has_quorum() p50/p99 (ms)", _pair(q["p50"], q["p99"], ".3f")))
        fl = b.get("floor")
        if fl:
            add(
                "  floor, isolated writes, no etcdraft: one process putting and watching "
                "(bench/floor.py)"
            )
            add(_row("", "write p50/p99", "delivery p50/p99"))
            for k, label in (
                ("gateway", "  JSON gateway, http.client, put"),
                ("gateway_txn", "  the same, fenced txn as etcdraft's"),
                ("grpc", "  gRPC direct, put"),
                ("grpc_txn", "  gRPC direct, fenced txn"),
            ):
                x = fl.get(k)
                if not x:
                    continue
                add(
                    _row(
                        label,
                        _pair(x["put_p50"], x["put_p99"]),
                        _pair(x["deliver_p50"], x["deliver_p99"]),
                    )
                )
        add("")
    f = results.get("failover")
    if f:
        s = f["summary"]
        add("failover, 3-member etcd with etcd's default flags (100/1000 ms): ms from the event")
        add("to the new leader's first successful broadcast, p50 [min..max] (to 'leader' p50)")
        for k, label in (
            ("crash_fast", "crash (SIGKILL), fast takeover"),
            ("crash_lease", "crash (SIGKILL), lease expiry only"),
            ("resign_fast", "resign_leader(), fast takeover on"),
            ("resign_lease", "resign_leader(), fast takeover off"),
        ):
            x = s[k]
            add(
                f"  {label:40s} {fmt(x['p50'], '.1f'):>8s} [{fmt(x['min'], '.1f')}.."
                f"{fmt(x['max'], '.1f')}]  ({fmt(x['to_leader_p50'], '.1f')})  n={x['rounds']}"
            )
        add("")
    i = results.get("idle")
    if i:
        c, r, bc = i["cpu_pct"], i["rss_mib"], i["busy_cpu_pct"]
        add(
            f"idle cost over {i['seconds']:.0f} s: CPU % of one core, RSS; busy = the leader "
            "writes one block every 150 ms"
        )
        add(_row("", "idle CPU %", "RSS MiB", "busy CPU %"))
        for k, label in (
            ("leader", "leader process"),
            ("follower", "follower process"),
            ("watchers", f"{i['watchers']} watching nodes, one process"),
        ):
            add(_row(label, fmt(c[k]), fmt(r[k], ".0f"), fmt(bc[k])))
        etcd = sum(v for k, v in c.items() if k.startswith("etcd"))
        etcd_busy = sum(v for k, v in bc.items() if k.startswith("etcd"))
        add(_row("etcd members (sum)", fmt(etcd), "", fmt(etcd_busy)))
        add("")
    lr = results.get("long")
    if lr:
        red = lr.get("summary", {})
        add(
            f"long run: {lr['reached']} blocks in {lr['seconds']:.0f} s ({lr['rate']:.0f}/s), "
            f"pruning on, etcd compacted to the last {lr['retention']} revisions"
        )
        if red:
            add(
                f"  steady state from height {red['steady_from_height']} (after etcd's first "
                "compaction): medians of its first and last thirds"
            )
        add(_row("", "first third", "last third", "min..max"))
        for k, label in (
            ("db_size", "etcd dbSize (MiB)"),
            ("db_size_in_use", "etcd dbSizeInUse (MiB)"),
            ("leader_rss", "leader RSS (MiB)"),
            ("follower_rss", "follower RSS (MiB)"),
            ("etcd_rss", "etcd RSS (MiB)"),
        ):
            if k in red:
                x = red[k]
                add(
                    _row(
                        label,
                        fmt(x["first_third_mib"], ".1f"),
                        fmt(x["last_third_mib"], ".1f"),
                        f"{fmt(x['min_mib'], '.1f')}..{fmt(x['max_mib'], '.1f')}",
                    )
                )
        if red:
            add(_row("log keys in etcd (max, steady state)", str(red["log_keys_max"])))
    return "\n".join(lines)


def ab_table(results: dict[str, Any]) -> str:
    lines = [
        "",
        "A/B: etcdraft copies side by side (medians over alternated rounds; B/A paired)",
        "=" * 96,
    ]
    for key in sorted(k for k in results if k.startswith("broadcast")):
        b = results[key]
        a_, b_ = b["sides"]
        lines.append(
            f"{b['size']}-member etcd {b['etcd_version']}: A = {results['ab']['A']}, "
            f"B = {results['ab']['B']}"
        )
        for kind in ("load", "isolated"):
            x = b[kind]
            lines.append(f"  {kind}:")
            skip = ("cpu_us_per_op", "recv_cpu_us_per_op") if kind == "isolated" else ()
            for k, label in (
                ("rate", "write rate (/s)"),
                ("p50", "write p50 (ms)"),
                ("p99", "write p99 (ms)"),
                ("cpu_us_per_op", "leader CPU/write (us)"),
                ("recv_cpu_us_per_op", "follower CPU/entry (us)"),
                ("deliver_p50", "apply p50 (ms)"),
                ("deliver_p99", "apply p99 (ms)"),
            ):
                if k in skip:  # mostly background work at one write per 150 ms
                    continue
                va, vb = x[a_][k], x[b_][k]
                lines.append(
                    f"    {label:28s} A {fmt(va, '.3f'):>9s}   B {fmt(vb, '.3f'):>9s}"
                    f"   B/A {fmt(vb / va if va else math.nan, '.3f')}"
                )
            lines.append(
                f"    paired: rate B/A {fmt(1 / x['rate_ratio'], '.3f')}, p50 B-A "
                f"{fmt(-x['p50_overhead_ms'], '+.3f')} ms, CPU B/A "
                f"{fmt(1 / x['cpu_ratio'], '.3f')}, apply p50 B/A "
                f"{fmt(1 / x['deliver_ratio_p50'], '.3f')}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--only",
        default="broadcast,failover,idle,long",
        help="comma-separated sections: broadcast,failover,idle,long",
    )
    ap.add_argument("--sizes", default="1,3", help="etcd cluster sizes for broadcast")
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
        opts.failover_rounds = opts.resign_rounds = 2
        opts.idle_seconds, opts.watchers = 4.0, 10
        opts.long_blocks = min(opts.long_blocks, 3000)
        opts.long_sample = 1.0
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
        "command": " ".join([Path(sys.executable).name, "-m", "bench", *(argv or sys.argv[1:])]),
        "config": {k: v for k, v in vars(opts).items() if k not in ("out", "plots")},
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    t_all = time.monotonic()
    try:
        if "ab" in sections:
            results["ab"] = {"A": opts.ab_a or "installed", "B": opts.ab}
            for size in [int(x) for x in opts.sizes.split(",")]:
                raw = bench_broadcast(size, opts, work, sides={"A": opts.ab_a, "B": opts.ab})
                results[f"broadcast{size}"] = reduce_broadcast(raw)
        if "broadcast" in sections:
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
        if "failover" in sections:
            results["failover"] = bench_failover(opts, work)
        if "idle" in sections:
            results["idle"] = bench_idle(opts, work)
        if "long" in sections:
            lr = bench_long(opts, work)
            lr["summary"] = reduce_long(lr)
            results["long"] = lr
    finally:
        kill_children()
        results["seconds"] = time.monotonic() - t_all
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
