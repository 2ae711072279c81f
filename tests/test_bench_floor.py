"""bench/floor.py and bench/grpc_raw.py: the raw gRPC client's fenced transaction is
the broadcast's, byte for byte, and one short run of every floor side against real etcd
(what `make bench` relies on to report the floor), including a failing compare; and
one short run of bench/own_watch.py."""

from __future__ import annotations

from typing import Any

import pytest

from bench import floor, grpc_raw
from etcdraft.etcd import cmp_create, cmp_version, encode_txn, op_put, op_range, pb
from etcdraft.etcd import prefix_end as etcdraft_prefix_end


def test_raw_fenced_txn_is_the_broadcasts_transaction() -> None:
    """The request Node.broadcast sends (etcdraft's own builders, as in broadcast.py,
    written by encode_txn) and the raw client's are the same bytes."""
    leader, member = b"/ns/election/694d8a1b2c3d4e5f", b"/ns/members/n1"
    key, value = grpc_raw.log_key(b"/ns/log/", 42), b"\x08\x2a" + b"s" * 598
    assert key == b"/ns/log/00000000000000000042"
    fence = (cmp_create(leader, "EQUAL", 17), cmp_version(member, "GREATER", 0))
    theirs = encode_txn(
        [*fence, cmp_create(key, "EQUAL", 0)], [op_put(key, value)], [op_range(key)]
    )
    ours = grpc_raw.fenced_txn(fence, key, value)
    assert ours.SerializeToString(deterministic=True) == theirs
    # an explicit create_revision == 0 is on the wire (etcd's oneof), not left out
    assert ours.compare[2].WhichOneof("target_union") == "create_revision"


@pytest.mark.parametrize("prefix", [b"/a/", b"/a\xff", b"\xff\xff", b"x"])
def test_prefix_end_matches_etcdraft(prefix: bytes) -> None:
    assert grpc_raw.prefix_end(prefix) == etcdraft_prefix_end(prefix)


def test_floor_measures_every_side(etcd: Any, namespace: str) -> None:
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
    assert all(set(r) == set(floor.SIDES) for r in res["per_round"])  # every side, every round
    for side in floor.SIDES:
        for k in ("put_p50", "put_p99", "deliver_p50", "deliver_p99"):
            assert res[side][k] > 0, (side, k, res[side][k])
    assert len(logged) == 2 and "grpc_txn" in logged[0]


def test_fenced_side_sends_the_fenced_transaction(etcd: Any, namespace: str) -> None:
    prefix = namespace.encode() + b"/fenced/"
    side = floor.GrpcSide(etcd.endpoints[0], prefix, fenced=True)
    try:
        assert side.fence is not None
        key = grpc_raw.log_key(prefix + b"log/", 1)
        side.put(key, b"state")
        got, _ = side.arrived.get(timeout=5)
        while got != key:
            got, _ = side.arrived.get(timeout=5)
        stored = side.kv.Range(pb.RangeRequest(key=key), timeout=5).kvs
        assert [(kv.key, kv.value) for kv in stored] == [(key, b"state")]
        # the same log key again: the "log key unused" compare fails, as in a broadcast
        with pytest.raises(RuntimeError, match=r"fenced write .* failed"):
            side.put(key, b"other state")
        # a new term (the leader key re-created): the leader compare fails too
        side.kv.DeleteRange(pb.DeleteRangeRequest(key=side.fence.leader_key), timeout=5)
        side.kv.Put(pb.PutRequest(key=side.fence.leader_key, value=b"y"), timeout=5)
        with pytest.raises(RuntimeError, match=r"fenced write .* failed"):
            side.put(grpc_raw.log_key(prefix + b"log/", 2), b"state 2")
        stored = side.kv.Range(pb.RangeRequest(key=key), timeout=5).kvs
        assert [kv.value for kv in stored] == [b"state"]  # nothing overwritten
    finally:
        side.close()


def test_plain_side_puts_and_watches(etcd: Any, namespace: str) -> None:
    prefix = namespace.encode() + b"/plain/"
    side = floor.GrpcSide(etcd.endpoints[0], prefix)
    try:
        assert side.fence is None
        side.put(prefix + b"k", b"v")
        assert side.arrived.get(timeout=5)[0] == prefix + b"k"
    finally:
        side.close()


def test_own_watch_measures_every_side(etcd: Any, namespace: str) -> None:
    """bench/own_watch.py on real etcd: every side writes, the raw watch receives its
    own side's writes (else the run raises), and the figures are there for each size."""
    from bench import own_watch

    logged: list[str] = []
    res = own_watch.measure(
        list(etcd.endpoints), [600, 200_000], 1, 4, 2, prefix=namespace, log=logged.append
    )
    assert set(res["sizes"]) == {"600", "200000"}
    for by_side in res["sizes"].values():
        assert set(by_side) == set(own_watch.SIDES)
        for figures in by_side.values():
            assert figures["rate"] > 0 and figures["p50"] > 0, figures
    assert any("etcdraft" in line for line in logged)
