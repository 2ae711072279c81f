"""One start-up measurement in a fresh interpreter (run by ``bench/startup.py``):
prints one JSON object and exits. Nothing but the standard library is imported before
the measurement starts.

``--mode import``: ``import etcdraft`` (wall time, RSS before and after, whether it
loaded grpc). ``--mode grpc``: ``import grpc`` alone. ``--mode client``: an
``EtcdClient`` on the endpoints, its first ``put`` (connection set-up included) and the
median of the next ones. ``--mode raw``: the same with a bare grpcio channel and the
generated stub (``bench/grpc_raw.py``). ``--mode node``: ``Node.start()`` of a
single-member node, the time until it leads, its first broadcast and the median of the
next ones, and the process's RSS after them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open(f"/proc/{os.getpid()}/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("import", "grpc", "client", "raw", "node"), required=True)
    ap.add_argument("--endpoints", default="")
    ap.add_argument("--namespace", default="/bench/startup")
    ap.add_argument("--n", type=int, default=20)
    args = ap.parse_args()
    rss0 = _rss()
    out: dict[str, object] = {"mode": args.mode, "rss_start": rss0}
    t0 = time.perf_counter()
    if args.mode == "grpc":
        import grpc  # noqa: F401

        out["import_s"] = time.perf_counter() - t0
        out["rss_after_import"] = _rss()
    else:
        import etcdraft

        out["import_s"] = time.perf_counter() - t0
        out["rss_after_import"] = _rss()
        out["grpc_loaded"] = "grpc" in sys.modules
        out["requests_loaded"] = "requests" in sys.modules
        out["etcdraft"] = os.path.dirname(etcdraft.__file__)
    key = f"{args.namespace}/{os.getpid()}".encode()
    if args.mode == "client":
        from etcdraft.etcd import EtcdClient

        client = EtcdClient(args.endpoints.split(","))
        t1 = time.perf_counter()
        client.put(key, b"x")
        out["first_call_s"] = time.perf_counter() - t1
        lat = []
        for _ in range(args.n):
            t1 = time.perf_counter()
            client.put(key, b"x")
            lat.append(time.perf_counter() - t1)
        out["next_call_p50_s"] = _median(lat)
        out["rss_end"] = _rss()
        client.close()
    elif args.mode == "raw":
        from bench.grpc_raw import new_channel, pb
        from etcdraft.proto import etcd_rpc_pb2_grpc as pb_grpc

        t1 = time.perf_counter()  # the channel is made lazily by EtcdClient: count it
        channel = new_channel(args.endpoints.split(",")[0])
        kv = pb_grpc.KVStub(channel)
        kv.Put(pb.PutRequest(key=key, value=b"x"), timeout=5)
        out["first_call_s"] = time.perf_counter() - t1
        lat = []
        for _ in range(args.n):
            t1 = time.perf_counter()
            kv.Put(pb.PutRequest(key=key, value=b"x"), timeout=5)
            lat.append(time.perf_counter() - t1)
        out["next_call_p50_s"] = _median(lat)
        out["rss_end"] = _rss()
        channel.close()
    elif args.mode == "node":
        from bench.common import make_state
        from etcdraft import Config, Node

        cfg = Config(
            node_id="n1",
            raft_addr="n1:1",
            endpoints=args.endpoints,
            namespace=f"{args.namespace}/{os.getpid()}",
            peers="n1@n1:1",
            bootstrap=True,
        )
        node = Node(cfg)
        t1 = time.perf_counter()
        node.start()
        out["start_s"] = time.perf_counter() - t1
        while not node.is_leader():
            node.wait_role_change(False, 0.05)
        out["to_leader_s"] = time.perf_counter() - t1
        head = node.get_state()
        states = []
        ts = head.timestamp
        for i in range(args.n + 1):
            st = make_state(head.height + 1 + i, ts)
            ts = st.timestamp
            states.append(st)
        t2 = time.perf_counter()
        node.broadcast(states[0])
        out["first_broadcast_s"] = time.perf_counter() - t2
        lat = []
        for st in states[1:]:
            t2 = time.perf_counter()
            node.broadcast(st)
            lat.append(time.perf_counter() - t2)
        out["next_broadcast_p50_s"] = _median(lat)
        out["rss_end"] = _rss()
        out["threads"] = len(os.listdir(f"/proc/{os.getpid()}/task"))
        node.shutdown()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
