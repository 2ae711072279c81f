"""One etcd process of an :class:`~etcdraft.embedded.EtcdCluster`: start, health,
kill, stop, restart, pause, resume, and calls to its gRPC gateway."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import EmbeddedEtcdError
from .process import _proc_state, track, with_parent_death_signal

if TYPE_CHECKING:
    from .cluster import EtcdCluster

__all__ = ["EtcdMember"]


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
            track(proc)
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
