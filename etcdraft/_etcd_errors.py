"""How etcd's failures become :mod:`etcdraft.errors`, in one place: a gRPC status
(code and etcd's error text) is mapped by :func:`map_rpc_error`, plus the client's
internal error types. :mod:`etcdraft.etcd` re-exports the public ones.

etcd's error texts are part of its API (``api/v3rpc/rpctypes``): "etcdserver: request
is too large", "etcdserver: mvcc: database space exceeded", "etcdserver: requested
lease not found", "etcdserver: mvcc: required revision has been compacted",
"etcdserver: invalid auth token", "etcdserver: permission denied", ..."""

from __future__ import annotations

import grpc

from etcdraft.errors import (
    EtcdAuthError,
    EtcdError,
    EtcdNoSpaceError,
    EtcdraftError,
    EtcdRequestError,
    EtcdRequestTooLargeError,
    EtcdUnavailableError,
)

__all__ = [
    "CompactedError",
    "LeaseNotFoundError",
    "TransientError",
    "map_grpc_error",
    "map_rpc_error",
]

_TRANSIENT_MESSAGES = (
    "not a primary lessor",
    "leader changed",
    "no leader",
    "request timed out",
    "timed out",
    "too many requests",
    "server is not ready",
    "etcdserver: stopped",
    "raft proposal dropped",
    "not capable",
    "unhealthy cluster",
    "connection reset",
)

#: etcd refused the token itself, not the user: get a new one and retry. A simple
#: token expires after --auth-token-ttl of disuse; a JWT is refused as soon as the
#: auth store changes (any user or role added, changed or removed): etcd 3.4 says
#: "revision of auth store is old", 3.5 "auth: revision in header is old".
_STALE_TOKEN_MESSAGES = (
    "invalid auth token",
    "revision of auth store is old",
    "revision in header is old",
)

#: grpcio's texts for a TLS failure (handshake, certificate, protocol): a
#: configuration problem, not an endpoint that is down.
_TLS_MESSAGES = (
    "ssl handshake failed",
    "certificate_verify_failed",
    "certificate verify failed",
    "tsi_protocol_failure",
    "wrong_version_number",
    "ssl_error_ssl",
    "tlsv1 alert",
    "tlsv13 alert",
    "sslv3_alert",
    "peer did not return a certificate",
    "handshake failure",
    # TLS 1.3: the server checks the client certificate after the handshake; its alert
    # then arrives as a record the client cannot decrypt
    "tsi_data_corrupted",
)


#: grpcio's texts when the endpoint answers, but not with gRPC over HTTP/2 (an HTTP/1
#: server, etcd's peer port, a proxy page).
_NOT_GRPC_MESSAGES = (
    "failed parsing http/2",
    "expected settings frame",
    "trying to connect an http1",
    "bad http/2",
)


