"""Large blocks (issue #14) against real etcd: states beyond one etcd request are
written as fenced pieces and committed by one fenced manifest; followers apply them
whole or not at all; the limit is learned from etcd; garbage is cleaned; a full etcd is
a typed error that heals.

Raw reads go through etcd's JSON gateway (``RawEtcd`` of test_node_api), independently
of the library's client; the wire format is decoded here with the generated message."""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import wait_until
from test_node_api import (
    Harness,
    RawEtcd,
    block,
    followers_of,
    one_leader,
    wait_height,
)

from etcdraft import (
    Config,
    EtcdNoSpaceError,
    EtcdUnavailableError,
    HeightConflictError,
    InvalidStateError,
    LeadershipLostError,
    Node,
    NotLeaderError,
    RaftApplyMsg,
    RaftBlockState,
)
from etcdraft._deadline import Deadline
from etcdraft.blocks import MANIFEST_MAGIC, encode_manifest, make_manifest
from etcdraft.embedded import EtcdCluster
from etcdraft.etcd import EtcdClient
from etcdraft.keys import Keys
from etcdraft.node import MAX_ENTRY_BYTES
from etcdraft.proto.block_manifest_pb2 import BlockManifest

pytestmark = pytest.mark.timeout(180)

BIG = 10.0  # broadcast timeout for multi-MB states on a loaded 2-core machine

#: Timings for tens of MB: etcd 3.5 holds lease renewals until its applies catch up,
#: so a 1 s lease (test_node_api's FAST) can lapse while 64 MiB are applied.
SLOW: dict[str, Any] = {
    "election_timeout": "4s",
    "heartbeat_timeout": "1s",
    "leader_lease_timeout": "1s",
    "send_timeout": "2s",
}


@pytest.fixture
def harness(etcd: Any, namespace: str, tmp_path: Any) -> Iterator[Harness]:
    h = Harness(list(etcd.endpoints), namespace, tmp_path)
    yield h
    h.close()


def big_block(height: int, size: int) -> RaftBlockState:
    """A state of exactly ``size`` encoded bytes with random data (incompressible)."""
    base = block(height)
    pad = size - len(base.SerializeToString())
    for header in range(6, 1, -1):  # the data field's tag + length prefix
        state = block(height, data=os.urandom(max(0, pad - header)))
        if len(state.SerializeToString()) == size:
            return state
    raise AssertionError(f"cannot build a state of {size} bytes")


def manifest_of(raw: RawEtcd, keys: Keys, height: int) -> BlockManifest | None:
    kv = raw.get(keys.log(height))
    if kv is None or not kv["value"].startswith(MANIFEST_MAGIC):
        return None
    return BlockManifest.FromString(kv["value"][len(MANIFEST_MAGIC) :])


def pieces_under(raw: RawEtcd, keys: Keys, height: int | None = None) -> list[bytes]:
    prefix = keys.blocks(height) if height is not None else keys.blocks_prefix
    return [kv["key"] for kv in raw.prefix(prefix)]


def broadcast_through_any_leader(nodes: list[Any], state: RaftBlockState, within: float) -> Any:
    """Broadcast ``state`` through whichever node leads, retrying while leadership
    moves (NotLeaderError/LeadershipLostError/EtcdUnavailableError); returns the
    node whose broadcast succeeded."""
    deadline = time.monotonic() + within
    while True:
        leader = one_leader(nodes, timeout=max(1.0, deadline - time.monotonic()))
        try:
            leader.broadcast(state, timeout=60.0)
            return leader
        except (NotLeaderError, EtcdUnavailableError):
            if time.monotonic() > deadline:
                raise


def drain(q: queue.Queue[RaftApplyMsg]) -> list[RaftApplyMsg]:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


