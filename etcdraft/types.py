"""Small value types shared by the public API."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from etcdraft.proto import RaftBlockState

__all__ = ["RaftApplyMsg", "RaftBlockState", "Runnable"]


@dataclass(frozen=True)
class RaftApplyMsg:
    """One applied entry, offered to the queue given to ``Node.set_apply_callback``.

    Attributes:
        index: etcd revision at which the entry was committed; strictly increases
            along the stream a node applies (Go: ``Index``).
        term: the leadership under which the entry was written (create revision of
            the leader's election key); never decreases along the stream (Go: ``Term``).
        state: the replicated block state (Go: ``State``).
    """

    index: int
    term: int
    state: RaftBlockState


@runtime_checkable
class Runnable(Protocol):
    """A worker run by :class:`~etcdraft.DynamicLeaderElection` (Go: ``Runnable``)."""

    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set (then return) or fail (raise)."""

    def is_synced(self, state: RaftBlockState) -> int:
        """Local height minus replicated height: 0 in sync, -1 when the replicated
        state is one block ahead, positive when the local state is ahead."""

    def recover(self, stop: threading.Event, state: RaftBlockState) -> None:
        """Bring the local state to ``state`` (roll back or catch up)."""
