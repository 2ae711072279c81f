"""``_etcd_wire.encode_txn`` (pure logic): the transaction bytes it writes by hand are
exactly those protobuf writes for the same ``TxnRequest``, and etcd reads them (the
whole suite sends every transaction through it; one test here checks a large put's
bytes on real etcd)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from etcdraft._deadline import Deadline
from etcdraft.etcd import (
    EtcdClient,
    PutOp,
    RequestOp,
    cmp_create,
    cmp_mod,
    cmp_version,
    encode_txn,
    op_delete,
    op_put,
    op_range,
    pb,
)


def _as_pb(ops: list[RequestOp]) -> list[pb.RequestOp]:
    """The same operations as etcd's messages (what protobuf would serialise)."""
    return [
        pb.RequestOp(request_put=pb.PutRequest(key=op.key, value=op.value, lease=op.lease))
        if isinstance(op, PutOp)
        else op
        for op in ops
    ]


def _protobufs(compare: list[Any], success: list[RequestOp], failure: list[RequestOp]) -> bytes:
    req = pb.TxnRequest(compare=compare, success=_as_pb(success), failure=_as_pb(failure))
    return req.SerializeToString(deterministic=True)


def test_a_broadcasts_transaction_is_protobufs_bytes() -> None:
    key = b"/ns/log/00000000000000000042"
    compare = [
        cmp_create(b"/ns/election/694d8a1b", "EQUAL", 17),
        cmp_version(b"/ns/members/n1", "GREATER", 0),
        cmp_create(key, "EQUAL", 0),
    ]
    success = [op_put(key, b"\x08\x2a" + b"s" * 598), op_put(b"/ns/heartbeat", b"17")]
    failure = [op_range(key)]
    assert encode_txn(compare, success, failure) == _protobufs(compare, success, failure)
    parsed = pb.TxnRequest.FromString(encode_txn(compare, success, failure))
    assert parsed.success[0].request_put.value == b"\x08\x2a" + b"s" * 598
    assert parsed.compare[2].WhichOneof("target_union") == "create_revision"


def test_defaults_are_left_out_as_protobuf_does() -> None:
    """Proto3: empty bytes and a zero lease are not on the wire; an empty put is an
    empty PutRequest, still present as a RequestOp."""
    for op in (op_put(b"k", b""), op_put(b"", b"v"), op_put(b"", b""), op_put(b"k", b"v", 0)):
        assert encode_txn([], [op]) == _protobufs([], [op], [])
    assert encode_txn([], []) == b""


@given(
    puts=st.lists(
        st.tuples(
            st.binary(max_size=40),
            st.one_of(st.binary(max_size=300), st.sampled_from([127, 128, 16383, 16384, 2**21])),
            st.one_of(st.just(0), st.integers(min_value=1, max_value=2**63 - 1)),
        ),
        max_size=4,
    ),
    others=st.lists(st.sampled_from(["range", "delete", "delete_prefix"]), max_size=3),
    compares=st.integers(min_value=0, max_value=3),
    revision=st.integers(min_value=0, max_value=2**63 - 1),
)
def test_any_transaction_matches_protobuf(
    puts: list[tuple[bytes, bytes | int, int]], others: list[str], compares: int, revision: int
) -> None:
    success: list[RequestOp] = [
        op_put(k, v if isinstance(v, bytes) else b"x" * v, lease) for k, v, lease in puts
    ]
    failure: list[RequestOp] = [
        {
            "range": op_range(b"/a", b"/b", limit=3),
            "delete": op_delete(b"/a"),
            "delete_prefix": op_delete(b"/a/", b"/a0"),
        }[o]
        for o in others
    ]
    success += failure[:1]  # etcd's messages among the puts, in order
    compare = [cmp_mod(b"/k%d" % i, "EQUAL", revision) for i in range(compares)]
    assert encode_txn(compare, success, failure) == _protobufs(compare, success, failure)


def test_a_negative_lease_is_int64_on_the_wire() -> None:
    op = op_put(b"k", b"v", -5)
    assert encode_txn([], [op]) == _protobufs([], [op], [])


def test_etcd_reads_a_large_put_written_by_hand(etcd: Any, namespace: str) -> None:
    """Real etcd: a 1 MiB value in a put and a compare, through
    ``EtcdClient.txn`` (encode_txn), read back byte for byte."""
    client = EtcdClient(etcd.endpoints)
    try:
        key = f"{namespace}/big".encode()
        value = bytes(range(256)) * 4096
        d = Deadline(10)
        res = client.txn([cmp_create(key, "EQUAL", 0)], [op_put(key, value)], [op_range(key)], d)
        assert res.succeeded
        got = client.get(key, d)
        assert got is not None and got.value == value
        again = client.txn([cmp_create(key, "EQUAL", 0)], [op_put(key, b"no")], [op_range(key)], d)
        assert not again.succeeded and again.range_kvs(0)[0].value == value
    finally:
        client.close()
