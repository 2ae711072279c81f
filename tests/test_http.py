"""``etcdraft._http``: the small HTTP/1.1 client the etcd client sends unary
requests with. Pure protocol logic, so a scripted loopback server stands in for
etcd's gateway here (the client is exercised against real etcd by every other
test): framing (Content-Length, chunked, close), keep-alive reuse, stale idle
connections, malformed and oversized answers, and the total deadline."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from etcdraft import _http
from etcdraft._http import ConnectError, Pool, ProtocolError

Script = Callable[[int, socket.socket, bytes], bool]  # -> keep the connection open


class FakeServer:
    """Loopback server: for each request on each connection, reads the request
    and calls ``script(connection_index, sock, request)``."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.requests: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        self.sock.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            index = self.accepted
            self.accepted += 1
            threading.Thread(target=self._conn, args=(index, conn), daemon=True).start()

    def _conn(self, index: int, conn: socket.socket) -> None:
        conn.settimeout(5)
        buf = b""
        try:
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, rest = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(rest) < length:
                    rest += conn.recv(65536)
                request, buf = head + b"\r\n\r\n" + rest[:length], rest[length:]
                self.requests.append(request)
                if not self.script(index, conn, request):
                    return
        except OSError:
            return
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(2)


@pytest.fixture
def serve() -> Iterator[Callable[[Script], FakeServer]]:
    servers: list[FakeServer] = []

    def make(script: Script) -> FakeServer:
        server = FakeServer(script)
        servers.append(server)
        return server

    yield make
    for s in servers:
        s.close()


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra) + body


def test_content_length_and_keep_alive_reuse(serve: Callable[[Script], FakeServer]) -> None:
    def script(i: int, sock: socket.socket, req: bytes) -> bool:
        sock.sendall(ok(b'{"n": %d}' % len(server.requests)))
        return True

    server = serve(script)
    pool = Pool(server.url, None)
    try:
        assert pool.post("kv/put", b"{}", {}, 2.0) == (200, b'{"n": 1}')
        assert pool.post("kv/put", b"{}", {}, 2.0) == (200, b'{"n": 2}')
        assert server.accepted == 1, "the second request should reuse the connection"
    finally:
        pool.close()


def test_request_bytes(serve: Callable[[Script], FakeServer]) -> None:
    server = serve(lambda i, s, r: s.sendall(ok(b"{}")) or True)
    pool = Pool(server.url + "/base/", None)
    try:
        pool.post("kv/txn", b'{"a":1}', {"Content-Type": "application/json", "X-T": "v"}, 2.0)
        req = server.requests[0]
        head, _, body = req.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0] == b"POST /base/v3/kv/txn HTTP/1.1"
        assert b"Host: 127.0.0.1:%d" % server.port in lines
        assert b"Content-Length: 7" in lines
        assert b"Content-Type: application/json" in lines
        assert b"X-T: v" in lines
        assert body == b'{"a":1}'
        with pytest.raises(ValueError, match="line break"):
            pool.post("kv/txn", b"{}", {"Authorization": "tok\r\nX-Evil: 1"}, 2.0)
    finally:
        pool.close()


def test_chunked_answer_with_extension_and_trailer(serve: Callable[[Script], FakeServer]) -> None:
    def script(i: int, sock: socket.socket, req: bytes) -> bool:
        sock.sendall(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"
        )
        return True

    server = serve(script)
    pool = Pool(server.url, None)
    try:
        assert pool.post("x", b"", {}, 2.0) == (200, b"hello world")
        assert pool.post("x", b"", {}, 2.0) == (200, b"hello world")
        assert server.accepted == 1
    finally:
        pool.close()


def test_answer_in_many_small_pieces(serve: Callable[[Script], FakeServer]) -> None:
    answer = ok(b'{"big": "' + b"x" * 200_000 + b'"}')

    def script(i: int, sock: socket.socket, req: bytes) -> bool:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for k in range(0, 64, 7):  # the head split at odd places
            sock.sendall(answer[k : k + 7])
        sock.sendall(answer[63:])
        return True

    server = serve(script)
    pool = Pool(server.url, None)
    try:
        status, body = pool.post("x", b"", {}, 5.0)
        assert status == 200 and len(body) == 200_000 + 11
    finally:
        pool.close()


def test_connection_close_and_eof_framing_are_not_reused(
    serve: Callable[[Script], FakeServer],
) -> None:
    def script(i: int, sock: socket.socket, req: bytes) -> bool:
        if i == 0:
            sock.sendall(ok(b"first", b"Connection: close\r\n"))
        else:  # HTTP/1.0 style: no length, the body ends with the connection
            sock.sendall(b"HTTP/1.0 200 OK\r\n\r\nsecond")
        return False

    server = serve(script)
    pool = Pool(server.url, None)
    try:
        assert pool.post("x", b"", {}, 2.0) == (200, b"first")
        assert pool.post("x", b"", {}, 2.0) == (200, b"second")
        assert server.accepted == 2
        assert pool._idle == []
    finally:
        pool.close()


