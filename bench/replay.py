"""The Python a follower's watch runs per entry, without grpc: record, then replay.

    .venv/bin/python -m bench.replay record OUT.pkl [--n 3000]
    .venv/bin/python -m bench.replay replay OUT.pkl [--tree DIR] [--batches K]
    valgrind --tool=callgrind .venv/bin/python -m bench.replay replay OUT.pkl --batches 0
    valgrind --tool=callgrind .venv/bin/python -m bench.replay replay OUT.pkl

``record`` runs a leader and a follower Node on a 1-member etcd, broadcasts ``n``
blocks of 600 bytes and saves every watch batch the follower received (its events'
fields, plain tuples). ``replay`` feeds the first ``K`` batches (all by default) to an
unstarted follower's watch handler (``Replicator._on_events``, or the mixin tree's
``Node._on_events``) from ``--tree`` and prints the CPU time per entry. Under callgrind
the difference of the two runs' instruction counts ("Collected") over the entries is
the handler's cost per entry, the same whatever else the machine does.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import wait_for

PEERS = ["a@127.0.0.1:7601", "f@127.0.0.1:7602"]
WAIT = 120.0  # longest wait for the leader, and for the follower to apply
Batch = tuple[list[tuple[bool, bytes, bytes, int, int, int, int]], int]


def record(out: Path, n: int) -> None:
    from etcdraft import Config, Node, RaftBlockState, replication
    from etcdraft.embedded import EtcdCluster

    batches: list[Batch] = []
    handler = replication.Replicator._on_events

    def spy(rep: Any, events: Any, top: int) -> None:
        if rep._ctx.id == "f":
            fields = [(e.deleted, *_kv_fields(e.kv)) for e in events]
            batches.append((fields, top))
        handler(rep, events, top)

    replication.Replicator._on_events = spy  # type: ignore[method-assign]
    with EtcdCluster(1) as etcd:
        kw: dict[str, Any] = {"endpoints": list(etcd.endpoints), "namespace": "/replay"}
        lead = Node(
            Config(node_id="a", raft_addr="127.0.0.1:7601", bootstrap=True, peers=PEERS, **kw)
        )
        follower = Node(Config(node_id="f", raft_addr="127.0.0.1:7602", peers=PEERS, **kw))
        with lead, follower:
            wait_for(lead.is_leader, WAIT, "the leader to lead")
            batches.clear()
            for h in range(1, n + 1):
                lead.broadcast(
                    RaftBlockState(height=h, timestamp=h, hash=os.urandom(32), data=b"x" * 600)
                )
            wait_for(
                lambda: follower.get_state().height >= n, WAIT, "the follower to apply every block"
            )
    out.write_bytes(pickle.dumps({"namespace": "/replay", "batches": batches}))
    print(f"{len(batches)} batches, {sum(len(b) for b, _ in batches)} events -> {out}")


def _kv_fields(kv: Any) -> tuple[bytes, bytes, int, int, int, int]:
    return (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)


def replay(src: Path, tree: Path | None, limit: int | None) -> None:
    if tree is not None:
        sys.path.insert(0, str(tree))
    import etcdraft
    from etcdraft import Config, Node
    from etcdraft._etcd_wire import KV
    from etcdraft.watch import WatchEvent

    saved = pickle.loads(src.read_bytes())
    recorded: list[Batch] = saved["batches"][:limit]
    batches = [
        ([WatchEvent(d, KV(k, v, c, m, ver, lease)) for d, k, v, c, m, ver, lease in evs], top)
        for evs, top in recorded
    ]
    cfg = Config(
        node_id="f",
        raft_addr="127.0.0.1:7602",
        peers=PEERS,
        endpoints=["http://127.0.0.1:1"],  # never dialled: the node is not started
        namespace=saved["namespace"],
    )
    node = Node(cfg)
    rep = getattr(node, "_replicator", node)  # the mixin tree's handler is the node's
    cpu0 = time.process_time()
    for events, top in batches:
        rep._on_events(events, top)
    cpu = time.process_time() - cpu0
    entries = max(1, node.get_state().height)
    if limit != 0 and node.get_state().height == 0:
        raise SystemExit("bench.replay: nothing was applied (not a recording of this kind?)")
    print(
        f"{Path(etcdraft.__file__).parent}: {len(batches)} batches, height "
        f"{node.get_state().height}, {1e6 * cpu / entries:.1f} µs CPU per entry"
    )


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("out", type=Path)
    r.add_argument("--n", type=int, default=3000)
    q = sub.add_parser("replay")
    q.add_argument("src", type=Path)
    q.add_argument("--tree", type=Path, help="import etcdraft from this checkout")
    q.add_argument("--batches", type=int, help="replay only the first K batches")
    args = p.parse_args()
    if args.cmd == "record":
        record(args.out, args.n)
    else:
        replay(args.src, args.tree, args.batches)


if __name__ == "__main__":
    main()
