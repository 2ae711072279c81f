"""``etcdraft demo``: a real run (local 3-member etcd, 3 toy node processes, leader
kills), an interrupted run, and the invariant checks on made-up records."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from etcdraft.demo.check import Fault, _incarnations, verify
from etcdraft.demo.records import read_jsonl


def _cmdlines() -> list[str]:
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        out.append(raw.replace(b"\0", b" ").decode(errors="replace"))
    return out


def assert_no_leftovers(summary: dict[str, Any]) -> None:
    """No node (namespace on its command line) or etcd member (its client URL) is
    left running."""
    marks = [f"--namespace {summary['namespace']} ", *(f"{url} " for url in summary["endpoints"])]
    deadline = time.monotonic() + 5
    while True:
        left = [c for c in _cmdlines() if any(m in c + " " for m in marks)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not left, left


def test_demo_json_with_leader_kills() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "etcdraft.cli",
            "demo",
            "--seconds",
            "12",
            "--kill-leader-every",
            "4",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-1]
    summary = json.loads(last)
    for key in ("nodes", "blocks", "failovers", "double_signs", "gaps", "ok"):
        assert key in summary, key
    assert summary["nodes"] == 3
    assert summary["blocks"] > 50  # a block every 50 ms for 12 s, minus failovers
    assert summary["acked"] > 0
    assert len(summary["failovers"]) >= 1
    assert all(0 < ms < 5000 for ms in summary["failovers"])
    assert summary["double_signs"] == 0
    assert summary["gaps"] == 0
    assert summary["order_violations"] == 0
    assert summary["unexpected_exits"] == 0
    assert summary["ok"] is True and summary["problems"] == []
    assert [f["fault"] for f in summary["faults"]] == ["kill"] * len(summary["faults"])
    # the human summary went to stderr (stdout is only the JSON with --json)
    assert "result          OK" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 85  # a generous liveness bound for a 12 s demo
    assert_no_leftovers(summary)


def iter_queue(q: queue.Queue[str]) -> list[str]:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


def test_demo_ctrl_c_stops_everything() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "etcdraft.cli",
            "demo",
            "--seconds",
            "60",
            "--view",
            "lines",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []

    def read_err() -> None:  # a reader thread, so that the deadline holds
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put("")

    def wait_line(pred: Callable[[str], bool], what: str) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"{what} within 60 s: " + "".join(seen))
            seen.append(line)
            if not line:
                pytest.fail(f"the demo ended before {what}: " + "".join(seen))
            if pred(line):
                return

    reader = threading.Thread(target=read_err, daemon=True)
    try:
        reader.start()
        wait_line(lambda line: " leads " in line, "a leader line")
        # then a status line with blocks produced: the run is in full swing
        wait_line(
            lambda line: (
                (m := re.search(r"height (\d+)", line)) is not None and int(m.group(1)) > 0
            ),
            "a block",
        )
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)  # stdout holds only the final JSON line: no pipe stall
        assert proc.stdout is not None
        out = proc.stdout.read()
        reader.join(10)
        err = "".join(seen) + "".join(iter_queue(lines))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["interrupted"] is True
    assert summary["blocks"] > 0 and summary["double_signs"] == 0 and summary["gaps"] == 0
    assert "Traceback" not in err
    assert_no_leftovers(summary)


# ---------------------------------------------------------------------------- verify()


def _write(path: Path, records: list[dict[str, Any]], torn: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + torn)


def _node(
    tmp: Path,
    name: str,
    acks: list[tuple[int, str]],
    applied: list[tuple[int, str, float]],
    starts: list[float],
) -> Path:
    d = tmp / name
    _write(d / "acks.jsonl", [{"h": h, "hash": x, "t": 0} for h, x in acks])
    _write(
        d / "applied.jsonl",
        [{"i": 100 + h, "term": 1, "h": h, "hash": x, "t": t} for h, x, t in applied],
        torn='{"i": 999, "h": 9',  # a process killed mid-write
    )
    _write(d / "events.jsonl", [{"ev": "start", "t": t} for t in starts])
    return d


def test_verify_clean_run(tmp_path: Path) -> None:
    log = {1: "a", 2: "b", 3: "c"}
    dirs = {
        "n1": _node(tmp_path, "n1", [(1, "a"), (2, "b")], [(1, "a", 1), (2, "b", 2)], [0]),
        "n2": _node(tmp_path, "n2", [(3, "c")], [(1, "a", 1), (2, "b", 2), (3, "c", 3)], [0]),
    }
    faults = [Fault("kill", "n1", 2.5, 7, "n2", 2.7)]
    res = verify(dirs, log, 0, faults=faults, unexpected_exits=0, seconds=3, end_t=3)
    assert res.ok, res.problems
    assert (res.blocks, res.acked, res.double_signs, res.gaps) == (3, 3, 0, 0)
    assert res.failovers == [pytest.approx(200.0)]
    assert res.to_dict()["failovers"] == [200.0]


def test_verify_finds_double_signs_and_lost_acks(tmp_path: Path) -> None:
    log = {1: "a", 2: "b"}
    dirs = {
        # n1 acknowledged height 2 with another hash, and height 3 which etcd lacks
        "n1": _node(tmp_path, "n1", [(1, "a"), (2, "X"), (3, "c")], [(1, "a", 1)], [0]),
        "n2": _node(tmp_path, "n2", [], [(1, "a", 1), (2, "b", 2)], [0]),
    }
    res = verify(dirs, log, 0, faults=[], unexpected_exits=0, seconds=3, end_t=3)
    assert res.double_signs == 1
    assert res.gaps == 1
    assert not res.ok and len(res.problems) == 2


def test_verify_holes_count_within_one_process_lifetime_only(tmp_path: Path) -> None:
    log = {h: str(h) for h in range(1, 8)}
    # first lifetime applies 1, 2, 4 (hole at 3); the restarted process resumes at 6
    # from its local snapshot (not a hole) and applies 6, 7
    applied = [(1, "1", 1.0), (2, "2", 1.1), (4, "4", 1.2), (6, "6", 5.1), (7, "7", 5.2)]
    dirs = {"n1": _node(tmp_path, "n1", [], applied, [0.5, 5.0])}
    res = verify(dirs, log, 0, faults=[], unexpected_exits=0, seconds=6, end_t=6)
    assert res.gaps == 1
    segments = list(
        _incarnations(
            read_jsonl(dirs["n1"] / "events.jsonl"), read_jsonl(dirs["n1"] / "applied.jsonl")
        )
    )
    assert [[r["h"] for r in s] for s in segments] == [[1, 2, 4], [6, 7]]


def test_verify_stuck_failover_and_crashes_fail(tmp_path: Path) -> None:
    dirs = {"n1": _node(tmp_path, "n1", [(1, "a")], [(1, "a", 1)], [0])}
    stuck = Fault("pause", "n1", 1.0, 3)
    res = verify(dirs, {1: "a"}, 0, faults=[stuck], unexpected_exits=1, seconds=20, end_t=20)
    assert not res.ok
    assert any("no new leader" in p for p in res.problems)
    assert any("exited on their own" in p for p in res.problems)
    # a fault just before the end is only pending, not a failure
    recent = Fault("pause", "n1", 19.0, 3)
    res = verify(dirs, {1: "a"}, 0, faults=[recent], unexpected_exits=0, seconds=20, end_t=20)
    assert res.ok, res.problems


def test_read_jsonl_ignores_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\nnot json\n{"b": 2}\n{"c":')
    assert read_jsonl(path) == [{"a": 1}, {"b": 2}]
    assert read_jsonl(tmp_path / "missing.jsonl") == []
