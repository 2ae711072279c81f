"""``etcdraft.watch.Watcher`` on its own, against real etcd.

The watch's reader thread decodes and handles each message itself; the
supervisor thread only probes quiet streams and reconnects. These tests pin the
contract that split must keep: events in revision order and exactly once, a
handler failure reconnects and redelivers (nothing is skipped), and after
``stop()`` returns the handler is never called again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from helpers import wait_until

from etcdraft._deadline import Deadline
from etcdraft.etcd import EtcdClient
from etcdraft.watch import Watcher, WatchEvent


@pytest.fixture
def client(etcd: object) -> Iterator[EtcdClient]:
    c = EtcdClient(etcd.endpoints, name="test-watch")  # type: ignore[attr-defined]
    try:
        yield c
    finally:
        c.close()


def _no_compaction(_rev: int, _upto: int) -> int:
    raise AssertionError("no compaction expected in this test")


def test_events_in_revision_order_exactly_once(client: EtcdClient, namespace: str) -> None:
    prefix = f"{namespace}/w/".encode()
    start = client.put(prefix + b"start", b"s", Deadline(5.0)) + 1
    events: list[WatchEvent] = []
    watcher = Watcher(
        client, prefix, start, lambda batch, top: events.extend(batch), _no_compaction
    )
    watcher.start()
    try:
        revs = [client.put(prefix + b"k%03d" % i, b"v", Deadline(5.0)) for i in range(200)]
        wait_until(lambda: len(events) >= 200, timeout=10, message=lambda: f"{len(events)}")
        assert [e.kv.mod_revision for e in events] == revs
        assert watcher.error is None
    finally:
        watcher.stop()


def test_handler_failure_reconnects_and_redelivers(client: EtcdClient, namespace: str) -> None:
    """A handler that raises is a bug, not a lost event: the watch records the
    error, reconnects from the last handled revision and delivers the batch
    again; later events follow in order."""
    prefix = f"{namespace}/w/".encode()
    start = client.put(prefix + b"start", b"s", Deadline(5.0)) + 1
    delivered: list[int] = []
    failures = [0]

    def handler(batch: list[WatchEvent], top: int) -> None:
        if failures[0] == 0:
            failures[0] += 1
            raise RuntimeError("handler bug")
        delivered.extend(e.kv.mod_revision for e in batch)

    watcher = Watcher(client, prefix, start, handler, _no_compaction)
    watcher.start()
    try:
        wait_until(watcher.connected.is_set, timeout=5, message="watch not connected")
        first = client.put(prefix + b"a", b"1", Deadline(5.0))
        wait_until(lambda: delivered, timeout=10, message="event not redelivered")
        later = [client.put(prefix + b"b%d" % i, b"2", Deadline(5.0)) for i in range(5)]
        wait_until(lambda: len(delivered) >= 6, timeout=10, message=lambda: f"{delivered}")
        assert delivered == [first, *later]
        assert isinstance(watcher.error, RuntimeError)
        assert watcher.reconnects >= 1
    finally:
        watcher.stop()


def test_stop_is_prompt_and_final(client: EtcdClient, namespace: str) -> None:
    """stop() on a quiet stream returns well within the probe interval (5 s), and no
    handler call happens after it returned, even while writes continue."""
    prefix = f"{namespace}/w/".encode()
    start = client.put(prefix + b"start", b"s", Deadline(5.0)) + 1
    calls_after_stop = []
    stopped = threading.Event()
    seen: list[int] = []

    def handler(batch: list[WatchEvent], top: int) -> None:
        if stopped.is_set():
            calls_after_stop.append(top)
        seen.append(top)

    watcher = Watcher(client, prefix, start, handler, _no_compaction, probe_after=5.0)
    watcher.start()
    wait_until(watcher.connected.is_set, timeout=5, message="watch not connected")
    rev = client.put(prefix + b"x", b"1", Deadline(5.0))
    wait_until(lambda: rev in seen, timeout=5, message="event not delivered")
    t0 = time.monotonic()
    watcher.stop()
    elapsed = time.monotonic() - t0
    stopped.set()
    assert elapsed < 2.0, f"stop took {elapsed:.2f}s"
    assert watcher._thread is not None and not watcher._thread.is_alive()
    for i in range(20):
        client.put(prefix + b"after%d" % i, b"v", Deadline(5.0))
    # the reader thread, if it were still handling, would see these promptly; the
    # final write's own round trip is the bound: a live watch delivers within it
    probe = client.put(prefix + b"last", b"v", Deadline(5.0))
    client.get(prefix + b"last", Deadline(5.0))
    assert calls_after_stop == [], f"handler called after stop for {calls_after_stop}"
    assert probe not in seen


def test_a_batch_out_of_revision_order_is_refused_and_the_stream_reopened(
    client: EtcdClient, namespace: str
) -> None:
    """etcd never sends a revision at or below one it already sent on a stream. A
    stream rewritten on its way (the chaos suite's fault proxy once reordered bytes
    when a slow link healed) would have its late event dropped downstream as already
    applied; the watcher refuses the batch instead (logged, counted) and reopens the
    stream, after which the watch carries on in order."""
    prefix = f"{namespace}/w/".encode()
    start = client.put(prefix + b"start", b"s", Deadline(5.0)) + 1
    events: list[WatchEvent] = []
    watcher = Watcher(
        client, prefix, start, lambda batch, top: events.extend(batch), _no_compaction
    )
    real_handle = watcher._handle
    held: list[object] = []

    def reordering(msg, endpoint):  # type: ignore[no-untyped-def]
        # hold back the first event message and deliver it after the next one
        if msg.events and not held:
            held.append(msg)
            return ""
        outcome = real_handle(msg, endpoint)
        if msg.events and held and held[0] is not msg:
            late = held.pop()
            held.append(None)  # only once
            return real_handle(late, endpoint) or outcome  # type: ignore[arg-type]
        return outcome

    watcher._handle = reordering  # type: ignore[method-assign]
    watcher.start()
    try:
        wait_until(watcher.connected.is_set, 5, "watch not connected")
        revs = [client.put(prefix + b"k%d" % i, b"v", Deadline(5.0)) for i in range(2)]
        wait_until(lambda: watcher.out_of_order == 1, 5, "the late batch was not refused")
        reconnects = watcher.reconnects
        wait_until(lambda: watcher.reconnects > reconnects or watcher.connected.is_set(), 5)
        later = client.put(prefix + b"later", b"v", Deadline(5.0))
        wait_until(lambda: any(e.kv.mod_revision == later for e in events), 5, "no event after")
        got = [e.kv.mod_revision for e in events]
        assert got == sorted(got) and len(got) == len(set(got)), got
        assert revs[0] not in got  # refused, not handed on out of order
    finally:
        watcher.stop()
