"""Unit tests of the chaos judge (``chaos_harness.judge``) on synthetic records: it
must pass a clean history and catch each kind of violation (double sign, lost,
altered or unverifiable acknowledgement, disordered or gapped apply stream, applied
block not the stored one or not stored at all, a log with holes, undecodable values
or values changing between reads, slow failover, acknowledgements without quorum or
while cut off, slow recovery of production, a stale leader acknowledging, a node that
never caught up, has_quorum() saying True after a newer term acknowledged a write, an
acknowledgement after the node's local lease deadline, and a full etcd: an
acknowledged block stored during the alarm, has_quorum() saying True, no typed
error), and report etcd's own faults apart.

The judge's independent reader (``etcd_raw``: raw gRPC range reads and a decoder of
the wire format written for the test) is checked against the library's encoding and
against real etcd."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from chaos_harness import EtcdLog, Fault, LogEntry, Timing, Verdict, judge, read_etcd_log
from etcd_raw import MANIFEST_MAGIC, RawEtcd, compare_members, decode_block

from etcdraft.proto import RaftBlockState
from etcdraft.proto.block_manifest_pb2 import BlockManifest

TIMING = Timing()  # election 1 s, send 0.5 s: failover bound 2 s, quorum bound 1 s


def h(height: int, salt: str = "") -> str:
    return hashlib.sha256(f"block-{height}{salt}".encode()).hexdigest()


def etcd_log(heights: Iterable[int], pruned: int = 0) -> EtcdLog:
    return EtcdLog(
        entries={x: LogEntry(h(x), 1000 + x, 100 + x) for x in heights},
        pruned=pruned,
    )


class History:
    """Builds record dirs: ``History(tmp_path).node("n0").start(0).apply(...)``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dirs: dict[str, Path] = {}

    def node(self, nid: str) -> NodeHistory:
        d = self.root / nid
        d.mkdir(parents=True, exist_ok=True)
        self.dirs[nid] = d
        return NodeHistory(d)


