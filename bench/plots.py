"""PNG plots of a benchmark run (matplotlib, Agg backend)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLORS = {"etcdraft": "#1f77b4", "raw": "#ff7f0e"}


def _cdf(ax: Any, xs: list[float], label: str, color: str, style: str = "-") -> None:
    if not xs:
        return
    s = sorted(xs)
    n = len(s)
    ax.plot(s, [(i + 1) / n for i in range(n)], style, color=color, label=label, lw=1.6)


def make_plots(results: dict[str, Any], outdir: Path, prefix: str = "") -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    dists = results.get("distributions") or {}
    raw = {"grpc": "raw gRPC", "etcd3gw": "raw etcd3gw"}.get(results.get("raw_client", ""), "raw")
    fsync = "fsync on" if results.get("etcd_fsync", True) else "no fsync"
    sizes = [k for k in ("broadcast1", "broadcast3") if k in dists]
    if sizes:
        fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.2), squeeze=False)
        for ax, key in zip(axes[0], sizes, strict=True):
            d = dists[key]["load"]
            b = results[key]
            _cdf(ax, d["etcdraft"]["lat_ms"], "etcdraft Node.broadcast", COLORS["etcdraft"])
            _cdf(ax, d["raw"]["lat_ms"], f"{raw} txn (same write)", COLORS["raw"])
            ax.set_xscale("log")
            ax.set_xlabel("latency (ms, log scale)")
            ax.set_ylabel("fraction of writes")
            ax.set_title(
                f"sequential write latency, {b['size']}-member etcd {b['etcd_version']}, {fsync}"
            )
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(loc="lower right")
        fig.tight_layout()
        p = outdir / f"{prefix}broadcast_latency_cdf.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(p)

        fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.2), squeeze=False)
        for ax, key in zip(axes[0], sizes, strict=True):
            b = results[key]
            for kind, style in (("load", "-"), ("isolated", "--")):
                d = dists[key][kind]
                what = "under load" if kind == "load" else "isolated (1 / 150 ms)"
                _cdf(
                    ax,
                    d["etcdraft"]["deliver_ms"],
                    f"etcdraft apply, {what}",
                    COLORS["etcdraft"],
                    style,
                )
                _cdf(ax, d["raw"]["deliver_ms"], f"{raw} watch, {what}", COLORS["raw"], style)
            ax.set_xscale("log")
            ax.set_xlabel("write start -> follower process has it (ms, log scale)")
            ax.set_ylabel("fraction of entries")
            ax.set_title(f"apply notification latency, {b['size']}-member etcd, {fsync}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        p = outdir / f"{prefix}apply_latency_cdf.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(p)

    fo = results.get("failover")
    if fo:
        rounds = fo["rounds"]
        fig, ax = plt.subplots(figsize=(9, 4.5))
        series = (
            ("crash_lease", "crash, lease expiry (fast takeover off)", "#d62728", "s"),
            ("crash_fast", "crash, fast takeover", "#1f77b4", "o"),
            ("resign_fast", "resign_leader (fast takeover on)", "#2ca02c", "^"),
            ("resign_lease", "resign_leader (fast takeover off)", "#9467bd", "v"),
        )
        for key, label, color, marker in series:
            recs = rounds.get(key) or []
            xs = [r["round"] + 1 for r in recs]
            ys = [r["to_first_broadcast_ms"] for r in recs]
            if not xs:
                continue
            ax.plot(xs, ys, marker=marker, color=color, label=label, lw=1.0)
            ls = [(r["round"] + 1, r["to_leader_ms"]) for r in recs if r.get("to_leader_ms")]
            if ls and key.startswith("crash"):
                ax.plot(
                    [a for a, _ in ls],
                    [b for _, b in ls],
                    marker=marker,
                    color=color,
                    lw=0,
                    alpha=0.35,
                    markerfacecolor="none",
                )
        ax.axhline(671, color="black", ls="--", lw=0.8, label="hashicorp/raft crash p50 (671 ms)")
        ax.axhline(500, color="grey", ls=":", lw=1.2, label="target: crash p50 500 ms")
        ax.axhline(10, color="grey", ls="-.", lw=0.8, label="target: handover p50 10 ms")
        ax.set_yscale("log")
        ax.set_xlabel("round")
        ax.set_ylabel("ms to the new leader's first successful broadcast (log)")
        ax.set_title(
            "failover timeline, 3-member etcd with etcd's default flags (100/1000 ms)\n"
            "filled: first broadcast; hollow: new leader elected"
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="center", bbox_to_anchor=(0.5, 0.45), ncol=2, framealpha=0.9)
        fig.tight_layout()
        p = outdir / f"{prefix}failover_timeline.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(p)

    lr = results.get("long")
    if lr and lr.get("samples"):
        s = lr["samples"]
        h = [x["height"] for x in s]
        fig, ax1 = plt.subplots(figsize=(9, 4.2))
        ax1.plot(h, [x["db_size"] / 2**20 for x in s], color="#8c564b", label="etcd dbSize")
        ax1.plot(
            h, [x["db_size_in_use"] / 2**20 for x in s], color="#e377c2", label="etcd dbSizeInUse"
        )
        ax1.plot(h, [x["leader_rss"] / 2**20 for x in s], color="#1f77b4", label="leader RSS")
        ax1.plot(h, [x["follower_rss"] / 2**20 for x in s], color="#17becf", label="follower RSS")
        ax1.set_xlabel("height (blocks written)")
        ax1.set_ylabel("MiB")
        ax1.set_ylim(bottom=0)
        ax2 = ax1.twinx()
        ax2.plot(h, [x["log_keys"] for x in s], color="grey", ls=":", label="log keys in etcd")
        ax2.set_ylabel("log keys in etcd")
        ax2.set_ylim(bottom=0)
        lines = ax1.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        ax1.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="center right")
        ax1.set_title(
            f"long run: {lr['reached']} blocks, pruning on (trailing_logs=1000, "
            "snapshot_threshold=1000)"
        )
        ax1.grid(True, alpha=0.3)
        fig.tight_layout()
        p = outdir / f"{prefix}long_run.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(p)
    return made


def compare_plot(before: Path, after: Path, out: Path) -> Path:
    """Broadcast and apply latency CDFs of two runs written with ``--samples``
    (e.g. this tree and the proposed diffs): etcdraft before, after, and raw."""
    a = json.loads(before.read_text())
    b = json.loads(after.read_text())
    sizes = [k for k in ("broadcast1", "broadcast3") if k in a and k in b]
    fig, axes = plt.subplots(2, len(sizes), figsize=(6 * len(sizes), 8), squeeze=False)
    for col, key in enumerate(sizes):
        size = key[-1]
        for row, (metric, what) in enumerate(
            (("lat_ms", "broadcast latency"), ("deliver_ms", "apply latency under load"))
        ):
            ax = axes[row][col]
            _cdf(ax, a[key]["load"]["etcdraft"][metric], "etcdraft (this tree)", "#9ecae1")
            _cdf(
                ax,
                b[key]["load"]["etcdraft"][metric],
                "etcdraft + proposed diffs",
                COLORS["etcdraft"],
            )
            raw = a[key]["load"]["raw"][metric] + b[key]["load"]["raw"][metric]
            _cdf(ax, raw, "raw (both runs)", COLORS["raw"], "--")
            ax.set_xscale("log")
            ax.set_xlabel("ms (log scale)")
            ax.set_ylabel("fraction")
            ax.set_title(f"{what}, {size}-member etcd")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


if __name__ == "__main__":  # python -m bench.plots BEFORE-samples.json AFTER-samples.json OUT.png
    import sys

    print(compare_plot(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
