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
import datetime
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from certs import CertPaths, make_certs, make_client_cert, make_jwt_keys
from helpers import wait_until

from etcdraft import Config, EtcdAuthError, EtcdraftError, Node, RaftBlockState
from etcdraft._deadline import Deadline
from etcdraft.embedded import EtcdCluster, TLSFiles, find_etcdctl_binary
from etcdraft.etcd import EtcdClient, pb
from etcdraft.testing import FaultProxy
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


def _replace(path: Path, data: bytes) -> None:
    """Replace a file atomically, as a certificate manager does."""
    tmp = path.with_suffix(path.suffix + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _not_after(cert: str) -> float:
    """The certificate's expiry, as a ``time.time()`` value."""
    out = subprocess.run(
        ["openssl", "x509", "-in", cert, "-noout", "-enddate"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    stamp = out.strip().split("=", 1)[1]
    return (
        datetime.datetime.strptime(stamp, "%b %d %H:%M:%S %Y %Z")
        .replace(tzinfo=datetime.timezone.utc)
        .timestamp()
    )


@pytest.mark.timeout(120)
@pytest.mark.parametrize("server_too", [False, True], ids=["client-cert", "client-ca-server"])
def test_rotated_certificates_take_effect_on_the_next_connection(
    tmp_path: Path, nodes, namespace: str, server_too: bool
) -> None:
    """A node starts with a client certificate that expires during the run. Its
    client certificate and key, its CA bundle and etcd's server certificate are then
    replaced on disk (a new CA, B); once the old certificate has expired, every
    connection is dropped: the node reconnects with the new files, without a restart,
    and goes on broadcasting. The old files alone are refused by then."""
    a = make_certs(tmp_path / "a", client_cn="root")
    b = make_certs(tmp_path / "b", client_cn="root", ca_cn="etcdraft-test-ca-b")
    both = tmp_path / "trust-a-b.pem"  # etcd trusts client certificates of A and B
    both.write_bytes(Path(a.ca_file).read_bytes() + Path(b.ca_file).read_bytes())
    srv_crt, srv_key = tmp_path / "server.crt", tmp_path / "server.key"
    srv_crt.write_bytes(Path(a.server_cert_file).read_bytes())
    srv_key.write_bytes(Path(a.server_key_file).read_bytes())
    short_crt, short_key = make_client_cert(a, "short", valid_for=15)
    expires = _not_after(short_crt)
    node_ca, node_crt, node_key = (tmp_path / n for n in ("node-ca.pem", "node.crt", "node.key"))
    node_ca.write_bytes(Path(a.ca_file).read_bytes())
    node_crt.write_bytes(Path(short_crt).read_bytes())
    node_key.write_bytes(Path(short_key).read_bytes())
    tls = TLSFiles(
        ca_file=str(both), cert_file=str(srv_crt), key_file=str(srv_key),
        client_cert_auth=True,
        client_cert_file=a.client_cert_file, client_key_file=a.client_key_file,
    )  # fmt: skip
    with (
        EtcdCluster(size=1, tls=tls) as cluster,
        FaultProxy(cluster.members[0].client_port, scheme="https") as proxy,
    ):
        files = {"tls_ca_file": str(node_ca), "tls_cert_file": str(node_crt),
                 "tls_key_file": str(node_key)}  # fmt: skip
        node = nodes(_config([proxy.url], namespace, **files))
        node.start()
        wait_until(node.is_leader, 10, "the node leads")
        node.broadcast(_state(1))
        assert time.time() < expires, "too slow: the short certificate expired before use"

        # rotation, on disk only: the node is not told
        _replace(node_crt, Path(b.client_cert_file).read_bytes())
        _replace(node_key, Path(b.client_key_file).read_bytes())
        if server_too:  # a new CA bundle, and etcd's certificate from the new CA
            _replace(node_ca, Path(a.ca_file).read_bytes() + Path(b.ca_file).read_bytes())
            _replace(srv_crt, Path(b.server_cert_file).read_bytes())  # read per handshake
            _replace(srv_key, Path(b.server_key_file).read_bytes())

        wait_until(lambda: time.time() > expires + 1, 30, "the old client certificate expired")
        before = proxy.connections
        proxy.drop_connections()

        def broadcasts(height: int) -> bool:
            try:
                node.broadcast(_state(height))  # the same block again is safe
            except EtcdraftError:
                return False
            return True

        for h in (2, 3):
            wait_until(lambda h=h: broadcasts(h), 20, f"broadcast {h} after the rotation")
        assert proxy.connections > before, "no new connection was made"
        assert node.get_state() == _state(3)

        # the old files are refused now: it was the new ones that connected
        old_dir = tmp_path / "old"
        old_dir.mkdir()
        (old_dir / "ca.pem").write_bytes(Path(a.ca_file).read_bytes())
        old = EtcdClient(cluster.endpoints, ca_file=str(old_dir / "ca.pem"),
                         cert_file=short_crt, key_file=short_key)  # fmt: skip
        try:
            with pytest.raises(EtcdAuthError):
                old.get(b"/any", Deadline(5.0))
        finally:
            old.close()


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
        lambda compact, upto: 0,
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


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``etcdraft <args>`` with only ``env``'s ETCDRAFT_* settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ETCDRAFT_")}
    return subprocess.run(
        [sys.executable, "-m", "etcdraft.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
        env={**base, **env},
    )


def test_least_privilege_role_runs_nodes_and_every_operator_tool(
    auth_etcd: EtcdCluster, nodes
) -> None:
    """The role of docs/operations.md ("Roles"): readwrite on ``<namespace>/`` and
    nothing else. Nodes lead, follow, broadcast and prune with it; the operator tools
    (status, watch, members list/add/remove, resign) work with it; the read-only role
    is enough for status and watch. Both roles are granted the prefix only."""
    ns = _auth_namespace()
    assert ns.startswith(AUTH_ROOT + "/")  # app-role: readwrite on AUTH_ROOT/ only
    root = f"root:{ROOT_PW}"
    ep = auth_etcd.endpoints[0]
    role = _etcdctl(ep, "role", "get", "app-role", user=root)
    assert f"[{AUTH_ROOT}/, {AUTH_ROOT}0)" in role and role.count("[") == 2, role  # read + write
    viewer, viewer_pw = f"viewer-{uuid.uuid4().hex[:6]}", "viewerpw"
    _etcdctl(ep, "role", "add", f"{viewer}-ro", user=root)
    _etcdctl(ep, "role", "grant-permission", f"{viewer}-ro", "--prefix=true", "read",
             ns + "/", user=root)  # fmt: skip
    _etcdctl(ep, "user", "add", f"{viewer}:{viewer_pw}", user=root)
    _etcdctl(ep, "user", "grant-role", viewer, f"{viewer}-ro", user=root)

    creds = {"username": "app", "password": APP_PW}
    leader, _ = _lead_broadcast_follow(
        nodes, auth_etcd.endpoints, ns, trailing_logs=2, snapshot_threshold=2, **creds
    )
    for h in range(2, 9):
        leader.broadcast(_state(h))
    client = EtcdClient(auth_etcd.endpoints, username="app", password=APP_PW)
    try:
        wait_until(
            lambda: (kv := client.get(leader.keys.pruned, Deadline(5.0))) and int(kv.value) > 0,
            10,
            "the leader pruned the log",
        )
    finally:
        client.close()

    app = {"ETCDRAFT_ENDPOINTS": ep, "ETCDRAFT_NAMESPACE": ns,
           "ETCDRAFT_USERNAME": "app", "ETCDRAFT_PASSWORD": APP_PW}  # fmt: skip
    ro = {**app, "ETCDRAFT_USERNAME": viewer, "ETCDRAFT_PASSWORD": viewer_pw}
    for env in (app, ro):
        out = _cli("status", "--json", env=env)
        assert out.returncode == 0, out.stderr
        assert '"n1"' in out.stdout and '"n2"' in out.stdout, out.stdout
        out = _cli("watch", "--from-height", "8", "--count", "1", "--json", env=env)
        assert out.returncode == 0, out.stderr
        assert '"height": 8' in out.stdout.replace('"height":8', '"height": 8'), out.stdout
    out = _cli("members", "list", env=app)
    assert out.returncode == 0 and "n1" in out.stdout, out
    out = _cli("members", "add", "n3", "127.0.0.1:7003", env=app)
    assert out.returncode == 0, out.stderr
    out = _cli("members", "remove", "n3", env=app)
    assert out.returncode == 0, out.stderr
    out = _cli("members", "add", "n2", "127.0.0.1:7002", env=app)  # n2 may lead now
    assert out.returncode == 0, out.stderr
    out = _cli("resign", env=app)
    assert out.returncode == 0, out.stderr
    wait_until(lambda: not leader.is_leader(), 10, "leadership moved away from n1")


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
        ep = client._eps.get(endpoint)
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
