"""A small HTTP/1.1 client for etcd's JSON gateway (unary requests only).

Why not ``requests`` or ``http.client``: a broadcast is one short POST and one
short answer, and on this path the generic clients cost more CPU than etcd's own
work. ``requests`` spends ~300 us per call preparing it (settings and header
merging, cookies, hooks, adapters, urllib3's pool); ``http.client`` still parses
every answer's headers through ``email.parser`` and builds a file object per
response (~70 us). This module writes the request in one ``sendall`` and reads
the answer straight from the socket into one buffer: ~45 us.

What it understands is exactly what etcd's gateway (Go ``net/http``) sends: a
status line, headers, and a body framed by ``Content-Length`` or chunked
transfer coding (or, without either, by the connection closing). Anything else is
a :class:`ProtocolError`, and the connection is dropped. Every read is bounded by
the request's total timeout, not per ``recv``; headers and bodies have size caps,
so a peer that is not etcd cannot make a request hang or grow without bound.

Thread-safe: a request takes an idle keep-alive connection or opens one, and
gives it back only when the answer was read in full and the server keeps it open.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from urllib.parse import urlsplit

__all__ = ["ConnectError", "Pool", "ProtocolError"]

#: Largest status line plus headers accepted.
MAX_HEAD = 64 * 1024
#: Largest body accepted (etcd's default request limit is 1.5 MiB; ranges can be
#: larger, but this library pages them).
MAX_BODY = 256 * 1024 * 1024
_RECV = 65536
#: TLS errors that mean the connection broke, not that the TLS set-up is wrong.
_TLS_TRANSPORT_ERRORS = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


class ConnectError(OSError):
    """The connection could not be made: the request was certainly not sent."""


class ProtocolError(OSError):
    """The peer's answer is not HTTP/1.1 as etcd's gateway speaks it."""


class _Conn:
    """One connection; not thread-safe (the pool hands it to one caller at a time)."""

    __slots__ = ("buf", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def idle_ok(self) -> bool:
        """An idle keep-alive connection that reads as ready was closed by the
        server (or sent something unasked): not reusable."""
        if self.buf:
            return False
        try:
            if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
                return False
            poller = select.poll()  # not select(): it fails for fds >= 1024
            poller.register(self.sock, select.POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False

    def _recv(self, end: float) -> bytes:
        """One ``recv`` that ends by the monotonic time ``end``; b"" at EOF."""
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self.sock.settimeout(left)
        return self.sock.recv(_RECV)

    def _fill(self, end: float) -> None:
        """Read more bytes into ``buf`` before the monotonic time ``end``."""
        data = self._recv(end)
        if not data:
            raise ProtocolError("connection closed before the answer was complete")
        self.buf += data

    def _line(self, end: float, limit: int) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[: i + 2]
                return line
            if len(self.buf) > limit:
                raise ProtocolError("line too long in the answer")
            self._fill(end)

    def _exactly(self, n: int, end: float) -> bytes:
        while len(self.buf) < n:
            self._fill(end)
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def exchange(self, request: bytes, end: float) -> tuple[int, bytes, bool]:
        """Send one request and read its answer: (status, body, keep-alive)."""
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self.sock.settimeout(left)
        self.sock.sendall(request)
        # the head: status line and headers, up to the empty line
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                break
            if len(self.buf) > MAX_HEAD:
                raise ProtocolError("answer headers too large")
            self._fill(end)
        head = bytes(self.buf[:i]).split(b"\r\n")
        del self.buf[: i + 4]
        status_line = head[0].split(None, 2)
        if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
            raise ProtocolError(f"not an HTTP/1.x answer: {head[0][:80]!r}")
        try:
            status = int(status_line[1])
        except ValueError:
            raise ProtocolError(f"bad status line: {head[0][:80]!r}") from None
        length = -1
        chunked = False
        keep = status_line[0] == b"HTTP/1.1"
        for raw in head[1:]:
            name, sep, value = raw.partition(b":")
            if not sep:
                raise ProtocolError(f"bad header line: {raw[:80]!r}")
            name = name.strip().lower()
            value = value.strip().lower()
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise ProtocolError(f"bad Content-Length: {value[:40]!r}") from None
                if length < 0 or length > MAX_BODY:
                    raise ProtocolError(f"Content-Length out of range: {length}")
            elif name == b"transfer-encoding":
                chunked = value.endswith(b"chunked")
                if not chunked:
                    raise ProtocolError(f"unsupported Transfer-Encoding: {value[:40]!r}")
            elif name == b"connection":
                if b"close" in value:
                    keep = False
                elif b"keep-alive" in value:
                    keep = True
        if status in (204, 304) or 100 <= status < 200:
            return status, b"", keep and not self.buf
        if chunked:
            body = self._chunked(end)
        elif length >= 0:
            body = self._exactly(length, end)
        else:  # framed by the connection closing
            keep = False
            body = self._to_eof(end)
        return status, body, keep and not self.buf

    def _chunked(self, end: float) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size_line = self._line(end, 1024)
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size: {size_line[:40]!r}") from None
            if size < 0:
                raise ProtocolError(f"bad chunk size: {size_line[:40]!r}")
            if size == 0:
                while self._line(end, MAX_HEAD):  # trailers, up to the empty line
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_BODY:
                raise ProtocolError("answer body too large")
            parts.append(self._exactly(size, end))
            if self._exactly(2, end) != b"\r\n":
                raise ProtocolError("chunk not followed by CRLF")

    def _to_eof(self, end: float) -> bytes:
        while True:
            data = self._recv(end)
            if not data:
                body = bytes(self.buf)
                self.buf.clear()
                return body
            self.buf += data
            if len(self.buf) > MAX_BODY:
                raise ProtocolError("answer body too large")


class Pool:
    """Keep-alive connections to one endpoint (``http://host:port[/base]`` or https)."""

    MAX_IDLE = 8

    def __init__(self, url: str, context: ssl.SSLContext | None) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 2379)
        self.https = parts.scheme == "https"
        if self.https and context is None:
            context = ssl.create_default_context()
        self.context = context
        self.prefix = parts.path.rstrip("/") + "/v3/"
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._host_header = f"{host}:{self.port}"
        self._idle: list[_Conn] = []
        self._lock = threading.Lock()
        self._closed = False

    def _connect(self, timeout: float) -> _Conn:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
        except OSError as exc:
            raise ConnectError(str(exc) or type(exc).__name__) from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.https:
                assert self.context is not None
                sock.settimeout(timeout)
                sock = self.context.wrap_socket(sock, server_hostname=self.host)
        except _TLS_TRANSPORT_ERRORS as exc:
            # the peer went away during the handshake: an unreachable endpoint, not a
            # TLS misconfiguration (nothing was sent)
            sock.close()
            raise ConnectError(f"TLS handshake interrupted: {exc}") from exc
        except ssl.SSLError:
            sock.close()  # certificates or protocol: a configuration problem
            raise
        except OSError as exc:  # reset or timed out during the handshake: never sent
            sock.close()
            raise ConnectError(f"TLS handshake failed: {exc or type(exc).__name__}") from exc
        except BaseException:
            sock.close()
            raise
        return _Conn(sock)

    def _take(self) -> _Conn | None:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if conn.idle_ok():
                    return conn
                conn.close()
        return None

    def request_bytes(self, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        head = [
            f"POST {self.prefix}{path} HTTP/1.1\r\nHost: {self._host_header}\r\n"
            f"Content-Length: {len(body)}\r\n"
        ]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"header {name!r} contains a line break")
            head.append(f"{name}: {value}\r\n")
        head.append("\r\n")
        return "".join(head).encode("latin-1") + body

    def post(
        self,
        path: str,
        body: bytes,
        headers: dict[str, str],
        timeout: float,
        connect_timeout: float | None = None,
    ) -> tuple[int, bytes]:
        """POST ``body`` to ``/v3/<path>`` within ``timeout`` seconds in all;
        (status, body). Raises :class:`ConnectError` (never sent, including a
        handshake cut short), ``ssl.SSLError`` (the TLS set-up is wrong: certificates,
        protocol), ``TimeoutError``, :class:`ProtocolError` or another ``OSError``."""
        end = time.monotonic() + timeout
        request = self.request_bytes(path, body, headers)
        conn = self._take()
        if conn is None:
            ct = timeout if connect_timeout is None else min(connect_timeout, timeout)
            conn = self._connect(ct)
        try:
            status, data, keep = conn.exchange(request, end)
        except _TLS_TRANSPORT_ERRORS as exc:
            # the TLS connection broke; other TLS errors stay ssl.SSLError: with TLS 1.3
            # the server's verdict on our client certificate arrives here, after the
            # handshake, as an alert (a configuration problem)
            conn.close()
            raise ProtocolError(f"TLS connection broken: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        if keep:
            with self._lock:
                keep = not self._closed and len(self._idle) < self.MAX_IDLE
                if keep:
                    self._idle.append(conn)
        if not keep:
            conn.close()
        return status, data

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
