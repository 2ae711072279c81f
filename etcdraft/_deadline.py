"""Absolute deadlines on the monotonic clock (Go's context deadline, done simply)."""

from __future__ import annotations

import math
import threading
import time

__all__ = ["Deadline"]


class Deadline:
    """An absolute point on ``time.monotonic()``, optionally tied to a cancel event.

    ``Deadline(None)`` never expires (use sparingly: every network call must still
    be bounded by its own timeout).
    """

    __slots__ = ("_at", "cancel")

    def __init__(self, timeout: float | None, cancel: threading.Event | None = None) -> None:
        self._at = math.inf if timeout is None else time.monotonic() + max(0.0, timeout)
        self.cancel = cancel

    @classmethod
    def at(cls, when: float, cancel: threading.Event | None = None) -> Deadline:
        d = cls(None, cancel)
        d._at = when
        return d

    @property
    def when(self) -> float:
        return self._at

    def remaining(self) -> float:
        """Seconds left (0 when expired; ``inf`` for no deadline)."""
        return max(0.0, self._at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self._at or (self.cancel is not None and self.cancel.is_set())

    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def sleep(self, seconds: float) -> bool:
        """Wait up to ``seconds`` (never past the deadline); True if cancelled."""
        wait = min(seconds, self.remaining())
        if self.cancel is not None:
            return self.cancel.wait(wait)
        threading.Event().wait(wait)
        return False

    def sub(self, timeout: float) -> Deadline:
        """A deadline at most ``timeout`` from now, never past this one."""
        d = Deadline(timeout, self.cancel)
        d._at = min(d._at, self._at)
        return d

    def __repr__(self) -> str:
        return f"Deadline(remaining={self.remaining():.3f}s)"
