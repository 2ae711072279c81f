"""How etcd's failures become :mod:`etcdraft.errors`: the gateway's error answers
(:func:`map_http_error`) and transport failures (:func:`map_transport_error`), plus the
client's internal error types. :mod:`etcdraft.etcd` re-exports the public ones."""

from __future__ import annotations

import json

import requests

from etcdraft._http import ConnectError
from etcdraft.errors import (
    EtcdAuthError,
    EtcdError,
    EtcdraftError,
    EtcdRequestError,
    EtcdUnavailableError,
)

__all__ = [
    "CompactedError",
    "LeaseNotFoundError",
    "TransientError",
    "map_http_error",
    "map_transport_error",
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


class TransientError(EtcdUnavailableError):
    """Internal: a failure worth retrying on another endpoint."""


class CompactedError(EtcdError):
    """The requested revision was compacted (watch or range at an old revision)."""

    def __init__(self, message: str, *, compact_revision: int = 0) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


class LeaseNotFoundError(EtcdError):
    """The lease does not exist (expired or revoked)."""


class _TokenExpired(EtcdAuthError):
    pass


def _grpc_fields(text: str) -> tuple[int | None, str]:
    try:
        body = json.loads(text)
    except ValueError:
        return None, text.strip()[:300]
    if not isinstance(body, dict):
        return None, text.strip()[:300]
    err = body.get("error")
    if isinstance(err, dict):  # streaming envelope {"error": {"grpc_code":..., "message":...}}
        code = err.get("grpc_code", err.get("code"))
        return (int(code) if code is not None else None), str(err.get("message", ""))
    code = body.get("code")
    message = body.get("message") or body.get("error") or ""
    return (int(code) if code is not None else None), str(message)


def map_http_error(status: int, text: str, endpoint: str) -> EtcdraftError:
    """Map a gateway error answer to the most specific etcdraft error."""
    code, message = _grpc_fields(text)
    low = message.lower()
    where = f"etcd at {endpoint}"
    if "compacted" in low:
        return CompactedError(f"{where}: {message}")
    if "lease not found" in low:
        return LeaseNotFoundError(f"{where}: {message}", endpoint=endpoint)
    if any(m in low for m in _STALE_TOKEN_MESSAGES):
        return _TokenExpired(f"{where}: {message}", endpoint=endpoint)
    if code == 16 or status == 401:
        if "token" in low:
            return _TokenExpired(f"{where}: {message}", endpoint=endpoint)
        return EtcdAuthError(
            f"{where} refused authentication ({message}); check username/password "
            "or the client certificate",
            endpoint=endpoint,
        )
    if code == 7 or "permission denied" in low:
        return EtcdAuthError(
            f"{where}: permission denied ({message}); grant this user's role read/write "
            "on the namespace prefix",
            endpoint=endpoint,
        )
    if "authentication failed" in low or "user name is empty" in low or "auth:" in low:
        return EtcdAuthError(f"{where}: {message}; check username/password", endpoint=endpoint)
    if "too large" in low:
        return EtcdRequestError(
            f"{where}: {message} (etcd's --max-request-bytes, 1.5 MiB by default)",
            endpoint=endpoint,
        )
    if "space exceeded" in low or "nospace" in low:
        return EtcdRequestError(
            f"{where}: {message}; compact and defragment etcd or raise --quota-backend-bytes",
            endpoint=endpoint,
        )
    if (
        status in (502, 503, 504, 408)
        or code in (14, 4, 10, 1)
        or any(m in low for m in _TRANSIENT_MESSAGES)
    ):
        return TransientError(f"{where} unavailable: HTTP {status} {message}", endpoint=endpoint)
    if code == 3 or status == 400:
        return EtcdRequestError(f"{where} rejected the request: {message}", endpoint=endpoint)
    if code is None:
        # not the gateway's JSON error: whatever answers there is not etcd's v3 API
        # (a wrong port, a proxy page). An endpoint failure: try the next one.
        return TransientError(
            f"{endpoint} answered HTTP {status} with a body that is not etcd's "
            f"({message[:80]!r}): is it an etcd client URL? (etcd's client port is "
            "usually 2379; 2380 is its peer port)",
            endpoint=endpoint,
        )
    return EtcdError(f"{where}: HTTP {status} {message}", endpoint=endpoint)


def map_transport_error(exc: BaseException, endpoint: str) -> EtcdraftError:
    """Map a ``requests`` exception to an etcdraft error."""
    if isinstance(exc, requests.exceptions.SSLError):
        return EtcdAuthError(
            f"TLS handshake with etcd at {endpoint} failed ({exc}); check tls_ca_file, "
            "tls_cert_file and tls_key_file, and that the endpoint uses https://",
            endpoint=endpoint,
        )
    if isinstance(exc, requests.exceptions.Timeout):
        return TransientError(f"etcd at {endpoint} did not answer in time", endpoint=endpoint)
    return TransientError(f"cannot reach etcd at {endpoint}: {exc}", endpoint=endpoint)


def _never_sent(exc: BaseException) -> bool:
    """True when the request certainly never reached etcd (connect failed)."""
    text = str(exc)
    return isinstance(exc, requests.exceptions.ConnectTimeout | ConnectError) or (
        "NewConnectionError" in text or "Connection refused" in text
    )
