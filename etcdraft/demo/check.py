"""The checks behind ``etcdraft demo``'s verdict, on what the node processes recorded
(see :mod:`etcdraft.demo.toy`: ``acks.jsonl``, ``applied.jsonl``, ``events.jsonl``, fsynced
JSON lines with ``time.monotonic()`` stamps) and on etcd's log.

* **double signs**: heights at which two different block hashes were acknowledged,
  applied or stored, across every process and etcd;
* **gaps**: acknowledged heights missing from etcd's log (above the pruned height),
  plus heights missing in a node's applied stream within one process lifetime (a
  restarted process resumes from its local snapshot: not a gap);
* **order**: within a process lifetime, applied index strictly increases and term
  never decreases;
* **failovers**: from each fault to the first ``leader`` event after it; a fault with
  no successor within :data:`FAILOVER_LIMIT` seconds fails the run.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from etcdraft.demo.records import read_jsonl

__all__ = ["FAILOVER_LIMIT", "DemoResult", "Fault", "read_etcd_log", "read_jsonl", "verify"]

#: A fault without a successor this long before the end fails the run.
FAILOVER_LIMIT = 10.0


@dataclass
class Fault:
    kind: str
    node: str
    t: float  # monotonic
    term: int
    successor: str = ""
    t_leader: float | None = None

    @property
    def ms(self) -> float | None:
        return None if self.t_leader is None else (self.t_leader - self.t) * 1000


@dataclass
class DemoResult:
    """The verified outcome (see the module doc for each check)."""

    nodes: int
    blocks: int
    acked: int
    failovers: list[float]
    faults: list[dict[str, Any]]
    double_signs: int
    gaps: int
    order_violations: int
    log_holes: int
    unexpected_exits: int
    seconds: float
    problems: list[str] = field(default_factory=list)
    interrupted: bool = False
    namespace: str = ""
    endpoints: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            "blocks": self.blocks,
            "acked": self.acked,
            "blocks_per_s": round(self.blocks / self.seconds, 1) if self.seconds else 0.0,
            "failovers": [round(ms, 1) for ms in self.failovers],
            "faults": self.faults,
            "double_signs": self.double_signs,
            "gaps": self.gaps,
            "order_violations": self.order_violations,
            "log_holes": self.log_holes,
            "unexpected_exits": self.unexpected_exits,
            "seconds": round(self.seconds, 1),
            "interrupted": self.interrupted,
            "problems": self.problems,
            "namespace": self.namespace,
            "endpoints": self.endpoints,
            "ok": self.ok,
        }


def _incarnations(
    events: list[dict[str, Any]], applied: list[dict[str, Any]]
) -> Iterator[list[dict[str, Any]]]:
    """Split a node's applied records by process lifetime (``start`` events)."""
    starts = sorted(float(e.get("t", 0)) for e in events if e.get("ev") == "start")
    segment: list[dict[str, Any]] = []
    i = 0
    for rec in applied:
        t = float(rec.get("t", 0))
        moved = False
        while i < len(starts) and starts[i] <= t:
            i += 1
            moved = True
        if moved and segment:
            yield segment
            segment = []
        segment.append(rec)
    if segment:
        yield segment


