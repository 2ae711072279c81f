"""The raw baseline of the benchmarks before etcdraft moved to gRPC (history; ``python
-m bench --raw etcd3gw``): etcd3gw against etcd's JSON gateway, run by
``bench/raw_proc.py --client etcd3gw``.

``run_txn``: ``run {n, interval, out, op, state_bytes}`` does sequential transactions
through ``etcd3gw.Etcd3Client.transaction`` that write what ``Node.broadcast`` writes
(the same compares, success put and failure range; ``op="put"``: a plain
``/v3/kv/put`` of the same bytes). Keys that never change are base64-encoded once, the
per-write key and value each time (what a careful hand-written client does). The
requests session ignores proxy environment variables (``trust_env = False``).

``run_watch``: one watch stream (``POST /v3/watch``) over the raw prefix, each message
JSON-decoded and each event's key and value base64-decoded.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from bench.common import ENTRY_BYTES, serve, write_lines


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _client(endpoint: str) -> tuple[Any, Any]:
    import requests
    from etcd3gw.client import Etcd3Client

    url = urlsplit(endpoint)
    session = requests.Session()
    session.trust_env = False
    client = Etcd3Client(
        host=url.hostname or "127.0.0.1", port=url.port or 2379, api_path="/v3/", session=session
    )
    return client, session


def run_txn(endpoint: str, prefix: bytes, log_prefix: bytes) -> int:
    from bench.raw_proc import build_states, timed_writes

    client, _ = _client(endpoint)
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
    put_url = client.get_url("/kv/put")
    state = {"height": 0, "ts": 0}

    def txn(st: Any) -> None:
        log_key = b64(log_prefix + str(st.height).zfill(20).encode())
        body = {
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
            "success": [{"request_put": {"key": log_key, "value": b64(st.SerializeToString())}}],
            "failure": [{"request_range": {"key": log_key}}],
        }
        resp = client.transaction(body)
        if not resp.get("succeeded"):
            raise RuntimeError(f"raw txn at height {st.height} failed: {resp}")

    def put(st: Any) -> None:
        log_key = b64(log_prefix + str(st.height).zfill(20).encode())
        body = {"key": log_key, "value": b64(st.SerializeToString())}
        client.post(put_url, data=json.dumps(body))

    def h_run(
        n: int, interval: float = 0.0, out: str = "", op: str = "txn", state_bytes: int = 0
    ) -> dict[str, Any]:
        states = build_states(state, n, state_bytes or ENTRY_BYTES)
        return timed_writes(states, interval, txn if op == "txn" else put, out)

    serve({"run": h_run, "status": lambda: {"pid": os.getpid()}})
    return 0


def run_watch(endpoint: str, prefix: bytes, log_prefix: bytes) -> int:
    _, session = _client(endpoint)
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
