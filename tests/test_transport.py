"""The gRPC transport against real etcd: connection liveness (a blackholed endpoint),
the ``hasleader`` metadata, the trust store, persistent TLS failures, configuration
of the connections, and processes that start etcdraft after a fork or a spawn.

(Token renewal under expiry is in ``test_tls_auth.py``.)"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from certs import CertPaths, make_certs
from helpers import free_port, wait_until

from etcdraft import Config, ConfigError, EtcdAuthError, EtcdTimeoutError, Node, RaftBlockState
from etcdraft._deadline import Deadline
from etcdraft.embedded import EtcdCluster, TLSFiles
from etcdraft.etcd import EtcdClient
from etcdraft.testing import FaultProxy

pytestmark = pytest.mark.timeout(120)

FAST: dict[str, Any] = {
    "election_timeout": "1s",
    "heartbeat_timeout": "200ms",
    "leader_lease_timeout": "300ms",
    "send_timeout": "500ms",
}


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def state(height: int) -> RaftBlockState:
    return RaftBlockState(height=height, timestamp=height * 10, hash=height.to_bytes(32, "big"))


@pytest.fixture
def nodes() -> Iterator[Callable[[Config], Node]]:
    made: list[Node] = []

    def make(cfg: Config) -> Node:
        node = Node(cfg)
        made.append(node)
        return node

    yield make
    for node in made:
        node.shutdown()


def config(endpoints: list[str], namespace: str, node_id: str = "n1", **extra: Any) -> Config:
    fields: dict[str, Any] = {
        "node_id": node_id,
        "raft_addr": f"{node_id}:7000",
        "raft_dir": "",
        "bootstrap": node_id == "n1",
        "endpoints": endpoints,
        "namespace": namespace,
        **FAST,
    }
    fields.update(extra)
    return Config(**fields)


# ------------------------------------------------------------------------ liveness


def test_blackholed_endpoint_is_detected_and_the_node_fails_over(
    etcd_cluster_factory: Callable[..., EtcdCluster], nodes: Callable[[Config], Node]
) -> None:
    """A member reached through a proxy that starts forwarding nothing (connections
    stay open, new ones hang): the node notices from deadlines on what flows (the
    keep-alive answers, the watch's progress probe) and moves every call to the other
    endpoint; broadcasts and the apply stream go on."""
    cluster = etcd_cluster_factory(size=3)
    ns = f"/etcdraft-test/bh-{uuid.uuid4().hex[:8]}"
    with FaultProxy(port_of(cluster.endpoints[0])) as proxy:
        # the proxy first, so every call and stream starts on it
        node = nodes(config([proxy.url, cluster.endpoints[1]], ns))
        node.start()
        wait_until(node.is_leader, timeout=10, message="n1 leads")
        node.broadcast(state(1))
        watcher = node._replicator.watcher
        assert watcher is not None and watcher._current_endpoint == proxy.url
        proxy.blackhole()
        t0 = time.monotonic()

        def moved() -> bool:
            return watcher._current_endpoint == cluster.endpoints[1] and watcher.connected.is_set()

        wait_until(moved, timeout=10, message="the watch moved off the blackholed endpoint")
        moved_after = time.monotonic() - t0

        def broadcasts() -> bool:
            if not node.is_leader():
                return False
            try:
                node.broadcast(state(node.get_state().height + 1), timeout=2.0)
            except Exception:
                return False
            return True

        wait_until(broadcasts, timeout=15, message="broadcast succeeds after the blackhole")
        assert node.get_state().height >= 2
        # generous: detection is bounded by the probe (2 x heartbeat) and its timeout
        assert moved_after < 8.0, f"the watch took {moved_after:.1f}s to move"


def test_cut_off_leader_steps_down_before_its_lease_deadline(
    etcd_cluster_factory: Callable[..., EtcdCluster], nodes: Callable[[Config], Node]
) -> None:
    """A leader whose only endpoint is blackholed stops claiming leadership before
    etcd could have expired its lease (the deadline runs from the send time of the
    last answered keep-alive)."""
    cluster = etcd_cluster_factory(size=1)
    ns = f"/etcdraft-test/cut-{uuid.uuid4().hex[:8]}"
    with FaultProxy(port_of(cluster.endpoints[0])) as proxy:
        node = nodes(config([proxy.url], ns, fast_takeover=False))
        node.start()
        wait_until(node.is_leader, timeout=10, message="n1 leads")
        session = node._elector.session
        assert session is not None
        proxy.blackhole()
        cut = time.monotonic()
        # etcd cannot expire the lease before the last answered keep-alive's send
        # time + TTL, and every such keep-alive was sent before the cut
        latest_expiry = cut + session.ttl
        wait_until(lambda: not node.is_leader(), timeout=10, message="n1 steps down")
        stepped_down = time.monotonic()
        assert stepped_down < latest_expiry, (
            f"still leader {stepped_down - latest_expiry:.3f}s after the lease could expire"
        )
        proxy.heal()
        wait_until(node.is_leader, timeout=15, message="n1 leads again after the heal")


@pytest.mark.parametrize("fault", ["blackhole", "one_way"])
def test_a_cut_off_leader_stops_believing_before_another_node_leads(
    etcd_cluster_factory: Callable[..., EtcdCluster], nodes: Callable[[Config], Node], fault: str
) -> None:
    """With fast takeover, a leader cut off from etcd (no bytes, or requests that land
    but answers that never come back) ends its is_leader() before the other node can
    depose it: sampled throughout, the two never both claim to lead."""
    cluster = etcd_cluster_factory(size=1)
    ns = f"/etcdraft-test/belief-{uuid.uuid4().hex[:8]}"
    with FaultProxy(port_of(cluster.endpoints[0])) as proxy:
        a = nodes(config([proxy.url], ns, "n1", peers=["n2@n2:7000"]))
        a.start()
        wait_until(a.is_leader, timeout=10, message="n1 leads")
        b = nodes(config(cluster.endpoints, ns, "n2"))
        b.start()
        getattr(proxy, fault)()
        both = 0
        samples = 0
        deadline = time.monotonic() + 20
        while not b.is_leader():
            a_leads = a.is_leader()
            b_leads = b.is_leader()
            a_after = a.is_leader()
            samples += 1
            if a_leads and b_leads and a_after:
                both += 1
            assert time.monotonic() < deadline, "n2 never took over"
        while time.monotonic() < deadline and samples < 200_000:
            samples += 1
            if a.is_leader() and b.is_leader():
                both += 1
            if not a._elector.holds_term():
                break
        assert both == 0, f"both nodes claimed to lead in {both} of {samples} samples"


def test_hasleader_moves_the_watch_off_a_member_without_a_leader(
    etcd_cluster_factory: Callable[..., EtcdCluster],
) -> None:
    """The watch stream carries ``hasleader``: when the member it reads from loses
    its cluster (the two others stop), etcd fails the stream ("no leader") within a
    few election timeouts instead of leaving it silently open."""
    cluster = etcd_cluster_factory(size=3)
    client = EtcdClient(cluster.endpoints, name="test-hasleader")
    from etcdraft.watch import Watcher

    watcher = Watcher(
        client,
        b"/hasleader/",
        1,
        lambda events, top: None,
        lambda compact, upto: 0,
        probe_after=30.0,  # no probe: only hasleader can end the stream here
        probe_timeout=30.0,
    )
    watcher.start()
    try:
        wait_until(watcher.connected.is_set, timeout=10, message="watch created")
        watched = watcher._current_endpoint
        for member in cluster.members:
            if member.client_url != watched:
                member.stop()
        wait_until(
            lambda: "no leader" in watcher.last_failure,
            timeout=30,
            message="the watch stream failed with 'no leader'",
        )
    finally:
        watcher.stop()
        client.close()


# ------------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    return make_certs(tmp_path_factory.mktemp("pki") / "good", client_cn="root")


@pytest.fixture(scope="module")
def tls_etcd(pki: CertPaths) -> Iterator[EtcdCluster]:
    tls = TLSFiles(
        cert_file=pki.server_cert_file,
        key_file=pki.server_key_file,
        ca_file=pki.ca_file,
        client_cert_auth=True,
        client_cert_file=pki.client_cert_file,
        client_key_file=pki.client_key_file,
    )
    with EtcdCluster(size=1, tls=tls) as cluster:
        yield cluster


def test_ca_from_ssl_cert_file_alone_serves_writes_and_watches(
    tls_etcd: EtcdCluster,
    pki: CertPaths,
    nodes: Callable[[Config], Node],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No tls_ca_file: the server is verified against the trust store Python's ssl
    module finds (here SSL_CERT_FILE), for unary calls and streams alike."""
    monkeypatch.setenv("SSL_CERT_FILE", pki.ca_file)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    ns = f"/etcdraft-test/sslcert-{uuid.uuid4().hex[:8]}"
    files = {"tls_cert_file": pki.client_cert_file, "tls_key_file": pki.client_key_file}
    leader = nodes(config(tls_etcd.endpoints, ns, "n1", peers=["n2@n2:7000"], **files))
    follower = nodes(config(tls_etcd.endpoints, ns, "n2", **files))
    leader.start()
    follower.start()
    wait_until(leader.is_leader, timeout=10, message="n1 leads over TLS")
    applied: queue.Queue[Any] = queue.Queue()
    follower.set_apply_callback(applied)
    leader.broadcast(state(1))
    msg = applied.get(timeout=10)  # delivered by the follower's watch stream
    assert msg.state == state(1)


def test_wrong_ca_fails_fast_with_a_typed_error_and_one_warning(
    tls_etcd: EtcdCluster,
    pki: CertPaths,
    nodes: Callable[[Config], Node],
    tmp_path_factory: pytest.TempPathFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    other = make_certs(tmp_path_factory.mktemp("other-pki") / "other", ca_cn="some-other-ca")
    ns = f"/etcdraft-test/badca-{uuid.uuid4().hex[:8]}"
    node = nodes(
        config(
            tls_etcd.endpoints,
            ns,
            tls_ca_file=other.ca_file,
            tls_cert_file=pki.client_cert_file,
            tls_key_file=pki.client_key_file,
        )
    )
    caplog.set_level(logging.WARNING, logger="etcdraft")
    t0 = time.monotonic()
    with pytest.raises(EtcdAuthError) as info:
        node.start()
    took = time.monotonic() - t0
    assert took < 3.0, f"start() took {took:.1f}s to report a TLS failure"
    assert "TLS" in str(info.value) and "tls_ca_file" in str(info.value)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "TLS" in r.message]
    assert len(warnings) == 1, [r.message for r in caplog.records]
    assert "CERTIFICATE_VERIFY_FAILED" in warnings[0].message.upper().replace(" ", "_")


def test_encrypted_client_key_with_its_password(
    tls_etcd: EtcdCluster, pki: CertPaths, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(
        open(pki.client_key_file, "rb").read(),  # noqa: SIM115
        None,
    )
    encrypted = tmp_path_factory.mktemp("enc") / "client.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    ns = f"/etcdraft-test/enc-{uuid.uuid4().hex[:8]}"
    base = {"tls_ca_file": pki.ca_file, "tls_cert_file": pki.client_cert_file}
    with pytest.raises(ConfigError, match="tls_key_password"):
        EtcdClient.from_config(
            config(tls_etcd.endpoints, ns, tls_key_file=str(encrypted), **base)
        ).channels.tls.credentials()
    cfg = config(
        tls_etcd.endpoints, ns, tls_key_file=str(encrypted), tls_key_password="s3cret", **base
    )
    client = EtcdClient.from_config(cfg)
    try:
        client.put(f"{ns}/k".encode(), b"v", Deadline(5.0))
        kv = client.get(f"{ns}/k".encode(), Deadline(5.0))
        assert kv is not None and kv.value == b"v"
    finally:
        client.close()


# ------------------------------------------------------------------------ configuration


def test_mixed_http_and_https_endpoints_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="mix http:// and https://") as info:
        Config(node_id="n1", endpoints=["http://127.0.0.1:2379", "https://127.0.0.1:2380"])
    assert info.value.field == "endpoints"


def test_password_over_plain_http_logs_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="etcdraft")
    client = EtcdClient(["http://127.0.0.1:1"], username="app", password="pw")
    client.close()
    warnings = [r.message for r in caplog.records if "unencrypted" in r.message]
    assert len(warnings) == 1, warnings
    assert "pw" not in warnings[0].replace("https", "")