def verify(
    record_dirs: dict[str, Path],
    etcd_log: dict[int, str],
    pruned: int,
    *,
    faults: list[Fault],
    unexpected_exits: int,
    seconds: float,
    end_t: float,
    etcd_error: str | None = None,
    interrupted: bool = False,
) -> DemoResult:
    """Check the invariants from the records and etcd's log (height → hash hex)."""
    hashes: dict[int, set[str]] = {h: {x} for h, x in etcd_log.items()}
    acked: set[int] = set()
    order_violations = 0
    holes = 0
    for _node, d in sorted(record_dirs.items()):
        for rec in read_jsonl(d / "acks.jsonl"):
            h = int(rec["h"])
            acked.add(h)
            hashes.setdefault(h, set()).add(str(rec["hash"]))
        applied = read_jsonl(d / "applied.jsonl")
        for rec in applied:
            hashes.setdefault(int(rec["h"]), set()).add(str(rec["hash"]))
        for segment in _incarnations(read_jsonl(d / "events.jsonl"), applied):
            for prev, cur in itertools.pairwise(segment):
                ph, ch = int(prev["h"]), int(cur["h"])
                if ch > ph + 1:
                    holes += ch - ph - 1
                if int(cur["i"]) <= int(prev["i"]) or ch <= ph:
                    order_violations += 1
                if int(cur.get("term", 0)) < int(prev.get("term", 0)):
                    order_violations += 1
    double_signs = sum(1 for h, xs in hashes.items() if len(xs) > 1)
    missing = sorted(h for h in acked if h > pruned and h not in etcd_log)
    top = max(etcd_log, default=pruned)
    log_holes = sum(1 for h in range(pruned + 1, top + 1) if h not in etcd_log)
    blocks = len(etcd_log) + pruned
    failovers = [f.ms for f in faults if f.ms is not None]
    stuck = [f for f in faults if f.t_leader is None and end_t - f.t > FAILOVER_LIMIT]
    checks: list[tuple[object, str]] = [
        (etcd_error, f"could not read etcd's log to verify: {etcd_error}"),
        (double_signs, f"{double_signs} heights with two different blocks"),
        (missing, f"{len(missing)} acknowledged heights missing from etcd: {missing[:5]}"),
        (holes, f"{holes} heights missing in applied streams"),
        (order_violations, f"{order_violations} index/term order violations in applied streams"),
        (unexpected_exits, f"{unexpected_exits} node processes exited on their own"),
        (
            stuck,
            f"{len(stuck)} faults got no new leader within {FAILOVER_LIMIT:g}s "
            f"({', '.join(f'{f.kind} {f.node}' for f in stuck)})",
        ),
        (blocks == 0 and not interrupted, "no block was produced"),
    ]
    problems = [text for failed, text in checks if failed]
    return DemoResult(
        nodes=len(record_dirs),
        blocks=blocks,
        acked=len(acked),
        failovers=failovers,
        faults=[
            {
                "fault": f.kind,
                "node": f.node,
                "term": f.term,
                "successor": f.successor,
                "ms": None if f.ms is None else round(f.ms, 1),
            }
            for f in faults
        ],
        double_signs=double_signs,
        gaps=len(missing) + holes,
        order_violations=order_violations,
        log_holes=log_holes,
        unexpected_exits=unexpected_exits,
        seconds=seconds,
        problems=problems,
        interrupted=interrupted,
    )


def read_etcd_log(client: Any, keys: Any, timeout: float) -> tuple[dict[int, str], int]:
    """etcd's log as height → block hash hex (``"corrupt"`` if it does not parse), and
    the pruned height, read at one revision."""
    from etcdraft._deadline import Deadline
    from etcdraft.blocks import summarize
    from etcdraft.etcd import prefix_end

    k = keys
    deadline = Deadline(timeout)
    out: dict[int, str] = {}
    start, end = k.log_prefix, prefix_end(k.log_prefix)
    rev = 0
    while True:
        res = client.range(start, end, deadline, revision=rev, limit=1000)
        rev = rev or res.revision
        for kv in res.kvs:
            parsed = k.parse(kv.key)
            if parsed.kind == "log":
                try:
                    out[parsed.number] = summarize(kv.value)[0].hash.hex()
                except ValueError:
                    out[parsed.number] = "corrupt"
        if not res.more or not res.kvs:
            break
        start = res.kvs[-1].key + b"\x00"
    pruned = 0
    kv = client.get(k.pruned, deadline)
    if kv is not None:
        with contextlib.suppress(ValueError):
            pruned = int(kv.value)
    return out, pruned
