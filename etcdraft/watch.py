"""Our own watch loop over the gateway's streaming ``POST /v3/watch``.

etcd3gw's watcher is not used: it blocks forever on a broken stream and drops
``canceled``/``compact_revision`` messages and error envelopes. This loop:

* reads the stream in a helper thread and consumes it with a bounded wait, so a
  stream that goes silent is noticed (probe of the endpoint when quiet) and
  abandoned without hanging;
* asks etcd for progress notifications and sends ``hasleader`` so a member that
  lost quorum closes the stream instead of staying silent;
* handles ``created``, ``canceled`` (with ``compact_revision``), ``{"error": ...}``
  envelopes and EOF;
* resumes from the last processed revision + 1, so nothing is missed or repeated;
* on compaction calls ``on_compacted`` which heals (range reads) and returns the
  revision to resume after.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from etcdraft._deadline import Deadline
from etcdraft.errors import EtcdraftError
from etcdraft.etcd import KV, EtcdClient, b64, prefix_end

__all__ = ["WatchEvent", "Watcher"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WatchEvent:
    deleted: bool
    kv: KV


_EOF = object()
_QUIET = object()  # the read timeout of a quiet stream expired: reconnect, no blame
_ENDPOINT_FAILED = object()  # another request found the watch's endpoint failing


class _Stream:
    """One open watch stream and the thread reading it.

    With a ``handle`` callable, the reader thread decodes and handles each message
    itself (no hand-off to another thread per message) under ``handle_lock`` and
    only reports the end of the stream (an outcome string, EOF, a quiet timeout or
    an exception) on ``out``; without one, every line goes to ``out``."""

    def __init__(
        self,
        resp: requests.Response,
        out: queue.Queue[Any],
        name: str,
        handle: Callable[[bytes], str] | None = None,
        handle_lock: threading.Lock | None = None,
    ) -> None:
        self.resp = resp
        self.out = out
        self.closed = False
        self.last_data = time.monotonic()
        self._handle = handle
        self._handle_lock = handle_lock or threading.Lock()
        self.thread = threading.Thread(target=self._read, name=name, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        handle = self._handle
        try:
            for line in self.resp.iter_lines(chunk_size=None):
                if self.closed:
                    return
                if not line:
                    continue
                self.last_data = time.monotonic()
                if handle is None:
                    self.out.put((self, line))
                    continue
                with self._handle_lock:
                    if self.closed:  # abandoned meanwhile: a newer stream owns the state
                        return
                    outcome = handle(line)
                if outcome:
                    self.out.put((self, outcome))
                    return
        except Exception as exc:  # broken stream, read timeout, closed socket, handler bug
            if not self.closed:
                quiet = "timed out" in str(exc).lower() or "timeout" in type(exc).__name__.lower()
                if isinstance(exc, _HandlerError):
                    self.out.put((self, exc))
                else:
                    self.out.put((self, _QUIET if quiet else exc))
            return
        if not self.closed:
            self.out.put((self, _EOF))

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(Exception):
            conn = getattr(self.resp.raw, "_connection", None)
            sock = getattr(conn, "sock", None)
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):
            self.resp.close()
        self.out.put((self, _EOF))  # wake the supervisor


class _HandlerError(Exception):
    """The event handler raised (a bug or a failed heal): reconnect."""


class Watcher:
    """Watch every key under ``prefix`` from ``start_revision`` on, in order.

    Args:
        client: the etcd client (endpoints, TLS, auth).
        prefix: key prefix to watch.
        handler: called in the watch thread with each batch of events (in revision
            order) and the batch's highest revision; must not block on etcd.
        on_compacted: called when the next revision was compacted; heals and returns
            the revision up to which state is now known (watch resumes after it).
        on_progress: called with a revision up to which everything was delivered.
        probe_after: quiet seconds after which the endpoint is probed.
        probe_timeout: deadline of that probe.
    """

    def __init__(
        self,
        client: EtcdClient,
        prefix: bytes,
        start_revision: int,
        handler: Callable[[list[WatchEvent], int], None],
        on_compacted: Callable[[int], int],
        *,
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
        self.on_progress = on_progress
        self.name = name
        self.probe_after = probe_after
        self.probe_timeout = probe_timeout
        self.read_timeout = read_timeout
        self.stop_event = threading.Event()
        self.reconnects = 0
        self.resyncs = 0
        self.connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._stream: _Stream | None = None
        self._endpoint_failed = threading.Event()
        self._current_endpoint = ""
        # held while one message is handled: a stream being abandoned finishes its
        # message before the next stream starts (events stay in revision order)
        self._handle_lock = threading.Lock()
        self.error: BaseException | None = None
        client.on_endpoint_failure(self._endpoint_failure)

    def _endpoint_failure(self, url: str) -> None:
        if url == self._current_endpoint:
            self._endpoint_failed.set()
            stream = self._stream
            # wake the supervisor, unless the reader itself reported the failure (it
            # then ends the stream with its own outcome)
            if stream is not None and threading.current_thread() is not stream.thread:
                stream.out.put((stream, _ENDPOINT_FAILED))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def signal_stop(self) -> None:
        """Ask the watch to end and close its stream (see :meth:`stop` to also wait)."""
        self.stop_event.set()
        stream = self._stream
        if stream is not None:
            stream.close()

    def stop(self, timeout: float = 2.0) -> None:
        self.signal_stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # -- loop ----------------------------------------------------------------------

    def _open(self, endpoint: str) -> _Stream:
        session, base, headers = self.client.session_for(endpoint)
        body = {
            "create_request": {
                "key": b64(self.prefix),
                "range_end": b64(prefix_end(self.prefix)),
                "start_revision": str(self.next_revision),
                "progress_notify": True,
            }
        }
        headers = dict(headers)
        headers["Grpc-Metadata-hasleader"] = "true"
        resp = session.post(
            base + "watch",
            data=json.dumps(body),
            headers=headers,
            stream=True,
            # the answer's headers come with the "created" message: a member that
            # cannot answer within probe_timeout is not one to watch from
            timeout=(min(1.0, self.probe_timeout), self.probe_timeout),
        )
        if resp.status_code != 200:
            text = resp.text[:300]
            resp.close()
            raise ConnectionError(f"watch on {endpoint} refused: HTTP {resp.status_code} {text}")
        # from now on the stream may be quiet for long: a longer read timeout (the
        # quiet-stream probe in _consume is what detects a dead member)
        conn = getattr(resp.raw, "_connection", None)
        sock = getattr(conn, "sock", None)
        if sock is not None:
            sock.settimeout(self.read_timeout)
        return _Stream(
            resp, queue.Queue(), f"{self.name}-reader", self._handle_line, self._handle_lock
        )

    def _run(self) -> None:
        backoff = 0.0
        while not self.stop_event.is_set():
            endpoint = self.client.preferred_endpoint()
            self._current_endpoint = endpoint
            self._endpoint_failed.clear()
            try:
                stream = self._open(endpoint)
            except Exception as exc:
                log.debug("watch: cannot open on %s: %s", endpoint, exc)
                self.client.report_failure(endpoint)
                backoff = min(max(backoff * 2, 0.02), 0.5)
                self.stop_event.wait(backoff)
                continue
            self._stream = stream
            try:
                outcome = self._consume(stream, endpoint)
            except Exception as exc:  # a handler bug must not kill the watch silently
                log.exception("watch handler failed; reconnecting")
                self.error = exc
                outcome = "error"
            finally:
                stream.close()
                self._stream = None
                self.connected.clear()
                with self._handle_lock:  # the old reader's message, if any, is done
                    pass
            if self.stop_event.is_set():
                return
            self.reconnects += 1
            if outcome in ("error", "eof"):
                backoff = min(max(backoff * 2, 0.02), 0.5)
                self.stop_event.wait(backoff)
            else:
                backoff = 0.0

    def _consume(self, stream: _Stream, endpoint: str) -> str:
        """Supervise a stream whose reader handles the messages: wake when it ends,
        when the endpoint is reported failing, or when it was quiet for
        ``probe_after`` (then probe the endpoint)."""
        while not self.stop_event.is_set():
            if self._endpoint_failed.is_set():
                return "endpoint-failed"
            quiet_for = time.monotonic() - stream.last_data
            wait = self.probe_after - quiet_for
            if wait <= 0:
                if not self._probe(endpoint):
                    self.client.report_failure(endpoint)
                    return "probe-failed"
                stream.last_data = max(stream.last_data, time.monotonic())
                continue
            try:
                _src, item = stream.out.get(timeout=wait)
            except queue.Empty:
                continue
            if item is _ENDPOINT_FAILED:
                continue  # the flag is checked at the top of the loop
            if item is _EOF:
                log.debug("watch stream on %s ended", endpoint)
                return "eof"
            if item is _QUIET:
                return "quiet"
            if isinstance(item, _HandlerError):
                raise item.__cause__ or item
            if isinstance(item, BaseException):
                log.debug("watch stream on %s broke: %s", endpoint, item)
                self.client.report_failure(endpoint)
                return "error"
            if isinstance(item, str):
                return item  # the reader's outcome for this stream
        return "stopped"

    def _handle_line(self, line: bytes) -> str:
        """Decode and handle one message (in the reader thread)."""
        endpoint = self._current_endpoint
        try:
            msg = json.loads(line)
        except ValueError:
            log.warning("watch: malformed message from %s, reconnecting", endpoint)
            return "error"
        try:
            return self._handle(msg, endpoint)
        except Exception as exc:
            raise _HandlerError(str(exc)) from exc

    def _handle(self, msg: dict[str, Any], endpoint: str) -> str:
        if "error" in msg:
            err = msg["error"]
            text = err.get("message", err) if isinstance(err, dict) else err
            log.debug("watch on %s: error envelope %s", endpoint, text)
            if "compacted" in str(text):
                return self._compacted(0)
            self.client.report_failure(endpoint)
            return "error"
        result = msg.get("result") or {}
        header = result.get("header") or {}
        compact = int(result.get("compact_revision", 0) or 0)
        if result.get("canceled") or compact:
            if compact:
                return self._compacted(compact)
            log.debug("watch on %s canceled: %s", endpoint, result.get("cancel_reason", ""))
            self.client.report_failure(endpoint)
            return "error"
        if result.get("created"):
            self.connected.set()
            return ""
        events = result.get("events") or []
        if events:
            batch = [
                WatchEvent(ev.get("type") == "DELETE", KV.from_json(ev.get("kv") or {}))
                for ev in events
            ]
            top = max(ev.kv.mod_revision for ev in batch)
            self.handler(batch, top)
            self.next_revision = max(self.next_revision, top + 1)
        else:
            rev = int(header.get("revision", 0) or 0)
            if rev >= self.next_revision:  # progress notification
                self.next_revision = rev + 1
                if self.on_progress is not None:
                    self.on_progress(rev)
        return ""

    def _compacted(self, compact_revision: int) -> str:
        log.warning(
            "watch: revision %d was compacted (etcd compact revision %d); resynchronising",
            self.next_revision,
            compact_revision,
        )
        self.resyncs += 1
        upto = self.on_compacted(compact_revision)
        self.next_revision = max(self.next_revision, upto + 1)
        return "resynced"

    def _probe(self, endpoint: str) -> bool:
        """A linearizable read on the watch's own endpoint: is it still serving?"""
        try:
            self.client.probe(
                endpoint, Deadline(self.probe_timeout, self.stop_event), key=self.prefix
            )
        except EtcdraftError:
            return False
        return True
