"""The HTTP endpoints of a node (``Config.http_addr``, ``etcdraft node --http``).

Every endpoint is hit with a real HTTP client (``http.client``) on real nodes on real
etcd, built through the ``harness`` of ``test_node_api`` (own namespace, short
timings, nodes shut down afterwards); servers listen on port 0 and the test reads the
bound port from the node's server. The failover test cuts the leader off etcd with a
``FaultProxy`` (closed: every connection dropped, new ones refused) and watches the
old leader's ``/leader`` turn 503 before its lease could expire and a new leader's
turn 200.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from helpers import free_port, wait_until
from test_node_api import (
    FAST,
    FaultProxy,
    Harness,
    addr_of,
    block,
    one_leader,
    threads_of,
    wait_height,
)

from etcdraft import Config, ConfigError, Node
from etcdraft.config import ENV_PREFIX
from etcdraft.http_api import ANSWER_TIMEOUT, NodeHttpServer

HTTP: dict[str, Any] = {"http_addr": "127.0.0.1:0"}


# --------------------------------------------------------------------------- helpers


@dataclass
class Reply:
    status: int
    body: bytes
    headers: http.client.HTTPMessage
    ended_at: float  # monotonic, when the reply was read

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


def server_of(node: Node) -> NodeHttpServer:
    server = node._http
    assert server is not None, f"{node.node_id} serves no HTTP endpoints"
    return server


def request(
    target: Node | tuple[str, int],
    path: str,
    method: str = "GET",
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> Reply:
    if isinstance(target, Node):
        server = server_of(target)
        host, port = server.host, server.port
    else:
        host, port = target
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return Reply(resp.status, data, resp.headers, time.monotonic())
    finally:
        conn.close()


def status(node: Node, path: str) -> int:
    return request(node, path).status


def cut(proxy: FaultProxy) -> None:
    """Cut everything behind ``proxy`` off etcd at once: stop listening (new
    connections are refused) and shut every open connection down (``close()`` alone
    does not end a socket another thread is blocked reading)."""
    proxy.closed.set()
    proxy.thawed.set()
    for _sweep in range(2):  # the second sweep catches a connection accepted meanwhile
        for sock in (proxy.listener, *proxy.sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
    proxy.close()


@pytest.fixture
def harness(etcd: Any, namespace: str, tmp_path: Path) -> Iterator[Harness]:
    h = Harness(list(etcd.endpoints), namespace, tmp_path)
    yield h
    h.close()


def pair(h: Harness, **overrides: Any) -> tuple[Node, Node]:
    """Two member nodes serving HTTP; returns (leader, follower) once the follower's
    view shows the leader."""
    nodes = h.cluster(2, **HTTP, **overrides)
    leader = one_leader(nodes)
    (follower,) = [n for n in nodes if n is not leader]
    wait_until(
        lambda: follower.leader_id() == leader.node_id,
        5,
        lambda: f"{follower.node_id} sees leader {follower.leader_id()!r}",
    )
    return leader, follower


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "addr",
    ["127.0.0.1:8080", "0.0.0.0:80", ":8080", "[::1]:0", "localhost:65535", " 127.0.0.1:1 "],
)
def test_http_addr_accepts_host_port(addr: str) -> None:
    assert Config(node_id="n", http_addr=addr).http_addr == addr.strip()


@pytest.mark.parametrize(
    ("addr", "hint"),
    [
        ("127.0.0.1", "has no port"),
        ("http://127.0.0.1:8080", "without a scheme"),
        ("127.0.0.1:8080/metrics", "without a scheme or path"),
        ("::1:8080", "brackets"),
        ("[::1]", "[ipv6]:port"),
        ("h:65536", "0-65535"),
        ("h:-1", "0-65535"),
        ("h:", "0-65535"),
        ("h:http", "0-65535"),
        ("a b:1", "whitespace"),
    ],
)
def test_http_addr_rejects_what_is_not_host_port(addr: str, hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config(node_id="n", http_addr=addr)
    assert info.value.field == "http_addr"
    assert "ETCDRAFT_HTTP_ADDR" in str(info.value)
    assert hint in str(info.value)
    assert "e.g." in str(info.value)  # says what to write instead


def test_http_off_by_default_empty_means_off_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    assert Config(node_id="n").http_addr is None
    assert Config(node_id="n", http_addr="").http_addr is None
    monkeypatch.setenv("ETCDRAFT_HTTP_ADDR", "")
    assert Config(node_id="n").http_addr is None
    monkeypatch.setenv("ETCDRAFT_HTTP_ADDR", "0.0.0.0:9000")
    monkeypatch.setenv("ETCDRAFT_READINESS_MAX_BLOCKS_BEHIND", "10")
    cfg = Config(node_id="n")
    assert (cfg.http_addr, cfg.readiness_max_blocks_behind) == ("0.0.0.0:9000", 10)


def test_readiness_max_blocks_behind_is_an_integer_of_zero_or_more() -> None:
    assert Config(node_id="n").readiness_max_blocks_behind == 3
    assert Config(node_id="n", readiness_max_blocks_behind=0).readiness_max_blocks_behind == 0
    for bad in (-1, True, "many"):
        with pytest.raises(ConfigError) as info:
            Config(node_id="n", readiness_max_blocks_behind=bad)
        assert info.value.field == "readiness_max_blocks_behind"


# --------------------------------------------------------------------------- lifecycle


def test_no_server_without_http_addr(harness: Harness) -> None:
    (node,) = harness.cluster(1)
    assert node._http is None
    assert not [t for t in threads_of("n1") if t.startswith("etcdraft-http-")]


@pytest.mark.parametrize("how", ["stop", "shutdown"])
def test_stop_closes_the_port_and_joins_the_threads(harness: Harness, how: str) -> None:
    (node,) = harness.cluster(1, **HTTP)
    server = server_of(node)
    address = (server.host, server.port)
    assert request(node, "/health/live").status == 200
    assert "etcdraft-http-n1" in threads_of("n1")
    getattr(node, how)()
    assert node._http is None
    with pytest.raises(ConnectionRefusedError):
        request(address, "/health/live", timeout=2)
    assert threads_of("n1") == [], "threads left after stop"


def test_port_in_use_fails_start_with_config_error_and_leaves_nothing(harness: Harness) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        node = harness.node(
            "n1",
            start=False,
            bootstrap=True,
            peers=[f"n1@{addr_of('n1')}"],
            http_addr=f"127.0.0.1:{port}",
        )
        with pytest.raises(ConfigError) as info:
            node.start()
    assert info.value.field == "http_addr"
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "in use" in str(info.value).lower()
    assert threads_of("n1") == [], "a failed start left threads running"
    assert harness.raw.get(harness.keys.alive("n1")) is None, "session lease not revoked"
    with pytest.raises(RuntimeError):
        node.start()


# --------------------------------------------------------------------------- /raft/node


def test_raft_node_is_ev_nodes_body(harness: Harness) -> None:
    leader, follower = pair(harness)
    for node, leads in ((leader, True), (follower, False)):
        reply = request(node, "/raft/node")
        assert reply.status == 200
        assert reply.headers["Content-Type"] == "application/json"
        assert reply.json() == {"is_leader": leads, "node_id": node.node_id}
        assert list(reply.json()) == ["is_leader", "node_id"]
        # what Go's json.Encoder writes: compact, one trailing newline
        expected = f'{{"is_leader":{str(leads).lower()},"node_id":"{node.node_id}"}}\n'
        assert reply.text == expected


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
def test_raft_node_answers_405_to_other_methods(harness: Harness, method: str) -> None:
    (node,) = harness.cluster(1, **HTTP)
    body = b'{"is_leader": true}' if method in ("POST", "PUT", "PATCH") else None
    reply = request(node, "/raft/node", method, body=body)
    assert reply.status == 405
    assert reply.headers["Allow"] == "GET"


def test_raft_node_without_a_known_leader_reports_is_leader(harness: Harness) -> None:
    lonely = harness.node("lonely", **HTTP)  # not a member: never leads, no leader known
    assert lonely.leader_id() == ""
    assert request(lonely, "/raft/node").json() == {"is_leader": False, "node_id": "lonely"}


# --------------------------------------------------------------------------- /leader, /replica


def test_leader_and_replica(harness: Harness) -> None:
    leader, follower = pair(harness)
    on_leader = request(leader, "/leader")
    assert (on_leader.status, on_leader.text) == (200, "LEADER\n")
    on_follower = request(follower, "/leader")
    assert on_follower.status == 503
    assert on_follower.text == f"NOT LEADER: the leader is {leader.node_id}\n"
    assert request(follower, "/replica").status == 200
    assert request(follower, "/replica").text == "REPLICA\n"
    assert request(leader, "/replica").status == 503
    head = request(leader, "/leader", "HEAD")  # load balancers may probe with HEAD
    assert (head.status, head.body) == (200, b"")
    assert request(leader, "/leader", "POST", body=b"x").status == 405


def test_unknown_paths_are_404_and_query_strings_ignored(harness: Harness) -> None:
    (node,) = harness.cluster(1, **HTTP)
    for path in ("/", "/raft", "/health", "/health/live/", "/raft/node/x", "/LEADER"):
        assert request(node, path).status == 404, path
    assert request(node, "/health/live?verbose=1").status == 200


# --------------------------------------------------------------------------- /health/live


def test_live_while_threads_run_and_answer(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    (node,) = harness.cluster(1, **HTTP)
    reply = request(node, "/health/live")
    assert (reply.status, reply.text) == (200, "OK\n")
    assert reply.headers["Content-Type"].startswith("text/plain")

    # a node whose view stays locked does not answer: 503, and the request stays bounded
    with node._cluster.editing():
        started = time.monotonic()
        stuck = request(node, "/health/live")
        took = time.monotonic() - started
    assert stuck.status == 503
    assert stuck.text.startswith("FAIL: node not answering")
    assert ANSWER_TIMEOUT <= took < ANSWER_TIMEOUT + 3
    assert request(node, "/health/live").status == 200

    # a thread that died: 503 naming it
    class Died(BaseException):
        pass

    def die() -> None:
        raise Died("control thread killed by the test")

    monkeypatch.setattr(threading, "excepthook", lambda args: None)  # expected death
    monkeypatch.setattr(node._elector, "control_step", die)
    node._elector.wake()
    control = node._elector.thread
    assert control is not None
    wait_until(lambda: not control.is_alive(), 5, "the control thread did not die")
    dead = request(node, "/health/live")
    assert (dead.status, dead.text) == (503, "FAIL: thread(s) not running: control\n")


# --------------------------------------------------------------------------- /health/ready


def test_ready_follows_the_applied_height(harness: Harness) -> None:
    leader, follower = pair(harness, readiness_max_blocks_behind=2)
    for node in (leader, follower):
        reply = request(node, "/health/ready")
        assert (reply.status, reply.text) == (200, "READY\n")

    gate = harness.gate()
    follower.set_apply_callback(gate)  # the follower's watch thread blocks at block 1
    leader.broadcast(block(1))
    assert gate.blocked.wait(5), "the follower never applied block 1"
    wait_height(follower, 1)
    for height in (2, 3):
        leader.broadcast(block(height))
    # head 3, applied 1: two behind, as many as allowed
    assert request(follower, "/health/ready").status == 200
    leader.broadcast(block(4))
    behind = request(follower, "/health/ready")
    assert behind.status == 503
    assert behind.text == (
        "UNREADY: behind the log head by 3 blocks (applied 1, head 4, "
        "readiness_max_blocks_behind 2)\n"
    )
    wait_until(lambda: status(leader, "/health/ready") == 200, 5, "the leader is not ready")
    gate.release.set()
    wait_height(follower, 4)
    assert request(follower, "/health/ready").text == "READY\n"


# --------------------------------------------------------------------------- /metrics


def test_metrics_on_the_same_port(harness: Harness) -> None:
    (node,) = harness.cluster(1, **HTTP)
    wait_until(node.is_leader, 5, "n1 never led")
    reply = request(node, "/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert 'etcdraft_is_leader{node_id="n1"} 1.0' in reply.text
    assert 'etcdraft_applied_height{node_id="n1"}' in reply.text
    openmetrics = request(node, "/metrics", headers={"Accept": "application/openmetrics-text"})
    assert openmetrics.headers["Content-Type"].startswith("application/openmetrics-text")
    assert openmetrics.text.rstrip().endswith("# EOF")


def test_metrics_without_prometheus_client_is_501(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails
    monkeypatch.delitem(sys.modules, "etcdraft.metrics", raising=False)
    (node,) = harness.cluster(1, **HTTP)
    reply = request(node, "/metrics")
    assert reply.status == 501
    assert "pip install 'etcdraft[metrics]'" in reply.text
    assert request(node, "/health/live").status == 200


# --------------------------------------------------------------------------- failover


@pytest.mark.parametrize("fast_takeover", [False, True])
def test_failover_leader_endpoint_moves(harness: Harness, fast_takeover: bool) -> None:
    """The leader loses etcd (its proxy closes): its /leader turns 503 before its
    lease could expire at etcd, and a new leader's /leader turns 200. Without fast
    takeover the new leader is elected only after that lease expired, so no poll
    round sees two nodes answer 200."""
    port = urlsplit(harness.endpoints[0]).port
    assert port is not None
    proxy = FaultProxy(port)
    ids = ["n1", "n2", "n3"]
    peers = [f"{nid}@{addr_of(nid)}" for nid in ids]
    timings: dict[str, Any] = {
        **HTTP,
        "peers": peers,
        "fast_takeover": fast_takeover,
        "leader_lease_timeout": "500ms",  # 1s TTL, 200ms keep-alives: a 500ms margin
    }
    try:
        old = harness.node("n1", bootstrap=True, endpoints=[proxy.url], **timings)
        wait_until(old.is_leader, 5, "n1 never led")
        others = [harness.node(nid, **timings) for nid in ids[1:]]
        wait_until(
            lambda: all(n.leader_id() == "n1" for n in others),
            5,
            lambda: f"views: {[n.leader_id() for n in others]}",
        )
        assert status(old, "/leader") == 200
        assert [status(n, "/leader") for n in others] == [503, 503]

        cut(proxy)  # n1 is cut off etcd (it keeps serving HTTP)
        old_503: Reply | None = None
        new_leader: Node | None = None
        overlaps = 0
        give_up = time.monotonic() + 10
        while (old_503 is None or new_leader is None) and time.monotonic() < give_up:
            on_old = request(old, "/leader")
            if on_old.status == 503 and old_503 is None:
                old_503 = on_old
            winners = [n for n in others if status(n, "/leader") == 200]
            if winners and new_leader is None:
                new_leader = winners[0]
            overlaps += on_old.status == 200 and bool(winners)
        assert old_503 is not None, "the cut-off leader's /leader never turned 503"
        assert new_leader is not None, "no other node's /leader turned 200"
        session = old._elector.session
        assert session is not None
        lease_deadline = session.expires_at()
        assert old_503.ended_at < lease_deadline, (
            f"/leader answered 503 only {old_503.ended_at - lease_deadline:.3f}s after "
            "the lease could have expired"
        )
        assert old_503.text.startswith("NOT LEADER")
        assert request(new_leader, "/raft/node").json() == {
            "is_leader": True,
            "node_id": new_leader.node_id,
        }
        if not fast_takeover:
            assert overlaps == 0, "two nodes answered /leader 200 in one round"
        # the cut-off node is not ready either: no etcd session, or etcd silent
        wait_until(lambda: request(old, "/health/ready").status == 503, 5, "n1 stayed ready")
        assert request(old, "/health/ready").text.startswith("UNREADY: ")
        assert request(old, "/health/live").status == 200  # alive, just cut off
    finally:
        proxy.close()


# --------------------------------------------------------------------------- the CLI


def _cli_env(etcd: Any, namespace: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(
        ETCDRAFT_ENDPOINTS=",".join(etcd.endpoints),
        ETCDRAFT_NAMESPACE=namespace,
        ETCDRAFT_NODE_ID="c1",
        ETCDRAFT_RAFT_ADDR="127.0.0.1:7401",
        ETCDRAFT_BOOTSTRAP="true",
        ETCDRAFT_PEERS="c1@127.0.0.1:7401",
        **{f"ETCDRAFT_{k.upper()}": str(v) for k, v in FAST.items()},
    )
    env.update(extra)
    return env


def test_cli_node_http(etcd: Any, namespace: str, tmp_path: Path) -> None:
    port = free_port()
    # --http wins over ETCDRAFT_HTTP_ADDR (set here to something unusable)
    env = _cli_env(etcd, namespace, ETCDRAFT_HTTP_ADDR="not-an-address")
    log_path = tmp_path / "node.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "etcdraft.cli", "node", "--http", f"127.0.0.1:{port}"],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:

        def leads() -> bool:
            body = request(("127.0.0.1", port), "/raft/node", timeout=2).json()
            return bool(body == {"is_leader": True, "node_id": "c1"})

        wait_until(leads, 30, lambda: f"no leader on /raft/node; log:\n{log_path.read_text()}")
        wait_until(
            lambda: request(("127.0.0.1", port), "/health/ready", timeout=2).status == 200,
            10,
            "the node never became ready",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    with pytest.raises(ConnectionRefusedError):
        request(("127.0.0.1", port), "/health/live", timeout=2)


def test_cli_node_rejects_a_bad_http_address(etcd: Any, namespace: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "etcdraft.cli", "node", "--http", "localhost"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_cli_env(etcd, namespace),
    )
    assert result.returncode != 0
    assert "http_addr" in result.stderr
    assert "has no port" in result.stderr