class TransientError(EtcdUnavailableError):
    """Internal: a failure worth retrying on another endpoint.

    ``never_sent`` is True when the request certainly did not reach etcd (the
    connection could not be set up), so even a non-idempotent request may be retried.
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str | None = None,
        never_sent: bool = False,
        reason: str = "",
    ):
        super().__init__(message, endpoint=endpoint, reason=reason)
        self.never_sent = never_sent


class TlsError(TransientError):
    """Internal: the TLS handshake failed on this endpoint. Retried on the others;
    when every endpoint fails so, the caller gets an :class:`EtcdAuthError`."""


class CompactedError(EtcdError):
    """The requested revision was compacted (watch or range at an old revision)."""

    def __init__(self, message: str, *, compact_revision: int = 0) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


class LeaseNotFoundError(EtcdError):
    """The lease does not exist (expired or revoked)."""


class TokenExpired(EtcdAuthError):
    """Internal: etcd refused the auth token (expired or stale); get a new one."""


def is_tls_failure(details: str) -> bool:
    low = details.lower()
    return any(m in low for m in _TLS_MESSAGES)


def _never_sent(code: grpc.StatusCode, low: str) -> bool:
    """True when grpcio says the call never left: no connection could be set up."""
    return code == grpc.StatusCode.UNAVAILABLE and (
        "failed to connect" in low
        or "connection refused" in low
        or "connect failed" in low
        or "dns resolution failed" in low
        or "name resolution" in low
    )


def _unavailable_reason(code: grpc.StatusCode, low: str) -> str:
    """The ``reason`` of an unavailability, from grpcio's status and text (the one
    place that reads them)."""
    if "connection refused" in low:
        return "refused"
    if "dns resolution failed" in low or "name resolution" in low or "not known" in low:
        return "unknown_host"
    if "no leader" in low or "no_leader" in low:
        return "no_leader"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED or "timed out" in low or "deadline" in low:
        return "timeout"
    if code == grpc.StatusCode.CANCELLED or "closed" in low or "socket closed" in low:
        return "closed"
    return ""


def map_rpc_error(code: grpc.StatusCode, details: str, endpoint: str) -> EtcdraftError:
    """Map a gRPC status from ``endpoint`` to the most specific etcdraft error."""
    details = details or code.name
    low = details.lower()
    where = f"etcd at {endpoint}"
    if "compacted" in low:
        return CompactedError(f"{where}: {details}")
    if "lease not found" in low:
        return LeaseNotFoundError(f"{where}: {details}", endpoint=endpoint)
    if any(m in low for m in _STALE_TOKEN_MESSAGES):
        return TokenExpired(f"{where}: {details}", endpoint=endpoint)
    if is_tls_failure(details):
        return TlsError(
            f"TLS handshake with {where} failed ({details}); check tls_ca_file (or the "
            "system trust store), tls_cert_file, tls_key_file, tls_server_name, and that "
            "the endpoint uses https://",
            endpoint=endpoint,
            never_sent=True,
            reason="tls",
        )
    if code == grpc.StatusCode.UNAUTHENTICATED:
        if "token" in low:
            return TokenExpired(f"{where}: {details}", endpoint=endpoint)
        return EtcdAuthError(
            f"{where} refused authentication ({details}); check username/password "
            "or the client certificate",
            endpoint=endpoint,
        )
    if code == grpc.StatusCode.PERMISSION_DENIED or "permission denied" in low:
        return EtcdAuthError(
            f"{where}: permission denied ({details}); grant this user's role read/write "
            "on the namespace prefix",
            endpoint=endpoint,
        )
    if (
        "authentication failed" in low
        or "user name is empty" in low
        or "user name not found" in low
        or "auth:" in low
    ):
        return EtcdAuthError(f"{where}: {details}; check username/password", endpoint=endpoint)
    if "too large" in low or "larger than max" in low:
        return EtcdRequestTooLargeError(
            f"{where}: {details} (etcd's --max-request-bytes, 1.5 MiB by default)",
            endpoint=endpoint,
        )
    if "space exceeded" in low or "nospace" in low:
        return EtcdNoSpaceError(
            f"{where}: {details}; etcd's backend is full: compact and defragment etcd and "
            "disarm the alarm (etcdctl alarm disarm), or raise --quota-backend-bytes",
            endpoint=endpoint,
        )
    if code == grpc.StatusCode.UNIMPLEMENTED or any(m in low for m in _NOT_GRPC_MESSAGES):
        # not etcd's v3 gRPC API: a wrong port or another gRPC server. An endpoint
        # failure: try the next one.
        return TransientError(
            f"{endpoint} does not serve etcd's v3 API ({details}): is it an etcd client "
            "URL? (etcd's client port is usually 2379; 2380 is its peer port)",
            endpoint=endpoint,
            reason="not_etcd",
        )
    if code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ) or any(m in low for m in _TRANSIENT_MESSAGES):
        if code == grpc.StatusCode.DEADLINE_EXCEEDED or "timed out" in low:
            return TransientError(
                f"{where} did not answer in time ({code.name}: {details})",
                endpoint=endpoint,
                never_sent=_never_sent(code, low),
                reason="timeout",
            )
        return TransientError(
            f"{where} unavailable: {code.name} {details}",
            endpoint=endpoint,
            never_sent=_never_sent(code, low),
            reason=_unavailable_reason(code, low),
        )
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
        return EtcdRequestError(f"{where} rejected the request: {details}", endpoint=endpoint)
    return EtcdError(f"{where}: {code.name} {details}", endpoint=endpoint)


def map_grpc_error(exc: grpc.RpcError, endpoint: str) -> EtcdraftError:
    """Map a ``grpc.RpcError`` raised by a call to ``endpoint``."""
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (exc.details() if isinstance(exc, grpc.Call) else str(exc)) or ""
    return map_rpc_error(code, details, endpoint)
