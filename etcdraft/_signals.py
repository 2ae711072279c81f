"""Stop a process's main loop from SIGINT/SIGTERM without a deadlock.

A Python signal handler runs in the main thread between two bytecodes, possibly
while that same thread holds the lock inside the ``threading.Event`` it waits on
(``Event.wait`` takes the event's condition lock before and after sleeping). A
handler that calls ``event.set()`` then blocks on a lock its own thread holds:
the process hangs for good on Ctrl-C, at random. So the handler here only writes
a byte to a pipe (no Python lock involved), and a small relay thread sets the
event.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType

__all__ = ["install_stop_signals"]


def install_stop_signals(
    stop: threading.Event,
    signals: Iterable[signal.Signals] = (signal.SIGINT, signal.SIGTERM),
    on_signal: Callable[[int], None] | None = None,
) -> Callable[[], None]:
    """Make ``signals`` set ``stop``; returns a function that restores the
    previous handlers. ``on_signal(signum)`` runs first, in the handler: it must
    not take locks (it may raise, e.g. ``KeyboardInterrupt`` on a second Ctrl-C,
    and then ``stop`` is not set by this signal). Outside the main thread, where
    Python cannot install handlers, this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)

    def relay() -> None:
        try:
            while os.read(read_fd, 64):
                stop.set()
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                os.close(read_fd)

    thread = threading.Thread(target=relay, name="etcdraft-signals", daemon=True)
    thread.start()

    def handler(signum: int, frame: FrameType | None) -> None:
        if on_signal is not None:
            on_signal(signum)
        with contextlib.suppress(OSError):  # a full pipe already carries a wake-up
            os.write(write_fd, b"\0")

    old = {sig: signal.signal(sig, handler) for sig in signals}
    restored = False

    def restore() -> None:
        nonlocal restored
        if restored:
            return
        restored = True
        for sig, previous in old.items():
            signal.signal(sig, previous)
        with contextlib.suppress(OSError):
            os.close(write_fd)  # the relay reads EOF and ends

    return restore
