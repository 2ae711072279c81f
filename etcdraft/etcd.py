"""The one client of etcd: etcd's native v3 gRPC API through grpcio.

Only this module and its parts import ``grpc`` and catch ``grpc.RpcError``:
``_etcd_wire`` (the messages), ``_etcd_conn`` (channels and stubs), ``_etcd_endpoints``
(endpoint choice, the trust check of answers, auth tokens), ``_etcd_streams``
(the watch and keep-alive streams), ``_etcd_admin`` (maintenance and cluster calls),
``_etcd_tls`` (the trust store) and ``_etcd_errors`` (the mapping). Every failure leaves
as one of :mod:`etcdraft.errors`, mapped in :func:`map_rpc_error` from the gRPC status
code and etcd's error text.

Endpoint failover follows Patroni: requests go to the last endpoint that worked;
a transient failure moves on to the next, and the *remaining* deadline is split
across the endpoints not yet tried in this round, so one dead, paused or blackholed
member costs at most its share of the caller's deadline. Responses carry etcd's
header: an answer whose revision is below one already observed before the request
was sent, or whose raft term went backwards, comes from a member whose view went
backwards; it is not trusted.

Each endpoint has a ``data`` lane (one HTTP/2 connection for requests) and a
``control`` lane (another connection, for the lease keep-alive stream, heartbeats,
progress reports and quorum checks); the watch opens its own
(:meth:`EtcdClient.open_stream` with ``dedicated=True``). A blocked watch, a large write
and the lease never wait on each other. Every
unary call has a deadline; streams are read with a deadline on each expected answer
(keep-alive answers, watch progress) by their owners; HTTP/2 keepalive pings
(``keepalive_time``/``keepalive_timeout``) cover idle connections.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import grpc

from etcdraft._deadline import Deadline
from etcdraft._etcd_admin import AlarmInfo, EndpointStatus, EtcdAdmin, EtcdMember
from etcdraft._etcd_conn import Channels, ConnectionSettings, Stubs
from etcdraft._etcd_endpoints import MIN_ATTEMPT, EndpointSet, TokenAuth
from etcdraft._etcd_errors import (
    CompactedError,
    LeaseNotFoundError,
    TlsError,
    TokenExpired,
    TransientError,
    map_grpc_error,
    map_rpc_error,
)
from etcdraft._etcd_streams import BidiStream, KeepAliveStream
from etcdraft._etcd_tls import TlsSettings
from etcdraft._etcd_wire import (
    KV,
    Compare,
    PutOp,
    RangeResult,
    RequestOp,
    TxnResult,
    cmp_create,
    cmp_lease,
    cmp_mod,
    cmp_value,
    cmp_version,
    encode_txn,
    op_delete,
    op_put,
    op_range,
    prefix_end,
)
from etcdraft.errors import (
    EtcdError,
    EtcdraftError,
)
from etcdraft.proto import etcd_rpc_pb2 as pb

__all__ = [
    "KV",
    "AlarmInfo",
    "BidiStream",
    "CompactedError",
    "Compare",
    "EndpointStatus",
    "EtcdAdmin",
    "EtcdClient",
    "EtcdMember",
    "LeaseNotFoundError",
    "PutOp",
    "RangeResult",
    "RequestOp",
    "TlsSettings",
    "TransientError",
    "TxnResult",
    "cmp_create",
    "cmp_lease",
    "cmp_mod",
    "cmp_value",
    "cmp_version",
    "map_rpc_error",
    "op_delete",
    "op_put",
    "op_range",
    "pb",
    "prefix_end",
]

log = logging.getLogger(__name__)

#: Default deadline of a call made without one.
DEFAULT_TIMEOUT = 5.0

_T = TypeVar("_T")

if TYPE_CHECKING:
    from etcdraft.config import Config


class EtcdClient:
    """Thread-safe client over a list of etcd endpoints.

    Args:
        endpoints: client URLs (``http://host:port`` or ``https://...``, not mixed).
        ca_file, cert_file, key_file, key_password, server_name: TLS (see
            :class:`~etcdraft.etcd.TlsSettings`); without ``ca_file`` the operating
            system's trust store verifies the server.
        username, password: etcd role-based auth (token obtained and renewed here).
        connection: dial timeout and keepalive pings.
        name: used in thread and log names.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        key_password: str | None = None,
        server_name: str | None = None,
        username: str | None = None,
        password: str | None = None,
        connection: ConnectionSettings | None = None,
        name: str = "etcdraft",
    ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is required")
        schemes = {urlsplit(u).scheme for u in endpoints}
        if len(schemes) > 1:
            raise ValueError(
                "etcd endpoints mix http:// and https://: use one scheme for every endpoint"
            )
        self.name = name
        tls = TlsSettings(
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            key_password=key_password,
            server_name=server_name,
        )
        self.channels = Channels(tls, connection or ConnectionSettings())
        self._auth = TokenAuth(username, password, DEFAULT_TIMEOUT)
        self._eps = EndpointSet(endpoints, self.channels, self._auth)
        self.admin = EtcdAdmin(self)
        if 0 < self.channels.settings.keepalive_time < 5.0:
            log.warning(
                "keepalive_time %.1fs is below etcd's default --grpc-keepalive-min-time "
                "(5s): etcd closes connections that ping more often (too_many_pings) "
                "unless its own setting was lowered to match",
                self.channels.settings.keepalive_time,
            )
        if username and self._eps.all[0].secure is False:
            log.warning(
                "etcd user %r authenticates over plain http://: the password crosses the "
                "network unencrypted; use https:// endpoints",
                username,
            )

    @classmethod
    def from_config(cls, config: Config, name: str = "etcdraft") -> EtcdClient:
        """The client for ``config``'s endpoints, TLS, auth and connection settings."""
        return cls(
            config.endpoints,
            ca_file=config.tls_ca_file,
            cert_file=config.tls_cert_file,
            key_file=config.tls_key_file,
            key_password=(
                config.tls_key_password.get_secret_value() if config.tls_key_password else None
            ),
            server_name=config.tls_server_name,
            username=config.username,
            password=config.password.get_secret_value() if config.password else None,
            connection=ConnectionSettings(
                dial_timeout=config.dial_timeout,
                keepalive_time=config.keepalive_time,
                keepalive_timeout=config.keepalive_timeout,
            ),
            name=name,
        )

    # -- endpoint selection ----------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        return [e.url for e in self._eps.all]

    @property
    def max_revision(self) -> int:
        """The highest etcd revision seen in any response."""
        return self._eps.max_revision

    @property
    def failovers(self) -> int:
        """Times the preferred endpoint moved on after a failure."""
        return self._eps.failovers

    @property
    def authentications(self) -> int:
        """Tokens obtained from etcd (one per expiry, not one per thread)."""
        return self._auth.authentications

    def on_endpoint_failure(self, callback: Callable[[str], None]) -> None:
        """Register ``callback(endpoint_url)``, called when an endpoint fails."""
        self._eps.listen(callback)

    def preferred_endpoint(self) -> str:
        return self._eps.order()[0].url

    def report_failure(self, url: str) -> None:
        self._eps.mark_bad(self._eps.get(url))

    def check_answer(self, url: str, header: pb.ResponseHeader) -> None:
        """Check a stream's answer from ``url`` like a request's (see EndpointSet)."""
        self._eps.check_header(self._eps.get(url), header, 0)

    # -- requests --------------------------------------------------------------------

    def request(
        self, call: Callable[[Stubs], Callable[..., _T]], req: Any, deadline: Deadline, **how: Any
    ) -> _T:
        """Call ``call(stubs)(req)`` with endpoint failover until ``deadline``; ``how``:
        ``what``, ``retry_ambiguous``, ``check_floor``, ``lane`` (see
        :meth:`etcdraft._etcd_endpoints.EndpointSet.request`, which raises the typed
        errors)."""
        return self._eps.request(call, req, deadline, **how)

    # -- KV ----------------------------------------------------------------------

    def range(
        self,
        key: bytes,
        range_end: bytes | None = None,
        deadline: Deadline | None = None,
        *,
        revision: int = 0,
        limit: int = 0,
        count_only: bool = False,
        keys_only: bool = False,
        descending: bool = False,
        serializable: bool = False,
    ) -> RangeResult:
        req = pb.RangeRequest(
            key=key,
            range_end=range_end or b"",
            revision=revision,
            limit=limit,
            count_only=count_only,
            keys_only=keys_only,
            serializable=serializable,
        )
        if descending:
            req.sort_order = pb.RangeRequest.DESCEND
            req.sort_target = pb.RangeRequest.KEY
        resp: pb.RangeResponse = self.request(
            lambda s: s.kv.Range, req, deadline or Deadline(DEFAULT_TIMEOUT), what="range"
        )
        return RangeResult(
            kvs=[KV.from_pb(kv) for kv in resp.kvs],
            revision=resp.header.revision,
            more=resp.more,
            count=resp.count,
        )

    def get(self, key: bytes, deadline: Deadline | None = None) -> KV | None:
        kvs = self.range(key, deadline=deadline).kvs
        return kvs[0] if kvs else None

    def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[RequestOp],
        failure: Sequence[RequestOp] | None = None,
        deadline: Deadline | None = None,
        *,
        lane: str = "data",
    ) -> TxnResult:
        req = encode_txn(compare, success, failure or ())
        resp: pb.TxnResponse = self.request(
            lambda s: s.txn, req, deadline or Deadline(DEFAULT_TIMEOUT), what="txn", lane=lane
        )
        return TxnResult(
            succeeded=resp.succeeded,
            revision=resp.header.revision,
            responses=list(resp.responses),
        )

    def txn_many(
        self,
        txns: Sequence[tuple[Sequence[Compare], Sequence[RequestOp]]],
        deadline: Deadline,
        *,
        window: int = 8,
        sent: list[float] | None = None,
    ) -> list[TxnResult]:
        """Run independent transactions concurrently (up to ``window`` in flight) on
        the preferred endpoint, with ``Txn.future``; one that fails transiently is
        retried alone by :meth:`txn`, with failover. Results in the order given.

        With ``sent``, a list as long as ``txns``, each transaction's (last) send time
        on the monotonic clock is written into it.

        Raises:
            the first non-transient error (e.g. EtcdRequestTooLargeError), or
            EtcdTimeoutError when ``deadline`` expires.
        """
        results: list[TxnResult | None] = [None] * len(txns)
        retry: list[int] = []
        ep = self._eps.order()[0]
        for start in range(0, len(txns), window):
            batch = range(start, min(start + window, len(txns)))
            try:
                metadata = self._auth.metadata(ep, deadline, MIN_ATTEMPT)
            except TransientError:  # no token from this member: txn() fails over
                retry.extend(batch)
                continue
            futures = []
            now = time.monotonic()
            for i in batch:
                if sent is not None:
                    sent[i] = now
                compare, success = txns[i]
                req = encode_txn(compare, success)
                futures.append(
                    (
                        i,
                        ep.stubs().txn.future(
                            req, timeout=max(0.001, deadline.remaining()), metadata=metadata
                        ),
                    )
                )
            for i, fut in futures:
                try:
                    resp: pb.TxnResponse = fut.result()
                    self._eps.check_header(ep, resp.header, 0)
                except grpc.RpcError as exc:
                    err = map_grpc_error(exc, ep.url)
                    if isinstance(err, TransientError | TokenExpired):
                        retry.append(i)
                        continue
                    raise err from None
                except TransientError:  # a member whose view went backwards
                    retry.append(i)
                    continue
                results[i] = TxnResult(resp.succeeded, resp.header.revision, list(resp.responses))
        for i in retry:
            compare, success = txns[i]
            if sent is not None:
                sent[i] = time.monotonic()
            results[i] = self.txn(compare, success, deadline=deadline)
        return [r for r in results if r is not None]

    def put(
        self,
        key: bytes,
        value: bytes,
        deadline: Deadline | None = None,
        lease: int = 0,
        *,
        lane: str = "data",
    ) -> int:
        req = pb.PutRequest(key=key, value=value, lease=lease)
        resp: pb.PutResponse = self.request(
            lambda s: s.kv.Put, req, deadline or Deadline(DEFAULT_TIMEOUT), what="put", lane=lane
        )
        return resp.header.revision

    def delete(
        self, key: bytes, range_end: bytes | None = None, deadline: Deadline | None = None
    ) -> int:
        req = pb.DeleteRangeRequest(key=key, range_end=range_end or b"")
        resp: pb.DeleteRangeResponse = self.request(
            lambda s: s.kv.DeleteRange, req, deadline or Deadline(DEFAULT_TIMEOUT), what="delete"
        )
        return resp.deleted

    def compact(self, revision: int, deadline: Deadline | None = None) -> None:
        self.request(
            lambda s: s.kv.Compact,
            pb.CompactionRequest(revision=revision, physical=True),
            deadline or Deadline(DEFAULT_TIMEOUT),
            what="compact",
        )

    # -- leases --------------------------------------------------------------------

    def lease_grant(self, ttl: int, deadline: Deadline) -> tuple[int, int]:
        """Grant a lease; returns (id, granted TTL). Not retried after an ambiguous
        failure (a retry would leak a lease until its TTL)."""
        resp: pb.LeaseGrantResponse = self.request(
            lambda s: s.lease.LeaseGrant,
            pb.LeaseGrantRequest(TTL=ttl),
            deadline,
            what="lease grant",
            retry_ambiguous=False,
        )
        if resp.error:
            raise EtcdError(f"lease grant failed: {resp.error}")
        return resp.ID, resp.TTL or ttl

    def lease_revoke(self, lease_id: int, deadline: Deadline) -> None:
        with contextlib.suppress(LeaseNotFoundError):
            self.request(
                lambda s: s.lease.LeaseRevoke,
                pb.LeaseRevokeRequest(ID=lease_id),
                deadline,
                what="lease revoke",
            )

    def lease_ttl(self, lease_id: int, deadline: Deadline | None = None) -> int:
        """The lease's remaining TTL in seconds (-1 when it does not exist)."""
        resp: pb.LeaseTimeToLiveResponse = self.request(
            lambda s: s.lease.LeaseTimeToLive,
            pb.LeaseTimeToLiveRequest(ID=lease_id),
            deadline or Deadline(DEFAULT_TIMEOUT),
            what="lease ttl",
        )
        return resp.TTL

    def keepalive_stream(self, name: str) -> KeepAliveStream:
        """A ``LeaseKeepAlive`` stream that fails over between endpoints."""
        return KeepAliveStream(self, name)

    # -- streams -----------------------------------------------------------------------

    def open_stream(
        self,
        url: str,
        method: Callable[[Stubs], Callable[..., Any]],
        *,
        name: str,
        on_message: Callable[[Any], str] | None = None,
        deadline: Deadline | None = None,
        dedicated: bool = False,
        lane: str = "data",
    ) -> BidiStream:
        """Open a bidirectional stream on ``url`` with the ``hasleader`` metadata (a
        member that lost its cluster fails the stream) and the auth token.

        ``dedicated``: on a channel (connection) of its own, closed with the stream;
        otherwise on the endpoint's ``lane``."""
        ep = self._eps.get(url)
        md = list(self._auth.metadata(ep, deadline or Deadline(DEFAULT_TIMEOUT), MIN_ATTEMPT) or ())
        md.append(("hasleader", "true"))
        channel = self.channels.new(ep, dedicated=True) if dedicated else None
        stubs = Stubs(channel) if channel is not None else ep.stubs(lane)
        return BidiStream(
            method(stubs),
            ep.url,
            tuple(md),
            name=name,
            on_message=on_message,
            channel=channel,
            token=ep.token,
        )

    def stream_failed(self, stream: BidiStream, exc: EtcdraftError) -> None:
        """A stream's owner reports its failure: a stale token is renewed (once, for
        every stream that saw it); any other failure marks the endpoint bad."""
        ep = self._eps.get(stream.endpoint)
        if isinstance(exc, TokenExpired):
            with contextlib.suppress(EtcdraftError):
                self._auth.renew(ep, stream.token, Deadline(DEFAULT_TIMEOUT), MIN_ATTEMPT)
            return
        if isinstance(exc, TlsError):
            ep.reset()  # the next connection reads the certificate files again
        self._eps.mark_bad(ep)

    def close(self) -> None:
        self.channels.closed = True
        for ep in self._eps.all:
            ep.reset()
