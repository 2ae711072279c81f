"""The ``etcdraft`` command against real etcd: status, members, resign, watch, errors.

A small cluster of in-process Nodes produces blocks (a block every 50 ms by whichever
node leads); the CLI runs as a subprocess, exactly as a user runs it, so exit codes
and the absence of tracebacks are tested too.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import wait_until

from etcdraft import Config, Node, RaftBlockState
from etcdraft.cli import main
from etcdraft.errors import EtcdraftError
from etcdraft.status import connect as status_connect

FAST = {
    "election_timeout": "1s",
    "heartbeat_timeout": "200ms",
    "leader_lease_timeout": "300ms",
    "send_timeout": "500ms",
}

UNREACHABLE = "http://127.0.0.1:1"


def etcdraft(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ETCDRAFT_")}
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "etcdraft.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=base,
    )


class Cluster:
    """``n`` in-process nodes; whichever leads broadcasts a block every 50 ms."""

    def __init__(self, endpoints: list[str], namespace: str, n: int = 3) -> None:
        ids = [f"n{i + 1}" for i in range(n)]
        peers = [f"{nid}@127.0.0.1:{7101 + i}" for i, nid in enumerate(ids)]
        self.endpoints = endpoints
        self.namespace = namespace
        self.nodes = [
            Node(
                Config(
                    node_id=nid,
                    raft_addr=f"127.0.0.1:{7101 + i}",
                    bootstrap=True,
                    peers=peers,
                    endpoints=endpoints,
                    namespace=namespace,
                    **FAST,  # type: ignore[arg-type]
                )
            )
            for i, nid in enumerate(ids)
        ]
        self.stop = threading.Event()
        self.producer = threading.Thread(target=self._produce, daemon=True)

    @property
    def conn(self) -> list[str]:
        return ["--endpoints", ",".join(self.endpoints), "--namespace", self.namespace]

    def leader(self) -> Node | None:
        return next((n for n in self.nodes if n.is_leader()), None)

    def _produce(self) -> None:
        while not self.stop.is_set():
            node = self.leader()
            if node is not None:
                head = node.get_state()
                with contextlib.suppress(EtcdraftError):
                    node.broadcast(
                        RaftBlockState(
                            height=head.height + 1,
                            timestamp=max(head.timestamp + 1, time.time_ns()),
                            hash=os.urandom(32),
                        )
                    )
            self.stop.wait(0.05)

    def __enter__(self) -> Cluster:
        for node in self.nodes:
            node.start()
        self.producer.start()
        wait_until(lambda: self.leader() is not None and self.height() >= 3, 15, "no blocks")

        def all_reported() -> bool:  # every node published a non-zero applied height
            progress = self.nodes[0].progress()
            return all((p := progress.get(n.node_id)) and p.height > 0 for n in self.nodes)

        wait_until(all_reported, 10, "not every node reported its progress")
        return self

    def height(self) -> int:
        return max(n.get_state().height for n in self.nodes)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.producer.join(5)
        for node in self.nodes:
            node.shutdown()


@pytest.fixture
def cluster(etcd: Any, namespace: str) -> Iterator[Cluster]:
    with Cluster(etcd.endpoints, namespace) as c:
        yield c


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, prefix: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    err = result.stderr.strip()
    assert "Traceback" not in result.stderr, result.stderr
    assert len(err.splitlines()) == 1, err
    assert err.startswith(prefix), err


# ---------------------------------------------------------------------------- status


def test_status_json(cluster: Cluster) -> None:
    result = etcdraft("status", "--json", *cluster.conn)
    assert result.returncode == 0, result.stderr
    st = json.loads(result.stdout)
    leader = cluster.leader()
    assert leader is not None
    assert st["leader"] == leader.node_id
    assert st["term"] > 0 and st["term_holder"] == leader.node_id
    assert st["height"] >= 3
    assert st["namespace"] == cluster.namespace
    members = {m["node_id"]: m for m in st["members"]}
    assert set(members) == {"n1", "n2", "n3"}
    for i, nid in enumerate(("n1", "n2", "n3")):
        m = members[nid]
        assert m["address"] == f"127.0.0.1:{7101 + i}"
        assert m["member"] and m["alive"] and m["candidate"]
        assert m["leader"] == (nid == leader.node_id)
        assert 0 < m["applied_height"] <= st["height"]
        assert m["lag"] == st["height"] - m["applied_height"]


def test_status_text_and_env(cluster: Cluster) -> None:
    env = {
        "ETCDRAFT_ENDPOINTS": ",".join(cluster.endpoints),
        "ETCDRAFT_NAMESPACE": cluster.namespace,
    }
    result = etcdraft("status", "--check", env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    leader = cluster.leader()
    assert leader is not None
    assert f"leader     {leader.node_id}" in out
    for nid in ("n1", "n2", "n3"):
        assert nid in out
    assert "NODE" in out and "LAG" in out


def test_status_of_an_empty_namespace(etcd: Any, namespace: str) -> None:
    result = etcdraft("status", "--endpoints", etcd.endpoints[0], "--namespace", namespace)
    assert result.returncode == 0, result.stderr
    assert "leader     none (no candidate)" in result.stdout
    check = etcdraft(
        "status", "--check", "--endpoints", etcd.endpoints[0], "--namespace", namespace
    )
    assert_one_line_error(check, 1, "etcdraft status: unhealthy: no leader")


# ---------------------------------------------------------------------------- members


def test_members_add_list_remove(cluster: Cluster) -> None:
    added = etcdraft("members", "add", "n4", "127.0.0.1:7999", *cluster.conn)
    assert added.returncode == 0, added.stderr
    assert "member n4 added at 127.0.0.1:7999" in added.stdout
    again = etcdraft("members", "add", "n4", "127.0.0.1:7999", *cluster.conn)
    assert again.returncode == 0 and "already" in again.stdout
    listed = etcdraft("members", "list", "--json", *cluster.conn)
    assert listed.returncode == 0, listed.stderr
    members = {m["id"]: m for m in json.loads(listed.stdout)}
    assert members["n4"] == {
        "id": "n4",
        "address": "127.0.0.1:7999",
        "alive": False,
        "leader": False,
        "candidate": False,
    }
    wait_until(lambda: "n4" in cluster.nodes[0].members(), 5, "n4 not seen by the nodes")
    # same address under another id: the old entry is replaced (Node.add_peer rule)
    moved = etcdraft("members", "add", "n5", "127.0.0.1:7999", *cluster.conn)
    assert moved.returncode == 0, moved.stderr
    text = etcdraft("members", "list", *cluster.conn).stdout
    assert "n5" in text and "n4" not in text
    removed = etcdraft("members", "remove", "n5", *cluster.conn)
    assert removed.returncode == 0 and "member n5 removed; 3 left" in removed.stdout
    unknown = etcdraft("members", "remove", "n9", *cluster.conn)
    assert unknown.returncode == 0 and "not a member" in unknown.stdout
    bad = etcdraft("members", "add", "a/b", "x:1", *cluster.conn)
    assert_one_line_error(bad, 2, "etcdraft members add: ")


def test_removing_the_leader_makes_it_step_down(cluster: Cluster) -> None:
    # paused, no follower deposes the leader (a loaded machine could otherwise move
    # leadership between picking the leader here and the command reading it)
    assert etcdraft("pause", *cluster.conn).returncode == 0
    leader = wait_until(cluster.leader, 10, "no leader")
    removed = etcdraft("members", "remove", leader.node_id, *cluster.conn)
    assert removed.returncode == 0, removed.stderr
    assert "it was the leader" in removed.stdout
    wait_until(lambda: not leader.is_leader(), 10, "the removed leader still leads")
    assert etcdraft("resume", *cluster.conn).returncode == 0  # now another may claim
    wait_until(
        lambda: (new := cluster.leader()) is not None and new is not leader, 10, "no new leader"
    )
    st = json.loads(etcdraft("status", "--json", *cluster.conn).stdout)
    assert st["leader"] not in ("", leader.node_id)
    assert leader.node_id not in [m["node_id"] for m in st["members"] if m["member"]]


# ---------------------------------------------------------------------------- resign


def test_resign_hands_over(cluster: Cluster) -> None:
    old = cluster.leader()
    assert old is not None
    result = etcdraft("resign", "--json", *cluster.conn)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["old_leader"] == old.node_id
    assert out["leader"] != old.node_id and out["term"] > out["old_term"]
    wait_until(lambda: cluster.leader() is not None and cluster.leader() is not old, 5)
    # the chain goes on under the new leader
    h = cluster.height()
    wait_until(lambda: cluster.height() > h + 3, 10, "no blocks after resign")
    # --to picks the successor
    current = cluster.leader()
    assert current is not None
    target = next(n.node_id for n in cluster.nodes if n is not current)
    text = etcdraft("resign", "--to", target, *cluster.conn)
    assert text.returncode == 0, text.stderr
    assert f"{current.node_id} stepped down" in text.stdout
    assert f"{target} leads" in text.stdout


def test_resign_without_successor_changes_nothing(etcd: Any, namespace: str) -> None:
    with Cluster(etcd.endpoints, namespace, n=1) as one:
        leader = one.leader()
        result = etcdraft("resign", *one.conn)
        assert_one_line_error(result, 1, "etcdraft resign: cannot resign n1")
        assert one.leader() is leader
        nobody = etcdraft("resign", "--to", "n7", *one.conn)
        assert_one_line_error(nobody, 1, "etcdraft resign: cannot resign n1: 'n7'")


# ---------------------------------------------------------------------------- watch


def test_watch_new_entries(cluster: Cluster) -> None:
    result = etcdraft("watch", "--count", "5", "--json", *cluster.conn)
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(entries) == 5
    heights = [e["height"] for e in entries]
    assert heights == list(range(heights[0], heights[0] + 5))
    indexes = [e["index"] for e in entries]
    assert indexes == sorted(indexes) and len(set(indexes)) == 5
    for e in entries:
        assert e["term"] > 0 and e["leader"] in ("n1", "n2", "n3")
        assert len(e["hash"]) == 64


def test_watch_from_height(cluster: Cluster) -> None:
    result = etcdraft("watch", "--from-height", "1", "--count", "3", *cluster.conn)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[1] for line in lines] == ["1", "2", "3"]
    assert all(" term " in line and " hash " in line for line in lines)


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["status", "--json"],
        ["members", "list"],
        ["members", "add", "n9", "h:1"],
        ["members", "remove", "n9"],
        ["resign"],
        ["watch", "--count", "1"],
    ],
    ids=lambda c: "-".join(c),
)
def test_unreachable_etcd_is_one_line(command: list[str]) -> None:
    started = time.monotonic()
    result = etcdraft(*command, "--endpoints", UNREACHABLE, "--timeout", "300ms")
    prog = "etcdraft " + (" ".join(command[:2]) if command[0] == "members" else command[0])
    assert_one_line_error(result, 1, f"{prog}: etcd unreachable at {UNREACHABLE} within 0.3s")
    assert "connection refused" in result.stderr
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("args", "prefix"),
    [
        (["status", "--endpoints", "not-a-url"], "etcdraft status: invalid config field"),
        (["status", "--namespace", "no-slash"], "etcdraft status: invalid config field"),
        (["status", "--timeout", "soon"], "etcdraft status: argument --timeout"),
        (["watch", "--count", "0"], "etcdraft watch: argument --count"),
        (["demo", "--nodes", "0"], "etcdraft demo: argument --nodes"),
        (["demo", "--fault", "melt"], "etcdraft demo: argument --fault"),
        (["bogus"], "etcdraft: argument COMMAND"),
        (["members"], "etcdraft members: the following arguments are required"),
        (["status", "--log-level", "chatty"], "etcdraft status: unknown log level"),
    ],
)
def test_bad_arguments_exit_2(args: list[str], prefix: str) -> None:
    result = etcdraft(*args, "--endpoints", UNREACHABLE) if args[0] == "watch" else etcdraft(*args)
    assert_one_line_error(result, 2, prefix)


def test_missing_endpoints() -> None:
    result = etcdraft("status")
    assert_one_line_error(result, 2, "etcdraft status: no etcd endpoints")
    assert "ETCDRAFT_ENDPOINTS" in result.stderr


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert etcdraft("--version").stdout.startswith("etcdraft ")
    commands = ("demo", "status", "history", "watch", "members", "resign", "pause", "resume")
    for command in (*commands, "config", "etcd", "node"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert f"usage: etcdraft {command}" in capsys.readouterr().out, command


# ---------------------------------------------------------------------------- etcd's side


def test_status_shows_etcds_side(cluster: Cluster) -> None:
    result = etcdraft("status", "-o", "json", *cluster.conn)
    assert result.returncode == 0, result.stderr
    etcd = json.loads(result.stdout)["etcd"]
    assert etcd["alarms"] == [] and etcd["alarms_error"] == ""
    (ep,) = etcd["endpoints"]
    assert ep["endpoint"] == cluster.endpoints[0] and ep["reachable"]
    assert ep["version"].startswith("3.") and ep["name"] and ep["member_id"]
    assert ep["leader"] == ep["name"] and ep["is_leader"]  # a 1-member etcd leads itself
    assert ep["raft_term"] >= 1 and ep["raft_index"] > 0
    assert 0 < ep["db_size_in_use"] <= ep["db_size"]
    text = etcdraft("status", *cluster.conn).stdout
    assert "ETCD ENDPOINT" in text and "RAFT LEADER" in text and "QUOTA" in text
    assert "etcd alarms  none" in text
    assert "ETCD ENDPOINT" not in etcdraft("status", "--no-etcd", *cluster.conn).stdout


def test_status_check_fails_on_an_unreachable_endpoint(cluster: Cluster) -> None:
    conn = [
        "--endpoints",
        f"{cluster.endpoints[0]},{UNREACHABLE}",
        "--namespace",
        cluster.namespace,
    ]
    result = etcdraft("status", "--check", "--timeout", "2s", *conn)
    assert_one_line_error(result, 1, "etcdraft status: unhealthy: etcd endpoint")
    assert f"{UNREACHABLE} unreachable (connection refused)" in result.stderr
    assert "unreachable" in result.stdout  # the table still printed, both endpoints
    assert cluster.endpoints[0] in result.stdout


def test_status_check_fails_on_an_etcd_alarm(etcd_cluster_factory: Any, namespace: str) -> None:
    from etcdraft._deadline import Deadline
    from etcdraft.etcd import EtcdClient
    from etcdraft.proto import etcd_rpc_pb2 as pb

    private = etcd_cluster_factory(size=1)
    conn = ["--endpoints", private.endpoints[0], "--namespace", namespace]
    client = EtcdClient(private.endpoints, name="test-alarm")
    try:
        member = client.admin.status(private.endpoints[0]).member_id
        # the NOSPACE alarm as etcd raises it when its backend is full
        client.request(
            lambda s: s.maintenance.Alarm,
            pb.AlarmRequest(action=pb.AlarmRequest.ACTIVATE, memberID=member, alarm=pb.NOSPACE),
            Deadline(5),
            what="alarm activate",
            check_floor=False,
        )
        result = etcdraft("status", "--check", *conn)
        assert_one_line_error(result, 1, "etcdraft status: unhealthy: no leader")
        assert "etcd alarm NOSPACE on " in result.stderr
        assert "etcd alarms  NOSPACE on " in result.stdout
        listed = json.loads(etcdraft("status", "--json", *conn).stdout)["etcd"]["alarms"]
        assert [a["alarm"] for a in listed] == ["NOSPACE"]
        assert listed[0]["member_id"] == format(member, "x")
        for alarm in client.admin.alarms():
            client.admin.alarm_disarm(alarm)
        cleared = etcdraft("status", "--check", *conn)
        assert "NOSPACE" not in cleared.stderr and "no leader" in cleared.stderr
    finally:
        client.close()


# ---------------------------------------------------------------------------- output, config


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["members", "list"],
        ["members", "add", "n7", "127.0.0.1:7997"],
        ["members", "remove", "n8"],
        ["history"],
        ["pause"],
        ["resume"],
    ],
    ids=lambda c: "-".join(c),
)
def test_every_command_prints_json_with_o_json(cluster: Cluster, command: list[str]) -> None:
    for flag in (["-o", "json"], ["--json"]):
        result = etcdraft(*command, *flag, *cluster.conn)
        assert result.returncode == 0, result.stderr
        assert len(result.stdout.splitlines()) == 1
        json.loads(result.stdout)
    both = etcdraft(*command, "-o", "table", "--json", *cluster.conn)
    assert_one_line_error(
        both,
        2,
        f"etcdraft {' '.join(command[:2] if command[0] == 'members' else command[:1])}: "
        "argument --json",
    )


def test_config_prints_the_effective_configuration_masked() -> None:
    env = {
        "ETCDRAFT_NODE_ID": "node-7",
        "ETCDRAFT_PASSWORD": "hunter2-secret",
        "ETCDRAFT_USERNAME": "ops",
        "ETCDRAFT_SEND_TIMEOUT": "750ms",
    }
    result = etcdraft("config", "--endpoints", "http://127.0.0.1:2379", env=env)
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[1:]}
    assert rows["node_id"] == ["node-7", "ETCDRAFT_NODE_ID"]
    assert rows["send_timeout"] == ["750ms", "ETCDRAFT_SEND_TIMEOUT"]
    assert rows["endpoints"] == ["http://127.0.0.1:2379", "--endpoints"]
    assert rows["password"][1] == "ETCDRAFT_PASSWORD" and rows["password"][0] != "hunter2-secret"
    assert rows["election_timeout"][1] == "default"
    as_json = json.loads(etcdraft("config", "-o", "json", env=env).stdout)
    assert as_json["node_id"] == "node-7" and as_json["password"] not in (None, "hunter2-secret")
    bad = etcdraft("config", env={**env, "ETCDRAFT_SEND_TIMEOUT": "soon"})
    assert_one_line_error(bad, 2, "etcdraft config: invalid config field 'send_timeout'")


def test_python_dash_m_etcdraft() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "etcdraft", "--version"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and result.stdout.startswith("etcdraft "), result.stderr


# ---------------------------------------------------------------------------- confirmation


def on_a_terminal(*args: str, answer: str) -> subprocess.CompletedProcess[str]:
    """Run the command with a pseudo-terminal as stdin, answering ``answer``."""
    import pty

    master, slave = pty.openpty()
    try:
        os.write(master, answer.encode() + b"\n")  # the line waits in the terminal
        base = {k: v for k, v in os.environ.items() if not k.startswith("ETCDRAFT_")}
        return subprocess.run(
            [sys.executable, "-m", "etcdraft", *args],
            stdin=slave,
            capture_output=True,
            text=True,
            timeout=30,
            env=base,
        )
    finally:
        os.close(slave)
        os.close(master)


def test_resign_and_remove_ask_on_a_terminal(cluster: Cluster) -> None:
    leader = cluster.leader()
    assert leader is not None
    no = on_a_terminal("resign", *cluster.conn, answer="n")
    assert_one_line_error(no, 1, f"force {leader.node_id} (leader, term ")
    assert "etcdraft resign: not confirmed: nothing changed" in no.stderr
    assert cluster.leader() is leader
    victim = next(n.node_id for n in cluster.nodes if n is not leader)
    keep = on_a_terminal("members", "remove", victim, *cluster.conn, answer="")
    assert keep.returncode == 1 and f"remove member {victim}?" in keep.stderr
    assert victim in cluster.nodes[0].members()
    yes = on_a_terminal("resign", "-o", "json", *cluster.conn, answer="yes")
    assert yes.returncode == 0, yes.stderr
    assert json.loads(yes.stdout)["old_leader"] == leader.node_id
    forced = on_a_terminal("members", "remove", victim, "--force", *cluster.conn, answer="n")
    assert forced.returncode == 0 and "?" not in forced.stderr, forced.stderr
    assert f"member {victim} removed" in forced.stdout


def test_tools_run_in_a_nodes_environment(
    etcd: Any, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node's container sets ETCDRAFT_RAFT_ADDR with ETCDRAFT_PEERS (compose.yaml);
    the operator tools run there too (`docker compose exec node1 etcdraft status`):
    they are no member, so the node-only settings must not fail their config."""
    env = {
        "ETCDRAFT_ENDPOINTS": etcd.endpoints[0],
        "ETCDRAFT_NAMESPACE": namespace,
        "ETCDRAFT_NODE_ID": "node1",
        "ETCDRAFT_RAFT_ADDR": "node1:7000",
        "ETCDRAFT_PEERS": "node1@node1:7000,node2@node2:7000",
    }
    result = etcdraft("status", "-o", "json", "--no-etcd", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["namespace"] == namespace
    for name, value in env.items():  # the library entry point, in the same environment
        monkeypatch.setenv(name, value)
    client, keys = status_connect()
    try:
        assert keys.namespace == namespace
    finally:
        client.close()
