"""The raw baseline in its own process: etcd3gw against the same JSON gateway.

``--role txn``: ``run {n, interval, out}`` does ``n`` sequential transactions through
``etcd3gw.Etcd3Client.transaction`` that write what ``Node.broadcast`` writes, with
the same compares (leader key create revision, member key version, log key create
revision == 0), the same success put (a ~600-byte encoded RaftBlockState under a
20-digit log key) and the same failure range; writes ``height t_start t_end`` lines.
Keys that never change are base64-encoded once, the per-write key and value each
time (what a careful hand-written client does). The requests session ignores proxy
environment variables (``trust_env = False``), as etcdraft's does.

``--role watch``: one watch stream (``POST /v3/watch``) over the raw prefix, each
message JSON-decoded and each event's key and value base64-decoded; ``flush {out}``
writes ``height t`` lines (``time.monotonic()`` after decoding).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import requests
from etcd3gw.client import Etcd3Client

from bench.common import make_state, serve, write_lines


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", choices=("txn", "watch"), required=True)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--prefix", required=True)
    args = ap.parse_args()
    url = urlsplit(args.endpoint)
    session = requests.Session()
    session.trust_env = False
    client = Etcd3Client(
        host=url.hostname or "127.0.0.1", port=url.port or 2379, api_path="/v3/", session=session
    )
    prefix = args.prefix.rstrip("/").encode() + b"/"
    log_prefix = prefix + b"log/"

    if args.role == "txn":
        return run_txn(client, prefix, log_prefix)
    return run_watch(args.endpoint, session, prefix, log_prefix)


def run_txn(client: Etcd3Client, prefix: bytes, log_prefix: bytes) -> int:
    leader_key = prefix + b"election/694d8a1b2c3d4e5f"
    member_key = prefix + b"members/raw"
    # set-up: the "leader key" and the "member key" exist, as for a leading node
    client.post(
        client.get_url("/kv/put"), data=json.dumps({"key": b64(member_key), "value": b64(b"raw:1")})
    )
    hdr = client.post(
        client.get_url("/kv/put"), data=json.dumps({"key": b64(leader_key), "value": b64(b"raw")})
    )
    leader_rev = str(hdr["header"]["revision"])
    leader_b64, member_b64 = b64(leader_key), b64(member_key)
    state = {"height": 0, "ts": 0}

    def h_run(n: int, interval: float = 0.0, out: str = "") -> dict[str, Any]:
        h, ts = state["height"], state["ts"]
        states = []
        for i in range(n):
            st = make_state(h + 1 + i, ts)
            ts = st.timestamp
            states.append(st)
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
            log_key = b64(log_prefix + str(st.height).zfill(20).encode())
            txn = {
                "compare": [
                    {
                        "key": leader_b64,
                        "target": "CREATE",
                        "result": "EQUAL",
                        "create_revision": leader_rev,
                    },
                    {"key": member_b64, "target": "VERSION", "result": "GREATER", "version": "0"},
                    {"key": log_key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"},
                ],
                "success": [
                    {"request_put": {"key": log_key, "value": b64(st.SerializeToString())}}
                ],
                "failure": [{"request_range": {"key": log_key}}],
            }
            resp = client.transaction(txn)
            if not resp.get("succeeded"):
                raise RuntimeError(f"raw txn at height {st.height} failed: {resp}")
            rows.append((st.height, t0, mono()))
        state["height"], state["ts"] = h + n, ts
        if out:
            write_lines(out, rows)
        return {"n": len(rows)}

    serve({"run": h_run, "status": lambda: {"pid": os.getpid()}})
    return 0


def run_watch(endpoint: str, session: requests.Session, prefix: bytes, log_prefix: bytes) -> int:
    end = bytearray(prefix)
    end[-1] += 1
    stamps: list[tuple[int, float]] = []
    started = threading.Event()
    stop = threading.Event()
    plen = len(log_prefix)

    def loop() -> None:
        body = {"create_request": {"key": b64(prefix), "range_end": b64(bytes(end))}}
        while not stop.is_set():
            try:
                resp = session.post(
                    endpoint.rstrip("/") + "/v3/watch",
                    data=json.dumps(body),
                    stream=True,
                    timeout=(1.0, 60.0),
                )
                for line in resp.iter_lines(chunk_size=None):
                    if not line:
                        continue
                    msg = json.loads(line)
                    result = msg.get("result") or {}
                    if result.get("created"):
                        started.set()
                    for ev in result.get("events") or ():
                        kv = ev.get("kv") or {}
                        key = base64.b64decode(kv.get("key", ""))
                        base64.b64decode(kv.get("value", ""))
                        if key.startswith(log_prefix):
                            stamps.append((int(key[plen:]), time.monotonic()))
            except Exception as exc:  # reconnect (bounded by the benchmark's lifetime)
                print(f"raw watch: {exc}", file=sys.stderr)
                stop.wait(0.1)

    threading.Thread(target=loop, daemon=True, name="raw-watch").start()
    started.wait(10)

    def h_flush(out: str) -> dict[str, Any]:
        nonlocal stamps
        taken, stamps = stamps, []
        write_lines(out, taken)
        return {"n": len(taken)}

    serve({"flush": h_flush, "status": lambda: {"pid": os.getpid(), "ready": started.is_set()}})
    stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
