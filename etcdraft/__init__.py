"""etcdraft: one leader at a time and a replicated, totally ordered stream of block
states, with consensus delegated to an etcd cluster.

The Python, etcd-backed form of ev-node's ``pkg/raft``. See ``docs/`` for the
protocol, configuration and operations.
"""

from __future__ import annotations

import logging

from etcdraft._version import __version__
from etcdraft.config import Config, Peer, format_duration, parse_duration, parse_peer
from etcdraft.errors import (
    ConfigError,
    CorruptDataError,
    ErrLeadershipLost,
    EtcdAuthError,
    EtcdError,
    EtcdNoSpaceError,
    EtcdraftError,
    EtcdRequestError,
    EtcdRequestTooLargeError,
    EtcdTimeoutError,
    EtcdUnavailableError,
    HandoverError,
    HeightConflictError,
    InvalidStateError,
    LeadershipLostError,
    NotLeaderError,
    WorkerError,
)
from etcdraft.fsm import FSM
from etcdraft.leader_election import DynamicLeaderElection
from etcdraft.node import Node
from etcdraft.stats import NodeStats
from etcdraft.types import RaftApplyMsg, RaftBlockState, Runnable

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "FSM",
    "Config",
    "ConfigError",
    "DynamicLeaderElection",
    "CorruptDataError",
    "ErrLeadershipLost",
    "EtcdAuthError",
    "EtcdError",
    "EtcdNoSpaceError",
    "EtcdRequestError",
    "EtcdRequestTooLargeError",
    "EtcdTimeoutError",
    "EtcdUnavailableError",
    "EtcdraftError",
    "HandoverError",
    "HeightConflictError",
    "InvalidStateError",
    "LeadershipLostError",
    "Node",
    "NodeStats",
    "NotLeaderError",
    "Peer",
    "RaftApplyMsg",
    "RaftBlockState",
    "Runnable",
    "WorkerError",
    "__version__",
    "format_duration",
    "parse_duration",
    "parse_peer",
]
