"""etcd connections: one gRPC channel per endpoint (made lazily, remade after a
reset), the generated stubs on it, and the channel options (message size, reconnect
backoff, dial timeout, HTTP/2 keepalive, TLS name override). Part of
:mod:`etcdraft.etcd`."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import grpc

from etcdraft._etcd_tls import TlsSettings
from etcdraft.errors import EtcdUnavailableError
from etcdraft.proto import etcd_rpc_pb2 as pb
from etcdraft.proto import etcd_rpc_pb2_grpc as pb_grpc

__all__ = ["Channels", "ConnectionSettings", "Endpoint", "Stubs"]


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """How connections are set up and kept alive (``Config``'s ``dial_timeout``,
    ``keepalive_time`` and ``keepalive_timeout``; 0 disables keepalive pings)."""

    dial_timeout: float = 2.0
    keepalive_time: float = 10.0
    keepalive_timeout: float = 5.0


class Channels:
    """Makes the channels of one client (its TLS and connection settings)."""

    def __init__(self, tls: TlsSettings, settings: ConnectionSettings) -> None:
        self.tls = tls
        self.settings = settings
        self.closed = False

    def options(self, dedicated: bool) -> list[tuple[str, Any]]:
        conn = self.settings
        opts: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", -1),
            ("grpc.enable_http_proxy", 0),  # never route etcd through a proxy
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            # the deadline of one connection attempt (grpc's "min connect timeout")
            ("grpc.min_reconnect_backoff_ms", max(100, int(conn.dial_timeout * 1000))),
            ("grpc.primary_user_agent", "etcdraft"),
        ]
        if conn.keepalive_time > 0:
            opts += [
                ("grpc.keepalive_time_ms", int(conn.keepalive_time * 1000)),
                ("grpc.keepalive_timeout_ms", int(conn.keepalive_timeout * 1000)),
                # only while a call is active (a stream: the watch, the lease
                # keep-alive): etcd's server allows pings without one at most every
                # 2 hours (Go gRPC's PermitWithoutStream, false in etcd) and sends
                # GOAWAY too_many_pings after three; etcd's Go client does the same
                ("grpc.keepalive_permit_without_calls", 0),
                ("grpc.http2.max_pings_without_data", 0),
            ]
        if dedicated:  # its own connection, not shared with the unary channel
            opts.append(("grpc.use_local_subchannel_pool", 1))
        if self.tls.server_name:
            opts.append(("grpc.ssl_target_name_override", self.tls.server_name))
        return opts

    def new(self, ep: Endpoint, *, dedicated: bool = False) -> grpc.Channel:
        if self.closed:
            raise EtcdUnavailableError(
                "the etcd client was closed", endpoint=ep.url, reason="closed"
            )
        opts = self.options(dedicated)
        if ep.secure:
            # the files are read for each new connection: replaced certificates take
            # effect on the next connection without a restart
            return grpc.secure_channel(ep.target, self.tls.credentials(), options=opts)
        return grpc.insecure_channel(ep.target, options=opts)


class Stubs:
    """The generated stubs of one channel."""

    __slots__ = ("auth", "cluster", "kv", "lease", "maintenance", "txn", "watch")

    def __init__(self, channel: grpc.Channel) -> None:
        self.kv = pb_grpc.KVStub(channel)
        #: ``KV/Txn`` taking the request's wire bytes (``_etcd_wire.encode_txn``)
        self.txn: grpc.UnaryUnaryMultiCallable[bytes, Any] = channel.unary_unary(  # type: ignore[call-arg]
            "/etcdserverpb.KV/Txn",
            request_serializer=None,
            response_deserializer=pb.TxnResponse.FromString,
            _registered_method=True,  # as the generated stubs register theirs
        )
        self.lease = pb_grpc.LeaseStub(channel)
        self.watch = pb_grpc.WatchStub(channel)
        self.auth = pb_grpc.AuthStub(channel)
        self.maintenance = pb_grpc.MaintenanceStub(channel)
        self.cluster = pb_grpc.ClusterStub(channel)


class Endpoint:
    """One etcd member: its URL, its channel (made lazily, remade after a reset),
    its auth token and the highest raft term it reported."""

    def __init__(self, url: str, channels: Channels) -> None:
        parts = urlsplit(url)
        self.url = url.rstrip("/")
        self.target = f"{parts.hostname or '127.0.0.1'}:{parts.port or 2379}"
        if parts.hostname and ":" in parts.hostname:  # IPv6 literal
            self.target = f"[{parts.hostname}]:{parts.port or 2379}"
        self.secure = parts.scheme == "https"
        self._channels = channels
        self._lock = threading.Lock()
        self._lanes: dict[str, tuple[grpc.Channel, Stubs]] = {}
        self.auth_lock = threading.Lock()
        self.token: str | None = None
        self.raft_term = 0
        self.bad_until = 0.0  # monotonic; tried last while in the future

    def stubs(self, lane: str = "data") -> Stubs:
        """The stubs of one lane: ``data`` (requests) or ``control`` (the lease
        keep-alive stream, leader heartbeats, progress reports, quorum checks), each
        on a connection of its own, so a large write never delays the lease and a
        failed data connection never takes leadership traffic down with it."""
        entry = self._lanes.get(lane)
        if entry is not None:
            return entry[1]
        with self._lock:
            entry = self._lanes.get(lane)
            if entry is None:
                channel = self._channels.new(self, dedicated=lane != "data")
                entry = self._lanes[lane] = (channel, Stubs(channel))
            return entry[1]

    def reset(self) -> None:
        """Close the channels: the next call dials new connections."""
        with self._lock:
            lanes, self._lanes = self._lanes, {}
        for channel, _ in lanes.values():
            channel.close()
