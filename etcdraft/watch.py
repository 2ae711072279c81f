"""The ordered watch over a prefix, on etcd's bidirectional ``Watch/Watch`` gRPC stream.

One stream per watcher, on a connection of its own (so a stalled watch and the node's
requests never wait on each other). The loop:

* reads the stream in a reader thread that decodes and handles each message itself,
  under a lock, so a stream being abandoned finishes its message before the next one
  starts (events stay in revision order);
* asks etcd for progress notifications and sends the ``hasleader`` metadata, so a
  member that lost its cluster fails the stream (``etcdserver: no leader``) instead of
  staying silent;
* when the stream has been quiet for ``probe_after``, sends a progress request on the
  stream itself and expects an answer within ``probe_timeout``: a connection that
  silently stopped carrying bytes is noticed and the watch moves to another endpoint;
* handles ``created``, ``canceled`` (with ``compact_revision``) and the stream's end;
* refuses a batch with a revision at or below one already delivered (etcd never sends
  one; a stream rewritten on its way could) and reopens the stream after a re-read;
* resumes from the last processed revision + 1, so nothing is missed or repeated;
  before resuming a broken stream it calls ``on_reconnect``, which may heal (range
  reads) and return a later revision to resume after;
* on compaction calls ``on_compacted``, which heals and returns the revision to
  resume after.

Both callbacks run on the supervising thread, never on the reader.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import tenacity

from etcdraft._worker import Worker
from etcdraft.errors import EtcdraftError
from etcdraft.etcd import KV, BidiStream, EtcdClient, pb, prefix_end

__all__ = ["WatchEvent", "Watcher"]

log = logging.getLogger(__name__)

_DELETE = 1  # mvccpb.Event.DELETE

#: How a stream ended when the next open should wait (the wait grows while they repeat).
_PAUSE_AFTER = frozenset({"open-failed", "error", "eof", "heal-failed"})


@dataclass(frozen=True, slots=True)
class WatchEvent:
    deleted: bool
    kv: KV


class Watcher(Worker):
    """Watch every key under ``prefix`` from ``start_revision`` on, in order.

    Args:
        client: the etcd client (endpoints, TLS, auth).
        prefix: key prefix to watch.
        handler: called in the reader thread with each batch of events (in revision
            order) and the batch's highest revision; must not block on etcd.
        on_compacted: called with the compact revision and the revision delivered up
            to, when the next revision was compacted; heals and returns the revision
            up to which state is now known (the watch resumes after it), or None when
            it could not (the watch retries after a pause).
        on_reconnect: called with the revision delivered up to before a broken stream
            is reopened; returns a revision to resume after, or None to resume where
            the stream broke.
        on_progress: called with a revision up to which everything was delivered.
        probe_after: quiet seconds after which the stream is probed.
        probe_timeout: how long the probe's answer may take.
        read_timeout: kept for compatibility; the probe bounds a silent stream.
    """

    def __init__(
        self,
        client: EtcdClient,
        prefix: bytes,
        start_revision: int,
        handler: Callable[[list[WatchEvent], int], None],
        on_compacted: Callable[[int, int], int | None],
        *,
        on_reconnect: Callable[[int], int | None] | None = None,
        on_progress: Callable[[int], None] | None = None,
        name: str = "etcdraft-watch",
        probe_after: float = 1.0,
        probe_timeout: float = 1.0,
        read_timeout: float = 30.0,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.next_revision = start_revision
        self.handler = handler
        self.on_compacted = on_compacted
        self.on_reconnect = on_reconnect
        self.on_progress = on_progress
        self._compact_revision = 0  # set by the reader when etcd says "compacted"
        self._heal_first = False  # a stream broke: on_reconnect heals before the next
        super().__init__(name)
        self.probe_after = probe_after
        self.probe_timeout = probe_timeout
        self.read_timeout = read_timeout
        self.reconnects = 0
        self.resyncs = 0
        self.probes_answered = 0  # progress requests answered on a quiet stream
        self.out_of_order = 0  # batches refused: a revision at or below one delivered
        self.last_failure = ""  # why the last stream broke
        self.connected = threading.Event()
        self._stream: BidiStream | None = None
        self._endpoint_failed = threading.Event()
        self._current_endpoint = ""
        self._wake = threading.Event()
        # held while one message is handled: a stream being abandoned finishes its
        # message before the next stream starts (events stay in revision order)
        self._handle_lock = threading.Lock()
        self._generation = 0
        self._handler_failure: BaseException | None = None
        self.error: BaseException | None = None
        client.on_endpoint_failure(self._endpoint_failure)

    def _endpoint_failure(self, url: str) -> None:
        if url == self._current_endpoint:
            self._endpoint_failed.set()
            self._wake.set()

    def signal_stop(self) -> None:
        """Ask the watch to end and close its stream (see :meth:`stop` to also wait)."""
        super().signal_stop()
        self._wake.set()
        stream = self._stream
        if stream is not None:
            stream.close()

    # -- loop ----------------------------------------------------------------------

    def _open(self, endpoint: str) -> BidiStream:
        with self._handle_lock:
            self._generation += 1
            generation = self._generation

        def on_message(msg: pb.WatchResponse) -> str:
            with self._handle_lock:
                if generation != self._generation or self.stop_event.is_set():
                    return "abandoned"  # a newer stream owns the state
                try:
                    return self._handle(msg, endpoint)
                except Exception as exc:  # reported by the supervisor, then reconnect
                    self._handler_failure = exc
                    return "handler-error"

        stream = self.client.open_stream(
            endpoint,
            lambda s: s.watch.Watch,
            name=f"{self.name}-reader",
            on_message=on_message,
            dedicated=True,
        )
        stream.send(
            pb.WatchRequest(
                create_request=pb.WatchCreateRequest(
                    key=self.prefix,
                    range_end=prefix_end(self.prefix),
                    start_revision=self.next_revision,
                    progress_notify=True,
                )
            )
        )
        return stream

    def _run(self) -> None:
        while not self.stop_event.is_set():
            # one policy per run of failures: the pause before the next open grows
            # from 20 ms to 0.5 s while streams keep failing, and starts over after a
            # stream that ended for a reason other than a failure of its own
            retrying = tenacity.Retrying(
                retry=tenacity.retry_if_result(lambda outcome: outcome in _PAUSE_AFTER),
                wait=tenacity.wait_exponential(multiplier=0.02, max=0.5),
                stop=tenacity.stop_when_event_set(self.stop_event),
                sleep=tenacity.sleep_using_event(self.stop_event),
                retry_error_callback=lambda _state: "stopped",
            )
            retrying(self._one_stream)

    def _one_stream(self) -> str:
        """Heal if a broken stream asked for it, open a stream, supervise it until it
        ends; returns why it ended."""
        if self._heal_first and self.on_reconnect is not None:
            upto = self.on_reconnect(self.next_revision - 1)
            if self.stop_event.is_set():
                return "stopped"
            if upto is not None:  # else etcd is out of reach: retried before next open
                self.next_revision = max(self.next_revision, upto + 1)
                self._heal_first = False
        endpoint = self.client.preferred_endpoint()
        self._current_endpoint = endpoint
        self._endpoint_failed.clear()
        self._wake.clear()
        try:
            stream = self._open(endpoint)
        except EtcdraftError as exc:
            log.debug("watch: cannot open on %s: %s", endpoint, exc)
            self.client.report_failure(endpoint)
            return "open-failed"
        self._stream = stream
        try:
            outcome = self._consume(stream, endpoint)
        except Exception as exc:  # a handler bug must not kill the watch silently
            log.exception("watch handler failed; reconnecting")
            self.error = exc
            outcome = "error"
        finally:
            stream.close(join=1.0)  # its reader thread ends with it
            self._stream = None
            self.connected.clear()
            with self._handle_lock:  # the old reader's message, if any, is done
                self._generation += 1
        if self.stop_event.is_set():
            return "stopped"
        self.reconnects += 1
        if outcome == "compacted":
            outcome = self._compacted()
            self._heal_first = outcome == "heal-failed"
        else:
            self._heal_first = True  # a broken stream: heal before the next one
        return outcome

    def _consume(self, stream: BidiStream, endpoint: str) -> str:
        """Supervise a stream whose reader handles the messages: wake when it ends,
        when the endpoint is reported failing, or when it was quiet for
        ``probe_after`` (then probe the stream with a progress request)."""
        probe_sent = 0.0  # monotonic; 0: no probe outstanding
        while not self.stop_event.is_set():
            if self._endpoint_failed.is_set():
                return "endpoint-failed"
            end = stream.wait_end(0)
            if end is not None:
                return self._ended(end, stream)
            now = time.monotonic()
            if probe_sent and stream.last_data >= probe_sent:
                probe_sent = 0.0  # answered
                self.probes_answered += 1
            if probe_sent:
                if now - probe_sent >= self.probe_timeout:
                    log.debug("watch on %s: no answer to a progress request", endpoint)
                    self.client.report_failure(endpoint)
                    return "probe-failed"
                wait = probe_sent + self.probe_timeout - now
            else:
                quiet_for = now - stream.last_data
                if quiet_for >= self.probe_after:
                    probe_sent = now
                    stream.send(pb.WatchRequest(progress_request=pb.WatchProgressRequest()))
                    continue
                wait = self.probe_after - quiet_for
            end = stream.wait_end(min(wait, 0.25))
            if end is not None:
                return self._ended(end, stream)
        return "stopped"

    def _ended(self, end: str | EtcdraftError, stream: BidiStream) -> str:
        if isinstance(end, EtcdraftError):
            log.debug("watch stream on %s broke: %s", stream.endpoint, end)
            self.last_failure = str(end)
            self.client.stream_failed(stream, end)
            return "error"
        if end == "handler-error":
            failure, self._handler_failure = self._handler_failure, None
            if failure is not None:
                raise failure
        if end == "eof":
            log.debug("watch stream on %s ended", stream.endpoint)
        return end

    def _handle(self, msg: pb.WatchResponse, endpoint: str) -> str:
        if msg.canceled or msg.compact_revision:
            if msg.compact_revision:
                self._compact_revision = msg.compact_revision
                return "compacted"
            log.debug("watch on %s canceled: %s", endpoint, msg.cancel_reason)
            self.client.report_failure(endpoint)
            return "error"
        if msg.created:
            self.connected.set()
            return ""
        if msg.events:
            batch = [WatchEvent(ev.type == _DELETE, KV.from_pb(ev.kv)) for ev in msg.events]
            low = top = batch[-1].kv.mod_revision
            for ev in batch:
                rev = ev.kv.mod_revision
                if rev > top:
                    top = rev
                elif rev < low:
                    low = rev
            if low < self.next_revision:
                # etcd sends each revision once, in order: this stream was rewritten
                # on its way (a proxy reordered its bytes?). Handed on, the event would
                # be dropped silently as already applied; refused, it is logged and
                # the reconnect re-reads the view (entries the stream already passed
                # cannot be applied in order any more: the apply stream has a gap)
                self.out_of_order += 1
                log.warning(
                    "watch on %s: an event at revision %d came after revision %d: the "
                    "stream is out of order; reopening it after a re-read",
                    endpoint,
                    low,
                    self.next_revision - 1,
                )
                return "out-of-order"
            self.handler(batch, top)
            self.next_revision = max(self.next_revision, top + 1)
        else:
            # A progress notification. It does NOT move the resume point: etcd before
            # 3.4.25/3.5.8 can send one (notably in answer to a progress request) whose
            # revision is ahead of events not yet sent on the stream (etcd issue
            # 15220); resuming after it, once the stream broke, lost those events (seen
            # here: entries missing from an apply stream while members restarted).
            # Resuming from the last event + 1 re-reads only history without events of
            # ours, which etcd skips (or a compaction, which the resync heals).
            rev = msg.header.revision
            if rev >= self.next_revision and self.on_progress is not None:
                self.on_progress(rev)
        return ""

    def _compacted(self) -> str:
        log.warning(
            "watch: revision %d was compacted (etcd compact revision %d); resynchronising",
            self.next_revision,
            self._compact_revision,
        )
        self.resyncs += 1
        upto = self.on_compacted(self._compact_revision, self.next_revision - 1)
        if upto is None:
            return "heal-failed"
        self.next_revision = max(self.next_revision, upto + 1)
        return "resynced"
