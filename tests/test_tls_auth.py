"""TLS, client-certificate auth and etcd user/password auth against real etcd.

Every etcd here is started by ``etcdraft.embedded.EtcdCluster`` on loopback:

* a TLS cluster demanding client certificates (``--client-cert-auth``), with a
  throwaway PKI from ``certs.make_certs`` (and a second, unrelated CA for the
  "wrong CA" case);
* a plain-http cluster with etcd's role-based auth enabled through ``etcdctl``;
* a plain-http cluster with auth and 1-second simple tokens, for token expiry;
* a plain-http cluster with auth and JWT tokens, which etcd invalidates whenever
  the auth store changes (any user or role added, changed or removed).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from certs import CertPaths, make_certs, make_jwt_keys
from helpers import wait_until

from etcdraft import Config, EtcdAuthError, Node, RaftBlockState
from etcdraft._deadline import Deadline
from etcdraft.embedded import EtcdCluster, TLSFiles, find_etcdctl_binary
from etcdraft.etcd import EtcdClient, pb
from etcdraft.watch import Watcher

pytestmark = pytest.mark.timeout(90)

#: Every namespace of the auth tests lives under this prefix; user ``app`` may read
#: and write it (and nothing else), user ``nobody`` may only touch OTHER_PREFIX.
AUTH_ROOT = "/etcdraft-auth"
OTHER_PREFIX = "/somewhere-else/"
ROOT_PW = "rootpw"
APP_PW = "apppw"

#: A failure that is detected (bad certificate, wrong password) must surface at once,
#: not after the start deadline (5 s with the default send_timeout) of retrying.
FAST = 2.5


# ---------------------------------------------------------------------------- helpers


def _etcdctl(endpoint: str, *args: str, user: str | None = None) -> str:
    """Run ``etcdctl`` (API v3) against ``endpoint``; fail the test on error."""
    cmd = [
        find_etcdctl_binary(),
        "--endpoints", endpoint,
        "--dial-timeout", "5s",
        "--command-timeout", "5s",
    ]  # fmt: skip
    if user is not None:
        cmd += ["--user", user]
    cmd += list(args)
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "ETCDCTL_API": "3"},
    )
    assert proc.returncode == 0, f"etcdctl {' '.join(args)} failed: {proc.stderr}"
    return proc.stdout


def enable_auth(endpoint: str) -> None:
    """Create ``root``, ``app`` (readwrite on AUTH_ROOT/) and ``nobody`` (readwrite on
    OTHER_PREFIX only), then turn auth on. Roles and users are made before
    ``auth enable`` so no credentials are needed."""
    _etcdctl(endpoint, "user", "add", f"root:{ROOT_PW}")
    _etcdctl(endpoint, "role", "add", "app-role")
    _etcdctl(
        endpoint, "role", "grant-permission", "app-role", "--prefix=true", "readwrite",
        AUTH_ROOT + "/",
    )  # fmt: skip
    _etcdctl(endpoint, "user", "add", f"app:{APP_PW}")
    _etcdctl(endpoint, "user", "grant-role", "app", "app-role")
    _etcdctl(endpoint, "role", "add", "nobody-role")
    _etcdctl(
        endpoint, "role", "grant-permission", "nobody-role", "--prefix=true", "readwrite",
        OTHER_PREFIX,
    )  # fmt: skip
    _etcdctl(endpoint, "user", "add", "nobody:pw")
    _etcdctl(endpoint, "user", "grant-role", "nobody", "nobody-role")
    # etcdctl creates the root role and grants it to root when it is missing.
    _etcdctl(endpoint, "auth", "enable")
    users = _etcdctl(endpoint, "user", "list", user=f"root:{ROOT_PW}").split()
    assert {"root", "app", "nobody"} <= set(users), users


def _state(height: int) -> RaftBlockState:
    return RaftBlockState(
        height=height,
        timestamp=1_700_000_000 + height,
        hash=f"hash-{height}".encode(),
        header=f"header-{height}".encode(),
        data=f"data-{height}".encode(),
    )


def _config(endpoints: list[str], namespace: str, node_id: str = "n1", **kw: Any) -> Config:
    return Config(
        node_id=node_id,
        raft_addr=f"127.0.0.1:{7000 + int(node_id[1:])}",
        endpoints=endpoints,
        namespace=namespace,
        bootstrap=node_id == "n1",
        **kw,
    )


@pytest.fixture
def nodes() -> Iterator[Callable[[Config], Node]]:
    """Create nodes that are always shut down after the test."""
    made: list[Node] = []

    def make(config: Config) -> Node:
        node = Node(config)
        made.append(node)
        return node

    yield make
    for node in made:
        node.shutdown()


def _start_fails(node: Node) -> tuple[EtcdAuthError, float]:
    started = time.monotonic()
    with pytest.raises(EtcdAuthError) as info:
        node.start()
    return info.value, time.monotonic() - started


def _lead_broadcast_follow(
    make: Callable[[Config], Node], endpoints: list[str], namespace: str, **kw: Any
) -> tuple[Node, RaftBlockState]:
    """Start a leader and a follower, broadcast height 1 and see it on both."""
    leader = make(_config(endpoints, namespace, "n1", **kw))
    leader.start()
    wait_until(leader.is_leader, timeout=10, message="n1 did not become leader")
    follower = make(_config(endpoints, namespace, "n2", **kw))
    follower.start()
    state = _state(1)
    leader.broadcast(state)
    assert leader.get_state() == state
    # the follower gets it through its watch (which carries the TLS / token too)
    wait_until(
        lambda: follower.get_state() == state,
        timeout=10,
        message=lambda: f"follower at height {follower.get_state().height}",
    )
    assert follower.leader_id() == "n1"
    return leader, state


# ---------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[CertPaths, CertPaths]:
    """The cluster's PKI and an unrelated one (same shapes, another CA)."""
    base: Path = tmp_path_factory.mktemp("pki")
    good = make_certs(base / "good", client_cn="root")
    other = make_certs(base / "other", client_cn="root", ca_cn="some-other-ca")
    return good, other


