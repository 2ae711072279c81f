"""The HTTP endpoints of a node (``Config.http_addr``; ``etcdraft node --http``).

``Node.start()`` serves them when ``http_addr`` is set; ``Node.stop()`` and
``shutdown()`` stop the server and join its threads. One port serves:

=================  =======================================  =====================================
path               200                                      otherwise
=================  =======================================  =====================================
``/raft/node``     ``{"is_leader":…,"node_id":…}`` (JSON)   405 for any method but GET
``/health/live``   ``OK``: the node's threads run and it    503 ``FAIL: <reason>``
                   answers
``/health/ready``  ``READY``: live etcd session, applied    503 ``UNREADY: <reason>``
                   height within
                   ``readiness_max_blocks_behind`` of the
                   log head in etcd
``/leader``        ``LEADER``: ``is_leader()``               503 ``NOT LEADER: …``
``/replica``       ``REPLICA``: not ``is_leader()``          503 ``NOT REPLICA: …``
``/metrics``       Prometheus text of ``etcdraft.metrics``  501 without ``prometheus-client``
=================  =======================================  =====================================

``/raft/node`` is ev-node's endpoint, byte for byte (Go's ``json.Encoder``: compact,
one trailing newline): ``is_leader`` is ``leader_id() == node_id`` when a leader is
known, else ``is_leader()``. Text answers end with a newline, as ev-node's do.
Unknown paths answer 404; ``HEAD`` is allowed wherever ``GET`` is, except on
``/raft/node`` (ev-node answers 405).

Every request is bounded: the node's lock is awaited at most :data:`ANSWER_TIMEOUT`
(a node that does not release it is not live), ``/health/ready`` reads the log head
from etcd with a deadline of at most :data:`READY_ETCD_TIMEOUT`, sockets time out
after :data:`SOCKET_TIMEOUT`, and at most :data:`MAX_CONCURRENT` requests run at once
(further connections are closed unanswered). Requests are logged at DEBUG only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from etcdraft._config_values import split_host_port
from etcdraft._deadline import Deadline
from etcdraft._version import __version__
from etcdraft._worker import join_all
from etcdraft.errors import ConfigError, EtcdraftError

if TYPE_CHECKING:
    from etcdraft.node import Node

__all__ = [
    "ANSWER_TIMEOUT",
    "MAX_CONCURRENT",
    "READY_ETCD_TIMEOUT",
    "SOCKET_TIMEOUT",
    "NodeHttpServer",
]

log = logging.getLogger(__name__)

#: Longest wait for the node's lock in one request; longer: ``/health/live`` fails.
ANSWER_TIMEOUT = 0.5
#: Longest etcd read of ``/health/ready`` (also at most ``send_timeout``).
READY_ETCD_TIMEOUT = 0.8
#: Socket timeout of one connection (a client that stalls is dropped).
SOCKET_TIMEOUT = 5.0
#: Requests handled at once; connections beyond are closed unanswered.
MAX_CONCURRENT = 32
#: How long ``close()`` waits for the server's threads in all.
CLOSE_TIMEOUT = 2.0

_TEXT = "text/plain; charset=utf-8"
_METRICS_MISSING = (
    "/metrics needs prometheus-client: pip install 'etcdraft[metrics]' "
    "(or pip install prometheus-client)\n"
)


class _Answer:
    """One response: status, body, content type and extra headers."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: str | bytes,
        content_type: str = _TEXT,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        self.content_type = content_type
        self.headers = headers


class _NotAnswering(Exception):
    """The node's lock was not released within ANSWER_TIMEOUT."""


