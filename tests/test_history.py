"""``etcdraft history`` and :func:`etcdraft.history.read_history` against real etcd:
the terms in order with their leaders, revision spans and blocks; the cause each term
record states (first, handover, takeover, election), and for records in the older
bare-node-id form the causes etcd's data allows (``first``, else ``unknown``)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import wait_until
from test_cli import Cluster, etcdraft

from etcdraft.etcd import EtcdClient
from etcdraft.history import read_history
from etcdraft.keys import Keys
from etcdraft.status import read_status
from etcdraft.view import TermRecord


@pytest.fixture
def cluster(etcd: Any, namespace: str) -> Iterator[Cluster]:
    with Cluster(etcd.endpoints, namespace) as c:
        yield c


def test_term_record_forms() -> None:
    assert TermRecord.parse(b"node-1") == TermRecord("node-1", "")
    written = TermRecord("n3", "election").encode()
    assert written == b'{"node":"n3","cause":"election"}'
    assert TermRecord.parse(written) == TermRecord("n3", "election")
    assert TermRecord.parse(b'{"node":"n2","cause":"takeover","prev":12}') == TermRecord(
        "n2", "takeover"
    )
    # one member only: that is a (strange but valid) node id, not the JSON form
    assert TermRecord.parse(b'{"node":"x"}') == TermRecord('{"node":"x"}', "")
    assert TermRecord.parse(b"{not json").node_id == "{not json"
    assert TermRecord.parse(b'{"node":1,"cause":"x"}').node_id == '{"node":1,"cause":"x"}'


def test_history_follows_the_leaders(cluster: Cluster) -> None:
    leaders = []
    for _ in range(2):  # two handovers: three terms
        old = cluster.leader()
        assert old is not None
        leaders.append(old.node_id)
        h = cluster.height()
        wait_until(lambda: cluster.height() > h + 2, 10, "no blocks")  # noqa: B023
        old.resign_leader(timeout=10)
        wait_until(
            lambda: (n := cluster.leader()) is not None and n is not old,  # noqa: B023
            10,
            "no new leader",
        )
    current = cluster.leader()
    assert current is not None
    leaders.append(current.node_id)
    h = cluster.height()
    wait_until(lambda: cluster.height() > h + 2, 10, "no blocks")

    result = etcdraft("history", "-o", "json", *cluster.conn)
    assert result.returncode == 0, result.stderr
    hist = json.loads(result.stdout)
    terms = hist["terms"]
    assert [t["node_id"] for t in terms] == leaders
    assert [(t["cause"], t["recorded"]) for t in terms] == [
        ("first", True),
        ("handover", True),
        ("handover", True),
    ]
    revs = [t["revision"] for t in terms]
    assert revs == sorted(revs) and len(set(revs)) == 3
    for a, b in itertools.pairwise(terms):
        assert a["ended"] == b["revision"] and a["revisions"] == b["revision"] - a["revision"]
        assert not a["current"]
    assert terms[-1]["current"] and terms[-1]["ended"] is None
    assert terms[-1]["revisions"] == hist["revision"] - terms[-1]["revision"]
    st = read_status(_client(cluster), Keys(cluster.namespace))
    assert terms[-1]["term"] == st.term
    # the blocks: every height etcd holds is in exactly one term, in order
    assert all(t["blocks"] >= 3 for t in terms)
    assert terms[0]["first_height"] == 1
    for a, b in itertools.pairwise(terms):
        assert b["first_height"] == a["last_height"] + 1
    assert sum(t["blocks"] for t in terms) == terms[-1]["last_height"] <= st.height

    table = etcdraft("history", "--last", "2", *cluster.conn)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[1].split()[:4] == ["TERM", "LEADER", "BEGAN", "AT"]
    assert len(lines) == 4  # namespace, header, two terms
    assert "(current)" in lines[-1] and leaders[-1] in lines[-1]
    assert "HOW unknown" not in table.stderr  # every record says how its term began
    assert "handover" in lines[-1]
    assert "--json" not in table.stdout
    alias = etcdraft("history", "--json", "--no-blocks", *cluster.conn)
    assert [t["blocks"] for t in json.loads(alias.stdout)["terms"]] == [0, 0, 0]


def _client(cluster: Cluster) -> EtcdClient:
    client = cluster.nodes[0]._ctx.client
    assert client is not None
    return client


def test_history_reads_both_term_record_forms(etcd: Any, namespace: str) -> None:
    """A JSON record gives its cause; a bare node id (earlier versions) gives
    ``first`` for the earliest record, else ``unknown``; readers of the node id
    (status, the nodes' view) see the node id in both forms."""
    keys = Keys(namespace)
    client = EtcdClient(etcd.endpoints, name="test-history")
    try:
        client.put(keys.term(5), b"n1")
        client.put(keys.term(7), b"n3")
        client.put(keys.term(9), b'{"node":"n2","cause":"takeover","prev":5}')
        hist = read_history(client, keys)
        assert [(t.term, t.node_id, t.cause, t.recorded) for t in hist.terms] == [
            (5, "n1", "first", False),
            (7, "n3", "unknown", False),
            (9, "n2", "takeover", True),
        ]
        assert read_status(client, keys).term_holder == "n2"
        empty = etcdraft(
            "history", "--endpoints", etcd.endpoints[0], "--namespace", namespace + "x"
        )
        assert empty.returncode == 0 and "no term records" in empty.stdout
    finally:
        client.close()