@pytest.fixture(scope="module")
def tls_etcd(pki: tuple[CertPaths, CertPaths]) -> Iterator[EtcdCluster]:
    good, _ = pki
    tls = TLSFiles(
        ca_file=good.ca_file,
        cert_file=good.server_cert_file,
        key_file=good.server_key_file,
        client_cert_auth=True,
        client_cert_file=good.client_cert_file,
        client_key_file=good.client_key_file,
    )
    with EtcdCluster(size=1, tls=tls) as cluster:
        yield cluster


def test_node_over_tls_with_client_cert_leads_and_broadcasts(
    tls_etcd: EtcdCluster, pki: tuple[CertPaths, CertPaths], nodes, namespace: str
) -> None:
    good, _ = pki
    assert all(e.startswith("https://") for e in tls_etcd.endpoints)
    tls = {
        "tls_ca_file": good.ca_file,
        "tls_cert_file": good.client_cert_file,
        "tls_key_file": good.client_key_file,
    }
    leader, state = _lead_broadcast_follow(nodes, tls_etcd.endpoints, namespace, **tls)
    # the value is in etcd, readable by any client with the right certificate
    client = EtcdClient(
        tls_etcd.endpoints,
        ca_file=good.ca_file,
        cert_file=good.client_cert_file,
        key_file=good.client_key_file,
    )
    try:
        kv = client.get(leader.keys.log(1), Deadline(5.0))
    finally:
        client.close()
    assert kv is not None
    assert RaftBlockState.FromString(kv.value) == state


def test_wrong_ca_fails_start_fast_with_a_tls_error(
    tls_etcd: EtcdCluster, pki: tuple[CertPaths, CertPaths], nodes, namespace: str
) -> None:
    good, other = pki
    node = nodes(
        _config(
            tls_etcd.endpoints,
            namespace,
            tls_ca_file=other.ca_file,  # does not trust the server's certificate
            tls_cert_file=good.client_cert_file,
            tls_key_file=good.client_key_file,
        )
    )
    err, elapsed = _start_fails(node)
    assert elapsed < FAST, f"took {elapsed:.2f}s"
    assert "TLS" in str(err)
    assert "tls_ca_file" in str(err)
    assert err.endpoint == tls_etcd.endpoints[0]


def test_missing_client_cert_fails_start_fast(
    tls_etcd: EtcdCluster, pki: tuple[CertPaths, CertPaths], nodes, namespace: str
) -> None:
    good, _ = pki
    # trusts the server, but offers no client certificate to an etcd that demands one
    node = nodes(_config(tls_etcd.endpoints, namespace, tls_ca_file=good.ca_file))
    err, elapsed = _start_fails(node)
    assert elapsed < FAST, f"took {elapsed:.2f}s"
    assert "TLS" in str(err)
    assert "tls_cert_file" in str(err)


def test_client_cert_from_another_ca_fails_start_fast(
    tls_etcd: EtcdCluster, pki: tuple[CertPaths, CertPaths], nodes, namespace: str
) -> None:
    good, other = pki
    node = nodes(
        _config(
            tls_etcd.endpoints,
            namespace,
            tls_ca_file=good.ca_file,
            tls_cert_file=other.client_cert_file,  # signed by a CA etcd does not trust
            tls_key_file=other.client_key_file,
        )
    )
    err, elapsed = _start_fails(node)
    assert elapsed < FAST, f"took {elapsed:.2f}s"
    assert "TLS" in str(err)