class NodeHttpServer:
    """Serves a node's HTTP endpoints on ``addr`` (``host:port``) from a
    ``ThreadingHTTPServer``. Constructing binds the socket; :meth:`start` serves;
    :meth:`close` stops serving and joins the threads. ``Node`` does all three.

    Args:
        node: the node to report.
        addr: where to listen, as in ``Config.http_addr`` (port 0: a free port).

    Raises:
        ConfigError: ``addr`` is malformed or cannot be bound (in use, not local).
    """

    def __init__(self, node: Node, addr: str) -> None:
        host, port = split_host_port(addr)
        self._node = node
        self._stop = threading.Event()
        self._serve_thread: threading.Thread | None = None
        self._warned_error = False
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._server = _Server((host, port), family, self)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve HTTP on http_addr {addr!r}: {exc.strerror or exc}: choose a "
                "free port and an address of this host (or stop what listens there)",
                field="http_addr",
            ) from exc
        self._metrics: Callable[[str], tuple[bytes, str]] | None = _metrics_for(node)
        bound = self._server.socket.getsockname()
        self.host: str = host
        #: the port actually bound (useful with port 0)
        self.port: int = int(bound[1])

    @property
    def url(self) -> str:
        """Base URL of the endpoints, e.g. ``http://127.0.0.1:8080``."""
        host = self.host or "0.0.0.0"
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def start(self) -> None:
        """Serve in a thread named ``etcdraft-http-<node id>``."""
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.25},
            name=f"etcdraft-http-{self._node.node_id}",
            daemon=True,
        )
        self._serve_thread.start()
        log.info(
            "HTTP endpoints on %s (/raft/node, /health/live, /health/ready, /leader, "
            "/replica, /metrics)",
            self.url,
            extra={"node_id": self._node.node_id},
        )

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Stop serving, close the socket and join the threads (within ``timeout``).
        Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        deadline = Deadline(timeout)
        if self._serve_thread is not None:
            self._server.shutdown()  # returns once serve_forever has left its loop
        self._server.server_close()
        join_all(
            [self._serve_thread, *self._server.request_threads()],
            deadline,
            log,
            "HTTP thread %s still busy at stop; it ends on its socket timeout",
            {"node_id": self._node.node_id},
        )

    # ------------------------------------------------------------------ routing

    def answer(self, method: str, target: str, accept: str = "") -> _Answer:
        """The response to ``method target`` (called from request threads);
        ``accept``: the request's ``Accept`` header (for /metrics)."""
        path = urlsplit(target).path
        route = _ROUTES.get(path)
        if route is None:
            return _Answer(404, "404 page not found\n")
        allowed = ("GET",) if path == "/raft/node" else ("GET", "HEAD")
        if method not in allowed:
            return _Answer(405, "method not allowed\n", headers=(("Allow", ", ".join(allowed)),))
        try:
            return route(self, accept)
        except _NotAnswering:
            return _Answer(
                503, f"FAIL: node not answering: its lock stayed busy for {ANSWER_TIMEOUT}s\n"
            )
        except Exception:
            # a bug, not a state of the node: say so once at WARNING, then at DEBUG
            level = logging.DEBUG if self._warned_error else logging.WARNING
            self._warned_error = True
            log.log(level, "HTTP %s %s failed", method, path, exc_info=True)
            return _Answer(500, "internal error\n")

    @contextlib.contextmanager
    def _answering(self) -> Iterator[None]:
        """Go on only if the node answers (its view not held stuck) within
        ANSWER_TIMEOUT."""
        if not self._node._health(ANSWER_TIMEOUT).answering:
            raise _NotAnswering
        yield

    def _raft_node(self) -> _Answer:
        node = self._node
        with self._answering():
            leader = node.leader_id()
        is_leader = leader == node.node_id if leader else node.is_leader()
        body = json.dumps({"is_leader": is_leader, "node_id": node.node_id}, separators=(",", ":"))
        return _Answer(200, body + "\n", "application/json")

    def _live(self) -> _Answer:
        health = self._node._health(ANSWER_TIMEOUT)
        if health.stopping:
            return _Answer(503, "FAIL: node stopping\n")
        if health.dead_threads:
            return _Answer(503, f"FAIL: thread(s) not running: {', '.join(health.dead_threads)}\n")
        if not health.answering:
            raise _NotAnswering
        return _Answer(200, "OK\n")

    def _ready(self) -> _Answer:
        node = self._node
        cfg = node.config
        health = node._health(ANSWER_TIMEOUT)
        if health.stopping:
            return _Answer(503, "UNREADY: node stopping\n")
        if not health.session_live:
            return _Answer(503, "UNREADY: no live etcd session\n")
        try:
            head = node._log_head(min(READY_ETCD_TIMEOUT, cfg.send_timeout))
        except EtcdraftError as exc:
            reason = " ".join(str(exc).split())[:200]
            return _Answer(503, f"UNREADY: etcd did not answer: {reason}\n")
        applied = node.fsm.height
        behind = head - applied
        allowed = cfg.readiness_max_blocks_behind
        if behind > allowed:
            return _Answer(
                503,
                f"UNREADY: behind the log head by {behind} blocks (applied {applied}, "
                f"head {head}, readiness_max_blocks_behind {allowed})\n",
            )
        return _Answer(200, "READY\n")

    def _leader(self) -> _Answer:
        if self._node.is_leader():
            return _Answer(200, "LEADER\n")
        return _Answer(503, f"NOT LEADER: {self._leader_text()}\n")

    def _replica(self) -> _Answer:
        node = self._node
        if node._health(ANSWER_TIMEOUT).stopping:
            return _Answer(503, "NOT REPLICA: node stopping\n")
        if node.is_leader():
            return _Answer(503, "NOT REPLICA: this node leads\n")
        return _Answer(200, "REPLICA\n")

    def _leader_text(self) -> str:
        with self._answering():
            leader = self._node.leader_id()
        return f"the leader is {leader}" if leader else "no leader known"

    def _metrics_page(self, accept: str) -> _Answer:
        if self._metrics is None:
            return _Answer(501, _METRICS_MISSING)
        with self._answering():
            body, content_type = self._metrics(accept)
        return _Answer(200, body, content_type)