def test_the_watch_reader_never_reads_etcd(harness: Harness) -> None:
    """A follower that must read a large block's pieces back from etcd (its piece
    buffer holds nothing) and heal a broken watch does that I/O on its applier
    thread: no etcd call is made from the watch's threads."""
    nodes = harness.cluster(2)
    leader = one_leader(nodes)
    (follower,) = followers_of(leader, nodes)
    rep = follower._replicator
    rep._pieces.max_bytes = 0  # every piece evicted: the manifest needs range reads
    client = follower._ctx.client
    assert client is not None
    callers: list[str] = []
    real_range = client.range

    def range_spy(*args: Any, **kwargs: Any) -> Any:
        callers.append(threading.current_thread().name)
        return real_range(*args, **kwargs)

    client.range = range_spy  # type: ignore[method-assign]
    leader.broadcast(big_block(1, 3 * MAX_ENTRY_BYTES), timeout=BIG)
    wait_until(lambda: follower.get_state().height == 1, 10, "the follower applies height 1")
    assert any(name.startswith("etcdraft-apply-") for name in callers), callers
    heals = rep.heals["reconnect"]
    watcher = rep.watcher
    assert watcher is not None
    client.report_failure(watcher._current_endpoint)  # the watch breaks and heals
    wait_until(lambda: rep.heals["reconnect"] > heals, 10, "a reconnect heal")
    leader.broadcast(big_block(2, 2 * MAX_ENTRY_BYTES), timeout=BIG)
    wait_until(lambda: follower.get_state().height == 2, 10, "the follower applies height 2")
    watch_threads = sorted({n for n in callers if n.startswith("etcdraft-watch-")})
    assert not watch_threads, f"etcd reads on the watch's threads: {watch_threads}"


# ----------------------------------------------------------------------- sizes


def test_sizes_around_one_request_and_the_wire_format(harness: Harness) -> None:
    """Up to one request the bytes are stored exactly as before; one byte more is a
    manifest whose pieces reassemble to exactly the state; followers apply both."""
    nodes = harness.cluster(2)
    leader = one_leader(nodes)
    (follower,) = followers_of(leader, nodes)
    applied: queue.Queue[RaftApplyMsg] = queue.Queue()
    follower.set_apply_callback(applied)
    states = [
        big_block(1, MAX_ENTRY_BYTES - 1),
        big_block(2, MAX_ENTRY_BYTES),
        big_block(3, MAX_ENTRY_BYTES + 1),
    ]
    for state in states:
        leader.broadcast(state, timeout=BIG)
    for h in (1, 2):
        kv = harness.raw.get(harness.keys.log(h))
        assert kv is not None and kv["value"] == states[h - 1].SerializeToString()
    manifest = manifest_of(harness.raw, harness.keys, 3)
    assert manifest is not None, "the state over one request is not stored as a manifest"
    data = states[2].SerializeToString()
    assert manifest.size == len(data) and manifest.sha256 == hashlib.sha256(data).digest()
    assert manifest.height == 3 and manifest.hash == states[2].hash
    stored = b"".join(
        kv["value"] for kv in harness.raw.prefix(harness.keys.pieces(3, manifest.nonce))
    )
    assert stored == data
    got = [applied.get(timeout=10) for _ in range(3)]
    assert [m.state for m in got] == states
    assert follower.get_state() == states[2]


def test_five_mb_and_the_default_maximum_replicate_and_more_is_refused(harness: Harness) -> None:
    nodes = harness.cluster(2, **SLOW)
    leader = one_leader(nodes)
    (follower,) = followers_of(leader, nodes)
    five = big_block(1, 5 * 1000 * 1000)
    leader = broadcast_through_any_leader(nodes, five, within=60.0)
    (follower,) = followers_of(leader, nodes)
    wait_height(follower, 1, timeout=20)
    assert follower.get_state() == five
    maximum = leader.config.max_block_bytes
    assert maximum == 64 * 1024 * 1024
    top = big_block(2, maximum)
    # 64 MiB keep etcd (and this 2-core machine) busy for seconds: the leader may lose
    # its lease or be deposed meanwhile (its writes stay fenced). The block must still
    # get through, by whichever node leads; liveness bound only.
    leader = broadcast_through_any_leader(nodes, top, within=120.0)
    (follower,) = followers_of(leader, nodes)
    wait_height(follower, 2, timeout=60)
    assert follower.get_state().data == top.data
    over = big_block(3, maximum + 1)
    before = pieces_under(harness.raw, harness.keys, 3)
    with pytest.raises(InvalidStateError, match="max_block_bytes"):
        one_leader(nodes, timeout=30).broadcast(over, timeout=60.0)
    assert harness.raw.get(harness.keys.log(3)) is None
    assert pieces_under(harness.raw, harness.keys, 3) == before == []


