"""Child processes: never leave one behind.

Every process started here is killed when the interpreter exits (:func:`track`), and
(on Linux, for processes started from the main thread) when the parent process dies
abruptly (:func:`with_parent_death_signal`). The one place of etcdraft that sets a
child's parent-death signal: the demo's node processes use it too.
"""

from __future__ import annotations

import atexit
import contextlib
import signal
import subprocess
import sys
import threading
import weakref

__all__ = ["track", "with_parent_death_signal"]

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


def track(proc: subprocess.Popen[bytes]) -> None:
    """Kill ``proc`` (SIGCONT, then SIGKILL) when the interpreter exits."""
    with _live_lock:
        _live_procs.add(proc)


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
