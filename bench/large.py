"""Large states: broadcast throughput and replication latency of block-sized states
against the raw gRPC client writing the same bytes, and against hashicorp/raft's
figures of issue #14 (``python -m bench --only large``; sizes with ``--state-sizes``).

ev-node's ``RaftBlockState`` carries the whole block (header and data; ev-node fills
blocks up to 5 MB). For each state size, on its own embedded etcd (fsync on), three sides
alternate per round (each side in each position in turn): etcdraft (a leader writing
back to back, two followers applying), a raw ``KV/Put`` of the same encoded state under
the same kind of key, and the raw fenced ``KV/Txn`` (what ``Node.broadcast`` sends for a
state that fits in one request), each raw writer with two raw watchers. Then isolated
writes (one every ``--large-iso-interval``, 500 ms by default), the sides rotated the
same way. Measured: write p50 / p99, writes/s and MB/s, and the time from the start of
a write until *both* receivers had it (the later of the two, per height).

etcd's quota (2 GiB by default) counts every revision not yet compacted and the free
pages of its backend file. So after every timed run the raw side's keys are deleted
(the raw baseline never prunes; etcdraft prunes itself by ``trailing_bytes``), etcd is
compacted to its current revision, and a member whose backend file grew over 1 GiB is
defragmented (``bench/etcd_space.py``); none of this is inside a timed run.

etcd gets ``--max-request-bytes`` large enough for the raw sides to put the largest
state in one request; the etcdraft nodes keep their default ``etcd_max_request_bytes``
(1.5 MiB), so a state over that is written as pieces, as on a shared etcd whose
operator cannot raise the limit.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from bench.common import Child, median, rss_bytes, size_label, wait_for
from bench.etcd_space import EtcdSpace
from bench.sides import Side, log, run_side, spawn_nodes, spawn_raw, start_cluster, wait_ready

#: etcd's default --max-request-bytes.
ETCD_MAX_REQUEST = 1572864
#: The sides of this section; the target compares etcdraft with ``raw_put``.
SIDES = ("etcdraft", "raw_put", "raw_txn")
KEYS = (
    "rate",
    "mb_per_s",
    "p50",
    "p99",
    "cpu_us_per_op",
    "deliver_p50",
    "deliver_p99",
    "every_p50",
    "every_p99",
)
ISO_KEYS = ("p50", "p99", "deliver_p50", "every_p50", "every_p99")

#: hashicorp/raft, 3 processes on loopback, BoltDB with fsync, ev-node's timings, random
#: bytes, on this machine (issue #14): (low, high) of its runs. ``apply_p50``: Apply on
#: the leader; ``both_p50``/``both_p99``: start -> both followers applied, back to back;
#: ``iso_p50``: an isolated entry -> both followers applied. None: not measured.
RAFT: dict[int, dict[str, tuple[float, float] | None]] = {
    100_000: {
        "apply_p50": (3.2, 3.6),
        "mb_per_s": (25.0, 28.0),
        "both_p50": (7.4, 8.5),
        "both_p99": (15.0, 16.0),
        "iso_p50": None,
    },
    1_000_000: {
        "apply_p50": (15.0, 17.0),
        "mb_per_s": (53.0, 61.0),
        "both_p50": (36.0, 40.0),
        "both_p99": (91.0, 96.0),
        "iso_p50": (89.0, 96.0),
    },
    2_000_000: {
        "apply_p50": (25.0, 27.0),
        "mb_per_s": (68.0, 70.0),
        "both_p50": (60.0, 62.0),
        "both_p99": (120.0, 139.0),
        "iso_p50": None,
    },
    5_000_000: {
        "apply_p50": (57.0, 61.0),
        "mb_per_s": (62.0, 70.0),
        "both_p50": (134.0, 141.0),
        "both_p99": (315.0, 321.0),
        "iso_p50": (122.0, 124.0),
    },
}


def raft_ratios(size: int, res: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """etcdraft's medians over raft's range, as (against raft's high, against its low):
    MB/s above 1 is faster than raft, a latency below 1 is faster."""
    raft = RAFT.get(size)
    if not raft:
        return {}
    e, iso = res["etcdraft"], res.get("isolated", {}).get("etcdraft", {})
    mine = {
        "mb_per_s": e["mb_per_s"],
        "apply_p50": e["p50"],
        "both_p50": e["every_p50"],
        "both_p99": e["every_p99"],
        "iso_p50": iso.get("every_p50", math.nan),
    }
    out: dict[str, tuple[float, float]] = {}
    for k, rng in raft.items():
        if rng is not None:
            out[k] = (mine[k] / rng[1], mine[k] / rng[0])
    return out


def bench_large(members: int, opts: argparse.Namespace, work: Path) -> dict[str, Any]:
    sizes: list[int] = opts.state_sizes
    log(
        f"large states: {members}-member etcd, sizes "
        f"{', '.join(size_label(s) for s in sizes)}, {' / '.join(SIDES)}; a fresh etcd per size"
    )
    out: dict[str, Any] = {
        "members": members,
        "raw_client": opts.raw,
        "fsync": not opts.no_fsync,
        "iso_interval": opts.large_iso_interval,
        "max_run_bytes": opts.large_max_run_bytes,
        "sizes": {},
        "skipped": {},
    }
    for size in sizes:
        res = _size_on_fresh_etcd(members, size, opts, work / f"large{members}-{size}")
        out["etcd_version"] = res.pop("etcd_version")
        if "refused" in res:
            note = (
                f"  {size_label(size)} skipped: the node refuses a state of this size "
                f"({res['refused']})"
            )
            log(note)
            out["skipped"][str(size)] = res["refused"]
            continue
        out["sizes"][str(size)] = res
    return out


class Rig:
    """One etcd cluster with the three sides on it, for one size. etcd 3.5 keeps its
    raft log in memory until a snapshot (``--snapshot-count``, 100,000 entries) and
    5,000 entries after one, so a member's RSS grows by every byte written (about 2x,
    with Go's heap); :meth:`refresh_if_heavy` replaces the whole rig by a fresh one
    once a member passed ``--large-etcd-rss-limit`` (outside the clock), so that 16 MB
    states on 3 members fit in the machine's memory."""

    def __init__(self, members: int, size: int, opts: argparse.Namespace, d: Path) -> None:
        self.members, self.size, self.opts, self.d = members, size, opts, d
        self.extra: list[str] = []
        if size + 65536 > ETCD_MAX_REQUEST:
            # the raw sides put the whole state in one request
            self.extra = ["--max-request-bytes", str(size + 2**20)]
        self.raw_logs = {
            side: f"/bench-raw/large{members}-{side}/log/".encode() for side in SIDES[1:]
        }
        self.procs: dict[str, Side] = {}
        self.cluster: Any = None
        self.space: EtcdSpace | None = None
        self.generation = 0
        self.rss_seen = 0
        self.compactions = self.defrags = 0

    def start(self) -> None:
        self.generation += 1
        d = self.d / f"g{self.generation}"
        d.mkdir(parents=True, exist_ok=True)
        m, opts = self.members, self.opts
        self.cluster = start_cluster(m, fsync=not opts.no_fsync, extra_args=self.extra)
        self.space = EtcdSpace(self.cluster.endpoints)
        self.procs["etcdraft"] = spawn_nodes(
            self.cluster, d, "etcdraft", f"/bench/large{m}", opts.lib
        )
        for side in SIDES[1:]:
            self.procs[side] = spawn_raw(
                self.cluster, d, side, f"/bench-raw/large{m}-{side}", opts.raw
            )
        wait_ready(self.procs)

    def etcd_rss(self) -> int:
        rss = max(rss_bytes(m.pid) for m in self.cluster.members)
        self.rss_seen = max(self.rss_seen, rss)
        return rss

    def refresh_if_heavy(self) -> bool:
        rss = self.etcd_rss()
        if rss <= self.opts.large_etcd_rss_limit:
            return False
        log(
            f"  {size_label(self.size)}: an etcd member holds {rss / 2**20:.0f} MiB: "
            "a fresh etcd and fresh sides for the next runs"
        )
        self.stop()
        self.start()
        return True

    def stop(self) -> None:
        if self.space is not None:
            self.compactions += self.space.compactions
            self.defrags += self.space.defrags
            self.space.close()
            self.space = None
        for sender, receivers in self.procs.values():
            for c in [sender, *receivers]:
                c.stop(timeout=10)
        self.procs.clear()
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None


def _size_on_fresh_etcd(
    members: int, size: int, opts: argparse.Namespace, d: Path
) -> dict[str, Any]:
    """One size on its own etcd (and more, see :class:`Rig`)."""
    rig = Rig(members, size, opts, d)
    try:
        rig.start()
        version = ".".join(map(str, rig.cluster.version))
        res: dict[str, Any] = _one_size(rig, d, size, opts)
        rig.etcd_rss()
    finally:
        rig.stop()
    res["etcd_version"] = version
    res["etcd_args"] = rig.extra
    res["etcd_rss_max"] = rig.rss_seen
    res["etcd_clusters"] = rig.generation
    res["compactions"], res["defrags"] = rig.compactions, rig.defrags
    if "refused" not in res:
        log(
            f"  {size_label(size)}: largest etcd member RSS {rig.rss_seen / 2**20:.0f} MiB, "
            f"{rig.generation} etcd cluster(s)"
        )
    return res


def _sender_leads(side: Side, timeout: float = 30.0) -> bool:
    """Make the etcdraft side's writer (n1) the leader again if another node took
    over (bounded): etcd saturated by the raw sides' multi-MB writes, or stalled by a
    defragmentation, can hold the leader's heartbeats longer than ``heartbeat_timeout``,
    and a follower then deposes it (fast takeover). Returns False if n1 already led."""
    sender, receivers = side
    if sender.call("status", timeout=10)["leader"]:
        return False
    nodes = [sender, *receivers]

    def leader() -> Child | None:
        for c in nodes:
            if c.call("status", timeout=10)["leader"]:
                return c
        return None

    for _ in range(10):
        who = wait_for(leader, timeout, "an etcdraft leader", interval=0.05)
        if who is sender:
            return True
        try:
            who.call("resign", timeout=timeout)  # someone else leads: hand over, try again
        except RuntimeError as exc:
            # HandoverError: the deposed writer has not campaigned again yet (or is
            # still catching up): give it a moment and try again
            if "HandoverError" not in str(exc):
                raise
            time.sleep(0.5)
    raise RuntimeError("the etcdraft writer (n1) does not lead again")


def _one_size(rig: Rig, d: Path, size: int, opts: argparse.Namespace) -> Any:
    label = size_label(size)
    # at most --large-max-run-bytes per timed run (at least 3 writes): etcd holds what
    # is written in memory (see _size_on_fresh_etcd), 30 x 16 MB x 3 sides x 5 rounds
    # would be 7 GB per member
    budget = int(opts.large_max_run_bytes)
    n = max(3, min(opts.large_n, budget // size))
    iso_n = max(3, min(opts.large_iso_n, budget // size))
    kw: dict[str, dict[str, Any]] = {
        "etcdraft": {"state_bytes": size},
        "raw_put": {"state_bytes": size, "op": "put"},
        "raw_txn": {"state_bytes": size, "op": "txn"},
    }
    mb = size / 1e6
    iso_every = opts.large_iso_interval
    defrag_s: list[float] = []
    #: times n1 had to be made leader again: before a run (deposed while etcd was busy
    #: with another side) and during one (the run is then repeated)
    takeovers = {"before_run": 0, "during_run": 0}

    def free(side: str) -> None:
        """Outside the clock: drop what a raw side wrote, compact, defragment; a fresh
        etcd (warmed up) when a member's memory is over the limit."""
        space = rig.space
        assert space is not None
        if side in rig.raw_logs:
            space.delete_prefix(rig.raw_logs[side])
        space.compact()
        took = space.defrag_if_needed()
        if took:
            defrag_s.extend(took)
        if rig.refresh_if_heavy():
            for s in SIDES:
                one(s, 2, f"rewarm{rig.generation}")

    def one(side: str, count: int, tag: str, interval: float = 0.0) -> dict[str, Any]:
        settle = 0.3 + (count if interval == 0 else 1) * size / 50e6  # receivers' backlog
        timeout = 60 + count * (0.2 * max(1.0, mb) + interval)
        for attempt in range(3):
            if side == "etcdraft" and _sender_leads(rig.procs[side]):
                takeovers["before_run"] += 1
                log(f"  {label} {tag}: n1 had been deposed while etcd was busy; leads again")
            try:
                res = run_side(
                    rig.procs[side],
                    d,
                    count,
                    interval,
                    f"{tag}-{size}",
                    settle=settle,
                    timeout=timeout,
                    **kw[side],
                )
                break
            except RuntimeError as exc:
                lost = ("NotLeaderError", "LeadershipLostError")
                if side != "etcdraft" or attempt == 2 or not any(x in str(exc) for x in lost):
                    raise
                takeovers["during_run"] += 1
                log(f"  {label} {tag}: n1 deposed during the run ({exc}); run repeated")
        if "refused" not in res:
            res["mb_per_s"] = res["rate"] * mb
            free(side)
        return res

    first = one("etcdraft", opts.large_warmup, "warmup")  # also: does the node take it?
    if "refused" in first:
        return first
    for side in SIDES[1:]:
        one(side, opts.large_warmup, "warmup")
    rounds: list[dict[str, dict[str, Any]]] = []
    for r in range(opts.large_rounds):
        k = r % len(SIDES)
        order = SIDES[k:] + SIDES[:k]  # each side in each position in turn
        res = {side: one(side, n, f"r{r}") for side in order}
        rounds.append(res)
        log(
            f"  {label} round {r + 1}/{opts.large_rounds}: "
            + " | ".join(
                f"{s} {res[s]['mb_per_s']:.1f} MB/s p50 {res[s]['p50']:.1f} ms "
                f"both {res[s]['every_p50']:.1f} ms"
                for s in SIDES
            )
        )
    iso_rounds: list[dict[str, dict[str, Any]]] = []
    for r in range(opts.large_iso_rounds):
        k = (r + 1) % len(SIDES)
        order = SIDES[k:] + SIDES[:k]
        res = {side: one(side, iso_n, f"iso{r}", iso_every) for side in order}
        iso_rounds.append(res)
        log(
            f"  {label} isolated {r + 1}/{opts.large_iso_rounds} (1 / {iso_every * 1e3:.0f} ms): "
            + " | ".join(
                f"{s} write {res[s]['p50']:.1f} ms both {res[s]['every_p50']:.1f} ms" for s in SIDES
            )
        )
    assert rig.space is not None
    db_size, in_use = rig.space.sizes()
    e = [r["etcdraft"] for r in rounds]
    out: dict[str, Any] = {
        "size": size,
        "rounds": len(rounds),
        "n": n,
        **{side: {k: median(r[side][k] for r in rounds) for k in KEYS} for side in SIDES},
        "rate_ratio_put": median(
            x["rate"] / r["raw_put"]["rate"] for x, r in zip(e, rounds, strict=True)
        ),
        "rate_ratio_txn": median(
            x["rate"] / r["raw_txn"]["rate"] for x, r in zip(e, rounds, strict=True)
        ),
        "p50_ratio_put": median(
            x["p50"] / r["raw_put"]["p50"] for x, r in zip(e, rounds, strict=True)
        ),
        "every_p50_ratio_put": median(
            x["every_p50"] / r["raw_put"]["every_p50"] for x, r in zip(e, rounds, strict=True)
        ),
        "p50_overhead_put_ms": median(
            x["p50"] - r["raw_put"]["p50"] for x, r in zip(e, rounds, strict=True)
        ),
        "deliver_missing": sum(r[s]["deliver_missing"] for r in rounds for s in SIDES),
        "per_round": [{s: {k: r[s][k] for k in KEYS} for s in SIDES} for r in rounds],
        "etcd_db_size": db_size,
        "etcd_db_size_in_use": in_use,
        "defrag_seconds": defrag_s,
        "n1_takeovers": takeovers,
    }
    if iso_rounds:
        ie = [r["etcdraft"] for r in iso_rounds]
        out["isolated"] = {
            "rounds": len(iso_rounds),
            "n": iso_n,
            "interval": iso_every,
            **{
                side: {k: median(r[side][k] for r in iso_rounds) for k in ISO_KEYS}
                for side in SIDES
            },
            "every_p50_ratio_put": median(
                x["every_p50"] / r["raw_put"]["every_p50"]
                for x, r in zip(ie, iso_rounds, strict=True)
            ),
            "deliver_missing": sum(r[s]["deliver_missing"] for r in iso_rounds for s in SIDES),
            "per_round": [{s: {k: r[s][k] for k in ISO_KEYS} for s in SIDES} for r in iso_rounds],
        }
    out["vs_raft"] = raft_ratios(size, out)
    log(
        f"  {label}: etcd db {db_size / 2**20:.0f} MiB (in use {in_use / 2**20:.0f} MiB), "
        f"{rig.compactions + rig.space.compactions} compactions, "
        f"{rig.defrags + rig.space.defrags} defragmentations"
    )
    return out
