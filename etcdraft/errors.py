"""The etcdraft error hierarchy.

Every error raised by the public API is an :class:`EtcdraftError`. The tree is
organised by *kind*, so callers can catch as broadly or narrowly as they need::

    EtcdraftError
    ├── ConfigError                      (also ValueError) bad configuration
    ├── NotLeaderError                   this node does not lead
    │   └── LeadershipLostError          leadership was lost (fenced write rejected)
    ├── HeightConflictError              a different block is replicated at that height
    ├── InvalidStateError                (also ValueError) state rejected before writing
    ├── CorruptDataError                 data under the namespace cannot be decoded
    ├── EtcdError                        etcd answered with an error
    │   ├── EtcdUnavailableError         etcd unreachable within the time allowed
    │   │   └── EtcdTimeoutError         (also TimeoutError) a deadline expired
    │   ├── EtcdAuthError                authentication / permission denied
    │   └── EtcdRequestError             etcd rejected the request
    │       ├── EtcdRequestTooLargeError over etcd's --max-request-bytes
    │       └── EtcdNoSpaceError         etcd's backend is full (NOSPACE alarm)
    ├── HandoverError                    no live member can take leadership over
    └── WorkerError                      a DynamicLeaderElection worker failed

Timeouts also subclass the builtin :class:`TimeoutError`, so ``except TimeoutError``
catches them as Python programmers expect.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
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
    "NotLeaderError",
    "WorkerError",
]


class EtcdraftError(Exception):
    """Root of every error raised by etcdraft."""


class ConfigError(EtcdraftError, ValueError):
    """Raised when a :class:`~etcdraft.Config` field is missing, malformed or
    inconsistent with another field. ``field`` names the offending field."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotLeaderError(EtcdraftError):
    """Raised by leader-only operations (``broadcast``) when this node does not
    hold leadership. Retry on the leader (see ``Node.leader_id()``)."""


class LeadershipLostError(NotLeaderError):
    """Raised when this node lost leadership: a fenced write was rejected by etcd
    because the leader key is no longer ours, or ``DynamicLeaderElection`` saw the
    leader role end. Nothing was written. Stop producing blocks and follow."""

    def __init__(self, message: str = "leader lock lost") -> None:
        super().__init__(message)


#: Go name of :class:`LeadershipLostError` (``raft.ErrLeadershipLost``).
ErrLeadershipLost = LeadershipLostError


class HeightConflictError(EtcdraftError):
    """Raised by ``broadcast`` when a *different* block is already replicated at the
    requested height. Nothing was written; resynchronise from ``get_state()``."""

    def __init__(self, message: str, *, height: int | None = None) -> None:
        super().__init__(message)
        self.height = height


class InvalidStateError(EtcdraftError, ValueError):
    """Raised by ``broadcast`` before writing when the state is not acceptable:
    its timestamp does not strictly increase, its height was already pruned, or its
    encoding exceeds etcd's request size limit. Nothing was written."""


class CorruptDataError(EtcdraftError):
    """Raised (or logged and counted, on the watch path) when a value under the
    namespace is not what etcdraft wrote: not a ``RaftBlockState``, or a key of an
    unknown shape. Check that no other program writes under the namespace."""


#: The machine-readable ``reason`` of an :class:`EtcdError` (``""``: none of these).
#: Importable from here; not in ``__all__``, which lists the error classes only.
ETCD_REASONS = {
    "refused": "the connection was refused (nothing listens at the endpoint)",
    "unknown_host": "the endpoint's host name does not resolve",
    "timeout": "etcd did not answer in time",
    "deadline": "the deadline expired before any attempt could be made",
    "no_leader": "the member has no raft leader (its cluster lost quorum?)",
    "not_etcd": "the endpoint does not serve etcd's v3 gRPC API",
    "stale_member": "the member's revision or raft term went backwards",
    "closed": "the connection or the client was closed",
    "tls": "the TLS handshake failed",
}


class EtcdError(EtcdraftError):
    """etcd answered with an error that is not one of the more specific kinds.

    ``endpoint``: the endpoint that answered (when one did). ``reason``: a
    machine-readable cause for callers that branch on it (a key of
    :data:`ETCD_REASONS`, ``""`` when none applies); the message says the same for
    people."""

    def __init__(self, message: str, *, endpoint: str | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.reason = reason


class EtcdUnavailableError(EtcdError):
    """etcd could not be reached (connection refused, no quorum, every endpoint
    failed) within the time allowed. Check the endpoints and etcd's health."""


class EtcdTimeoutError(EtcdUnavailableError, TimeoutError):
    """A deadline expired while waiting for etcd. The operation may or may not
    have been applied; every etcdraft write is safe to retry."""


class EtcdAuthError(EtcdError):
    """etcd refused the credentials (wrong user/password, bad client certificate)
    or the user lacks permission on the namespace. Fix the credentials or grant
    the role read/write on the namespace prefix."""


class EtcdRequestError(EtcdError):
    """etcd rejected the request itself (too large, quota exceeded, malformed).
    Retrying the same request will fail the same way."""


class EtcdRequestTooLargeError(EtcdRequestError):
    """etcd refused a request as larger than its ``--max-request-bytes`` (1.5 MiB by
    default). Nothing was written."""


class EtcdNoSpaceError(EtcdRequestError):
    """etcd's backend is full (``--quota-backend-bytes``; the NOSPACE alarm is raised):
    every write fails until an operator compacts, defragments and disarms the alarm
    (``etcdctl compact``, ``etcdctl defrag``, ``etcdctl alarm disarm``). Reads still
    work; nothing already written is lost."""


class WorkerError(EtcdraftError):
    """Raised by ``DynamicLeaderElection.run`` when a leader or follower worker failed
    (raised, not because it was stopped); leadership was handed over first. The message
    is ``"<leader|follower> worker exited unexpectedly: <cause>"``."""

    def __init__(self, role: str, cause: BaseException) -> None:
        super().__init__(f"{role} worker exited unexpectedly: {cause}")
        self.role = role
        self.cause = cause


class HandoverError(EtcdraftError):
    """Raised by ``resign_leader`` when no live member can take leadership over;
    this node stays leader. Start another member or check membership."""