class NodeHistory:
    def __init__(self, d: Path) -> None:
        self.d = d

    def _write(self, name: str, rec: dict[str, Any]) -> NodeHistory:
        with open(self.d / f"{name}.jsonl", "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        return self

    def event(self, ev: str, t: float) -> NodeHistory:
        return self._write("events", {"ev": ev, "t": t})

    def ack(self, height: int, t: float, salt: str = "", **extra: float) -> NodeHistory:
        """``extra``: the toy's ``term``, ``lease_dl``, ``belief_dl``."""
        rec = {"h": height, "hash": h(height, salt), "ts": height, "t": t, **extra}
        return self._write("acks", rec)

    def quorum(self, answer: bool, t0: float, term: int) -> NodeHistory:
        return self._write("quorum", {"q": answer, "t0": t0, "t": t0 + 0.01, "term": term})

    def error(self, height: int, err: str, t: float) -> NodeHistory:
        return self._write("errors", {"h": height, "err": err, "term": 1, "t": t})

    def apply(
        self, height: int, t: float, *, index: int | None = None, term: int = 1, salt: str = ""
    ) -> NodeHistory:
        i = 100 + height if index is None else index
        return self._write(
            "applied", {"i": i, "term": term, "h": height, "hash": h(height, salt), "t": t}
        )

    def applies(self, heights: Iterable[int], t0: float, term: int = 1) -> NodeHistory:
        for k, x in enumerate(heights):
            self.apply(x, t0 + k * 0.02, term=term)
        return self


def clean(tmp_path: Path, top: int = 20) -> History:
    """n0 leads and acknowledges 1..top; n1, n2 follow; everyone applies 1..top."""
    hist = History(tmp_path)
    n0 = hist.node("n0").event("start", 0.0).event("leader", 0.1)
    for x in range(1, top + 1):
        n0.ack(x, 0.1 + x * 0.02)
    for nid in ("n0", "n1", "n2"):
        node = hist.node(nid)
        if nid != "n0":
            node.event("start", 0.0).event("follower", 0.1)
        node.applies(range(1, top + 1), 0.11)
    return hist


def checks(verdict: Verdict) -> set[str]:
    return {v.check for v in verdict.violations}


def test_clean_history_passes(tmp_path: Path) -> None:
    hist = clean(tmp_path)
    verdict = judge(hist.dirs, etcd_log(range(1, 21)), [], TIMING, final_head=20)
    assert verdict.ok, verdict.report()
    assert (verdict.acks, verdict.heights, verdict.applied) == (20, 20, 60)


def test_double_sign_is_caught(tmp_path: Path) -> None:
    hist = clean(tmp_path)
    # a stale leader acknowledges another block at height 7
    hist.node("n1").ack(7, 5.0, salt="stale")
    verdict = judge(hist.dirs, etcd_log(range(1, 21)), [], TIMING)
    assert "double-sign" in checks(verdict), verdict.report()
    assert any("height 7" in v.message for v in verdict.violations)


def test_lost_and_altered_acks_are_caught(tmp_path: Path) -> None:
    hist = clean(tmp_path)
    hist.node("n0").ack(21, 1.0)  # acknowledged, never in etcd
    log = etcd_log(range(1, 21))
    log.entries[5] = LogEntry(h(5, "other"), 1005, 105)  # replaced in etcd
    verdict = judge(hist.dirs, log, [], TIMING)
    assert {"lost-ack", "altered-ack"} <= checks(verdict), verdict.report()
    assert any("height 21" in v.message for v in verdict.violations if v.check == "lost-ack")


def test_acks_below_the_pruned_marker_are_unverified_not_lost(tmp_path: Path) -> None:
    hist = clean(tmp_path)
    verdict = judge(hist.dirs, etcd_log(range(11, 21), pruned=10), [], TIMING)
    assert verdict.ok, verdict.report()
    assert verdict.unverified == 10


def test_etcd_value_changing_between_reads_is_caught() -> None:
    archive = etcd_log(range(1, 5))
    later = etcd_log(range(1, 6))
    later.entries[3] = LogEntry(h(3, "rewritten"), 1003, 999)
    archive.merge(later)
    assert archive.changed and "log/3" in archive.changed[0]
    assert archive.head == 5


@pytest.mark.parametrize(
    ("bad_record", "check"),
    [
        ({"height": 10, "index": 105}, "apply-order"),  # index goes backwards
        ({"height": 9}, "apply-order"),  # height repeats
        ({"height": 10, "term": 0}, "apply-order"),  # term decreases
        ({"height": 12}, "apply-gap"),  # height 10, 11 skipped
    ],
)
def test_out_of_order_apply_stream_is_caught(
    tmp_path: Path, bad_record: dict[str, int], check: str
) -> None:
    hist = History(tmp_path)
    node = hist.node("n1").event("start", 0.0).event("follower", 0.1)
    node.applies(range(1, 10), 0.2)
    node.apply(
        bad_record["height"],
        1.0,
        index=bad_record.get("index"),
        term=bad_record.get("term", 1),
    )
    verdict = judge(hist.dirs, etcd_log(range(1, 21)), [], TIMING)
    assert check in checks(verdict), verdict.report()


def test_restart_after_a_kill_may_reapply_but_after_a_graceful_stop_must_continue(
    tmp_path: Path,
) -> None:
    hist = History(tmp_path)
    # lifetime 1 killed after applying 1..10; lifetime 2 resumes from an older snapshot
    node = hist.node("n1").event("start", 0.0).event("follower", 0.1)
    node.applies(range(1, 11), 0.2)
    node.event("start", 2.0).event("follower", 2.1).applies(range(8, 16), 2.2)
    assert judge(hist.dirs, etcd_log(range(1, 21)), [], TIMING).ok

    hist2 = History(tmp_path / "graceful")
    node = hist2.node("n1").event("start", 0.0).event("follower", 0.1)
    node.applies(range(1, 11), 0.2).event("stop", 1.0)
    node.event("start", 2.0).event("follower", 2.1).applies(range(8, 16), 2.2)
    verdict = judge(hist2.dirs, etcd_log(range(1, 21)), [], TIMING)
    assert "apply-order" in checks(verdict), verdict.report()


def test_applied_block_not_in_etcd_is_caught(tmp_path: Path) -> None:
    hist = History(tmp_path)
    node = hist.node("n2").event("start", 0.0)
    node.applies(range(1, 5), 0.1).apply(5, 0.5, salt="forged")
    verdict = judge(hist.dirs, etcd_log(range(1, 6)), [], TIMING)
    assert "applied-mismatch" in checks(verdict), verdict.report()


def test_etcd_timestamps_must_increase(tmp_path: Path) -> None:
    log = etcd_log(range(1, 6))
    log.entries[4] = LogEntry(h(4), 1, 104)
    verdict = judge(History(tmp_path).dirs, log, [], TIMING)
    assert "etcd-timestamp" in checks(verdict)


@pytest.mark.parametrize(
    ("new_leader_after", "ok"), [(0.9, True), (1.99, True), (2.5, False), (None, False)]
)
def test_slow_failover_is_caught(tmp_path: Path, new_leader_after: float | None, ok: bool) -> None:
    hist = clean(tmp_path)
    kill = 10.0
    if new_leader_after is not None:
        hist.node("n1").event("leader", kill + new_leader_after)
    fault = Fault("node_kill", "n0", kill, kill + 0.5, healed=kill + 3.0, was_leader=True)
    verdict = judge(hist.dirs, etcd_log(range(1, 21)), [fault], TIMING)
    assert verdict.ok is ok, verdict.report()
    if not ok:
        assert checks(verdict) == {"slow-failover"}
        assert verdict.violations[0].fault == 0
        assert verdict.stats["node_kill"].violations == 1


def test_stopped_leader_must_be_replaced_by_another_node(tmp_path: Path) -> None:
    hist = clean(tmp_path)
    # only the stopped leader itself "leads" again (after SIGCONT): not a failover
    hist.node("n0").event("leader", 12.5)
    fault = Fault("node_stop", "n0", 10.0, 12.0, healed=12.6, was_leader=True)
    verdict = judge(hist.dirs, etcd_log(range(1, 21)), [fault], TIMING)
    assert "slow-failover" in checks(verdict), verdict.report()


def test_stale_leader_acknowledging_after_sigcont_is_caught(tmp_path: Path) -> None:
    hist = clean(tmp_path, top=30)
    hist.node("n1").event("leader", 11.0)
    fault = Fault("node_stop", "n0", 10.0, 12.0, healed=12.5, was_leader=True)
    # an in-flight reply right after SIGCONT is fine; one 2 s later is not
    hist.node("n0").ack(21, 12.1).ack(22, 14.0)
    verdict = judge(hist.dirs, etcd_log(range(1, 31)), [fault], TIMING)
    assert checks(verdict) == {"stale-leader-ack"}, verdict.report()
    assert "height 22" in verdict.violations[0].message


def test_quorum_loss_bounds(tmp_path: Path) -> None:
    hist = clean(tmp_path, top=40)
    loss, back = 10.0, 13.0
    fault = Fault("quorum_loss", "m0+m1", loss, back, healed=back + 1.0)
    n0 = hist.node("n0")
    n0.ack(21, loss + 0.3)  # committed just before: acknowledged within send_timeout
    n0.ack(22, back + 0.8)  # production back quickly
    log = etcd_log(range(1, 41))
    assert judge(hist.dirs, log, [fault], TIMING).ok

    n0.ack(23, loss + 1.2)  # acknowledged without quorum, past send_timeout + margin
    verdict = judge(hist.dirs, log, [fault], TIMING)
    assert checks(verdict) == {"ack-without-quorum"}, verdict.report()


def test_slow_production_after_quorum_returns_is_caught(tmp_path: Path) -> None:
    hist = clean(tmp_path, top=40)
    fault = Fault("quorum_loss", "m0+m1", 10.0, 13.0, healed=30.0)
    hist.node("n0").ack(21, 13.0 + 11.0)
    verdict = judge(hist.dirs, etcd_log(range(1, 41)), [fault], TIMING)
    assert checks(verdict) == {"slow-production"}, verdict.report()


def test_unhealed_fault_and_lagging_node_are_caught(tmp_path: Path) -> None:
    hist = clean(tmp_path)
    hist.node("n0").applies(range(21, 26), 3.0)
    fault = Fault("etcd_kill", "m1", 5.0, 6.0, healed=None)
    verdict = judge(hist.dirs, etcd_log(range(1, 26)), [fault], TIMING, final_head=25)
    assert checks(verdict) == {"no-recovery", "not-converged"}, verdict.report()
    lagging = {v.message.split()[0] for v in verdict.violations if v.check == "not-converged"}
    assert lagging == {"n1", "n2"}


def test_torn_last_line_is_tolerated_and_table_renders(tmp_path: Path) -> None:
    hist = clean(tmp_path)
    with open(hist.dirs["n1"] / "applied.jsonl", "a") as fh:
        fh.write('{"i": 200, "term": 1, "h"')  # SIGKILL mid-write
    faults = [Fault("etcd_pause", "m2", 0.2, 0.4, healed=0.45)]
    verdict = judge(hist.dirs, etcd_log(range(1, 21)), faults, TIMING, final_head=20)
    assert verdict.ok, verdict.report()
    table = verdict.table()
    assert "| etcd_pause | 1 |" in table
    assert "no violations" in verdict.report()


# --------------------------------------------------------------- the remaining checks


def test_applied_block_never_stored_is_caught(tmp_path: Path) -> None:
    hist = History(tmp_path)
    hist.node("n2").event("start", 0.0).applies(range(1, 7), 0.1)
    verdict = judge(hist.dirs, etcd_log(range(1, 6)), [], TIMING)
    assert checks(verdict) == {"applied-not-in-etcd"}, verdict.report()
    assert "height 6" in verdict.violations[0].message


def test_log_written_out_of_height_order_is_caught(tmp_path: Path) -> None:
    log = etcd_log(range(1, 6))
    log.entries[3] = LogEntry(h(3), 1003, 110)  # written after height 4 (revision 104)
    verdict = judge(History(tmp_path).dirs, log, [], TIMING)
    assert checks(verdict) == {"etcd-revision"}, verdict.report()


def test_changed_corrupt_and_holed_logs_are_caught(tmp_path: Path) -> None:
    log = etcd_log(range(1, 6))
    log.changed.append("log/3: hash aaa at revision 103, later hash bbb at revision 120")
    log.corrupt.append("log/4: truncated varint")
    log.holes.append("revision 130: 1 height(s) missing between 1 and 5")
    verdict = judge(History(tmp_path).dirs, log, [], TIMING)
    assert checks(verdict) == {"etcd-log-changed", "etcd-log-corrupt", "etcd-log-hole"}


def test_acks_pruned_before_any_read_fail_a_strict_judge(tmp_path: Path) -> None:
    # a pruning bug that also moved the marker: invisible to a lenient judge only
    hist = clean(tmp_path)
    log = etcd_log(range(11, 21), pruned=10)
    assert judge(hist.dirs, log, [], TIMING).ok
    verdict = judge(hist.dirs, log, [], TIMING, unverified_ok=False)
    assert checks(verdict) == {"unverified-ack"}, verdict.report()
    assert len(verdict.violations) == 10


def test_harness_violations_are_counted_outside_faults(tmp_path: Path) -> None:
    from chaos_harness import Violation

    hist = clean(tmp_path)
    extra = [Violation("process-exit", "n1 exited by itself with code -6"),
             Violation("hung-stop", "n2 did not exit")]  # fmt: skip
    verdict = judge(hist.dirs, etcd_log(range(1, 21)), [], TIMING, extra=extra)
    assert checks(verdict) == {"process-exit", "hung-stop"}
    assert verdict.stats["(outside faults)"].violations == 2


def test_etcd_faults_are_reported_apart_from_violations(tmp_path: Path) -> None:
    hist = clean(tmp_path)
    fault = "after fault #3 etcd_kill: etcd members disagree on 1 key(s) at revision 90"
    verdict = judge(hist.dirs, etcd_log(range(1, 21)), [], TIMING, etcd_faults=[fault])
    assert verdict.ok  # not an etcdraft violation ...
    assert verdict.etcd_faults == [fault]  # ... but reported, and a run fails on it
    assert "ETCD FAULT" in verdict.report() and fault in verdict.report()


@pytest.mark.parametrize("kind", ["partition_blackhole", "partition_reset", "partition_one_way"])
def test_acknowledgement_while_cut_off_is_caught(tmp_path: Path, kind: str) -> None:
    hist = clean(tmp_path, top=30)
    fault = Fault(kind, "n0", 10.0, 10.6, healed=10.7, was_leader=True)
    hist.node("n0").ack(21, 10.1)  # recorded just after the cut: an earlier answer
    assert judge(hist.dirs, etcd_log(range(1, 31)), [fault], TIMING).ok
    hist.node("n0").ack(22, 10.4)  # no answer can reach it by then
    verdict = judge(hist.dirs, etcd_log(range(1, 31)), [fault], TIMING)
    assert checks(verdict) == {"ack-while-partitioned"}, verdict.report()


@pytest.mark.parametrize(
    ("long", "new_leader_after", "ok"),
    [(True, 1.2, True), (True, 2.5, False), (True, None, False), (False, None, True)],
)
def test_leader_cut_off_past_its_lease_must_be_replaced(
    tmp_path: Path, long: bool, new_leader_after: float | None, ok: bool
) -> None:
    hist = clean(tmp_path, top=30)
    if new_leader_after is not None:
        hist.node("n1").event("leader", 10.0 + new_leader_after)
    end = 13.0 if long else 10.5
    fault = Fault(
        "partition_blackhole", "n0", 10.0, end, healed=end + 0.2, was_leader=True, long=long
    )
    verdict = judge(hist.dirs, etcd_log(range(1, 31)), [fault], TIMING)
    assert verdict.ok is ok, verdict.report()
    if not ok:
        assert checks(verdict) == {"slow-failover"}
    if new_leader_after is not None and new_leader_after < 2.0:
        assert verdict.stats["partition_blackhole"].worst_failover == pytest.approx(
            new_leader_after
        )


def test_cut_off_leader_acknowledging_after_the_heal_is_caught(tmp_path: Path) -> None:
    hist = clean(tmp_path, top=30)
    hist.node("n1").event("leader", 11.2)
    hist.node("n0").event("lost", 12.0)
    fault = Fault("partition_one_way", "n0", 10.0, 12.5, healed=12.8, was_leader=True, long=True)
    hist.node("n0").ack(22, 14.0)  # deposed meanwhile, never re-elected
    verdict = judge(hist.dirs, etcd_log(range(1, 31)), [fault], TIMING)
    assert checks(verdict) == {"stale-leader-ack"}, verdict.report()
    # its role records said "leader" from 0.1 until 12.0, n1's from 11.2: 0.8 s of overlap
    assert verdict.stats["partition_one_way"].worst_overlap == pytest.approx(0.8)
    hist.node("n0").event("leader", 13.5)  # elected again: its acknowledgement is fine
    assert judge(hist.dirs, etcd_log(range(1, 31)), [fault], TIMING).ok


# --------------------------------------------------------------- the independent reader


def _state(height: int, **kw: Any) -> RaftBlockState:
    return RaftBlockState(height=height, timestamp=(1_700_000_000_000_000_000 + height) % 2**64,
                          hash=hashlib.sha256(b"%d" % height).digest(), **kw)  # fmt: skip


@pytest.mark.parametrize("height", [1, 127, 128, 300, 2**32 + 5, 2**64 - 1])
def test_decoder_agrees_with_the_protobuf_encoding(height: int) -> None:
    state = _state(height, header=b"h" * 200, data=b"\x00" * 70_000,
                   last_submitted_da_header_height=7)  # fmt: skip
    block = decode_block(state.SerializeToString())
    assert (block.height, block.timestamp, block.hash) == (
        state.height,
        state.timestamp,
        state.hash,
    )
    assert not block.manifest


def test_decoder_reads_a_large_block_manifest() -> None:
    manifest = BlockManifest(
        height=9, timestamp=99, hash=b"\x01" * 32, size=10**7, sha256=b"\x02" * 32,
        nonce="ab12", pieces=7, piece_size=1 << 20,
    )  # fmt: skip
    block = decode_block(MANIFEST_MAGIC + manifest.SerializeToString())
    assert (block.height, block.timestamp, block.hash, block.manifest) == (
        9,
        99,
        b"\x01" * 32,
        True,
    )


@pytest.mark.parametrize(
    "value",
    [
        _state(5).SerializeToString()[:-3],  # truncated inside the hash
        b"\x08\xff\xff",  # truncated varint
        b"\x0b\x01",  # wire type 3 (a group)
        b"\x0a\x01x",  # height as bytes
        b"hello world",
    ],
)
def test_decoder_refuses_what_is_not_a_block(value: bytes) -> None:
    with pytest.raises(ValueError):
        decode_block(value)


def test_raw_reader_reads_real_etcd(etcd: Any, namespace: str) -> None:
    with RawEtcd(etcd.endpoints[0]) as conn:
        ns = namespace.encode()
        for x in range(3, 8):
            conn.put(ns + b"/log/%020d" % x, _state(x).SerializeToString())
        conn.put(ns + b"/pruned", b"2")
        log = read_etcd_log([conn], namespace)
        assert sorted(log.entries) == [3, 4, 5, 6, 7]
        assert log.entries[5].hash == _state(5).hash.hex()
        assert log.pruned == 2 and not log.corrupt and not log.holes
        # a foreign value, a value of another height, and a hole at 9 (pruning deletes
        # only the oldest heights: one read must be contiguous)
        conn.put(ns + b"/log/%020d" % 8, b"garbage")
        conn.put(ns + b"/log/%020d" % 10, _state(11).SerializeToString())
        log = read_etcd_log([conn], namespace)
        assert any("log/8" in c for c in log.corrupt), log.corrupt
        assert any("log/10 holds height 11" in c for c in log.corrupt), log.corrupt
        conn.put(ns + b"/log/%020d" % 12, _state(12).SerializeToString())
        log = read_etcd_log([conn], namespace)
        assert any("missing between 3 and 12" in x for x in log.holes), log.holes


def test_members_that_disagree_are_reported(etcd_cluster_factory: Any) -> None:
    # two single-member clusters given the same history but one different value stand
    # for two members of one cluster that diverged (etcd 3.5.0-3.5.2 after a SIGKILL)
    ns = "/etcdraft-test/disagree"
    urls = [etcd_cluster_factory(size=1).endpoints[0], etcd_cluster_factory(size=1).endpoints[0]]
    for url, value in zip(urls, (b"one", b"two"), strict=True):
        with RawEtcd(url) as conn:
            for _ in range(3):  # the same revisions on both
                conn.put(ns.encode() + b"/same", b"x")
            conn.put(ns.encode() + b"/log/1", value)
    _, diffs = compare_members(urls, ns)
    assert [d.key for d in diffs] == [ns.encode() + b"/log/1"], diffs


# ------------------------------------------------- has_quorum, deadlines, a full etcd


def test_has_quorum_true_after_a_newer_term_acknowledged_is_caught(tmp_path: Path) -> None:
    hist = clean(tmp_path, top=30)
    n0, n1 = hist.node("n0"), hist.node("n1")
    n0.ack(21, 9.0, term=100).quorum(True, 9.5, term=100)
    n1.event("leader", 9.8).ack(22, 10.0, term=200).ack(23, 10.1, term=200)
    n1.quorum(True, 10.5, term=200)  # the newer term's own answer
    n0.quorum(True, 9.9, term=100)  # started before term 200's first acknowledgement
    n0.quorum(False, 10.6, term=100)
    verdict = judge(hist.dirs, etcd_log(range(1, 31)), [], TIMING)
    assert verdict.ok, verdict.report()
    assert (verdict.quorum_answers, verdict.quorum_true) == (4, 3)
    n0.quorum(True, 10.2, term=100)  # its key was gone by then: must be False
    verdict = judge(hist.dirs, etcd_log(range(1, 31)), [], TIMING)
    assert checks(verdict) == {"quorum-after-newer-term"}, verdict.report()
    assert "term 200" in verdict.violations[0].message


def test_has_quorum_of_an_older_term_of_the_same_node_is_not_compared(tmp_path: Path) -> None:
    hist = clean(tmp_path, top=30)
    # n0 leads term 100, then (re-elected) term 300; its own newer term is no violation
    hist.node("n0").ack(21, 9.0, term=100).ack(22, 10.0, term=300).quorum(True, 10.5, term=300)
    hist.node("n1").quorum(True, 9.5, term=0)  # no term: not comparable (and harmless)
    assert judge(hist.dirs, etcd_log(range(1, 31)), [], TIMING).ok


def test_a_write_sent_after_the_local_lease_deadline_is_caught(tmp_path: Path) -> None:
    hist = clean(tmp_path, top=30)
    n0 = hist.node("n0")
    n0.ack(21, 10.0, term=100, sent=9.95, lease_dl=10.6, belief_dl=10.1)
    n0.ack(22, 10.2, term=100, sent=10.0, lease_dl=10.6, belief_dl=10.1)  # past belief
    verdict = judge(hist.dirs, etcd_log(range(1, 31)), [], TIMING)
    assert verdict.ok, verdict.report()
    assert verdict.acks_past_belief == 1
    assert verdict.worst_past_belief == pytest.approx(0.1)
    # sent before the deadline, answered after it: committed and fenced, counted only
    n0.ack(23, 10.7, term=100, sent=10.5, lease_dl=10.6)
    verdict = judge(hist.dirs, etcd_log(range(1, 31)), [], TIMING)
    assert verdict.ok, verdict.report()
    assert verdict.acks_past_lease == 1
    # sent after it: a leader acting on stale belief
    n0.ack(24, 10.9, term=100, sent=10.65, lease_dl=10.6)
    verdict = judge(hist.dirs, etcd_log(range(1, 31)), [], TIMING)
    assert checks(verdict) == {"sent-after-deadline"}, verdict.report()
    # the same record while the node was SIGSTOPped: its time is when it ran again
    stop = Fault("node_stop", "n0", 10.3, 10.95, healed=11.1, was_leader=True)
    hist.node("n1").event("leader", 10.5)
    verdict = judge(hist.dirs, etcd_log(range(1, 31)), [stop], TIMING)
    assert "sent-after-deadline" not in checks(verdict), verdict.report()


def _full(revision: int = 120) -> Fault:
    # etcd_log(): log/<x> at revision 100 + x; acknowledgements of clean() at 0.1 + x*0.02
    return Fault("etcd_nospace", "etcd", 0.3, 1.5, healed=1.7, revision=revision)


def test_a_full_etcd_that_behaves_passes(tmp_path: Path) -> None:
    hist = clean(tmp_path, top=20)
    n0 = hist.node("n0")
    n0.error(21, "EtcdNoSpaceError", 0.52).error(21, "NotLeaderError", 0.6)
    n0.quorum(True, 0.35, term=1)  # within full_margin of the alarm
    n0.quorum(False, 1.0, term=1)
    verdict = judge(hist.dirs, etcd_log(range(1, 21)), [_full()], TIMING)
    assert verdict.ok, verdict.report()
    assert verdict.stats["etcd_nospace"].errors == {"EtcdNoSpaceError": 1, "NotLeaderError": 1}


def test_a_full_etcd_acknowledging_a_block_stored_during_the_alarm_is_caught(
    tmp_path: Path,
) -> None:
    hist = clean(tmp_path, top=20)
    hist.node("n0").error(21, "EtcdNoSpaceError", 0.52)
    # heights 11..20 were acknowledged at 0.32..0.5 and stored at revisions 111..120
    verdict = judge(hist.dirs, etcd_log(range(1, 21)), [_full(revision=110)], TIMING)
    assert checks(verdict) == {"ack-while-full"}, verdict.report()


def test_a_full_etcd_with_has_quorum_true_is_caught(tmp_path: Path) -> None:
    hist = clean(tmp_path, top=20)
    hist.node("n0").error(21, "EtcdNoSpaceError", 0.52).quorum(True, 1.0, term=1)
    verdict = judge(hist.dirs, etcd_log(range(1, 21)), [_full()], TIMING)
    assert checks(verdict) == {"quorum-while-full"}, verdict.report()


def test_a_full_etcd_without_the_typed_error_is_caught(tmp_path: Path) -> None:
    hist = clean(tmp_path, top=20)
    hist.node("n0").error(21, "EtcdTimeoutError", 0.9)  # a hang, not the typed error
    verdict = judge(hist.dirs, etcd_log(range(1, 21)), [_full()], TIMING)
    assert checks(verdict) == {"untyped-full-error"}, verdict.report()
    assert "EtcdTimeoutError" in verdict.violations[0].message
    # no leader when etcd filled up: broadcasts refused locally never reached etcd
    quiet = clean(tmp_path / "quiet", top=20)
    quiet.node("n0").error(21, "NotLeaderError", 0.9)
    assert judge(quiet.dirs, etcd_log(range(1, 21)), [_full()], TIMING).ok
    # a fault the harness could not fill is not judged
    unfilled = Fault("etcd_nospace", "etcd", 0.3, 1.5, healed=1.7, revision=None)
    assert judge(hist.dirs, etcd_log(range(1, 21)), [unfilled], TIMING).ok
