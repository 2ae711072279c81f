"""Test helpers shared by the suite (import as ``from helpers import ...``)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_never = threading.Event()


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    message: str | Callable[[], str] = "condition not met",
    interval: float = 0.01,
) -> T:
    """Poll ``predicate`` until it returns a truthy value and return that value.

    Raises ``AssertionError`` with ``message`` (and the last exception the
    predicate raised, if any) when ``timeout`` seconds pass on the monotonic clock.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last_exc = None
        except Exception as exc:  # the predicate may race with the system under test
            last_exc = exc
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            suffix = f" (last error: {last_exc!r})" if last_exc is not None else ""
            raise AssertionError(f"timed out after {timeout:.1f}s: {text}{suffix}")
        _never.wait(interval)


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released): to be refused
    on, or to bind a server to."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
