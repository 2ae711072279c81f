"""Fault tools for tests of programs built on etcdraft (and for etcdraft's own suite).

:class:`FaultProxy` is a loopback TCP proxy to one etcd member. Point a node's
``endpoints`` at proxies instead of the members, then cut or slow its traffic:

* :meth:`~FaultProxy.blackhole`: connections stay open, no bytes pass either way, new
  connections are accepted and hang (a silent partition; a healed one resumes intact,
  as TCP does after retransmission);
* :meth:`~FaultProxy.reset`: every connection is dropped and new ones are refused
  (a crashed or firewalled member);
* :meth:`~FaultProxy.one_way`: requests reach etcd, answers are dropped (writes land
  but the writer never hears: the ambiguous outcome); a connection that lost answers
  is reset when healed (its byte stream has a hole, as after a TCP timeout);
* :meth:`~FaultProxy.delay`: every chunk is delivered ``seconds`` late (a slow link);
* :meth:`~FaultProxy.heal`: back to normal.

Only loopback addresses are used. Imports nothing from etcdraft's core::

    with FaultProxy(member_port) as proxy:
        config = Config(..., endpoints=[proxy.url])
        ...
        proxy.blackhole()
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import struct
import threading
import time

__all__ = ["FaultProxy"]

_PASS, _BLACKHOLE, _RESET, _ONE_WAY = "pass", "blackhole", "reset", "one-way"
#: SO_LINGER on, 0 s: close() sends a TCP reset
_RST = struct.pack("ii", 1, 0)


class FaultProxy:
    """A TCP proxy from ``127.0.0.1:<listen_port>`` to ``127.0.0.1:<target_port>``.

    Args:
        target_port: the etcd member's client port on loopback.
        listen_port: the proxy's port (0: any free port).
        scheme: ``http`` or ``https``, for :attr:`url` (TLS passes through untouched).
    """

    def __init__(self, target_port: int, listen_port: int = 0, *, scheme: str = "http") -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", listen_port))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self._mode = _PASS
        self._delay = 0.0
        self._cond = threading.Condition()
        self._closed = False
        self._conns: set[socket.socket] = set()
        self._holed: set[socket.socket] = set()  # lost answers in one-way mode
        self.connections = 0  # accepted so far
        self._thread = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)
        self._thread.start()

    # -- faults ----------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self._mode

    def _set(self, mode: str, delay: float = 0.0) -> None:
        with self._cond:
            self._mode, self._delay = mode, delay
            self._cond.notify_all()

    def blackhole(self) -> None:
        """No bytes pass; connections stay open; new ones are accepted and hang."""
        self._set(_BLACKHOLE)

    def reset(self) -> None:
        """Drop every connection and refuse new ones until :meth:`heal`."""
        self._set(_RESET)
        self._drop_all()

    def one_way(self) -> None:
        """Requests pass; etcd's answers are dropped."""
        self._set(_ONE_WAY)

    def delay(self, seconds: float) -> None:
        """Deliver every chunk, both ways, ``seconds`` late (order kept)."""
        self._set(_PASS, seconds)

    def heal(self) -> None:
        """Back to forwarding everything at once. Connections that lost answers in
        one-way mode are reset (their streams cannot continue)."""
        self._set(_PASS)
        with self._cond:
            holed = [s for s in self._holed if s in self._conns]
            self._holed.clear()
        self._drop_all(holed)

    def drop_connections(self) -> None:
        """Close every open connection once (new ones are accepted as usual)."""
        self._drop_all()

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._drop_all()
        self._thread.join(2)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- machinery ---------------------------------------------------------------------

    def _drop_all(self, only: list[socket.socket] | None = None) -> None:
        with self._cond:
            if only is None:
                conns = list(self._conns)
                self._conns.clear()
            else:
                conns = [s for s in only if s in self._conns]
                self._conns.difference_update(conns)
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            if self._mode == _RESET:
                with contextlib.suppress(OSError):
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
                    client.close()
                continue
            threading.Thread(
                target=self._connect, args=(client,), name="fault-proxy-conn", daemon=True
            ).start()

    def _wait_passable(self) -> bool:
        """Block while blackholed; False once closed or reset."""
        with self._cond:
            while self._mode == _BLACKHOLE and not self._closed:
                self._cond.wait(0.5)
            return not self._closed and self._mode != _RESET

    def _connect(self, client: socket.socket) -> None:
        with self._cond:
            self._conns.add(client)
        if not self._wait_passable():  # a new connection during a blackhole hangs
            self._forget(client)
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
        except OSError:
            self._forget(client)
            return
        upstream.settimeout(None)
        with self._cond:
            self._conns.add(upstream)
        for src, dst, answers in ((client, upstream, False), (upstream, client, True)):
            threading.Thread(
                target=self._pump, args=(src, dst, answers), name="fault-proxy-pump", daemon=True
            ).start()

    def _forget(self, *socks: socket.socket) -> None:
        for sock in socks:
            with self._cond:
                self._conns.discard(sock)
                self._holed.discard(sock)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def _pump(self, src: socket.socket, dst: socket.socket, answers: bool) -> None:
        late: list[tuple[float, int, bytes]] = []  # (due, seq, data): delayed chunks
        last_due = 0.0  # chunks never overtake each other: TCP keeps its bytes in order
        seq = itertools.count()
        sender: threading.Thread | None = None
        lock = threading.Condition()
        done = threading.Event()

        def send_late() -> None:
            while True:
                with lock:
                    while not late and not done.is_set():
                        lock.wait(0.5)
                    if not late and done.is_set():
                        return
                    due, _, data = late[0]
                    wait = due - time.monotonic()
                    if wait > 0:
                        lock.wait(wait)
                        continue
                    heapq.heappop(late)
                try:
                    dst.sendall(data)
                except OSError:
                    return

        try:
            while True:
                if not self._wait_passable():
                    break
                data = src.recv(65536)
                if not data:
                    break
                if not self._wait_passable():  # the fault began while we read
                    break
                if answers and self._mode == _ONE_WAY:
                    with self._cond:  # the answer is lost
                        self._holed.update((src, dst))
                    continue
                delay = self._delay
                if delay <= 0 and not late:
                    dst.sendall(data)
                    continue
                if sender is None:
                    sender = threading.Thread(target=send_late, daemon=True)
                    sender.start()
                with lock:
                    # a chunk read after a heal (or a shorter delay) still waits for
                    # the ones before it
                    last_due = max(time.monotonic() + delay, last_due)
                    heapq.heappush(late, (last_due, next(seq), data))
                    lock.notify()
        except OSError:
            pass
        finally:
            done.set()
            with lock:
                lock.notify()
            if sender is not None:
                sender.join(5)
            self._forget(src, dst)
