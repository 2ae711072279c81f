"""Parts of ``etcdraft demo``: reading the nodes' record files, the toy node
processes, and the terminal view (split from ``demo.py``)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from etcdraft.embedded import with_parent_death_signal

# ---------------------------------------------------------------------------- records


class _Tail:
    """New complete lines of a growing JSON-lines file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def read(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        out = []
        for line in data[: end + 1].splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out


# ---------------------------------------------------------------------------- processes


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
        self.events = _Tail(record_dir / "events.jsonl")

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


# ---------------------------------------------------------------------------- the view


class _View:
    def __init__(self, mode: str, out: IO[str]) -> None:
        isatty = bool(getattr(out, "isatty", lambda: False)())
        self.mode = ("live" if isatty else "lines") if mode == "auto" else mode
        self.out = out
        self.drawn = 0
        self.last_line = -math.inf

    def frame(self, lines: list[str]) -> None:
        if self.mode != "live":
            return
        width = max(40, shutil.get_terminal_size((100, 24)).columns - 1)
        buf = []
        if self.drawn:
            buf.append(f"\x1b[{self.drawn}F")
        for line in lines:
            buf.append("\x1b[2K" + _clip(line, width) + "\n")
        buf.append("\x1b[J")
        self.out.write("".join(buf))
        self.out.flush()
        self.drawn = len(lines)

    def line(self, text: str, now: float) -> None:
        if self.mode != "lines" or now - self.last_line < 1.0:
            return
        self.last_line = now
        self.out.write(text + "\n")
        self.out.flush()

    def event(self, text: str) -> None:
        if self.mode == "lines":
            self.out.write("  * " + text + "\n")
            self.out.flush()

    def finish(self) -> None:
        self.drawn = 0


def _clip(line: str, width: int) -> str:
    # lines hold only ASCII escape codes at the start of cells; clip on visible text
    visible = 0
    out = []
    i = 0
    while i < len(line):
        if line[i] == "\x1b":
            j = line.find("m", i)
            if j < 0:
                break
            out.append(line[i : j + 1])
            i = j + 1
            continue
        if visible >= width:
            break
        out.append(line[i])
        visible += 1
        i += 1
    return "".join(out) + ("\x1b[0m" if "\x1b" in line else "")


def _bar(fraction: float, width: int = 30) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"


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

    from etcdraft import toy

    return "metrics_port" in inspect.signature(toy.run_node).parameters
