"""Which etcd endpoint to ask, whether to trust its answer, with what token, and the
failover of a request across endpoints. Part of :mod:`etcdraft.etcd`; nothing here
is public.

Requests go to the last endpoint that worked; a failed one is tried last for
``BAD_FOR`` seconds. A request's *remaining* deadline is split across the endpoints
not yet tried in a round (Patroni's rule), so one dead, paused or blackholed member
costs at most its share. An answer whose revision is below one already observed, or
whose raft term went backwards, comes from a member whose view went backwards and
is not trusted. With etcd auth, each endpoint's token is renewed once per expiry,
by one thread, while the others wait for it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc

from etcdraft._deadline import Deadline
from etcdraft._etcd_conn import Channels, Endpoint, Stubs
from etcdraft._etcd_errors import TlsError, TokenExpired, TransientError, map_grpc_error
from etcdraft.errors import EtcdAuthError, EtcdraftError, EtcdTimeoutError, EtcdUnavailableError
from etcdraft.proto import etcd_rpc_pb2 as pb

__all__ = ["BAD_FOR", "MIN_ATTEMPT", "EndpointSet", "TokenAuth", "round_pause"]

log = logging.getLogger("etcdraft.etcd")

#: How long a failed endpoint is tried last.
BAD_FOR = 1.0
#: Extra wait added to a caller's deadline when it is split across endpoints.
MIN_ATTEMPT = 0.05

_T = TypeVar("_T")


class EndpointSet:
    """The endpoints, the preferred one, the highest revision seen, the listeners of
    endpoint failures, and requests with failover. Thread-safe."""

    def __init__(self, urls: Sequence[str], channels: Channels, auth: TokenAuth) -> None:
        self._lock = threading.Lock()
        self.all = [Endpoint(url, channels) for url in urls]
        self.auth = auth
        self._tls_warned = False
        self._preferred = 0
        self.max_revision = 0
        self.failovers = 0
        self._listeners: list[Callable[[str], None]] = []

    def listen(self, callback: Callable[[str], None]) -> None:
        self._listeners.append(callback)

    def order(self) -> list[Endpoint]:
        """Every endpoint, the preferred first, the ones that failed lately last."""
        now = time.monotonic()
        with self._lock:
            start = self._preferred
        eps = self.all[start:] + self.all[:start]
        good = [e for e in eps if e.bad_until <= now]
        bad = [e for e in eps if e.bad_until > now]
        return good + bad

    def mark_bad(self, ep: Endpoint, seconds: float = BAD_FOR) -> None:
        ep.bad_until = time.monotonic() + seconds
        with self._lock:
            if self.all[self._preferred] is ep and len(self.all) > 1:
                self._preferred = (self.all.index(ep) + 1) % len(self.all)
                self.failovers += 1
        for cb in list(self._listeners):
            try:
                cb(ep.url)
            except Exception:  # a listener must never break the request path
                log.exception("endpoint failure listener failed")

    def mark_good(self, ep: Endpoint) -> None:
        if ep.bad_until:
            ep.bad_until = 0.0
        if self.all[self._preferred] is not ep:
            with self._lock:
                self._preferred = self.all.index(ep)

    def get(self, url: str) -> Endpoint:
        for ep in self.all:
            if ep.url == url.rstrip("/"):
                return ep
        raise ValueError(f"unknown endpoint {url}")

    def check_header(self, ep: Endpoint, header: pb.ResponseHeader, floor: int) -> None:
        """Refuse an answer from a member whose view went backwards; note the revision.

        Raises:
            TransientError: (reason ``stale_member``) the revision is below ``floor``
                or the raft term below one this endpoint reported before.
        """
        rev = header.revision
        term = header.raft_term
        if rev and rev < floor:
            raise TransientError(
                f"etcd at {ep.url} answered at revision {rev}, below revision {floor} "
                "already observed: its view went backwards, not trusting it",
                endpoint=ep.url,
                reason="stale_member",
            )
        if term and term < ep.raft_term:
            raise TransientError(
                f"etcd at {ep.url} reported raft term {term} below {ep.raft_term}",
                endpoint=ep.url,
                reason="stale_member",
            )
        if term > ep.raft_term:
            ep.raft_term = term
        if rev > self.max_revision:
            with self._lock:
                if rev > self.max_revision:
                    self.max_revision = rev

    def _warn_tls(self, exc: EtcdraftError) -> None:
        if not self._tls_warned:
            self._tls_warned = True
            log.warning("etcd refuses the TLS connection on every endpoint: %s", exc)

    # -- core request ------------------------------------------------------------

    def call_once(
        self,
        ep: Endpoint,
        call: Callable[[Stubs], Callable[..., Any]],
        req: Any,
        timeout: float,
        floor: int,
        lane: str = "data",
    ) -> Any:
        deadline = Deadline(timeout)
        metadata = self.auth.metadata(ep, deadline, MIN_ATTEMPT)
        try:
            resp = call(ep.stubs(lane))(
                req, timeout=max(0.001, deadline.remaining()), metadata=metadata
            )
        except grpc.RpcError as exc:
            raise map_grpc_error(exc, ep.url) from None
        header = getattr(resp, "header", None)
        if header is not None:
            self.check_header(ep, header, floor)
        return resp

    def request(
        self,
        call: Callable[[Stubs], Callable[..., _T]],
        req: Any,
        deadline: Deadline,
        *,
        what: str = "request",
        retry_ambiguous: bool = True,
        check_floor: bool = True,
        lane: str = "data",
    ) -> _T:
        """Call ``call(stubs)(req)`` with endpoint failover until ``deadline``.

        Args:
            call: picks the method from an endpoint's stubs, e.g. ``lambda s: s.kv.Txn``.
            retry_ambiguous: retry after a failure where the request may have been
                applied (a timeout). True for idempotent and fenced operations.
            check_floor: reject answers whose revision is below one seen before.
            lane: ``data``, or ``control`` for leadership traffic (its own connection).

        Raises:
            EtcdTimeoutError: the deadline expired (the last cause is chained).
            EtcdUnavailableError: not retryable any more.
            EtcdAuthError, EtcdRequestError, CompactedError, LeaseNotFoundError, EtcdError.
        """
        last: EtcdraftError | None = None
        attempt = 0
        tls_failures = 0
        renewed_tls: set[Endpoint] = set()
        while True:
            order = self.order()
            for i, ep in enumerate(order):
                remaining = deadline.remaining()
                if remaining <= 0 or deadline.cancelled():
                    break
                share = remaining / (len(order) - i)
                timeout = max(min(share, remaining), min(MIN_ATTEMPT, remaining))
                floor = self.max_revision if check_floor else 0
                attempt += 1
                try:
                    resp = self.call_once(ep, call, req, timeout, floor, lane)
                except TokenExpired as exc:
                    last = exc
                    try:
                        self.auth.renew(ep, ep.token, deadline, MIN_ATTEMPT)
                    except TransientError as auth_exc:
                        last = auth_exc
                        self.mark_bad(ep)
                    continue
                except TransientError as exc:
                    last = exc
                    if isinstance(exc, TlsError) and ep not in renewed_tls:
                        # a channel reconnects with the credentials it was made with:
                        # make a new one, which reads the certificate files again
                        # (rotated on disk meanwhile?), and try this endpoint once more
                        renewed_tls.add(ep)
                        ep.reset()
                        continue
                    self.mark_bad(ep)
                    if isinstance(exc, TlsError):
                        tls_failures += 1
                        if tls_failures >= len(self.all):
                            # every endpoint refuses our TLS: configuration, not an outage
                            self._warn_tls(exc)
                            raise EtcdAuthError(str(exc), endpoint=ep.url) from exc
                    if not retry_ambiguous and not exc.never_sent:
                        raise EtcdUnavailableError(
                            f"{exc} (not retried: the request may have been applied)",
                            endpoint=ep.url,
                            reason=exc.reason,
                        ) from exc
                    log.debug("etcd %s failed on %s: %s", what, ep.url, exc)
                    continue
                self.mark_good(ep)
                return resp  # type: ignore[no-any-return]
            if deadline.remaining() <= 0 or deadline.cancelled():
                break
            # every endpoint failed fast (e.g. connection refused): back off a little
            deadline.sleep(round_pause(attempt))
        msg = f"etcd {what} failed on every endpoint ({', '.join(e.url for e in self.all)})"
        if last is None:
            raise EtcdTimeoutError(f"{msg}: deadline expired before any attempt", reason="deadline")
        raise EtcdTimeoutError(
            f"{msg} within the deadline; last error: {last}",
            reason=getattr(last, "reason", "") or "timeout",
        ) from last


def round_pause(attempts: int) -> float:
    """The pause once every endpoint has failed in turn, after ``attempts`` attempts
    in all: 50 ms each, at most 0.25 s (requests and the keep-alive stream)."""
    return min(0.05 * attempts, 0.25)


class TokenAuth:
    """etcd role-based auth: a token per endpoint, sent as call metadata."""

    def __init__(self, username: str | None, password: str | None, max_wait: float) -> None:
        self.username = username
        self._password = password
        self._max_wait = max_wait
        self.authentications = 0

    def metadata(
        self, ep: Endpoint, deadline: Deadline, min_wait: float
    ) -> tuple[tuple[str, str], ...] | None:
        if not self.username:
            return None
        token = ep.token
        if token is None:
            self.renew(ep, None, deadline, min_wait)
            token = ep.token
        return (("token", token or ""),)

    def renew(self, ep: Endpoint, stale: str | None, deadline: Deadline, min_wait: float) -> None:
        """Get a new token for ``ep`` unless another thread already replaced ``stale``:
        one authentication per expiry, the other threads wait for it.

        Raises:
            TransientError: etcd could not be asked.
            EtcdAuthError: etcd rejected the credentials.
        """
        with ep.auth_lock:
            if ep.token is not None and ep.token != stale:
                return
            ep.token = None
            timeout = max(min_wait, min(deadline.remaining(), self._max_wait))
            req = pb.AuthenticateRequest(name=self.username or "", password=self._password or "")
            try:
                resp = ep.stubs().auth.Authenticate(req, timeout=timeout)
            except grpc.RpcError as exc:
                err = map_grpc_error(exc, ep.url)
                if isinstance(err, TransientError):
                    raise err from None
                raise EtcdAuthError(
                    f"etcd at {ep.url} rejected user {self.username!r}: {exc.details()}; "
                    "check username and password",
                    endpoint=ep.url,
                ) from None
            self.authentications += 1
            ep.token = resp.token
            log.debug("authenticated as %r on %s", self.username, ep.url)
