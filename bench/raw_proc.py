"""The raw baseline in its own process: the cheapest etcd client there is.

``--client grpc`` (the default, the headline baseline): a plain grpcio channel with
etcd's generated stubs and messages (``bench/grpc_raw.py``), no etcdraft client code.
``--client etcd3gw``: etcd3gw over etcd's JSON gateway, the baseline of the benchmarks
before etcdraft moved to gRPC (kept for history).

``--role txn``: ``run {n, interval, out, op, state_bytes}`` writes ``n`` blocks one
after the other (``interval`` seconds apart start to start; 0: back to back) and
writes ``height t_start t_end`` lines to ``out``. ``op="txn"`` (default) is what
``Node.broadcast`` writes: one transaction with the same compares (leader key create
revision == term, member key version > 0, log key create revision == 0), the same
success put (an encoded RaftBlockState of ``state_bytes``, ~600 by default, under a
20-digit log key) and the same failure range. ``op="put"``: a plain ``KV/Put`` of the
same bytes under the same key (gRPC only). States are built before the clock runs;
each write encodes its state and builds its request, what never changes is built once.

``--role watch``: one watch stream over the raw prefix; ``flush {out}`` writes
``height t`` lines (``time.monotonic()`` once a message is decoded: protobuf for gRPC;
JSON, then base64 of each event's key and value for etcd3gw).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.common import ENTRY_BYTES, make_state, serve, write_lines
from bench.grpc_raw import Fence, PrefixWatch, log_key, new_channel, pb


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", choices=("txn", "watch"), required=True)
    ap.add_argument("--client", choices=("grpc", "etcd3gw"), default="grpc")
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--prefix", required=True)
    args = ap.parse_args()
    prefix = args.prefix.rstrip("/").encode() + b"/"
    log_prefix = prefix + b"log/"
    if args.client == "etcd3gw":
        from bench import raw_etcd3gw

        if args.role == "txn":
            return raw_etcd3gw.run_txn(args.endpoint, prefix, log_prefix)
        return raw_etcd3gw.run_watch(args.endpoint, prefix, log_prefix)
    if args.role == "txn":
        return run_txn(args.endpoint, prefix, log_prefix)
    return run_watch(args.endpoint, prefix, log_prefix)


def build_states(state: dict[str, int], n: int, size: int) -> list[Any]:
    """``n`` states after the last one written (``state``: height, timestamp)."""
    h, ts = state["height"], state["ts"]
    states = []
    for i in range(n):
        st = make_state(h + 1 + i, ts, size=size)
        ts = st.timestamp
        states.append(st)
    state["height"], state["ts"] = h + n, ts
    return states


def timed_writes(
    states: Sequence[Any], interval: float, write: Callable[[Any], None], out: str
) -> dict[str, Any]:
    """Write each state with ``write`` (spaced by ``interval``); record the times."""
    rows: list[tuple[int, float, float]] = []
    mono = time.monotonic
    next_at = mono()
    for st in states:
        if interval > 0:
            delay = next_at - mono()
            if delay > 0:
                time.sleep(delay)
            next_at += interval
        t0 = mono()
        write(st)
        rows.append((st.height, t0, mono()))
    if out:
        write_lines(out, rows)
    return {"n": len(rows)}


def run_txn(endpoint: str, prefix: bytes, log_prefix: bytes) -> int:
    channel = new_channel(endpoint)
    from etcdraft.proto import etcd_rpc_pb2_grpc as pb_grpc

    kv = pb_grpc.KVStub(channel)
    # set-up: the "leader key" and the "member key" exist, as for a leading node
    fence = Fence(kv, prefix)
    txn_call, put_call = kv.Txn, kv.Put
    state = {"height": 0, "ts": 0}

    def limit(value: bytes) -> float:
        return 5.0 + 2.0 * len(value) / 1e6  # multi-MB values on a loaded machine

    def txn(st: Any) -> None:
        value = st.SerializeToString()
        resp = txn_call(fence.txn(log_key(log_prefix, st.height), value), timeout=limit(value))
        if not resp.succeeded:
            raise RuntimeError(f"raw txn at height {st.height} failed: {resp}")

    def put(st: Any) -> None:
        value = st.SerializeToString()
        put_call(
            pb.PutRequest(key=log_key(log_prefix, st.height), value=value), timeout=limit(value)
        )

    def h_run(
        n: int, interval: float = 0.0, out: str = "", op: str = "txn", state_bytes: int = 0
    ) -> dict[str, Any]:
        states = build_states(state, n, state_bytes or ENTRY_BYTES)
        return timed_writes(states, interval, txn if op == "txn" else put, out)

    serve({"run": h_run, "status": lambda: {"pid": os.getpid()}})
    channel.close()
    return 0


def run_watch(endpoint: str, prefix: bytes, log_prefix: bytes) -> int:
    stamps: list[tuple[int, float]] = []
    plen = len(log_prefix)

    def on_events(events: Sequence[Any], now: float) -> None:
        for ev in events:
            key = ev.kv.key
            if key.startswith(log_prefix):
                stamps.append((int(key[plen:]), now))

    watch = PrefixWatch(endpoint, prefix, on_events, name="raw-watch")

    def h_flush(out: str) -> dict[str, Any]:
        nonlocal stamps
        taken, stamps = stamps, []
        write_lines(out, taken)
        return {"n": len(taken)}

    def h_status() -> dict[str, Any]:
        return {"pid": os.getpid(), "ready": watch.created.is_set() and watch.error is None}

    serve({"flush": h_flush, "status": h_status})
    watch.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