def test_stale_idle_connection_is_replaced(serve: Callable[[Script], FakeServer]) -> None:
    """The server closes a keep-alive connection while it is idle in the pool:
    the next request notices and opens a fresh one instead of failing."""

    def script(i: int, sock: socket.socket, req: bytes) -> bool:
        sock.sendall(ok(b"%d" % i))
        return False  # advertise keep-alive, then close anyway

    server = serve(script)
    pool = Pool(server.url, None)
    try:
        assert pool.post("x", b"", {}, 2.0) == (200, b"0")
        conn = pool._idle[0]
        deadline = time.monotonic() + 5
        while conn.idle_ok():
            assert time.monotonic() < deadline, "closed connection still looks idle"
            time.sleep(0.01)
        assert pool.post("x", b"", {}, 2.0) == (200, b"1")
    finally:
        pool.close()


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP/1.x answer"),
        (b"HTTP/1.1 abc OK\r\n\r\n", "bad status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "bad header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "out of range"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY", "not followed by CRLF"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "closed before the answer"),
    ],
)
def test_malformed_answers(
    serve: Callable[[Script], FakeServer], answer: bytes, match: str
) -> None:
    def script(i: int, sock: socket.socket, req: bytes) -> bool:
        sock.sendall(answer)
        return False

    server = serve(script)
    pool = Pool(server.url, None)
    try:
        with pytest.raises(ProtocolError, match=match):
            pool.post("x", b"", {}, 2.0)
        assert pool._idle == [], "a connection that failed must not be reused"
    finally:
        pool.close()


def test_oversized_head_is_refused(
    serve: Callable[[Script], FakeServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_http, "MAX_HEAD", 1024)

    def script(i: int, sock: socket.socket, req: bytes) -> bool:
        sock.sendall(b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"p" * 4096 + b"\r\n")
        return True

    server = serve(script)
    pool = Pool(server.url, None)
    try:
        with pytest.raises(ProtocolError, match="headers too large"):
            pool.post("x", b"", {}, 2.0)
    finally:
        pool.close()


def test_silent_server_times_out_within_the_total_timeout(
    serve: Callable[[Script], FakeServer],
) -> None:
    release = threading.Event()

    def script(i: int, sock: socket.socket, req: bytes) -> bool:
        release.wait(5)
        return False

    server = serve(script)
    pool = Pool(server.url, None)
    try:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            pool.post("x", b"", {}, 0.3)
        assert time.monotonic() - t0 < 1.3
    finally:
        release.set()
        pool.close()


def test_dribbling_server_is_bounded_by_the_total_timeout(
    serve: Callable[[Script], FakeServer],
) -> None:
    """Every recv returns a byte, so a per-recv timeout would never fire: the
    request's total timeout must."""
    release = threading.Event()

    def script(i: int, sock: socket.socket, req: bytes) -> bool:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for b in ok(b"x" * 1000):
            if release.wait(0.05):
                break
            sock.sendall(bytes([b]))
        return False

    server = serve(script)
    pool = Pool(server.url, None)
    try:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            pool.post("x", b"", {}, 0.5)
        elapsed = time.monotonic() - t0
        assert 0.4 < elapsed < 1.5, elapsed
    finally:
        release.set()
        pool.close()


def test_nothing_listening_is_a_connect_error() -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # the port is now (almost certainly) closed
    pool = Pool(f"http://127.0.0.1:{port}", None)
    with pytest.raises(ConnectError):
        pool.post("x", b"", {}, 1.0)


def test_keep_alive_reuse_with_high_file_descriptors(
    serve: Callable[[Script], FakeServer],
) -> None:
    """A process with many open files gets socket fds above 1024, where
    ``select.select`` fails: the idle check must still recognise a healthy
    connection (otherwise every request silently opens a new one)."""
    import os
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        if hard != resource.RLIM_INFINITY and hard < 1200:
            pytest.fail(f"RLIMIT_NOFILE hard limit {hard} < 1200: cannot run this test")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    fds: list[int] = []
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        fds.append(null)
        while fds[-1] < 1030:
            fds.append(os.dup(null))
        server = serve(lambda i, s, r: s.sendall(ok(b"{}")) or True)
        pool = Pool(server.url, None)
        try:
            pool.post("x", b"", {}, 2.0)
            assert pool._idle[0].sock.fileno() > 1024
            pool.post("x", b"", {}, 2.0)
            assert server.accepted == 1
        finally:
            pool.close()
    finally:
        for fd in fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