def test_etcd_request_limit_is_learned_from_etcds_refusal(
    etcd_cluster_factory: Callable[..., EtcdCluster], namespace: str, tmp_path: Any
) -> None:
    """etcd with --max-request-bytes=262144 and a config that still says 1.5 MiB: the
    first refusal teaches the node etcd's limit; 2 MB blocks replicate."""
    cluster = etcd_cluster_factory(size=1, extra_args=["--max-request-bytes", "262144"])
    h = Harness(list(cluster.endpoints), namespace, tmp_path)
    try:
        nodes = h.cluster(2)
        leader = one_leader(nodes)
        (follower,) = followers_of(leader, nodes)
        states = [big_block(1, 1_000_000), big_block(2, 2_000_000)]
        for state in states:
            leader.broadcast(state, timeout=BIG)
        assert leader._broadcaster.request_limit < leader.config.etcd_max_request_bytes  # learned
        wait_height(follower, 2, timeout=20)
        assert follower.get_state() == states[1]
        manifest = manifest_of(h.raw, h.keys, 2)
        assert manifest is not None and manifest.piece_size < 262144
    finally:
        h.close()


# ----------------------------------------------------------------------- safety


def test_pieces_of_a_leader_that_died_never_become_a_block_and_are_removed(
    harness: Harness,
) -> None:
    """The leader writes a block's pieces and dies before the commit: no node applies
    anything at that height, the next leader writes its own block there, and the dead
    leader's pieces are removed."""
    nodes = harness.cluster(3)
    old = one_leader(nodes)
    rest = followers_of(old, nodes)
    queues = {n.node_id: queue.Queue() for n in rest}
    for n in rest:
        n.set_apply_callback(queues[n.node_id])
    old.broadcast(block(1))
    orphan = big_block(2, 3_000_000)
    term = old._elector.leadership.term
    fence = old._broadcaster._fence
    value = old._broadcaster._write_pieces(
        old._ctx.require_client(), orphan, orphan.SerializeToString(), fence, term, Deadline(BIG)
    )
    assert value.startswith(MANIFEST_MAGIC)
    orphan_pieces = pieces_under(harness.raw, harness.keys, 2)
    assert orphan_pieces, "precondition: the pieces were written"
    old.shutdown()  # dies before committing
    new = one_leader(rest, timeout=15)
    mine = big_block(2, 2_500_000)
    new.broadcast(mine, timeout=BIG)
    for n in rest:
        wait_height(n, 2, timeout=20)
        assert n.get_state() == mine
        heights = [m.state.height for m in drain(queues[n.node_id])]
        assert heights == [1, 2], heights
    wait_until(
        lambda: not set(orphan_pieces) & set(pieces_under(harness.raw, harness.keys, 2)),
        timeout=30,
        message="the dead leader's pieces were never removed",
    )
    manifest = manifest_of(harness.raw, harness.keys, 2)
    assert manifest is not None
    assert pieces_under(harness.raw, harness.keys, 2) == [
        kv["key"] for kv in harness.raw.prefix(harness.keys.pieces(2, manifest.nonce))
    ]


