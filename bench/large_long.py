"""The large-block long run (``python -m bench --only large-long``): a leader broadcasts
``--long-large-blocks`` blocks (2,000 by default) of ``--long-large-size`` (1 MB) back
to back on a 3-member etcd (fsync on, etcd's default 2 GiB quota), two followers
apply, every node with the library's default retention (``trailing_logs`` 1,000 and
``trailing_bytes`` 256 MiB: about 256 blocks of 1 MB kept, pruned at a quarter more).
etcd compacts its own history (``--auto-compaction-mode periodic
--auto-compaction-retention`` ``--long-large-retention``, 10 s by default: at this rate
etcd's revision mode, which acts every 5 minutes, would fill the quota first).

Every ``--long-large-every`` blocks (100): every member's ``dbSize`` and
``dbSizeInUse`` (``Maintenance/Status``; the largest of the members), the number of
log keys (a ``count_only`` range), and the RSS of the leader's and the two followers'
processes (``/proc/<pid>/statm``). The summary compares the samples taken once
pruning had started: flat means bounded, not growing with the number of blocks.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench.common import Child, median, parse_size, rss_bytes, size_label
from bench.etcd_space import EtcdSpace
from bench.grpc_raw import new_channel, pb, prefix_end
from bench.sides import PEERS3, log, node_args, start_cluster

METRICS = ("db_size", "db_size_in_use", "leader_rss", "follower_rss_max")


def bench_large_long(opts: argparse.Namespace, work: Path) -> dict[str, Any]:
    from etcdraft.proto import etcd_rpc_pb2_grpc as pb_grpc

    blocks: int = opts.long_large_blocks
    size = parse_size(opts.long_large_size)
    every: int = opts.long_large_every
    retention: str = opts.long_large_retention
    log(
        f"large-block long run: {blocks} blocks of {size_label(size)}, 3-member etcd, "
        f"sample every {every} blocks, etcd periodic compaction {retention}"
    )
    d = work / "large-long"
    cluster = start_cluster(
        3,
        fsync=not opts.no_fsync,
        extra_args=["--auto-compaction-mode", "periodic", "--auto-compaction-retention", retention],
    )
    space = EtcdSpace(cluster.endpoints)
    channel = new_channel(cluster.endpoints[0])
    kv = pb_grpc.KVStub(channel)
    children: list[Child] = []
    try:
        eps = ",".join(cluster.endpoints)
        ns = "/bench/large-long"
        leader = Child(
            "bench.node_proc",
            node_args(
                "n1",
                eps,
                ns,
                "--peers",
                PEERS3,
                "--bootstrap",
                "--produce",
                "0",
                "--max-height",
                str(blocks),
                "--state-bytes",
                str(size),
                "--record",
                str(d / "n1"),
                "--no-apply-stamps",
            ),
            log_dir=d,
            name="n1",
            pythonpath=opts.lib,
        )
        children.append(leader)
        first = leader.call("wait_leader", timeout=60)
        followers = [
            Child(
                "bench.node_proc",
                node_args(f"n{i}", eps, ns, "--peers", PEERS3, "--no-apply-stamps"),
                log_dir=d,
                name=f"n{i}",
                pythonpath=opts.lib,
            )
            for i in (2, 3)
        ]
        children += followers
        for f in followers:
            f.call("status", timeout=60)
        log_prefix = (ns + "/log/").encode()
        count_req = pb.RangeRequest(
            key=log_prefix, range_end=prefix_end(log_prefix), count_only=True
        )
        samples: list[dict[str, Any]] = []
        t_start = time.monotonic()
        deadline = t_start + max(600.0, blocks * size / 1e6)  # ~1 MB/s at the very least
        mark = 0  # the next sample at this height
        while True:
            lstat = leader.call("status", timeout=30)
            h = int(lstat["height"])
            done = h >= blocks
            if h >= mark or done:
                fh = [int(f.call("status", timeout=30)["height"]) for f in followers]
                st = space.status()
                cnt = kv.Range(count_req, timeout=30)
                frss = [rss_bytes(f.pid) for f in followers]
                smp = {
                    "t": time.monotonic() - t_start,
                    "height": h,
                    "follower_heights": fh,
                    "revision": int(st[0].header.revision),
                    "db_size": max(s.dbSize for s in st),
                    "db_size_in_use": max(s.dbSizeInUse for s in st),
                    "db_sizes": [int(s.dbSize) for s in st],
                    "log_keys": int(cnt.count),
                    "leader_rss": rss_bytes(leader.pid),
                    "follower_rss": frss,
                    "follower_rss_max": max(frss),
                    "etcd_rss": [rss_bytes(m.pid) for m in cluster.members],
                }
                samples.append(smp)
                log(
                    f"  height {h}: db {smp['db_size'] / 2**20:.0f} MiB (in use "
                    f"{smp['db_size_in_use'] / 2**20:.0f}), {smp['log_keys']} log keys, RSS "
                    f"leader {smp['leader_rss'] / 2**20:.0f} MiB, followers "
                    + "/".join(f"{r / 2**20:.0f}" for r in frss)
                )
                mark = (h // every + 1) * every
            if done:
                break
            if time.monotonic() > deadline:
                log("  large-block long run: time limit reached, stopping early")
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - t_start
        last = samples[-1]
        rate = (last["height"] - samples[0]["height"]) / max(1e-9, last["t"] - samples[0]["t"])
        return {
            "blocks": blocks,
            "size": size,
            "members": 3,
            "reached": last["height"],
            "seconds": elapsed,
            "rate": rate,
            "every": every,
            "retention": retention,
            "trailing_bytes": int(first.get("trailing_bytes", 0)),
            "samples": samples,
        }
    finally:
        channel.close()
        space.close()
        for c in children:
            c.stop(timeout=10)
        cluster.close()


def reduce_large_long(res: dict[str, Any]) -> dict[str, Any]:
    """Steady state: the samples taken once pruning had started (fewer log keys than
    blocks); for each metric its range and the medians of the first and last third."""
    s = [x for x in res["samples"] if 0 < x["log_keys"] < x["height"]]
    if len(s) < 3:
        return {}
    third = max(1, len(s) // 3)
    out: dict[str, Any] = {}
    for key in METRICS:
        a = median(x[key] for x in s[:third]) / 2**20
        b = median(x[key] for x in s[-third:]) / 2**20
        out[key] = {
            "first_third_mib": a,
            "last_third_mib": b,
            "min_mib": min(x[key] for x in s) / 2**20,
            "max_mib": max(x[key] for x in s) / 2**20,
        }
    out["steady_from_height"] = s[0]["height"]
    out["log_keys_max"] = max(x["log_keys"] for x in s)
    return out
