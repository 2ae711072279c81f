"""The floor: how fast any client gets an isolated write through this machine's etcd.

Isolated writes (one every 150 ms) take longer than back-to-back ones on etcd itself,
whatever the client. This section measures the cheapest possible client on the same
etcd, with no etcdraft client code involved (only its JSON builders, so that the
gateway's fenced transaction is exactly the broadcast's request), in four forms:

- ``gateway``: a plain ``PUT`` of a ~600-byte value through etcd's JSON gateway
  (``POST /v3/kv/put`` over one keep-alive ``http.client`` connection) and a watch
  stream (``POST /v3/watch``), JSON and base64 decoded;
- ``gateway_txn``: the same, but each write is the fenced transaction etcdraft's
  broadcast sends (three compares, a put; what fencing costs etcd);
- ``grpc``: the plain put and the watch over etcd's gRPC API directly (grpcio,
  requests encoded by hand: no gateway, no JSON);
- ``grpc_txn``: the same with the fenced transaction (``KV/Txn``).

Writer and watcher are threads of one process (the cheapest case: no second process to
wake), both on the first endpoint. For each write: put latency (start → response) and
delivery (start → the watch thread has the event). Rounds rotate the sides.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from bench.common import ENTRY_BYTES, median, pct
from etcdraft.etcd import b64, cmp_create, cmp_version, op_put, op_range, prefix_end, unb64

Stamp = tuple[bytes, float]


# ------------------------------------------------------------- protobuf, by hand


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num: int, data: bytes) -> bytes:
    """A length-delimited field (bytes or an embedded message)."""
    return _varint((num << 3) | 2) + _varint(len(data)) + data


def _vfield(num: int, value: int) -> bytes:
    """A varint field (an integer or an enum)."""
    return _varint(num << 3) + _varint(value)


def _header_revision(msg: bytes) -> int:
    """The revision in the header (1) of an etcd response (ResponseHeader.revision = 3)."""
    for num, _, header in _fields(msg):
        if num == 1:
            for n2, _, rev in _fields(header):
                if n2 == 3:
                    return int(rev)
    raise ValueError("no revision in the response header")


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of one message; values of wire type 2 as bytes."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _read_varint(buf, i)
        num, wt = key >> 3, key & 7
        val: Any
        if wt == 0:
            val, i = _read_varint(buf, i)
        elif wt == 2:
            ln, i = _read_varint(buf, i)
            val, i = buf[i : i + ln], i + ln
        elif wt == 1:
            val, i = buf[i : i + 8], i + 8
        elif wt == 5:
            val, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"wire type {wt}")
        yield num, wt, val


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _event_keys(msg: bytes) -> list[bytes]:
    """Keys of the events of an etcdserverpb.WatchResponse (events = 11, Event.kv = 2,
    KeyValue.key = 1)."""
    keys: list[bytes] = []
    for num, _, ev in _fields(msg):
        if num == 11:
            for n2, _, kv in _fields(ev):
                if n2 == 2:
                    keys.extend(v for n3, _, v in _fields(kv) if n3 == 1)
    return keys


# ------------------------------------------------------------------------- the sides


class _Side:
    """A writer and a watch thread over one prefix: ``put(key, value)`` writes (and
    returns when etcd answered), the watch thread puts ``(key, monotonic time)`` on
    ``arrived`` for each event."""

    def __init__(self) -> None:
        self.arrived: queue.Queue[Stamp] = queue.Queue()

    def put(self, key: bytes, value: bytes) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class GatewaySide(_Side):
    """``fenced``: each write is the transaction etcdraft's broadcast sends (leader key
    create revision, member key version > 0, log key unused; put on success, a range
    on failure) instead of a plain put."""

    def __init__(self, endpoint: str, prefix: bytes, fenced: bool = False) -> None:
        super().__init__()
        self.fenced = fenced
        u = urlsplit(endpoint)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 2379
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
        self.wconn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        self._closed = False
        body = {"create_request": {"key": b64(prefix), "range_end": b64(prefix_end(prefix))}}
        self.wconn.request("POST", "/v3/watch", json.dumps(body))
        self.resp = self.wconn.getresponse()
        created = json.loads(self.resp.readline())
        if not created.get("result", {}).get("created"):
            raise RuntimeError(f"gateway watch not created: {created}")
        threading.Thread(target=self._read, daemon=True, name="floor-gw-watch").start()
        if fenced:
            self._leader = prefix + b"fence/election/694d8a1b2c3d4e5f"
            member = prefix + b"fence/members/floor"
            self._post("/v3/kv/put", op_put(member, b"floor:1")["request_put"])
            hdr = self._post("/v3/kv/put", op_put(self._leader, b"floor")["request_put"])
            # the compares of a broadcast, built once as Node does per term
            self._fence = [
                cmp_create(self._leader, "EQUAL", int(hdr["header"]["revision"])),
                cmp_version(member, "GREATER", 0),
            ]

    def _read(self) -> None:
        try:
            while True:
                line = self.resp.readline()
                if not line:
                    return
                msg = json.loads(line)
                for ev in msg.get("result", {}).get("events", ()):
                    kv = ev["kv"]
                    key = unb64(kv["key"])
                    unb64(kv.get("value"))
                    self.arrived.put((key, time.monotonic()))
        except Exception:
            if self._closed:  # close() pulled the stream from under the reader
                return
            raise

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.conn.request("POST", path, json.dumps(body, separators=(",", ":")))
        r = self.conn.getresponse()
        answer = r.read()
        if r.status != 200:
            raise RuntimeError(f"gateway {path}: {r.status} {answer[:200]!r}")
        out: dict[str, Any] = json.loads(answer)
        return out

    def put(self, key: bytes, value: bytes) -> None:
        if not self.fenced:
            self._post("/v3/kv/put", op_put(key, value)["request_put"])
            return
        answer = self._post(
            "/v3/kv/txn",
            {
                "compare": [*self._fence, cmp_create(key, "EQUAL", 0)],
                "success": [op_put(key, value)],
                "failure": [op_range(self._leader)],
            },
        )
        if not answer.get("succeeded"):
            raise RuntimeError(f"fenced write failed: {answer}")

    def close(self) -> None:
        self._closed = True
        self.conn.close()
        sock = self.wconn.sock
        if sock is not None:  # wakes the reader thread, which holds the stream's lock
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.wconn.close()


class GrpcSide(_Side):
    """``fenced``: each write is the same fenced transaction as the gateway's
    (``KV/Txn``: three compares, a put on success, a range on failure)."""

    def __init__(self, endpoint: str, prefix: bytes, fenced: bool = False) -> None:
        import grpc  # type: ignore[import-untyped]

        super().__init__()
        self.fenced = fenced
        target = urlsplit(endpoint).netloc
        self.channel = grpc.insecure_channel(target)
        ident: Callable[[bytes], bytes] = lambda b: b  # noqa: E731
        self._put = self.channel.unary_unary(
            "/etcdserverpb.KV/Put", request_serializer=ident, response_deserializer=ident
        )
        self._txn = self.channel.unary_unary(
            "/etcdserverpb.KV/Txn", request_serializer=ident, response_deserializer=ident
        )
        watch = self.channel.stream_stream(
            "/etcdserverpb.Watch/Watch", request_serializer=ident, response_deserializer=ident
        )
        self._stop = threading.Event()
        created = threading.Event()
        create = _field(1, _field(1, prefix) + _field(2, prefix_end(prefix)))

        def requests() -> Iterator[bytes]:
            yield create
            self._stop.wait()

        self._call = watch(requests())

        def read() -> None:
            try:
                for msg in self._call:
                    now = time.monotonic()
                    created.set()
                    for key in _event_keys(msg):
                        self.arrived.put((key, now))
            except Exception:  # the stream ends with a cancellation
                return

        threading.Thread(target=read, daemon=True, name="floor-grpc-watch").start()
        if not created.wait(10):
            raise RuntimeError("gRPC watch not created within 10 s")
        if fenced:
            self._leader = prefix + b"fence/election/694d8a1b2c3d4e5f"
            self._member = prefix + b"fence/members/floor"
            self._put(_field(1, self._member) + _field(2, b"floor:1"), timeout=5)
            answer = self._put(_field(1, self._leader) + _field(2, b"floor"), timeout=5)
            self._leader_rev = _header_revision(answer)

    def put(self, key: bytes, value: bytes) -> None:
        if not self.fenced:
            self._put(_field(1, key) + _field(2, value), timeout=5)
            return
        # Compare: result 1 (EQUAL 0, GREATER 1), target 2 (VERSION 0, CREATE 1),
        # key 3, version 4, create_revision 5; RequestOp: request_range 1, request_put 2
        txn = (
            _field(
                1,
                _vfield(1, 0)
                + _vfield(2, 1)
                + _field(3, self._leader)
                + _vfield(5, self._leader_rev),
            )
            + _field(1, _vfield(1, 1) + _vfield(2, 0) + _field(3, self._member) + _vfield(4, 0))
            + _field(1, _vfield(1, 0) + _vfield(2, 1) + _field(3, key) + _vfield(5, 0))
            + _field(2, _field(2, _field(1, key) + _field(2, value)))
            + _field(3, _field(1, _field(1, self._leader)))
        )
        answer = self._txn(txn, timeout=5)
        if not any(num == 2 and val == 1 for num, _, val in _fields(answer)):
            raise RuntimeError("fenced gRPC write failed")

    def close(self) -> None:
        self._stop.set()
        self._call.cancel()
        self.channel.close()


# ------------------------------------------------------------------------ the run


def _one_round(side: _Side, tag: str, n: int, interval: float, prefix: bytes) -> dict[str, Any]:
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
    prefixes = {
        "gateway": prefix + b"gw/",
        "gateway_txn": prefix + b"gwtxn/",
        "grpc": prefix + b"grpc/",
        "grpc_txn": prefix + b"grpctxn/",
    }
    sides: dict[str, _Side] = {}
    try:
        sides["gateway"] = GatewaySide(endpoint, prefixes["gateway"])
        sides["gateway_txn"] = GatewaySide(endpoint, prefixes["gateway_txn"], fenced=True)
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