def test_a_deposed_leaders_piece_writes_are_fenced_out(harness: Harness) -> None:
    """A leader that lost its term (here: its election key deleted, as a depose does)
    cannot write a single piece, and its commit raises LeadershipLostError."""
    nodes = harness.cluster(2)
    old = one_leader(nodes)
    old.broadcast(block(1))
    lead = old._elector.leadership
    term, my_key = lead.term, lead.key
    fence = old._broadcaster._fence
    client = old._ctx.require_client()
    client.delete(my_key)  # what a depose transaction does to a silent leader
    stale = big_block(2, 2_000_000)
    data = stale.SerializeToString()
    value = old._broadcaster._write_pieces(client, stale, data, fence, term, Deadline(BIG))
    assert pieces_under(harness.raw, harness.keys, 2) == [], "a deposed leader wrote pieces"
    with pytest.raises(LeadershipLostError):
        old._broadcaster._commit(client, stale, data, value, fence, term, Deadline(BIG))
    assert harness.raw.get(harness.keys.log(2)) is None


def test_retry_of_an_ambiguous_large_broadcast_is_a_duplicate_not_a_conflict(
    harness: Harness,
) -> None:
    (leader,) = harness.cluster(1)
    one_leader([leader])
    state = big_block(1, 3_000_000)
    leader.broadcast(state, timeout=BIG)
    leader.broadcast(state, timeout=BIG)  # the same state again: a duplicate
    other = big_block(1, 3_000_000)
    with pytest.raises(HeightConflictError):
        leader.broadcast(other, timeout=BIG)
    assert (
        len(pieces_under(harness.raw, harness.keys, 1))
        == manifest_of(harness.raw, harness.keys, 1).pieces
    )  # type: ignore[union-attr]


def test_corrupt_or_missing_pieces_written_by_someone_else_are_never_applied(
    harness: Harness,
) -> None:
    nodes = harness.cluster(2)
    leader = one_leader(nodes)
    (follower,) = followers_of(leader, nodes)
    leader.broadcast(block(1))
    wait_height(follower, 1)
    keys = harness.keys
    # height 2: a manifest whose pieces do not match its digest
    good = big_block(2, 600_000)
    data = good.SerializeToString()
    bad = make_manifest(2, good.timestamp, good.hash, data, "foreign", 300_000)
    harness.raw.put(keys.piece(2, "foreign", 0), data[:300_000])
    harness.raw.put(keys.piece(2, "foreign", 1), b"\x00" * (len(data) - 300_000))
    harness.raw.put(keys.log(2), encode_manifest(bad))
    # height 3: a manifest whose pieces are missing
    missing = make_manifest(3, good.timestamp + 1, good.hash, data, "gone", 300_000)
    harness.raw.put(keys.log(3), encode_manifest(missing))
    wait_until(lambda: follower.corrupt_blocks >= 2, timeout=15, message="corrupt counted")
    assert follower.get_state().height == 1
    # the stream goes on above them
    leader.broadcast(block(4, timestamp=10**6), timeout=BIG)
    wait_height(follower, 4)
    assert follower.get_state().height == 4


# ----------------------------------------------------------------------- storage


def test_retention_is_bounded_by_bytes_and_pruning_takes_the_pieces(harness: Harness) -> None:
    (leader,) = harness.cluster(
        1, trailing_logs=1000, snapshot_threshold=1000, trailing_bytes=4 * 1024 * 1024
    )
    one_leader([leader])
    for h in range(1, 13):
        leader.broadcast(big_block(h, 1_000_000), timeout=BIG)
    wait_until(
        lambda: harness.raw.get(harness.keys.log(1)) is None,
        timeout=30,
        message="entries beyond trailing_bytes were never pruned",
    )
    wait_until(
        lambda: pieces_under(harness.raw, harness.keys, 1) == [],
        timeout=30,
        message="the pruned entries' pieces are still there",
    )
    kept = [kv for kv in harness.raw.prefix(harness.keys.log_prefix)]
    assert 4 <= len(kept) <= 9, f"kept {len(kept)} entries of 1 MB with trailing_bytes 4 MiB"


