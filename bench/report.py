"""The report of ``python -m bench``: the targets of issue #12 with the 1- and 3-member
figures side by side, then the details of every section."""

from __future__ import annotations

import math
from typing import Any

from bench.common import size_label
from bench.large import RAFT
from bench.sides import RAW_LABELS

#: Targets of issue #12 and the figures of docs/benchmarks.md before gRPC (for "no worse").
RATE_RATIO_MIN = 0.95
P50_OVERHEAD_MAX_MS = 0.1
APPLY_VS_FLOOR_MAX = 1.10
LARGE_RATE_RATIO_MIN = 0.9
LARGE_ISO_1MB_MAX_MS = 30.0  # issue #14: isolated 1 MB block, start -> every follower
CRASH_P50_MAX_MS = 500.0
HANDOVER_P50_MAX_MS = 10.0
IDLE_CPU_MAX_PCT = 1.0
RSS_MAX_BYTES = 60e6  # "60 MB"
BEFORE = {"crash_ms": 455.0, "handover_ms": 6.5, "idle_cpu_pct": 0.80, "rss_mib": 48.0}


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _row(label: str, *cells: str, width: int = 13, label_width: int = 40) -> str:
    return f"  {label:{label_width}s}" + "".join(f" {c:>{width}s}" for c in cells)


def _pair(a: float, b: float, spec: str = ".2f") -> str:
    return f"{fmt(a, spec)}/{fmt(b, spec)}"


def _verdict(ok: list[bool | None]) -> str:
    known = [x for x in ok if x is not None]
    if not known:
        return "n/a"
    return "met" if all(known) else "MISSED"