def test_connection_settings_come_from_config() -> None:
    cfg = Config(
        node_id="n1",
        endpoints=["http://127.0.0.1:2379"],
        dial_timeout="750ms",
        keepalive_time="20s",
        keepalive_timeout="3s",
    )
    client = EtcdClient.from_config(cfg)
    opts = dict(client.channels.options(dedicated=False))
    assert opts["grpc.min_reconnect_backoff_ms"] == 750
    assert opts["grpc.keepalive_time_ms"] == 20000
    assert opts["grpc.keepalive_timeout_ms"] == 3000
    off = EtcdClient.from_config(cfg.replace(keepalive_time=0))
    assert "grpc.keepalive_time_ms" not in dict(off.channels.options(dedicated=False))


# ------------------------------------------------------------------------ processes


def _child_put(endpoints: list[str], key: bytes, out: Any) -> None:
    client = EtcdClient(endpoints, name="child")
    try:
        client.put(key, b"from-child", Deadline(10.0))
        kv = client.get(key, Deadline(10.0))
        out.put(kv.value if kv is not None else b"")
    finally:
        client.close()


# Not "fork": grpcio skips its fork handlers while other threads are inside gRPC calls
# (a running node always has some), and a forked child's own channels then can hang
# (seen here about once in five runs). The docs say to use spawn, forkserver or exec.
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_child_process_started_after_etcdraft_runs_its_own_client(
    etcd_cluster_factory: Callable[..., EtcdCluster],
    nodes: Callable[[Config], Node],
    method: str,
) -> None:
    """grpcio's fork rule: channels are made after the fork. A process whose parent
    runs a node (gRPC threads busy) starts etcdraft itself and works."""
    cluster = etcd_cluster_factory(size=1)
    ns = f"/etcdraft-test/fork-{uuid.uuid4().hex[:8]}"
    parent = nodes(config(cluster.endpoints, ns))
    parent.start()
    wait_until(parent.is_leader, timeout=10, message="parent node leads")
    ctx = multiprocessing.get_context(method)
    out = ctx.Queue()
    key = f"{ns}/child-{method}".encode()
    proc = ctx.Process(target=_child_put, args=(cluster.endpoints, key, out))
    proc.start()
    proc.join(60)
    if proc.is_alive():
        proc.kill()
        pytest.fail(f"the {method} child hung")
    assert proc.exitcode == 0
    assert out.get(timeout=5) == b"from-child"
    parent.broadcast(state(1))  # the parent's own client still works


