"""Keeping a benchmark's etcd under its backend quota, and reading how full it is.

etcd keeps every revision until compacted, and its quota check (``--quota-backend-bytes``,
2 GiB by default) counts the backend file, free pages included, which only a
defragmentation returns. The large-state sections write gigabytes through one etcd, so
between timed runs they delete what the raw sides wrote (the raw baseline never prunes),
compact to the current revision, and defragment when the file has grown past a
threshold. Plain grpcio and etcd's generated stubs (``bench/grpc_raw.py``), one channel
per member, loopback only.
"""

from __future__ import annotations

import time
from typing import Any

from bench.grpc_raw import new_channel, pb, prefix_end
from etcdraft.proto import etcd_rpc_pb2_grpc as pb_grpc

#: Defragment once a member's backend file is larger than this (etcd's default quota is
#: 2 GiB; leave room for one timed run of the largest state on top of it).
DEFRAG_ABOVE = 1024 * 2**20


class EtcdSpace:
    """Admin access to every member of a benchmark cluster."""

    def __init__(self, endpoints: list[str], timeout: float = 120.0) -> None:
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self._channels = [new_channel(ep) for ep in self.endpoints]
        self._kv = pb_grpc.KVStub(self._channels[0])
        self._maint = [pb_grpc.MaintenanceStub(ch) for ch in self._channels]
        self.compactions = 0
        self.defrags = 0
        self.compacted_revision = 0

    def status(self) -> list[Any]:
        """``Maintenance/Status`` of every member (``dbSize``, ``dbSizeInUse``, ...)."""
        return [m.Status(pb.StatusRequest(), timeout=10) for m in self._maint]

    def sizes(self) -> tuple[int, int]:
        """The largest ``dbSize`` and ``dbSizeInUse`` over the members."""
        st = self.status()
        return max(s.dbSize for s in st), max(s.dbSizeInUse for s in st)

    def delete_prefix(self, prefix: bytes) -> int:
        resp = self._kv.DeleteRange(
            pb.DeleteRangeRequest(key=prefix, range_end=prefix_end(prefix)), timeout=self.timeout
        )
        return int(resp.deleted)

    def compact(self, keep: int = 0) -> int:
        """Compact to the current revision less ``keep`` (physical: returns once the
        members removed the history). Returns the revision compacted to (0: none)."""
        rev = int(self.status()[0].header.revision) - keep
        if rev <= self.compacted_revision:
            return 0
        self._kv.Compact(pb.CompactionRequest(revision=rev, physical=True), timeout=self.timeout)
        self.compacted_revision = rev
        self.compactions += 1
        return rev

    def defrag_if_needed(self, above: int = DEFRAG_ABOVE) -> list[float]:
        """Defragment, one member at a time, every member whose backend file is over
        ``above`` bytes; returns the seconds each defragmentation took."""
        took: list[float] = []
        for maint, st in zip(self._maint, self.status(), strict=True):
            if st.dbSize > above:
                t0 = time.monotonic()
                maint.Defragment(pb.DefragmentRequest(), timeout=self.timeout)
                took.append(time.monotonic() - t0)
                self.defrags += 1
        return took

    def close(self) -> None:
        for ch in self._channels:
            ch.close()