# ---------------------------------------------------------------------------- user auth


@pytest.fixture(scope="module")
def auth_etcd() -> Iterator[EtcdCluster]:
    """Plain http (no TLS) etcd with role-based auth on (see ``enable_auth``)."""
    with EtcdCluster(size=1) as cluster:
        enable_auth(cluster.endpoints[0])
        yield cluster


def _auth_namespace() -> str:
    return f"{AUTH_ROOT}/chain-{uuid.uuid4().hex[:8]}"


def test_node_with_username_password_leads_and_broadcasts(auth_etcd: EtcdCluster, nodes) -> None:
    ns = _auth_namespace()
    creds = {"username": "app", "password": APP_PW}
    leader, state = _lead_broadcast_follow(nodes, auth_etcd.endpoints, ns, **creds)
    client = EtcdClient(auth_etcd.endpoints, username="app", password=APP_PW)
    try:
        kv = client.get(leader.keys.log(1), Deadline(5.0))
    finally:
        client.close()
    assert kv is not None
    assert RaftBlockState.FromString(kv.value) == state


def test_wrong_password_fails_start_fast_without_leaking_it(auth_etcd: EtcdCluster, nodes) -> None:
    secret = "Wr0ng-pa55word-xyzzy"
    node = nodes(_config(auth_etcd.endpoints, _auth_namespace(), username="app", password=secret))
    err, elapsed = _start_fails(node)
    assert elapsed < FAST, f"took {elapsed:.2f}s"
    text = str(err).lower()
    assert "check username" in text and "password" in text, str(err)
    assert secret.lower() not in text
    assert secret not in repr(err)
    assert APP_PW not in str(err)


def test_no_credentials_on_an_auth_enabled_etcd_is_an_auth_error(
    auth_etcd: EtcdCluster, nodes
) -> None:
    node = nodes(_config(auth_etcd.endpoints, _auth_namespace()))
    err, elapsed = _start_fails(node)
    assert elapsed < FAST, f"took {elapsed:.2f}s"
    assert "username" in str(err).lower()


def test_user_without_permission_on_the_namespace_gets_permission_error(
    auth_etcd: EtcdCluster, nodes
) -> None:
    node = nodes(_config(auth_etcd.endpoints, _auth_namespace(), username="nobody", password="pw"))
    err, elapsed = _start_fails(node)
    assert elapsed < FAST, f"took {elapsed:.2f}s"
    assert "permission" in str(err).lower()
    assert "namespace prefix" in str(err)


def test_watch_liveness_probe_works_for_a_user_confined_to_the_namespace(
    auth_etcd: EtcdCluster,
) -> None:
    """The watch probes its stream after ``probe_after`` quiet seconds (a progress
    request on the stream itself); a probe left unanswered makes it report the
    endpoint as failed and reconnect. A user whose role covers only the namespace
    (the least privilege the docs ask for) must get its probes answered, or a healthy
    endpoint is declared dead every quiet second."""
    client = EtcdClient(auth_etcd.endpoints, username="app", password=APP_PW)
    watcher = Watcher(
        client,
        _auth_namespace().encode() + b"/",
        1,
        lambda events, top: None,
        lambda compact: 0,
        probe_after=0.2,
        probe_timeout=1.0,
    )
    watcher.start()
    try:
        wait_until(lambda: watcher.probes_answered >= 3, timeout=20, message="3 probes answered")
        assert watcher.reconnects == 0, "the watch reconnected although its endpoint is healthy"
    finally:
        watcher.stop()
        client.close()


# ---------------------------------------------------------------------------- token expiry


@pytest.fixture(scope="module")
def short_token_etcd() -> Iterator[EtcdCluster]:
    """Auth on, simple tokens that expire after 1 s without use."""
    with EtcdCluster(
        size=1, extra_args=["--auth-token", "simple", "--auth-token-ttl", "1"]
    ) as cluster:
        enable_auth(cluster.endpoints[0])
        yield cluster