def test_subprocesses_with_a_busy_node_in_the_parent(
    etcd_cluster_factory: Callable[..., EtcdCluster], nodes: Callable[[Config], Node]
) -> None:
    """Starting many subprocesses while the node's gRPC threads work (what the demo,
    the toy and the embedded launcher do) neither aborts nor stalls the parent."""
    cluster = etcd_cluster_factory(size=1)
    ns = f"/etcdraft-test/subp-{uuid.uuid4().hex[:8]}"
    node = nodes(config(cluster.endpoints, ns))
    node.start()
    wait_until(node.is_leader, timeout=10, message="node leads")
    for i in range(1, 31):
        node.broadcast(state(i))
        subprocess.run([sys.executable, "-c", "pass"], check=True, timeout=30)
    cluster.members[0].restart()  # the launcher itself, with the node's streams open
    wait_until(node.is_leader, timeout=20, message="node leads after the etcd restart")
    node.broadcast(state(31), timeout=5)
    assert node.get_state().height == 31


def test_unavailability_carries_a_machine_readable_reason(etcd: Any) -> None:
    """Callers (the CLI, users) branch on ``EtcdError.reason``, not on texts."""

    import grpc

    from etcdraft._etcd_errors import map_rpc_error
    from etcdraft.errors import ETCD_REASONS, EtcdTimeoutError, EtcdUnavailableError
    from etcdraft.status import unreachable_reason

    # the one place that reads grpcio's texts
    cases = {
        (grpc.StatusCode.UNAVAILABLE, "failed to connect: Connection refused"): "refused",
        (grpc.StatusCode.UNAVAILABLE, "DNS resolution failed for x"): "unknown_host",
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"): "timeout",
        (grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader"): "no_leader",
        (grpc.StatusCode.UNIMPLEMENTED, "unknown service etcdserverpb.KV"): "not_etcd",
    }
    for (code, details), reason in cases.items():
        err = map_rpc_error(code, details, "http://x:1")
        assert isinstance(err, EtcdUnavailableError) and err.reason == reason, (details, err)
        assert reason in ETCD_REASONS

    # real: a port nobody listens on, and a deadline too short to try
    closed = f"http://127.0.0.1:{free_port()}"
    client = EtcdClient([closed], name="test-reason")
    try:
        with pytest.raises(EtcdTimeoutError) as refused:
            client.get(b"k", Deadline(1.0))
        assert refused.value.reason == "refused", refused.value
        # the one phrase `etcdraft status` and the CLI's errors both show for it
        assert unreachable_reason(refused.value) == "connection refused"
    finally:
        client.close()
    client = EtcdClient(list(etcd.endpoints), name="test-reason")
    try:
        with pytest.raises(EtcdTimeoutError) as expired:
            client.get(b"k", Deadline(0.0))
        assert expired.value.reason == "deadline", expired.value
        assert unreachable_reason(expired.value) == "deadline too short"
        assert client.get(b"k", Deadline(5.0)) is None  # the client itself is fine
    finally:
        client.close()


def test_lease_keepalive_backs_off_instead_of_reopening_streams_in_a_hot_loop(etcd: Any) -> None:
    """A keep-alive stream that fails at once (connection refused) is reopened after a
    pause once every endpoint failed in turn (before: ~850 streams and 85 % of a core
    in one second); a dead endpoint's successor is still tried at once."""
    dead = f"http://127.0.0.1:{free_port()}"
    client = EtcdClient([dead], name="test-ka-dead")
    opened = 0
    open_stream = client.open_stream

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal opened
        opened += 1
        return open_stream(*args, **kwargs)

    client.open_stream = counting  # type: ignore[method-assign]
    try:
        with pytest.raises(EtcdTimeoutError):
            client.keepalive_stream("t").keepalive(1, Deadline(1.0))
    finally:
        client.close()
    # pauses of 50, 100, 150, 200, 250, 250 ms fill the second: at most 7 streams
    assert 1 <= opened <= 8, opened

    client = EtcdClient([dead, *etcd.endpoints], name="test-ka-next")
    try:
        lease, _ = client.lease_grant(5, Deadline(5.0))
        stream = client.keepalive_stream("t")
        assert stream.keepalive(lease, Deadline(5.0)) > 0
        stream.close()
    finally:
        client.close()


def test_an_idle_connection_is_not_closed_by_etcd_for_pinging(
    etcd_cluster_factory: Callable[..., EtcdCluster], namespace: str
) -> None:
    """etcd's gRPC server allows keepalive pings without an active call at most every
    2 hours (Go gRPC's ``PermitWithoutStream: false``, which etcd sets): a client
    that pings an idle connection every ``keepalive_time`` is sent GOAWAY
    ``too_many_pings`` after three pings (seen here: an idle follower's data
    connection, 30-40 s after its last request, with grpc-core's error line on stderr
    and its keepalive then throttled). Pings go only while a call is active; here
    both sides run at 1 s (etcd's ``--grpc-keepalive-min-time``, our
    ``keepalive_time``), so three pings would take 3 s."""
    import threading

    import grpc

    cluster = etcd_cluster_factory(1, extra_args=["--grpc-keepalive-min-time=1s"])
    cfg = Config(
        node_id="ka",
        raft_addr="127.0.0.1:7000",
        endpoints=list(cluster.endpoints),
        namespace=namespace,
        keepalive_time="1s",
        keepalive_timeout="1s",
    )
    client = EtcdClient.from_config(cfg, name="test-idle")
    left_ready = threading.Event()
    seen: list[str] = []

    def on_state(state: grpc.ChannelConnectivity) -> None:
        seen.append(state.name)
        if "READY" in seen and state is not grpc.ChannelConnectivity.READY:
            left_ready.set()

    try:
        assert client.get(namespace.encode() + b"/k", Deadline(5.0)) is None
        channel, _ = client._eps.all[0]._lanes["data"]
        channel.subscribe(on_state, try_to_connect=False)
        assert not left_ready.wait(4.5), f"etcd closed the idle connection: {seen}"
        # a connection with a call in flight is still pinged (liveness of streams)
        opts = dict(client.channels.options(dedicated=True))
        assert opts["grpc.keepalive_time_ms"] == 1000
    finally:
        client.close()


def test_concurrent_piece_writes_fail_over_from_a_member_whose_view_went_backwards(
    etcd3: Any, namespace: str
) -> None:
    """``txn_many`` (a large block's pieces) refuses the answers of a member whose raft
    term went backwards and retries those transactions with failover, like every other
    request. Before, the check's internal ``TransientError`` escaped ``broadcast()``
    (seen in a soak, during etcd leader churn)."""
    from etcdraft.etcd import op_put

    client = EtcdClient(list(etcd3.endpoints), name="test-txn-many")
    try:
        stale = client._eps.order()[0]
        stale.raft_term = 1 << 62  # as if it had reported a far higher term before
        keys = [f"{namespace}/piece/{i}".encode() for i in range(3)]
        txns = [([], [op_put(key, b"x" * 100)]) for key in keys]
        results = client.txn_many(txns, Deadline(10.0))
        assert [r.succeeded for r in results] == [True, True, True]
        for key in keys:
            kv = client.get(key, Deadline(5.0))
            assert kv is not None and kv.value == b"x" * 100
    finally:
        client.close()
