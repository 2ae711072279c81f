"""``etcdraft._signals``: SIGINT/SIGTERM stop the CLI, the toy node and the demo
without the handler ever taking a lock (pure logic, no etcd needed)."""

from __future__ import annotations

import signal
import threading

import pytest

from etcdraft._signals import install_stop_signals


def test_signal_while_this_thread_holds_the_event_lock() -> None:
    """The deadlock this module exists for: the signal lands while the main
    thread is inside ``Event.wait``'s lock. A handler calling ``stop.set()``
    directly would block forever here; this one returns and the event is set as
    soon as the lock is free."""
    stop = threading.Event()
    restore = install_stop_signals(stop)
    try:
        with stop._cond:  # type: ignore[attr-defined]  # what Event.wait holds
            signal.raise_signal(signal.SIGINT)  # the handler runs in this thread, now
            assert not stop.is_set()
        assert stop.wait(5), "the relay did not set the event"
    finally:
        restore()


def test_sigterm_too_and_restore_puts_the_old_handlers_back() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    stop = threading.Event()
    restore = install_stop_signals(stop)
    assert signal.getsignal(signal.SIGTERM) is not before[0]
    signal.raise_signal(signal.SIGTERM)
    assert stop.wait(5)
    restore()
    restore()  # idempotent
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_on_signal_runs_first_and_may_refuse() -> None:
    """The demo's second Ctrl-C raises KeyboardInterrupt from ``on_signal``."""
    seen: list[int] = []

    def on_signal(signum: int) -> None:
        seen.append(signum)
        if len(seen) > 1:
            raise KeyboardInterrupt

    stop = threading.Event()
    restore = install_stop_signals(stop, on_signal=on_signal)
    try:
        signal.raise_signal(signal.SIGINT)
        assert stop.wait(5)
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
        assert seen == [signal.SIGINT, signal.SIGINT]
    finally:
        restore()


def test_outside_the_main_thread_it_does_nothing() -> None:
    before = signal.getsignal(signal.SIGINT)
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(install_stop_signals(threading.Event())))
    t.start()
    t.join(5)
    assert result and callable(result[0])
    assert signal.getsignal(signal.SIGINT) is before