def test_client_reauthenticates_after_its_token_expired(short_token_etcd: EtcdCluster) -> None:
    endpoint = short_token_etcd.endpoints[0]
    key = f"{AUTH_ROOT}/expiry-{uuid.uuid4().hex[:8]}".encode()
    client = EtcdClient([endpoint], username="app", password=APP_PW)
    try:
        client.put(key, b"v1", Deadline(5.0))
        ep = client._endpoint(endpoint)
        old_token = ep.token
        assert old_token

        # The thing under test is expiry by the passage of time: etcd drops a simple
        # token 1 s after its last use, checked once a second, so the token is gone
        # after at most ~2 s idle (3 s leaves room for a loaded machine). Polling with
        # the token would keep it alive, hence a plain, bounded wait.
        threading.Event().wait(3.0)

        # etcd itself refuses the old token now
        with pytest.raises(grpc.RpcError) as info:
            ep.stubs().kv.Range(
                pb.RangeRequest(key=key), timeout=5, metadata=(("token", old_token),)
            )
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, info.value
        assert "invalid auth token" in (info.value.details() or ""), info.value

        # eight threads meet the expired token at once: one authentication, not eight
        before = client.authentications
        barrier = threading.Barrier(8)
        values: list[bytes] = []

        def read() -> None:
            barrier.wait(5)
            kv = client.get(key, Deadline(5.0))
            values.append(kv.value if kv is not None else b"")

        threads = [threading.Thread(target=read) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert values == [b"v1"] * 8
        assert client.authentications == before + 1, (
            f"{client.authentications - before} authentications for one expiry"
        )
        client.put(key, b"v2", Deadline(5.0))
        assert ep.token not in (None, "", old_token)
    finally:
        client.close()
    check = EtcdClient([endpoint], username="root", password=ROOT_PW)
    try:
        kv = check.get(key, Deadline(5.0))
    finally:
        check.close()
    assert kv is not None and kv.value == b"v2"


# ---------------------------------------------------------------------------- JWT tokens


@pytest.fixture(scope="module")
def jwt_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """Auth on, JWT tokens (the kind etcd recommends for production)."""
    priv, pub = make_jwt_keys(tmp_path_factory.mktemp("jwt"))
    token = f"jwt,pub-key={pub},priv-key={priv},sign-method=ES256,ttl=10m"
    with EtcdCluster(size=1, extra_args=["--auth-token", token]) as cluster:
        enable_auth(cluster.endpoints[0])
        yield cluster


def test_leader_keeps_working_after_an_unrelated_auth_change(jwt_etcd: EtcdCluster, nodes) -> None:
    """A JWT carries the auth-store revision it was issued at; once an operator
    adds any user or role, etcd refuses it ("revision of auth store is old" in 3.4,
    "auth: revision in header is old" in 3.5) and the client must fetch a new token,
    as etcd's own clientv3 does. Otherwise every request of the node fails from then
    on: no broadcast, no keep-alive, leadership lost for good."""
    endpoint = jwt_etcd.endpoints[0]
    node = nodes(_config(jwt_etcd.endpoints, _auth_namespace(), username="app", password=APP_PW))
    node.start()
    wait_until(node.is_leader, timeout=10, message="n1 did not become leader")
    node.broadcast(_state(1))

    _etcdctl(endpoint, "user", "add", "someone-else:pw", user=f"root:{ROOT_PW}")

    node.broadcast(_state(2), timeout=5.0)
    assert node.get_state().height == 2
    assert node.is_leader()


def test_endpoint_dropping_the_tls_handshake_is_failed_over_not_a_tls_error(
    tls_etcd: EtcdCluster, pki: tuple[CertPaths, CertPaths]
) -> None:
    """A member that goes away in the middle of the TLS handshake (here: a listener
    that reads the ClientHello and closes) is an unreachable endpoint: the client
    moves on to the next one. Only a real TLS problem (certificates, protocol) is an
    ``EtcdAuthError``."""
    import socket

    from etcdraft.errors import EtcdUnavailableError

    good, _ = pki
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    stop = threading.Event()

    def drop_handshakes() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(2)
            with contextlib.suppress(OSError):
                conn.recv(4096)  # the ClientHello
            conn.close()

    thread = threading.Thread(target=drop_handshakes, daemon=True)
    thread.start()
    dropping = f"https://127.0.0.1:{port}"
    files = {
        "ca_file": good.ca_file,
        "cert_file": good.client_cert_file,
        "key_file": good.client_key_file,
    }
    try:
        both = EtcdClient([dropping, *tls_etcd.endpoints], name="test-drop", **files)
        try:
            both.put(b"/tls-drop/k", b"v", Deadline(5.0))
            assert both.get(b"/tls-drop/k", Deadline(5.0)) is not None
        finally:
            both.close()
        alone = EtcdClient([dropping], name="test-drop-alone", **files)
        try:
            with pytest.raises(EtcdUnavailableError) as info:
                alone.get(b"/tls-drop/k", Deadline(1.0))
            assert not isinstance(info.value, EtcdAuthError)
            assert "handshake" in str(info.value).lower()
        finally:
            alone.close()
    finally:
        stop.set()
        server.close()
        thread.join(2)
