"""The messages of etcd's v3 gRPC API as etcdraft builds and reads them: compare and
request builders for transactions, and the key-value and result records the client
returns. Pure data, no I/O; :mod:`etcdraft.etcd` re-exports all of it.

The builders return etcd's own protobuf messages (``etcdserverpb.Compare`` and
``etcdserverpb.RequestOp``, generated from ``etcdraft/proto/etcd_rpc.proto``), so a
transaction is built once and sent as is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from etcdraft.proto import etcd_kv_pb2 as mvccpb
from etcdraft.proto import etcd_rpc_pb2 as pb

__all__ = [
    "KV",
    "Compare",
    "RangeResult",
    "RequestOp",
    "TxnResult",
    "cmp_create",
    "cmp_lease",
    "cmp_mod",
    "cmp_value",
    "cmp_version",
    "op_delete",
    "op_put",
    "op_range",
    "prefix_end",
]

Compare: TypeAlias = pb.Compare
RequestOp: TypeAlias = pb.RequestOp

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


def op_put(key: bytes, value: bytes, lease: int = 0) -> RequestOp:
    return pb.RequestOp(request_put=pb.PutRequest(key=key, value=value, lease=lease))


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
