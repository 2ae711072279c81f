"""What a leader's own watch costs its writes (``python -m bench.own_watch``).

A leading node watches the whole namespace, so it receives every block it writes a
second time (it skips applying it: it applied it when etcd answered). The raw baseline
of ``make bench`` writes and does not watch. This measures the difference on one
embedded etcd (fsync on), all three sides in one process, back to back, the sides
rotated per round (each in each position in turn):

- ``raw_txn``: the fenced transaction of a broadcast, on a plain grpcio channel
  (``bench/grpc_raw.py``), nothing else;
- ``raw_txn_watch``: the same, plus a ``Watch`` stream over the written prefix, read
  by a thread of the same process (the raw client receiving its own writes, as a
  leader does);
- ``etcdraft``: ``Node.broadcast`` of a single-member node (no followers).

States are built before each timed loop, for every side. CPU per write is the
process's CPU during the loop over the writes; it includes the idle node's background
work (heartbeats, keep-alives: about 2 % of a core) during the raw sides too.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Callable
from typing import Any

from bench.common import make_state, median, parse_size, pct, size_label, wait_for
from bench.grpc_raw import Fence, PrefixWatch, log_key, new_channel, pb, prefix_end
from etcdraft.proto import etcd_rpc_pb2_grpc as pb_grpc

SIDES = ("raw_txn", "raw_txn_watch", "etcdraft")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(
    endpoints: list[str],
    sizes: list[int],
    rounds: int,
    n_small: int,
    n_large: int,
    *,
    prefix: str = "/own-watch",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The three sides on the etcd at ``endpoints`` (the raw sides on the first one),
    under ``prefix``; returns the medians by size and side."""
    from etcdraft import Config, Node

    out: dict[str, Any] = {"rounds": rounds, "sizes": {}}
    root = prefix.encode()
    # the raw sides' keys (a leader key, a member key, log/...), one prefix each
    prefixes = {"raw_txn": root + b"/r/", "raw_txn_watch": root + b"/w/"}
    ep = endpoints[0]
    node = Node(
        Config(
            node_id="n1",
            raft_addr="n1:1",
            endpoints=",".join(endpoints),
            namespace=f"{prefix}/node",
            peers="n1@n1:1",
            bootstrap=True,
        )
    )
    node.start()
    channel = new_channel(ep)
    kv = pb_grpc.KVStub(channel)
    watched: list[int] = []
    watch = PrefixWatch(ep, prefixes["raw_txn_watch"], lambda evs, _t: watched.append(len(evs)))
    try:
        wait_for(node.is_leader, 30, "the node leads")
        fences = {side: Fence(kv, prefixes[side]) for side in prefixes}
        heights = {s: 0 for s in SIDES}
        heights["etcdraft"] = node.get_state().height

        def one(side: str, size: int, n: int) -> tuple[list[float], float]:
            first = heights[side] + 1
            states = [make_state(h, 0, size=size) for h in range(first, first + n)]
            heights[side] += n
            times: list[float] = []
            c0 = _cpu()
            if side == "etcdraft":
                for st in states:
                    t0 = time.monotonic()
                    node.broadcast(st, timeout=30)
                    times.append(time.monotonic() - t0)
            else:
                fence = fences[side]
                pre = prefixes[side] + b"log/"
                txns = [fence.txn(log_key(pre, st.height), st.SerializeToString()) for st in states]
                for txn in txns:
                    t0 = time.monotonic()
                    answer = kv.Txn(txn, timeout=30)
                    times.append(time.monotonic() - t0)
                    if not answer.succeeded:
                        raise RuntimeError(f"{side}: a fenced write failed")
                kv.DeleteRange(
                    pb.DeleteRangeRequest(key=pre, range_end=prefix_end(pre)), timeout=30
                )
            return times, (_cpu() - c0) / n

        for size in sizes:
            n = n_small if size < 100_000 else n_large
            for side in SIDES:  # warm-up
                one(side, size, max(2, n // 10))
            per: dict[str, dict[str, list[float]]] = {
                s: {"p50": [], "p99": [], "rate": [], "cpu_us": []} for s in SIDES
            }
            for r in range(rounds):
                k = r % len(SIDES)
                for side in SIDES[k:] + SIDES[:k]:
                    times, cpu = one(side, size, n)
                    per[side]["p50"].append(pct(times, 50) * 1e3)
                    per[side]["p99"].append(pct(times, 99) * 1e3)
                    per[side]["rate"].append(n / sum(times))
                    per[side]["cpu_us"].append(cpu * 1e6)
            res = {s: {k: median(v) for k, v in per[s].items()} for s in SIDES}
            out["sizes"][str(size)] = res
            base = res["raw_txn"]
            log(f"{len(endpoints)}-member etcd, {size_label(size)}, {rounds} rounds x {n} writes")
            log(
                f"  {'side':14s} {'p50 ms':>8s} {'p99 ms':>8s} {'writes/s':>9s}"
                f" {'CPU µs/write':>13s} {'rate / raw_txn':>15s} {'p50 - raw_txn':>14s}"
            )
            for s in SIDES:
                v = res[s]
                log(
                    f"  {s:14s} {v['p50']:8.3f} {v['p99']:8.2f} {v['rate']:9.0f}"
                    f" {v['cpu_us']:13.0f} "
                    f"{v['rate'] / base['rate']:15.3f} {v['p50'] - base['p50']:+14.3f}"
                )
    finally:
        watch.close()
        channel.close()
        node.stop()
    if not watched:
        raise RuntimeError("the raw watch received nothing: the comparison is void")
    return out


def run(members: int, sizes: list[int], rounds: int, n_small: int, n_large: int) -> dict[str, Any]:
    """:func:`measure` on a fresh embedded etcd of ``members`` members, fsync on."""
    from etcdraft.embedded import EtcdCluster

    with EtcdCluster(members, unsafe_no_fsync=False) as etcd:
        out = measure(list(etcd.endpoints), sizes, rounds, n_small, n_large)
    out["members"] = members
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.own_watch", description=__doc__.split("\n")[0]
    )
    p.add_argument("--members", type=int, default=1, help="etcd members (1)")
    p.add_argument("--sizes", default="600,1MB", help="state sizes, comma-separated (600,1MB)")
    p.add_argument("--rounds", type=int, default=6, help="rounds per size (6)")
    p.add_argument(
        "--n", type=int, default=400, help="writes per side and round, small states (400)"
    )
    p.add_argument(
        "--n-large", type=int, default=30, help="the same for states of 100 KB or more (30)"
    )
    p.add_argument("--json", help="also write the medians to this file")
    args = p.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    out = run(args.members, sizes, args.rounds, args.n, args.n_large)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
