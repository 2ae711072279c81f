"""Large states: broadcast throughput of block-sized states against the raw gRPC client
writing the same bytes (``python -m bench --only large``; sizes with ``--state-sizes``).

ev-node's ``RaftBlockState`` carries the whole block (header and data; ev-node fills
blocks up to 5 MB). For each state size, on one embedded etcd (fsync on), three sides
alternate per round (each side in each position in turn): etcdraft (a leader writing
back to back, two followers applying), a raw ``KV/Put`` of the same encoded state under
the same kind of key, and the raw fenced ``KV/Txn`` (what ``Node.broadcast`` sends),
each raw writer with two raw watchers. A size the node refuses (``InvalidStateError``:
today's limit is etcd's default request size, 1.5 MiB less room for the transaction)
is skipped with a note, so bigger sizes can be listed before the library takes them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.common import median, size_label
from bench.sides import Side, log, run_side, spawn_nodes, spawn_raw, start_cluster, wait_ready

#: etcd's default --max-request-bytes.
ETCD_MAX_REQUEST = 1572864
#: The sides of this section; the target compares etcdraft with ``raw_put``.
SIDES = ("etcdraft", "raw_put", "raw_txn")
KEYS = ("rate", "mb_per_s", "p50", "p99", "cpu_us_per_op", "deliver_p50", "deliver_p99")


def bench_large(members: int, opts: argparse.Namespace, work: Path) -> dict[str, Any]:
    sizes: list[int] = opts.state_sizes
    d = work / f"large{members}"
    d.mkdir(parents=True, exist_ok=True)
    extra: list[str] = []
    biggest = max(sizes)
    if biggest + 65536 > ETCD_MAX_REQUEST:
        # let etcd take what is listed, so the node (not etcd) decides what it refuses
        extra = ["--max-request-bytes", str(biggest + 2**20)]
    log(
        f"large states: {members}-member etcd, sizes "
        f"{', '.join(size_label(s) for s in sizes)}, {' / '.join(SIDES)}"
    )
    cluster = start_cluster(members, fsync=not opts.no_fsync, extra_args=extra)
    procs: dict[str, Side] = {}
    out: dict[str, Any] = {
        "members": members,
        "etcd_version": ".".join(map(str, cluster.version)),
        "etcd_args": extra,
        "raw_client": opts.raw,
        "fsync": not opts.no_fsync,
        "sizes": {},
        "skipped": {},
    }
    try:
        procs["etcdraft"] = spawn_nodes(cluster, d, "etcdraft", f"/bench/large{members}", opts.lib)
        for side in SIDES[1:]:
            procs[side] = spawn_raw(cluster, d, side, f"/bench-raw/large{members}-{side}", opts.raw)
        wait_ready(procs)
        for size in sizes:
            res = _one_size(procs, d, size, opts)
            if "refused" in res:
                note = (
                    f"  {size_label(size)} skipped: the node refuses a state of this size "
                    f"today ({res['refused']})"
                )
                log(note)
                out["skipped"][str(size)] = res["refused"]
                continue
            out["sizes"][str(size)] = res
        return out
    finally:
        for sender, receivers in procs.values():
            for c in [sender, *receivers]:
                c.stop(timeout=10)
        cluster.close()


def _one_size(procs: dict[str, Side], d: Path, size: int, opts: argparse.Namespace) -> Any:
    label = size_label(size)
    n = opts.large_n
    kw: dict[str, dict[str, Any]] = {
        "etcdraft": {"state_bytes": size},
        "raw_put": {"state_bytes": size, "op": "put"},
        "raw_txn": {"state_bytes": size, "op": "txn"},
    }
    mb = size / 1e6
    settle = 0.3 + n * size / 50e6  # the receivers' backlog of large events
    timeout = 60 + n * 0.2 * max(1.0, mb)

    def one(side: str, count: int, tag: str) -> dict[str, Any]:
        res = run_side(
            procs[side], d, count, 0.0, f"{tag}-{size}", settle=settle, timeout=timeout, **kw[side]
        )
        if "refused" not in res:
            res["mb_per_s"] = res["rate"] * mb
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
                f"{s} {res[s]['rate']:.1f}/s ({res[s]['mb_per_s']:.1f} MB/s) "
                f"p50 {res[s]['p50']:.1f} ms"
                for s in SIDES
            )
        )
    e = [r["etcdraft"] for r in rounds]
    return {
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
        "p50_overhead_put_ms": median(
            x["p50"] - r["raw_put"]["p50"] for x, r in zip(e, rounds, strict=True)
        ),
        "deliver_missing": sum(r[s]["deliver_missing"] for r in rounds for s in SIDES),
        "per_round": [{s: {k: r[s][k] for k in KEYS} for s in SIDES} for r in rounds],
    }