@pytest.fixture
def small_quota_etcd(
    etcd_cluster_factory: Callable[..., EtcdCluster],
) -> Iterator[EtcdCluster]:
    yield etcd_cluster_factory(size=1, extra_args=["--quota-backend-bytes", str(24 * 1024**2)])


def test_full_etcd_is_a_typed_error_loses_nothing_and_heals(
    small_quota_etcd: EtcdCluster, namespace: str, tmp_path: Any
) -> None:
    h = Harness(list(small_quota_etcd.endpoints), namespace, tmp_path)
    admin = EtcdClient(small_quota_etcd.endpoints, name="test-admin")
    try:
        nodes = h.cluster(2, trailing_logs=1000, snapshot_threshold=1000)
        leader = one_leader(nodes)
        acked: dict[int, RaftBlockState] = {}
        with pytest.raises(EtcdNoSpaceError) as full:
            for height in range(1, 200):
                state = big_block(height, 1_000_000)
                leader.broadcast(state, timeout=BIG)
                acked[height] = state
        failed = state
        assert acked, "etcd was full before the first block"
        assert leader.etcd_full
        assert leader.has_quorum() is False
        assert any(a.alarm == "NOSPACE" for a in admin.admin.alarms())
        for height in acked:  # nothing acknowledged is lost
            kv = admin.get(h.keys.log(height))
            assert kv is not None
        top = max(acked)
        if admin.get(h.keys.log(top + 1)) is not None:
            # etcd applies the write that crosses its quota and answers NOSPACE all the
            # same: the error must say the block may be committed (retried below)
            assert "may have been committed" in str(full.value), str(full.value)
        # the operator frees space: delete old entries, compact, defragment, disarm
        admin.delete(h.keys.log(1), h.keys.log(top - 2))
        admin.delete(h.keys.blocks(1), h.keys.blocks(top - 2))
        rev = admin.range(h.keys.log_prefix, None, limit=1).revision
        admin.compact(rev)
        for url in small_quota_etcd.endpoints:
            admin.admin.defragment(url)
        for alarm in admin.admin.alarms():
            admin.admin.alarm_disarm(alarm)

        # while etcd was full the leader's heartbeats failed too: another node may
        # have deposed it (fenced, safe); whichever node leads must write again
        resumed: list[Node] = []

        def writes_again() -> bool:
            try:  # the block that failed, retried as is (idempotent)
                resumed.append(broadcast_through_any_leader(nodes, failed, 5.0))
            except (EtcdNoSpaceError, NotLeaderError, EtcdUnavailableError, AssertionError):
                return False
            return True

        wait_until(writes_again, timeout=60, message="broadcasts never resumed")
        assert resumed[0].has_quorum() is True and not resumed[0].etcd_full
        assert resumed[0].get_state() == failed
        resumed[0].broadcast(big_block(top + 2, 100_000), timeout=BIG)  # and the next
    finally:
        admin.close()
        h.close()


def test_manifest_and_pieces_keys_are_known_to_the_node_not_foreign(harness: Harness) -> None:
    nodes = harness.cluster(2)
    leader = one_leader(nodes)
    (follower,) = followers_of(leader, nodes)
    leader.broadcast(big_block(1, 2_000_000), timeout=BIG)
    wait_height(follower, 1, timeout=20)
    assert follower.foreign_keys == 0 and leader.foreign_keys == 0
    assert follower._replicator._pieces.size == 0, "pieces kept after their block was applied"


def test_config_sizes_accept_units() -> None:
    cfg = Config(
        node_id="n", max_block_bytes="5MiB", etcd_max_request_bytes="256KiB", trailing_bytes="1GB"
    )
    assert cfg.max_block_bytes == 5 * 1024**2
    assert cfg.etcd_max_request_bytes == 256 * 1024
    assert cfg.trailing_bytes == 10**9
