"""The messages of etcd's v3 gRPC API as etcdraft builds and reads them: compare and
request builders for transactions, and the key-value and result records the client
returns. Pure data, no I/O; :mod:`etcdraft.etcd` re-exports all of it.

The builders return etcd's own protobuf messages (``etcdserverpb.Compare`` and
``etcdserverpb.RequestOp``, generated from ``etcdraft/proto/etcd_rpc.proto``), except
:func:`op_put`, which keeps a put's key and value as they are (:class:`PutOp`):
:func:`encode_txn` writes a transaction's wire bytes with each value copied once.
Nesting a message in another copies it (python-protobuf's upb backend copies through
the wire format): a 1 MB put became a ``TxnRequest`` through three such copies and a
serialisation, 2.7 ms of CPU, against 0.05 ms for the same bytes written by
:func:`encode_txn` (docs/architecture.md, "The transport")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

from etcdraft.proto import etcd_kv_pb2 as mvccpb
from etcdraft.proto import etcd_rpc_pb2 as pb

__all__ = [
    "KV",
    "Compare",
    "PutOp",
    "RangeResult",
    "RequestOp",
    "TxnResult",
    "cmp_create",
    "cmp_lease",
    "cmp_mod",
    "cmp_value",
    "cmp_version",
    "encode_txn",
    "op_delete",
    "op_put",
    "op_range",
    "prefix_end",
]

Compare: TypeAlias = pb.Compare


@dataclass(frozen=True, slots=True)
class PutOp:
    """A put inside a transaction (etcd's ``RequestOp.request_put``), kept as its
    parts until :func:`encode_txn` writes it."""

    key: bytes
    value: bytes
    lease: int = 0


#: One operation of a transaction: etcd's message, or a put kept as its parts.
RequestOp: TypeAlias = pb.RequestOp | PutOp

_RESULTS: dict[str, pb.Compare.CompareResult] = {
    "EQUAL": pb.Compare.EQUAL,
    "GREATER": pb.Compare.GREATER,
    "LESS": pb.Compare.LESS,
    "NOT_EQUAL": pb.Compare.NOT_EQUAL,
}


def prefix_end(prefix: bytes) -> bytes:
    """The range end covering every key that starts with ``prefix``."""
    buf = bytearray(prefix)
    for i in range(len(buf) - 1, -1, -1):
        if buf[i] < 0xFF:
            buf[i] += 1
            return bytes(buf[: i + 1])
    return b"\x00"


def _result(result: str) -> pb.Compare.CompareResult:
    try:
        return _RESULTS[result]
    except KeyError:
        raise ValueError(
            f"compare result must be one of {sorted(_RESULTS)}, not {result!r}"
        ) from None


# -- transaction builders ----------------------------------------------------------


def cmp_create(
    key: bytes, result: str, revision: int, *, range_end: bytes | None = None
) -> Compare:
    """Compare the key's create revision (0 = key absent). With ``range_end``, every
    key of ``[key, range_end)`` must match (an empty range counts as absent)."""
    cmp = pb.Compare(
        key=key, target=pb.Compare.CREATE, result=_result(result), create_revision=revision
    )
    if range_end is not None:
        cmp.range_end = range_end
    return cmp


def cmp_mod(key: bytes, result: str, revision: int) -> Compare:
    return pb.Compare(key=key, target=pb.Compare.MOD, result=_result(result), mod_revision=revision)


def cmp_version(key: bytes, result: str, version: int) -> Compare:
    return pb.Compare(key=key, target=pb.Compare.VERSION, result=_result(result), version=version)


def cmp_value(key: bytes, result: str, value: bytes) -> Compare:
    return pb.Compare(key=key, target=pb.Compare.VALUE, result=_result(result), value=value)


def cmp_lease(key: bytes, result: str, lease: int) -> Compare:
    return pb.Compare(key=key, target=pb.Compare.LEASE, result=_result(result), lease=lease)


def op_put(key: bytes, value: bytes, lease: int = 0) -> PutOp:
    return PutOp(key, value, lease)


def op_delete(key: bytes, range_end: bytes | None = None) -> RequestOp:
    req = pb.DeleteRangeRequest(key=key)
    if range_end is not None:
        req.range_end = range_end
    return pb.RequestOp(request_delete_range=req)


def op_range(key: bytes, range_end: bytes | None = None, limit: int = 0) -> RequestOp:
    req = pb.RangeRequest(key=key, limit=limit)
    if range_end is not None:
        req.range_end = range_end
    return pb.RequestOp(request_range=req)


# -- a transaction's wire bytes --------------------------------------------------------
# Protocol buffers' encoding (protobuf.dev/programming-guides/encoding): a field is its
# tag (field number << 3 | wire type) and, for a message or bytes (wire type 2), the
# payload's length as a varint before the payload. Proto3 leaves out fields that hold
# their default (empty bytes, 0), and protobuf writes fields in field-number order:
# encode_txn writes exactly the bytes of ``TxnRequest(...).SerializeToString()``
# (tests/test_etcd_wire.py checks it).


_SMALL_VARINTS = [bytes((i,)) for i in range(0x80)]


def _varint(n: int) -> bytes:
    if 0 <= n < 0x80:
        return _SMALL_VARINTS[n]
    if n < 0:  # int64: two's complement, ten bytes
        n += 1 << 64
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _put_field(tag: bytes, op: PutOp) -> tuple[bytes, bytes, bytes]:
    """The field ``tag`` holding ``RequestOp{request_put (2): PutRequest{key (1),
    value (2), lease (3)}}``, as the bytes before the value, the value, and the bytes
    after it (so the value is copied only by the final join)."""
    key, value = op.key, op.value
    head = b"\x0a" + _varint(len(key)) + key if key else b""
    if value:
        head += b"\x12" + _varint(len(value))
    tail = b"\x18" + _varint(op.lease) if op.lease else b""
    body = len(head) + len(value) + len(tail)  # PutRequest
    put = b"\x12" + _varint(body)
    return tag + _varint(len(put) + body) + put + head, value, tail


def encode_txn(
    compare: Sequence[Compare], success: Sequence[RequestOp], failure: Sequence[RequestOp] = ()
) -> bytes:
    """The wire bytes of ``TxnRequest{compare (1), success (2), failure (3)}``, each
    :class:`PutOp`'s value copied once (into the joined result)."""
    parts: list[bytes] = []
    for tag, items in ((b"\x0a", compare), (b"\x12", success), (b"\x1a", failure)):
        for item in items:
            if isinstance(item, PutOp):
                parts += _put_field(tag, item)
            else:
                data = item.SerializeToString()
                parts += (tag, _varint(len(data)), data)
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class KV:
    """One key-value as etcd returns it."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_pb(cls, kv: mvccpb.KeyValue) -> KV:
        return cls(
            key=kv.key,
            value=kv.value,
            create_revision=kv.create_revision,
            mod_revision=kv.mod_revision,
            version=kv.version,
            lease=kv.lease,
        )


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int
    responses: list[pb.ResponseOp]

    def range_kvs(self, i: int) -> list[KV]:
        """The kvs of the ``i``-th response, which must be a range."""
        if i >= len(self.responses):
            return []
        return [KV.from_pb(kv) for kv in self.responses[i].response_range.kvs]


@dataclass(frozen=True, slots=True)
class RangeResult:
    kvs: list[KV]
    revision: int
    more: bool
    count: int
