"""A local etcd cluster of one or more members on free loopback ports."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .binary import etcd_version, find_etcd_binary
from .errors import EmbeddedEtcdError
from .member import EtcdMember

__all__ = ["EtcdCluster", "TLSFiles"]

log = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class TLSFiles:
    """Server-side TLS for the embedded cluster's client URLs.

    ``cert_file``/``key_file`` is the server certificate (valid for 127.0.0.1),
    ``ca_file`` the CA that signed it. With ``client_cert_auth`` etcd demands a client
    certificate signed by ``ca_file``; ``client_cert_file``/``client_key_file`` are
    then used by the launcher's own readiness probe.
    """

    ca_file: str
    cert_file: str
    key_file: str
    client_cert_auth: bool = False
    client_cert_file: str | None = None
    client_key_file: str | None = None


class EtcdCluster:
    """A local etcd cluster of ``size`` members (1 or 3, or any odd number).

    Args:
        size: number of members.
        binary: etcd binary; default: :func:`find_etcd_binary`.
        data_dir: parent directory for data and logs; default: a fresh temporary
            directory removed on close (kept when ``keep_data``).
        heartbeat_interval_ms, election_timeout_ms: etcd's raft timing. The defaults
            (25 ms / 250 ms) make start-up and etcd failover fast and give a minimum
            lease TTL of 1 s; use etcd's own (100 / 1000) to reproduce production.
        progress_notify_interval: how often etcd sends watch progress notifications.
        unsafe_no_fsync: skip fsync (tests only: data is lost on a machine crash).
        tls: serve the client URLs over TLS (see :class:`TLSFiles`).
        extra_args: more etcd flags, appended to every member's command line.
        ready_timeout: how long :meth:`start` waits for the cluster to be healthy.

    Use as a context manager, or call :meth:`start` and :meth:`close`.
    """

    def __init__(
        self,
        size: int = 1,
        *,
        binary: str | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        keep_data: bool = False,
        heartbeat_interval_ms: int = 25,
        election_timeout_ms: int = 250,
        progress_notify_interval: str = "1s",
        unsafe_no_fsync: bool = True,
        tls: TLSFiles | None = None,
        extra_args: Sequence[str] = (),
        ready_timeout: float = 30.0,
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self.size = size
        self.binary = binary or find_etcd_binary()
        self.version = etcd_version(self.binary)
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.election_timeout_ms = election_timeout_ms
        self.progress_notify_interval = progress_notify_interval
        self.unsafe_no_fsync = unsafe_no_fsync
        self.tls = tls
        self.extra_args = tuple(extra_args)
        self.ready_timeout = ready_timeout
        self.keep_data = keep_data
        self.token = f"etcdraft-{os.getpid()}-{id(self):x}"
        self._own_dir = data_dir is None
        self._dir = (
            Path(data_dir)
            if data_dir is not None
            else Path(tempfile.mkdtemp(prefix="etcdraft-etcd-"))
        )
        self._stop_event = threading.Event()
        self._ssl: ssl.SSLContext | None = None
        self.members: list[EtcdMember] = []
        self._started = False
        self._closed = False
        self._allocate_ports()

    def _allocate_ports(self) -> None:
        ports: set[int] = set()
        while len(ports) < 2 * self.size:
            ports.add(_free_port())
        it = iter(sorted(ports))
        self.members = [
            EtcdMember(self, i, f"m{i}", next(it), next(it), self._dir / f"m{i}.etcd")
            for i in range(self.size)
        ]

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def directory(self) -> Path:
        """Where data dirs and logs live."""
        return self._dir

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    @property
    def endpoints(self) -> list[str]:
        """Client URLs of every member, e.g. ``['http://127.0.0.1:41873']``."""
        return [m.client_url for m in self.members]

    def ssl_context(self) -> ssl.SSLContext | None:
        """An SSL context trusting the cluster's CA (None without TLS)."""
        if self.tls is None:
            return None
        if self._ssl is None:
            ctx = ssl.create_default_context(cafile=self.tls.ca_file)
            if self.tls.client_cert_file and self.tls.client_key_file:
                ctx.load_cert_chain(self.tls.client_cert_file, self.tls.client_key_file)
            self._ssl = ctx
        return self._ssl

    def start(self) -> EtcdCluster:
        """Start every member and wait until all are healthy. Retries once on fresh
        ports if a port was taken in the meantime.

        Raises:
            EmbeddedEtcdError: the cluster did not become healthy; includes log tails.
        """
        if self._closed:
            raise EmbeddedEtcdError("this EtcdCluster was closed; create a new one")
        if self._started:
            return self
        for attempt in range(3):
            for m in self.members:
                m.start()
            try:
                for m in self.members:
                    m.wait_ready()
            except EmbeddedEtcdError:
                logs = "\n".join(m.log_tail(4000) for m in self.members)
                for m in self.members:
                    m.kill()
                if attempt < 2 and "address already in use" in logs:
                    for m in self.members:
                        shutil.rmtree(m.data_dir, ignore_errors=True)
                    self._allocate_ports()
                    continue
                self.close()
                raise
            break
        self._started = True
        log.debug("etcd cluster ready: %s", self.endpoints)
        return self

    def close(self) -> None:
        """Kill every member and remove the temporary directory. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop_event.set()
        for m in self.members:
            m.kill()
        if self._own_dir and not self.keep_data:
            shutil.rmtree(self._dir, ignore_errors=True)

    def leader(self, timeout: float = 5.0) -> EtcdMember:
        """The member that is etcd's raft leader (asks the running members).

        Raises:
            EmbeddedEtcdError: no leader known within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while True:
            for m in self.members:
                if not m.is_running() or m.paused:
                    continue
                st = m.status(timeout=0.5)
                if not st:
                    continue
                header = st.get("header")
                member_id = header.get("member_id") if isinstance(header, dict) else None
                if member_id is not None and str(st.get("leader")) == str(member_id):
                    return m
            if time.monotonic() >= deadline:
                raise EmbeddedEtcdError("no etcd leader found among running members")
            self._stop_event.wait(0.05)

    def _ask(self, path: str, body: dict[str, object], timeout: float) -> dict[str, object]:
        """``path`` on the first running, unpaused member that answers."""
        errors = []
        for m in self.members:
            if not m.is_running() or m.paused:
                continue
            try:
                return m.call(path, body, timeout)
            except EmbeddedEtcdError as exc:
                errors.append(str(exc))
        raise EmbeddedEtcdError(f"no member answered {path}: {'; '.join(errors) or 'none running'}")

    def member_list(self, timeout: float = 5.0) -> list[dict[str, object]]:
        """etcd's member list: dicts with ``ID`` (int), ``name``, ``peerURLs``,
        ``clientURLs`` (``name`` is empty for a member added but not started yet)."""
        answer = self._ask("/v3/cluster/member/list", {}, timeout)
        members = answer.get("members")
        out = []
        for raw in members if isinstance(members, list) else []:
            out.append(
                {
                    "ID": int(str(raw.get("ID", 0))),
                    "name": str(raw.get("name", "")),
                    "peerURLs": list(raw.get("peerURLs", [])),
                    "clientURLs": list(raw.get("clientURLs", [])),
                }
            )
        return out

    def replace_member(self, member: EtcdMember, *, timeout: float | None = None) -> None:
        """Replace ``member`` by a new, empty one with the same name and ports, while
        the others keep serving: ``member remove`` of its id, kill it, wipe its data
        dir, ``member add`` of its peer URL, start it with
        ``--initial-cluster-state existing`` and wait until it is healthy. The new
        member gets a new member id and receives the data from the others.

        Raises:
            EmbeddedEtcdError: a step failed (the message says which); the member may
                then be down or removed.
        """
        if member not in self.members:
            raise EmbeddedEtcdError(f"{member.name} is not a member of this cluster")
        deadline = time.monotonic() + (timeout if timeout is not None else self.ready_timeout)
        listed = self.member_list()
        ids = [m["ID"] for m in listed if member.peer_url in m["peerURLs"]]  # type: ignore[operator]
        while ids:
            # etcd refuses ("unhealthy cluster") while the remaining members have not
            # all been connected for a few seconds
            errors = []
            for other in self.members:
                if other is member or not other.is_running() or other.paused:
                    continue
                try:
                    other.call("/v3/cluster/member/remove", {"ID": str(ids[0])})
                    ids = []
                    break
                except EmbeddedEtcdError as exc:
                    errors.append(str(exc))
            if ids and time.monotonic() >= deadline:
                raise EmbeddedEtcdError(
                    f"member remove of {member.name} failed: {'; '.join(errors) or 'no peer'}"
                )
            if ids:
                self._stop_event.wait(0.2)
        member.kill()
        shutil.rmtree(member.data_dir, ignore_errors=True)
        while True:  # etcd refuses a member add until the removal is applied everywhere
            try:
                added = self._ask(
                    "/v3/cluster/member/add", {"peerURLs": [member.peer_url]}, timeout=5.0
                )
                break
            except EmbeddedEtcdError:
                if time.monotonic() >= deadline:
                    raise
                self._stop_event.wait(0.2)
        names = []
        raw_members = added.get("members")
        for raw in raw_members if isinstance(raw_members, list) else []:
            peers = list(raw.get("peerURLs", []))
            name = raw.get("name") or (member.name if member.peer_url in peers else "")
            names += [f"{name}={url}" for url in peers if name]
        member.initial_cluster_state = "existing"
        member._initial_cluster = ",".join(names)
        member.start()
        member.wait_ready(max(1.0, deadline - time.monotonic()))

    def move_leader(self, target: EtcdMember, timeout: float = 5.0) -> None:
        """Ask etcd's current raft leader to hand its leadership to ``target``.

        Raises:
            EmbeddedEtcdError: no leader, ``target`` unreachable, or etcd refused.
        """
        target_id = target.member_id()
        if target_id is None:
            raise EmbeddedEtcdError(f"{target.name} is not reachable")
        leader = self.leader(timeout)
        if leader is target:
            return
        leader.call("/v3/maintenance/transfer-leadership", {"targetID": str(target_id)}, timeout)

    def logs(self, max_bytes: int = 8000) -> str:
        """The tail of every member's log, for test failure reports."""
        return "\n".join(
            f"--- {m.name} ({m.log_path}) ---\n{m.log_tail(max_bytes)}" for m in self.members
        )

    def processes_alive(self) -> list[int]:
        """PIDs of this cluster's processes that still exist."""
        return [pid for m in self.members if (pid := m.pid) is not None]

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[EtcdMember]:
        return iter(self.members)

    def __repr__(self) -> str:
        return f"<EtcdCluster size={self.size} {self.endpoints}>"