def raw_label(results: dict[str, Any]) -> str:
    return RAW_LABELS.get(results.get("raw_client", "grpc"), "raw")


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target: the figure on a 1- and a 3-member etcd (None where the
    section did not run), the target and whether it is met."""
    rows: list[dict[str, Any]] = []
    raw = raw_label(results)

    def add(name: str, target: str, vals: dict[int, float | None], ok: Any, spec: str) -> None:
        checks = [ok(v) if v is not None and not math.isnan(v) else None for v in vals.values()]
        rows.append(
            {
                "target": name,
                "bound": target,
                "values": {str(k): v for k, v in vals.items()},
                "spec": spec,
                "verdict": _verdict(checks),
            }
        )

    def by_size(get: Any) -> dict[int, float | None]:
        out: dict[int, float | None] = {}
        for m in (1, 3):
            b = results.get(f"broadcast{m}")
            try:
                out[m] = get(b) if b else None
            except (KeyError, TypeError, ZeroDivisionError):
                out[m] = None
        return out

    if any(f"broadcast{m}" in results for m in (1, 3)):
        add(
            f"broadcast rate, etcdraft / {raw} txn",
            f">= {RATE_RATIO_MIN}",
            by_size(lambda b: b["load"]["rate_ratio"]),
            lambda v: v >= RATE_RATIO_MIN,
            ".3f",
        )
        add(
            f"broadcast p50 overhead over {raw} txn (ms)",
            f"<= {P50_OVERHEAD_MAX_MS}",
            by_size(lambda b: b["load"]["p50_overhead_ms"]),
            lambda v: v <= P50_OVERHEAD_MAX_MS,
            "+.3f",
        )
        add(
            "isolated apply p50 / gRPC put+watch floor",
            f"<= {APPLY_VS_FLOOR_MAX}",
            by_size(lambda b: b["apply_vs_floor"]),
            lambda v: v <= APPLY_VS_FLOOR_MAX,
            ".3f",
        )
    sizes = sorted(
        {int(s) for m in (1, 3) for s in (results.get(f"large{m}") or {}).get("sizes", {})}
    )
    for size in sizes:
        vals: dict[int, float | None] = {}
        for m in (1, 3):
            x = ((results.get(f"large{m}") or {}).get("sizes") or {}).get(str(size))
            vals[m] = x["rate_ratio_put"] if x else None
        add(
            f"{size_label(size)} state: broadcast rate / {raw} put",
            f">= {LARGE_RATE_RATIO_MIN}",
            vals,
            lambda v: v >= LARGE_RATE_RATIO_MIN,
            ".3f",
        )
    if 1_000_000 in sizes:
        vals = {}
        for m in (1, 3):
            x = ((results.get(f"large{m}") or {}).get("sizes") or {}).get(str(1_000_000))
            vals[m] = ((x or {}).get("isolated") or {}).get("etcdraft", {}).get("every_p50")
        add(
            "1 MB isolated: start -> both followers applied p50 (ms)",
            f"<= {LARGE_ISO_1MB_MAX_MS:.0f}",
            vals,
            lambda v: v <= LARGE_ISO_1MB_MAX_MS,
            ".1f",
        )
    f = results.get("failover")
    if f:
        s = f["summary"]
        add(
            f"crash failover p50, fast takeover (ms; before {BEFORE['crash_ms']:.0f})",
            f"<= {CRASH_P50_MAX_MS:.0f}",
            {3: s["crash_fast"]["p50"]},
            lambda v: v <= CRASH_P50_MAX_MS,
            ".0f",
        )
        add(
            f"handover p50, resign_leader (ms; before {BEFORE['handover_ms']})",
            f"<= {HANDOVER_P50_MAX_MS:.0f}",
            {3: s["resign_fast"]["p50"]},
            lambda v: v <= HANDOVER_P50_MAX_MS,
            ".1f",
        )
    i = results.get("idle")
    if i:
        for who in ("leader", "follower"):
            add(
                f"idle CPU, {who} process (% of a core)",
                f"<= {IDLE_CPU_MAX_PCT:.0f} %",
                {3: i["cpu_pct"][who]},
                lambda v: v <= IDLE_CPU_MAX_PCT,
                ".2f",
            )
        for who in ("leader", "follower"):
            add(
                f"RSS, {who} process (MB; before {BEFORE['rss_mib']:.0f} MiB)",
                "<= 60 MB",
                {3: i["rss_mib"][who] * 2**20 / 1e6},
                lambda v: v * 1e6 <= RSS_MAX_BYTES,
                ".1f",
            )
    return rows


def targets_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        _row(
            "targets (issues #12, #14)",
            "1-member",
            "3-member",
            "target",
            "",
            width=9,
            label_width=52,
        )
    ]
    for r in rows:
        v = r["values"]
        lines.append(
            _row(
                r["target"],
                fmt(v.get("1"), r["spec"]),
                fmt(v.get("3"), r["spec"]),
                r["bound"],
                r["verdict"],
                width=9,
                label_width=52,
            )
        )
    return lines


def _broadcast(results: dict[str, Any], add: Any) -> None:
    bs = [(m, results[f"broadcast{m}"]) for m in (1, 3) if f"broadcast{m}" in results]
    if not bs:
        return
    cfg = results["config"]
    raw = raw_label(results)
    w = 10

    def row(label: str, cells: list[str]) -> None:
        add(_row(label, *cells, width=w))

    b0 = bs[0][1]
    add(
        f"sequential writes: {b0['load']['rounds']} rounds x {cfg['n']} per side, back to back;"
        f" isolated: {b0['isolated']['rounds']} x {cfg['iso_n']} writes 150 ms apart"
    )
    row(
        "",
        [c for m, b in bs for c in (f"{m}-member:", f"etcd {b['etcd_version']}", "")],
    )
    row("", [c for _ in bs for c in ("etcdraft", raw, "ratio/diff")])

    def triple(key: str, kind: str, spec: str, paired: str | None, pspec: str) -> list[str]:
        out: list[str] = []
        for _, b in bs:
            x = b[kind]
            out += [
                fmt(x["etcdraft"][key], spec),
                fmt(x["raw"][key], spec),
                (fmt(x[paired], pspec) + ("x" if "ratio" in paired else "")) if paired else "",
            ]
        return out

    row("broadcast rate (/s)", triple("rate", "load", ".0f", "rate_ratio", ".3f"))
    row("broadcast p50 (ms)", triple("p50", "load", ".3f", "p50_overhead_ms", "+.3f"))
    row("broadcast p99 (ms)", triple("p99", "load", ".3f", "p99_overhead_ms", "+.3f"))
    row("writer CPU per write (us)", triple("cpu_us_per_op", "load", ".0f", "cpu_ratio", ".2f"))
    row("isolated write p50 (ms)", triple("p50", "isolated", ".3f", "p50_overhead_ms", "+.3f"))
    add("  apply: write start -> follower process's apply queue / raw watcher decoded")
    for kind, label in (("load", "  under load p50/p99 (ms)"), ("isolated", "  isolated p50/p99")):
        cells: list[str] = []
        for _, b in bs:
            x = b[kind]
            cells += [
                _pair(x["etcdraft"]["deliver_p50"], x["etcdraft"]["deliver_p99"]),
                _pair(x["raw"]["deliver_p50"], x["raw"]["deliver_p99"]),
                fmt(x["deliver_ratio_p50"], ".2f") + "x",
            ]
        row(label, cells)
    row(
        "  receiver CPU per entry (us)",
        [
            c
            for _, b in bs
            for c in (
                fmt(b["load"]["etcdraft"]["recv_cpu_us_per_op"], ".0f"),
                fmt(b["load"]["raw"]["recv_cpu_us_per_op"], ".0f"),
                "",
            )
        ],
    )
    row(
        "has_quorum() p50/p99 (ms)",
        [
            c
            for _, b in bs
            for c in (
                _pair(
                    (b.get("has_quorum") or {}).get("etcdraft", {}).get("p50", math.nan),
                    (b.get("has_quorum") or {}).get("etcdraft", {}).get("p99", math.nan),
                ),
                "",
                "",
            )
        ],
    )
    if all(b.get("floor") for _, b in bs):
        add(
            "  floor (bench/floor.py): isolated writes, no etcdraft, one process putting and "
            "watching (gRPC)"
        )
        row("", [c for m, _ in bs for c in (f"{m}-member:", "write", "delivery")])
        for k, label in (("grpc", "  gRPC put + watch"), ("grpc_txn", "  gRPC fenced txn + watch")):
            cells = []
            for _, b in bs:
                x = b["floor"][k]
                cells += ["p50/p99", _pair(x["put_p50"], x["put_p99"])]
                cells.append(_pair(x["deliver_p50"], x["deliver_p99"]))
            row(label, cells)
        cells = []
        for _, b in bs:
            x = b["isolated"]["etcdraft"]
            cells += [
                "p50/p99",
                _pair(x["p50"], x["p99"]),
                _pair(x["deliver_p50"], x["deliver_p99"]),
            ]
        row("  etcdraft: broadcast, follower apply", cells)
        cells = []
        for _, b in bs:
            cells += [
                "",
                "put+watch",
                fmt(b.get("apply_vs_floor"), ".3f") + "x",
            ]
        row("  etcdraft isolated apply / floor", cells)
        cells = []
        for _, b in bs:
            cells += ["", "txn+watch", fmt(b.get("apply_vs_floor_txn"), ".3f") + "x"]
        row("", cells)
    add("")


def _large(results: dict[str, Any], add: Any) -> None:
    ls = [(m, results[f"large{m}"]) for m in (1, 3) if f"large{m}" in results]
    if not ls:
        return
    raw = raw_label(results)
    cfg = results["config"]
    iso_ms = cfg.get("large_iso_interval", 0.5) * 1e3
    add(
        f"large states: {cfg['large_rounds']} rounds x {cfg['large_n']} back-to-back writes per "
        f"side, then {cfg.get('large_iso_rounds', 0)} rounds x {cfg.get('large_iso_n', 0)} "
        f"isolated writes (1 / {iso_ms:.0f} ms), the 3 sides rotated. MB/s, write p50/p99 ms, "
        "start -> both receivers had it p50/p99 ms; isolated: start -> both p50 ms"
    )
    for m, x in ls:
        for key in sorted(x["sizes"], key=int):
            y = x["sizes"][key]
            size = int(key)
            iso = y.get("isolated", {})
            add(
                _row(
                    f"{size_label(size)} state, {m}-member etcd",
                    "MB/s",
                    "write p50/p99",
                    "both p50/p99",
                    "isolated both",
                    width=15,
                )
            )
            for side, label in (
                ("etcdraft", "etcdraft broadcast"),
                ("raw_put", f"{raw} put, same bytes"),
                ("raw_txn", f"{raw} fenced txn"),
            ):
                s = y[side]
                i = iso.get(side, {})
                add(
                    _row(
                        f"  {label}",
                        fmt(s["mb_per_s"], ".1f"),
                        f"{fmt(s['p50'], '.1f')}/{fmt(s['p99'], '.1f')}",
                        f"{fmt(s['every_p50'], '.1f')}/{fmt(s['every_p99'], '.1f')}",
                        fmt(i.get("every_p50"), ".1f"),
                        width=15,
                    )
                )
            raft = RAFT.get(size)
            if raft:

                def rng(k: str, spec: str = "g", r: Any = raft) -> str:
                    v = r.get(k)
                    return f"{v[0]:{spec}}-{v[1]:{spec}}" if v else "-"

                add(
                    _row(
                        "  hashicorp/raft (issue #14)",
                        rng("mb_per_s"),
                        rng("apply_p50"),
                        f"{rng('both_p50')}/{rng('both_p99')}",
                        rng("iso_p50"),
                        width=15,
                    )
                )
            add(
                _row(
                    f"  etcdraft / {raw} put (paired)",
                    fmt(y["rate_ratio_put"], ".3f"),
                    fmt(y.get("p50_ratio_put"), ".3f"),
                    fmt(y.get("every_p50_ratio_put"), ".3f"),
                    fmt(iso.get("every_p50_ratio_put"), ".3f"),
                    width=15,
                )
            )
            vr = y.get("vs_raft") or {}
            if vr:

                def ratio(k: str, vr: Any = vr) -> str:
                    v = vr.get(k)
                    return f"{v[0]:.2f}-{v[1]:.2f}" if v else "-"

                add(
                    _row(
                        "  etcdraft / raft (over raft's range)",
                        ratio("mb_per_s"),
                        ratio("apply_p50"),
                        f"{ratio('both_p50')} / {ratio('both_p99')}",
                        ratio("iso_p50"),
                        width=15,
                    )
                )
            tk = y.get("n1_takeovers") or {}
            add(
                f"  {y['n']} writes per run ({iso.get('n', 0)} isolated); etcd after this size: "
                f"db {y['etcd_db_size'] / 2**20:.0f} MiB, in use "
                f"{y['etcd_db_size_in_use'] / 2**20:.0f} MiB, largest member RSS "
                f"{y.get('etcd_rss_max', 0) / 2**20:.0f} MiB; receivers missed "
                f"{y['deliver_missing'] + iso.get('deliver_missing', 0)} writes; n1 deposed "
                f"{tk.get('before_run', 0)} + {tk.get('during_run', 0)} (between + during runs)"
            )
        for size, why in x.get("skipped", {}).items():
            add(f"  {m}-member: {size_label(int(size))} skipped, refused by the node: {why}")
    add("")


def _large_long(results: dict[str, Any], add: Any) -> None:
    x = results.get("large_long")
    if not x:
        return
    add(
        f"large-block long run: {x['reached']} of {x['blocks']} blocks of "
        f"{size_label(x['size'])} on a {x['members']}-member etcd, {x['seconds']:.0f} s "
        f"({x['rate']:.1f} blocks/s); trailing_bytes {x['trailing_bytes'] / 2**20:.0f} MiB; "
        f"etcd --auto-compaction-mode periodic --auto-compaction-retention {x['retention']}"
    )
    add(
        _row(
            "height",
            "log keys",
            "db MiB",
            "in use MiB",
            "leader RSS",
            "follower RSS",
            "follower RSS",
            "etcd RSS max",
            width=12,
            label_width=10,
        )
    )
    for smp in x["samples"]:
        add(
            _row(
                str(smp["height"]),
                str(smp["log_keys"]),
                f"{smp['db_size'] / 2**20:.0f}",
                f"{smp['db_size_in_use'] / 2**20:.0f}",
                f"{smp['leader_rss'] / 2**20:.0f}",
                *[f"{r / 2**20:.0f}" for r in smp["follower_rss"]],
                f"{max(smp['etcd_rss']) / 2**20:.0f}",
                width=12,
                label_width=10,
            )
        )
    sm = x.get("summary") or {}
    if sm:
        add(
            "  after retention started (height >= "
            f"{sm['steady_from_height']}): "
            + "; ".join(
                f"{k} {v['min_mib']:.0f}..{v['max_mib']:.0f} MiB"
                for k, v in sm.items()
                if isinstance(v, dict)
            )
        )
    add("")


def _startup(results: dict[str, Any], add: Any) -> None:
    st = results.get("startup")
    if not st:
        return
    add(
        f"start-up: fresh processes, medians of {st['reps']}"
        + (f"; lib {st['lib']}" if st["lib"] else "")
    )
    mib = 2**20
    g = st.get("grpc")
    if g:
        add(
            f"  import grpc alone              {g['import_s'] * 1e3:7.0f} ms   RSS "
            f"{g['rss_start'] / mib:.1f} -> {g['rss_after_import'] / mib:.1f} MiB "
            f"(+{(g['rss_after_import'] - g['rss_start']) / mib:.1f})"
        )
    i = st.get("import")
    if i:
        add(
            f"  import etcdraft                {i['import_s'] * 1e3:7.0f} ms   RSS "
            f"{i['rss_start'] / mib:.1f} -> {i['rss_after_import'] / mib:.1f} MiB "
            f"(+{(i['rss_after_import'] - i['rss_start']) / mib:.1f}); loads grpc: "
            f"{'yes' if i.get('grpc_loaded') else 'no'}"
        )
    for mode, label in (("client", "EtcdClient.put"), ("raw", "bare grpcio channel, KV/Put")):
        c = st.get(mode)
        if c:
            add(
                f"  first call, {label:30s} {c['first_call_s'] * 1e3:6.2f} ms (next p50 "
                f"{c['next_call_p50_s'] * 1e3:.2f} ms)"
            )
    n = st.get("node")
    if n:
        add(
            f"  Node.start() {n['start_s'] * 1e3:.0f} ms, leading after "
            f"{n['to_leader_s'] * 1e3:.0f} ms, first broadcast "
            f"{n['first_broadcast_s'] * 1e3:.2f} ms (next p50 "
            f"{n['next_broadcast_p50_s'] * 1e3:.2f} ms); RSS {n['rss_end'] / mib:.1f} MiB, "
            f"{n['threads']:.0f} threads"
        )
    add("")


def table(results: dict[str, Any]) -> str:
    fsync = "fsync on" if results.get("etcd_fsync", True) else "--unsafe-no-fsync"
    lines = [
        "",
        f"etcdraft benchmark: etcd {results.get('etcd_version')}, {fsync}; raw = "
        f"{raw_label(results)} (medians over rounds; ratios paired per round)",
        "=" * 100,
    ]
    add = lines.append
    la = results.get("loadavg")
    if la:
        add(
            "machine load (1-min average) as each section started: "
            + ", ".join(f"{k} {v:.1f}" for k, v in la.items())
            + f" (nproc {results.get('machine', {}).get('nproc')})"
        )
    rows = results.get("targets") or targets(results)
    if rows:
        lines += targets_table(rows)
        add("")
    _broadcast(results, add)
    _large(results, add)
    _large_long(results, add)
    f = results.get("failover")
    if f:
        s = f["summary"]
        add("failover, 3-member etcd with etcd's default flags (100/1000 ms): ms from the event")
        add("to the new leader's first successful broadcast, p50 [min..max] (to 'leader' p50)")
        for k, label in (
            ("crash_fast", "crash (SIGKILL), fast takeover"),
            ("crash_lease", "crash (SIGKILL), lease expiry only"),
            ("resign_fast", "resign_leader(), fast takeover on"),
            ("resign_lease", "resign_leader(), fast takeover off"),
        ):
            x = s[k]
            add(
                f"  {label:40s} {fmt(x['p50'], '.1f'):>8s} [{fmt(x['min'], '.1f')}.."
                f"{fmt(x['max'], '.1f')}]  ({fmt(x['to_leader_p50'], '.1f')})  n={x['rounds']}"
            )
        add("")
    i = results.get("idle")
    if i:
        c, r, bc = i["cpu_pct"], i["rss_mib"], i["busy_cpu_pct"]
        add(
            f"idle cost over {i['seconds']:.0f} s: CPU % of one core, RSS; busy = the leader "
            "writes one block every 150 ms"
        )
        add(_row("", "idle CPU %", "RSS MiB", "busy CPU %"))
        for k, label in (
            ("leader", "leader process"),
            ("follower", "follower process"),
            ("watchers", f"{i['watchers']} watching nodes, one process"),
        ):
            add(_row(label, fmt(c[k]), fmt(r[k], ".1f"), fmt(bc[k])))
        etcd = sum(v for k, v in c.items() if k.startswith("etcd"))
        etcd_busy = sum(v for k, v in bc.items() if k.startswith("etcd"))
        add(_row("etcd members (sum)", fmt(etcd), "", fmt(etcd_busy)))
        add("")
    _startup(results, add)
    aio = results.get("aio_lag")
    if aio:
        from bench.aio_lag import report as aio_report

        add(aio_report(aio))
        add("")
    lr = results.get("long")
    if lr:
        red = lr.get("summary", {})
        add(
            f"long run: {lr['reached']} blocks in {lr['seconds']:.0f} s ({lr['rate']:.0f}/s), "
            f"pruning on, etcd compacted to the last {lr['retention']} revisions"
        )
        if red:
            add(
                f"  steady state from height {red['steady_from_height']} (after etcd's first "
                "compaction): medians of its first and last thirds"
            )
        add(_row("", "first third", "last third", "min..max"))
        for k, label in (
            ("db_size", "etcd dbSize (MiB)"),
            ("db_size_in_use", "etcd dbSizeInUse (MiB)"),
            ("leader_rss", "leader RSS (MiB)"),
            ("follower_rss", "follower RSS (MiB)"),
            ("etcd_rss", "etcd RSS (MiB)"),
        ):
            if k in red:
                x = red[k]
                add(
                    _row(
                        label,
                        fmt(x["first_third_mib"], ".1f"),
                        fmt(x["last_third_mib"], ".1f"),
                        f"{fmt(x['min_mib'], '.1f')}..{fmt(x['max_mib'], '.1f')}",
                    )
                )
        if red:
            add(_row("log keys in etcd (max, steady state)", str(red["log_keys_max"])))
    return "\n".join(lines)


def ab_table(results: dict[str, Any]) -> str:
    lines = [
        "",
        "A/B: etcdraft copies side by side (medians over alternated rounds; B/A paired)",
        "=" * 96,
    ]
    for key in sorted(k for k in results if k.startswith("broadcast")):
        b = results[key]
        a_, b_ = b["sides"]
        lines.append(
            f"{b['size']}-member etcd {b['etcd_version']}: A = {results['ab']['A']}, "
            f"B = {results['ab']['B']}"
        )
        for kind in ("load", "isolated"):
            x = b[kind]
            lines.append(f"  {kind}:")
            skip = ("cpu_us_per_op", "recv_cpu_us_per_op") if kind == "isolated" else ()
            for k, label in (
                ("rate", "write rate (/s)"),
                ("p50", "write p50 (ms)"),
                ("p99", "write p99 (ms)"),
                ("cpu_us_per_op", "leader CPU/write (us)"),
                ("recv_cpu_us_per_op", "follower CPU/entry (us)"),
                ("deliver_p50", "apply p50 (ms)"),
                ("deliver_p99", "apply p99 (ms)"),
            ):
                if k in skip:  # mostly background work at one write per 150 ms
                    continue
                va, vb = x[a_][k], x[b_][k]
                lines.append(
                    f"    {label:28s} A {fmt(va, '.3f'):>9s}   B {fmt(vb, '.3f'):>9s}"
                    f"   B/A {fmt(vb / va if va else math.nan, '.3f')}"
                )
            lines.append(
                f"    paired: rate B/A {fmt(1 / x['rate_ratio'], '.3f')}, p50 B-A "
                f"{fmt(-x['p50_overhead_ms'], '+.3f')} ms, CPU B/A "
                f"{fmt(1 / x['cpu_ratio'], '.3f')}, apply p50 B/A "
                f"{fmt(1 / x['deliver_ratio_p50'], '.3f')}"
            )
    return "\n".join(lines)
