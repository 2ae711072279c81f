"""Generated protobuf code (``make proto`` regenerates it; never edit by hand)."""

from etcdraft.proto.raft_block_state_pb2 import RaftBlockState

__all__ = ["RaftBlockState"]
