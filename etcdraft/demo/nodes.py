"""The demo's toy node processes (restartable, struck by faults) and the etcd launcher
that keeps Ctrl-C away from etcd."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from etcdraft.demo.records import JsonlTail
from etcdraft.embedded.process import with_parent_death_signal

__all__ = ["NodeProc"]


class NodeProc:
    """One toy node process, restartable."""

    def __init__(
        self, node_id: str, cmd: list[str], env: dict[str, str], record_dir: Path, log: Path
    ) -> None:
        self.node_id = node_id
        self.cmd = cmd
        self.env = env
        self.record_dir = record_dir
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.state = "down"  # up | paused | killed | stopping | down
        self.expect_exit = False
        self.resume_at: float | None = None
        self.restart_after_exit = False
        self.restarts = 0
        self.events = JsonlTail(record_dir / "events.jsonl")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        with open(self.log_path, "ab") as logfile:
            self.proc = subprocess.Popen(
                with_parent_death_signal(self.cmd, os.getpid()),
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the demo, which stops us in order
            )
        self.state = "up"
        self.expect_exit = False
        self.restart_after_exit = False

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.running():
            assert self.proc is not None
            with contextlib.suppress(OSError):
                self.proc.send_signal(sig)

    def kill(self) -> None:
        self.expect_exit = True
        self.signal(signal.SIGKILL)
        self.state = "killed"

    def pause(self, until: float) -> None:
        self.signal(signal.SIGSTOP)
        self.state = "paused"
        self.resume_at = until

    def resume(self) -> None:
        self.signal(signal.SIGCONT)
        self.resume_at = None
        if self.state == "paused":
            self.state = "up"

    def terminate(self) -> None:
        self.expect_exit = True
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        self.state = "stopping"

    def force_kill(self) -> None:
        if self.running():
            assert self.proc is not None
            with contextlib.suppress(OSError):
                self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(0.1)

    def log_tail(self, lines: int = 5) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _own_session_wrapper(etcd: str, workdir: Path) -> str:
    """A launcher that runs etcd in a session of its own, so that Ctrl-C in the
    terminal reaches only the demo, which then stops the nodes while etcd still
    serves, verifies, and stops etcd last. Same pid as etcd (exec)."""
    path = workdir / "etcd-own-session"
    path.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        "try:\n"
        "    os.setsid()\n"
        "except OSError:\n"
        "    pass\n"
        f"os.execv({etcd!r}, [{etcd!r}] + sys.argv[1:])\n"
    )
    path.chmod(0o755)
    return str(path)


def _toy_supports_metrics() -> bool:
    import inspect

    from etcdraft.demo import toy

    return "metrics_port" in inspect.signature(toy.run_node).parameters
