"""etcd's bidirectional gRPC streams as etcdraft uses them: :class:`BidiStream` (one
open stream and the thread reading it) and :class:`KeepAliveStream` (``LeaseKeepAlive``,
reopened on the next endpoint when it fails). Part of :mod:`etcdraft.etcd`."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc

from etcdraft._deadline import Deadline
from etcdraft._etcd_endpoints import round_pause
from etcdraft._etcd_errors import TokenExpired, TransientError, map_grpc_error
from etcdraft.errors import EtcdAuthError, EtcdError, EtcdraftError, EtcdTimeoutError
from etcdraft.proto import etcd_rpc_pb2 as pb

if TYPE_CHECKING:
    from etcdraft.etcd import EtcdClient

__all__ = ["BidiStream", "KeepAliveStream"]

log = logging.getLogger("etcdraft.etcd")

_END = object()


class BidiStream:
    """One open bidirectional gRPC stream and the thread reading it.

    :meth:`send` queues a request from any thread. With ``on_message``, the reader
    thread handles each answer itself (no hand-off per message) and the stream ends
    when the handler returns a non-empty outcome; without one, answers are taken with
    :meth:`recv`, which has a deadline. Either way :meth:`wait_end` reports how the
    stream ended: an outcome string, or an :class:`~etcdraft.errors.EtcdraftError`.
    """

    def __init__(
        self,
        method: Callable[..., Any],
        endpoint: str,
        metadata: tuple[tuple[str, str], ...],
        *,
        name: str,
        on_message: Callable[[Any], str] | None = None,
        channel: grpc.Channel | None = None,
        token: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.token = token
        self.last_data = time.monotonic()
        self.closed = False
        self._channel = channel
        self._send_q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._recv_q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._end_q: queue.SimpleQueue[str | EtcdraftError] = queue.SimpleQueue()
        self._on_message = on_message
        self._call = method(self._requests(), metadata=metadata)
        self.thread = threading.Thread(target=self._read, name=name, daemon=True)
        self.thread.start()

    def _requests(self) -> Iterator[Any]:
        while True:
            item = self._send_q.get()
            if item is _END:
                return
            yield item

    def send(self, msg: Any) -> None:
        if not self.closed:
            self._send_q.put(msg)

    def _read(self) -> None:
        handle = self._on_message
        outcome: str | EtcdraftError = "eof"
        try:
            for msg in self._call:
                if self.closed:
                    return
                self.last_data = time.monotonic()
                if handle is None:
                    self._recv_q.put(msg)
                    continue
                result = handle(msg)
                if result:
                    outcome = result
                    break
        except grpc.RpcError as exc:
            if self.closed:
                return
            outcome = map_grpc_error(exc, self.endpoint)
        except EtcdraftError as exc:  # raised by the handler
            outcome = exc
        except Exception as exc:  # a handler bug must reach the owner
            log.exception("stream handler failed on %s", self.endpoint)
            outcome = EtcdError(f"stream handler failed: {type(exc).__name__}: {exc}")
        finally:
            if handle is None:
                self._recv_q.put(_END)
        self._end_q.put(outcome)

    def recv(self, timeout: float) -> Any:
        """The next answer, waiting at most ``timeout`` seconds.

        Raises:
            TransientError: nothing came in time, or the stream ended.
        """
        try:
            item = self._recv_q.get(timeout=max(0.0, timeout))
        except queue.Empty:
            raise TransientError(
                f"etcd at {self.endpoint} sent nothing on the stream for {timeout:.3f}s",
                endpoint=self.endpoint,
                reason="timeout",
            ) from None
        if item is _END:
            self._recv_q.put(_END)
            end = self.wait_end(0.5)
            if isinstance(end, EtcdraftError):
                raise end
            raise TransientError(
                f"etcd at {self.endpoint} closed the stream",
                endpoint=self.endpoint,
                reason="closed",
            )
        return item

    def wait_end(self, timeout: float) -> str | EtcdraftError | None:
        """How the stream ended, or None if it is still open after ``timeout``."""
        try:
            end = self._end_q.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None
        self._end_q.put(end)  # later callers see it too
        return end

    def close(self, join: float = 0.0) -> None:
        """Cancel the stream (idempotent). With ``join`` > 0, also wait up to that
        long for the reader thread to end (never from the reader thread itself)."""
        if not self.closed:
            self.closed = True
            self._send_q.put(_END)
            self._call.cancel()
            self._end_q.put("closed")
            if self._channel is not None:
                self._channel.close()
        if join > 0 and threading.current_thread() is not self.thread:
            self.thread.join(join)


class KeepAliveStream:
    """``Lease/LeaseKeepAlive`` as one bidirectional stream, reopened on the next
    endpoint when it fails. Used by one thread (the session's)."""

    def __init__(self, client: EtcdClient, name: str) -> None:
        self._client = client
        self._name = name
        self._stream: BidiStream | None = None

    def keepalive(self, lease_id: int, deadline: Deadline) -> int:
        """Refresh ``lease_id`` once; returns the remaining TTL (0: the lease is gone).

        Raises:
            EtcdTimeoutError: no endpoint answered before ``deadline``.
            EtcdAuthError: credentials refused.
        """
        last: EtcdraftError | None = None
        tries = failures = paused = 0
        while not deadline.expired():
            if failures > paused:
                paused = failures
                self._pause(failures, deadline)
            stream = self._stream
            tries += 1
            if stream is None:
                url = self._client.preferred_endpoint()
                try:
                    stream = self._client.open_stream(
                        url,
                        lambda s: s.lease.LeaseKeepAlive,
                        name=self._name,
                        deadline=deadline,
                        # the control lane: a large write or a dropped data
                        # connection never delays the lease
                        lane="control",
                    )
                except TransientError as exc:
                    last, failures = exc, failures + 1
                    self._client.report_failure(url)
                    continue
                self._stream = stream
            stream.send(pb.LeaseKeepAliveRequest(ID=lease_id))
            # like unary requests: an endpoint gets its share of what is left, so a
            # silent (blackholed) stream leaves time to try the others in this round
            untried = max(1, len(self._client.endpoints) - tries + 1)
            wait = deadline.remaining() / untried
            try:
                resp: pb.LeaseKeepAliveResponse = stream.recv(wait)
            except EtcdraftError as exc:
                last, failures = exc, failures + 1
                self.close()
                if isinstance(exc, EtcdAuthError) and not isinstance(exc, TokenExpired):
                    raise
                self._client.stream_failed(stream, exc)
                continue
            if lease_id != resp.ID and resp.ID:
                continue  # an answer for an older lease of this stream
            try:
                self._client.check_answer(stream.endpoint, resp.header)
            except TransientError as exc:  # a member whose raft term went backwards
                last, failures = exc, failures + 1
                self.close()
                self._client.stream_failed(stream, exc)
                continue
            return resp.TTL if resp.TTL > 0 else 0
        raise EtcdTimeoutError(
            f"lease keep-alive got no answer in time; last error: {last}"
        ) from last

    def _pause(self, failures: int, deadline: Deadline) -> None:
        """After every endpoint failed in turn, back off (50 ms growing to 0.25 s),
        like unary requests: a stream that fails at once (a refused connection) is
        not reopened in a hot loop. A failed endpoint's successor is tried at once."""
        if failures % len(self._client.endpoints) == 0:
            deadline.sleep(round_pause(failures))

    def close(self, join: float = 0.0) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close(join)
