"""bench/floor.py: the hand-encoded protobuf, and one short run of every side against
real etcd (what `make bench` relies on to report the floor)."""

from __future__ import annotations

from typing import Any

import pytest

from bench import floor


def test_varint_and_fields_round_trip() -> None:
    for n in (0, 1, 127, 128, 300, 2**35 + 7):
        got, end = floor._read_varint(floor._varint(n), 0)
        assert (got, end) == (n, len(floor._varint(n)))
    msg = floor._field(1, b"key") + floor._field(2, b"v" * 600)
    assert [(num, wt, val) for num, wt, val in floor._fields(msg)] == [
        (1, 2, b"key"),
        (2, 2, b"v" * 600),
    ]


def test_event_keys_of_a_watch_response() -> None:
    def kv(key: bytes) -> bytes:
        return floor._field(1, key) + floor._field(5, b"value")

    # header (1), then two events (11) each with kv (2); a varint field in between
    msg = (
        floor._field(1, b"\x08\x01")
        + floor._varint(2 << 3)
        + floor._varint(7)
        + floor._field(11, floor._field(2, kv(b"/a")))
        + floor._field(11, floor._field(2, kv(b"/b")))
    )
    assert floor._event_keys(msg) == [b"/a", b"/b"]
    assert floor._event_keys(floor._field(1, b"")) == []


def test_floor_measures_every_side(etcd: object, namespace: str) -> None:
    logged: list[str] = []
    res = floor.bench_floor(
        etcd,
        rounds=2,
        n=3,
        interval=0.0,
        log=logged.append,
        prefix=namespace.encode() + b"/floor/",
        warmup=2,
    )
    assert res["rounds"] == 2 and len(res["per_round"]) == 2
    assert all(len(r) == 4 for r in res["per_round"])  # every side in every round
    for side in ("gateway", "gateway_txn", "grpc", "grpc_txn"):
        for k in ("put_p50", "put_p99", "deliver_p50", "deliver_p99"):
            assert 0 < res[side][k] < 5000, (side, k, res[side][k])
    assert len(logged) == 2 and "gateway_txn" in logged[0] and "grpc_txn" in logged[0]


@pytest.mark.parametrize("kind", ["gateway", "grpc"])
def test_fenced_side_sends_the_fenced_transaction(etcd: Any, namespace: str, kind: str) -> None:
    prefix = namespace.encode() + b"/fenced/"
    side: floor._Side
    if kind == "gateway":
        side = floor.GatewaySide(etcd.endpoints[0], prefix, fenced=True)
    else:
        side = floor.GrpcSide(etcd.endpoints[0], prefix, fenced=True)
    try:
        key = prefix + b"log/00000000000000000001"
        side.put(key, b"state")
        got, _ = side.arrived.get(timeout=5)
        while got != key:
            got, _ = side.arrived.get(timeout=5)
        # the same log key again: the "log key unused" compare fails, as in a broadcast
        with pytest.raises(RuntimeError, match=r"fenced (gRPC )?write failed"):
            side.put(key, b"other state")
    finally:
        side.close()
