"""etcdraft's generated messages live in a private descriptor pool: an application
that also loads ev-node's (or etcd's) own generated code, which declares the same full
names (``evnode.v1.RaftBlockState``, ``etcdserverpb.*``), sees no "duplicate symbol"
conflict, and the bytes stay interchangeable."""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from etcdraft import RaftBlockState
from etcdraft.proto import etcd_kv_pb2, etcd_rpc_pb2, raft_block_state_pb2


def _register_in_default_pool(module: object, filename: str) -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(fd)  # type: ignore[attr-defined]
    fd.name = filename  # another program's file name for the same package and messages
    return fd


def test_another_copy_of_the_same_messages_loads_beside_etcdraft() -> None:
    pool = descriptor_pool.Default()
    state_fd = _register_in_default_pool(raft_block_state_pb2, "evnode/v1/state.proto")
    kv_fd = _register_in_default_pool(etcd_kv_pb2, "etcd/api/mvccpb/kv.proto")
    rpc_fd = _register_in_default_pool(etcd_rpc_pb2, "etcd/api/etcdserverpb/rpc.proto")
    rpc_fd.ClearField("dependency")
    rpc_fd.dependency.append("etcd/api/mvccpb/kv.proto")
    for fd in (state_fd, kv_fd, rpc_fd):
        pool.Add(fd)  # raises "duplicate symbol" if etcdraft had used the default pool
    theirs = message_factory.GetMessageClass(pool.FindMessageTypeByName("evnode.v1.RaftBlockState"))
    ours = RaftBlockState(height=7, timestamp=70, hash=b"\x01" * 32, data=b"txs")
    assert RaftBlockState.DESCRIPTOR.full_name == "evnode.v1.RaftBlockState"
    decoded = theirs.FromString(ours.SerializeToString())
    assert (decoded.height, decoded.data) == (7, b"txs")
    assert RaftBlockState.FromString(decoded.SerializeToString()) == ours
