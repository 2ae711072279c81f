"""The floor: how fast any client gets an isolated write through this machine's etcd.

Isolated writes (one every 150 ms) take longer than back-to-back ones on etcd itself,
whatever the client. This section measures the cheapest client there is on the same
etcd (``bench/grpc_raw.py``: a plain grpcio channel, etcd's generated stubs and
messages, no etcdraft client code), in two forms:

- ``grpc``: a plain ``KV/Put`` of a ~600-byte value, and a ``Watch/Watch`` stream over
  the prefix;
- ``grpc_txn``: the same, but each write is the fenced transaction etcdraft's broadcast
  sends (``KV/Txn``: three compares, a put on success, a range on failure; what fencing
  costs etcd).

Writer and watcher are threads of one process (the cheapest case: no second process to
wake), both on the first endpoint. For each write: put latency (start -> response) and
delivery (start -> the watch thread has the decoded event). Rounds rotate the sides.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.common import ENTRY_BYTES, median, pct
from bench.grpc_raw import Fence, PrefixWatch, new_channel, pb
from etcdraft.proto import etcd_kv_pb2 as mvccpb
from etcdraft.proto import etcd_rpc_pb2_grpc as pb_grpc

Stamp = tuple[bytes, float]

#: The forms measured, in the order they are reported.
SIDES = ("grpc", "grpc_txn")


class GrpcSide:
    """A writer and a watch thread over one prefix: :meth:`put` writes (and returns when
    etcd answered), the watch thread puts ``(key, monotonic time)`` on ``arrived`` for
    each event.

    ``fenced``: each write is the transaction etcdraft's broadcast sends (leader key
    create revision, member key version > 0, log key unused; put on success, a range of
    the log key on failure) instead of a plain put."""

    def __init__(self, endpoint: str, prefix: bytes, fenced: bool = False) -> None:
        self.fenced = fenced
        self.arrived: queue.Queue[Stamp] = queue.Queue()
        self.channel = new_channel(endpoint)
        self.kv = pb_grpc.KVStub(self.channel)

        def on_events(events: Sequence[mvccpb.Event], now: float) -> None:
            for ev in events:
                self.arrived.put((ev.kv.key, now))

        self.watch = PrefixWatch(endpoint, prefix, on_events, name="floor-grpc-watch")
        # the fence keys live outside the watched log keys' names but under the prefix
        self.fence = Fence(self.kv, prefix + b"fence/") if fenced else None

    def put(self, key: bytes, value: bytes) -> None:
        if self.fence is None:
            self.kv.Put(pb.PutRequest(key=key, value=value), timeout=5)
            return
        answer = self.kv.Txn(self.fence.txn(key, value), timeout=5)
        if not answer.succeeded:
            raise RuntimeError(f"fenced write of {key!r} failed (a compare did not hold)")

    def close(self) -> None:
        self.watch.close()
        self.channel.close()


# ------------------------------------------------------------------------ the run


def _one_round(side: GrpcSide, tag: str, n: int, interval: float, prefix: bytes) -> dict[str, Any]:
    value = b"v" * ENTRY_BYTES
    put_ms: list[float] = []
    deliver_ms: list[float] = []
    for i in range(n):
        key = prefix + f"{tag}/{i:06d}".encode()
        t0 = time.monotonic()
        side.put(key, value)
        t1 = time.monotonic()
        deadline = t0 + 5
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"floor: no watch event for {key!r} within 5 s")
            k, t = side.arrived.get(timeout=left)
            if k == key:
                break
        put_ms.append((t1 - t0) * 1e3)
        deliver_ms.append((t - t0) * 1e3)
        time.sleep(interval)  # the spacing of isolated writes, not synchronisation
    return {
        "put_p50": pct(put_ms, 50),
        "put_p99": pct(put_ms, 99),
        "deliver_p50": pct(deliver_ms, 50),
        "deliver_p99": pct(deliver_ms, 99),
    }


def bench_floor(
    cluster: Any,
    rounds: int,
    n: int,
    interval: float = 0.15,
    log: Callable[[str], None] = print,
    prefix: bytes = b"/bench-floor/",
    warmup: int = 20,
) -> dict[str, Any]:
    """Rounds of ``n`` writes per side, the sides rotated, on ``cluster`` (anything with
    ``endpoints``), ``interval`` seconds apart, under ``prefix``."""
    endpoint = cluster.endpoints[0]
    prefixes = {"grpc": prefix + b"grpc/", "grpc_txn": prefix + b"grpctxn/"}
    sides: dict[str, GrpcSide] = {}
    try:
        sides["grpc"] = GrpcSide(endpoint, prefixes["grpc"])
        sides["grpc_txn"] = GrpcSide(endpoint, prefixes["grpc_txn"], fenced=True)
        for name, side in sides.items():  # warm-up: connections, etcd's own caches
            _one_round(side, "warm", warmup, 0.0, prefixes[name])
        per_round: list[dict[str, dict[str, Any]]] = []
        names = list(sides)
        for r in range(rounds):
            k = r % len(names)
            order = names[k:] + names[:k]  # each side in each position in turn
            res = {s: _one_round(sides[s], f"r{r}", n, interval, prefixes[s]) for s in order}
            per_round.append(res)
            log(
                f"  floor {r + 1}/{rounds}: delivery p50 / write p50 (ms) "
                + ", ".join(
                    f"{s} {res[s]['deliver_p50']:.2f} / {res[s]['put_p50']:.2f}" for s in names
                )
            )
        out: dict[str, Any] = {"rounds": rounds, "n": n, "interval": interval}
        for s in names:
            out[s] = {
                k: median(r[s][k] for r in per_round)
                for k in ("put_p50", "put_p99", "deliver_p50", "deliver_p99")
            }
        out["per_round"] = per_round
        return out
    finally:
        for side in sides.values():
            side.close()
