"""The lifecycle of a background thread, shared by every part that owns one: the
thread, its stop event, start, signal and join; and the bounded join of an owner's
threads at stop. Nothing here is public."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from etcdraft._deadline import Deadline

__all__ = ["Worker", "join_all"]


def join_all(
    threads: Iterable[threading.Thread | None],
    budget: Deadline,
    log: logging.Logger,
    still_busy: str,
    extra: Mapping[str, Any],
) -> None:
    """Join each thread (never None, never the calling thread) within one ``budget``;
    log ``still_busy % thread.name`` as a warning for each one still alive then (it
    ends on its own deadline)."""
    for thread in threads:
        if thread is not None and thread is not threading.current_thread():
            thread.join(budget.remaining())
            if thread.is_alive():
                log.warning(still_busy, thread.name, extra=extra)


class Worker:
    """Owns one daemon thread running :meth:`_run` until :attr:`stop_event` is set.

    ``stop()`` signals and joins (never the calling thread itself: a part may stop
    from its own callbacks). Subclasses add what their stop must also do."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def signal_stop(self) -> None:
        """Ask the thread to end (see :meth:`stop` to also wait)."""
        self.stop_event.set()

    def join(self, timeout: float) -> None:
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def stop(self, timeout: float = 2.0) -> None:
        self.signal_stop()
        self.join(timeout)

    def _run(self) -> None:
        raise NotImplementedError