_ROUTES: dict[str, Callable[[NodeHttpServer, str], _Answer]] = {
    "/raft/node": lambda app, _accept: app._raft_node(),
    "/health/live": lambda app, _accept: app._live(),
    "/health/ready": lambda app, _accept: app._ready(),
    "/leader": lambda app, _accept: app._leader(),
    "/replica": lambda app, _accept: app._replica(),
    "/metrics": NodeHttpServer._metrics_page,
}


def _metrics_for(node: Node) -> Callable[[str], tuple[bytes, str]] | None:
    """A function rendering ``node``'s metrics in the format an ``Accept`` header asks
    for (Prometheus text by default), or None without prometheus-client."""
    try:
        from prometheus_client import CollectorRegistry
        from prometheus_client.exposition import choose_encoder

        from etcdraft.metrics import NodeMetrics
    except ImportError:
        log.debug("prometheus-client is not installed: /metrics answers 501")
        return None
    registry = CollectorRegistry()
    NodeMetrics(node, registry=registry)

    def render(accept: str) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        return bytes(encoder(registry)), str(content_type)

    return render


# --------------------------------------------------------------------------- the server


class _Server(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` whose request threads are named, counted, capped
    and joined by :meth:`NodeHttpServer.close`."""

    daemon_threads = True
    block_on_close = False  # NodeHttpServer.close joins them, within a budget

    def __init__(self, address: tuple[str, int], family: int, app: NodeHttpServer) -> None:
        self.address_family = family
        self.app = app
        self._req_threads: set[threading.Thread] = set()
        self._req_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up (socket.getfqdn): a DNS query
        # that can stall start(); the name is not needed
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def request_threads(self) -> list[threading.Thread]:
        with self._req_lock:
            return list(self._req_threads)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._req_lock:
            if len(self._req_threads) >= MAX_CONCURRENT:
                busy = True
            else:
                busy = False
                thread = threading.Thread(
                    target=self._run_request,
                    args=(request, client_address),
                    name=f"etcdraft-http-{self.app._node.node_id}-request",
                    daemon=True,
                )
                self._req_threads.add(thread)
        if busy:
            log.debug("HTTP: %d requests in flight; connection closed", MAX_CONCURRENT)
            self.shutdown_request(request)
            return
        thread.start()

    def _run_request(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._req_lock:
                self._req_threads.discard(threading.current_thread())

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("HTTP request from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = SOCKET_TIMEOUT
    server_version = f"etcdraft/{__version__}"
    sys_version = ""

    def _dispatch(self) -> None:
        self._drain_body()
        answer = self.server.app.answer(self.command, self.path, self.headers.get("Accept", ""))
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for name, value in answer.headers:
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.body)
        except OSError as exc:  # the client went away
            log.debug("HTTP %s %s: reply not sent: %s", self.command, self.path, exc)

    def _drain_body(self) -> None:
        """Read a small request body (POST/PUT) so closing does not reset the
        connection before the client reads the 405."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return
        if 0 < length <= 65536:
            with contextlib.suppress(OSError):
                self.rfile.read(length)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("HTTP %s: " + format, self.address_string(), *args)
