"""Start-up cost (``python -m bench --only startup``): what importing etcdraft and
making its first calls cost, and what grpcio adds to it. Every measurement runs in a
fresh interpreter (``bench/startup_proc.py``), ``--startup-reps`` times; medians.
With ``--lib`` the etcdraft copy there is measured (e.g. the JSON-gateway tree)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import child_env, median
from bench.sides import log, start_cluster

MODES = ("grpc", "import", "raw", "client", "node")


def _one(mode: str, endpoints: str, lib: str | None, cwd: Path) -> dict[str, Any]:
    env = child_env()
    if lib:
        env["PYTHONPATH"] = lib + ":" + env["PYTHONPATH"]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.startup_proc", "--mode", mode, "--endpoints", endpoints],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(cwd),
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"startup_proc --mode {mode} failed: {proc.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def bench_startup(opts: argparse.Namespace, work: Path) -> dict[str, Any]:
    log(f"start-up: import, first calls, RSS; {opts.startup_reps} fresh processes per mode")
    d = work / "startup"
    d.mkdir(parents=True, exist_ok=True)
    cluster = start_cluster(1, fsync=not opts.no_fsync)
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    try:
        eps = ",".join(cluster.endpoints)
        for _ in range(opts.startup_reps):
            for mode in MODES:
                if mode in ("grpc", "raw") and opts.lib:
                    continue  # grpcio itself: the same whatever the etcdraft copy
                runs[mode].append(_one(mode, eps, opts.lib, d))
    finally:
        cluster.close()
    out: dict[str, Any] = {"reps": opts.startup_reps, "lib": opts.lib, "runs": runs}
    for mode, rs in runs.items():
        if not rs:
            continue
        keys = sorted({k for r in rs for k, v in r.items() if isinstance(v, (int, float))})
        out[mode] = {k: median(r[k] for r in rs if k in r) for k in keys if k != "mode"}
        out[mode]["grpc_loaded"] = any(r.get("grpc_loaded") for r in rs)
    imp = out.get("import", {})
    nd = out.get("node", {})
    log(
        f"  import etcdraft {imp.get('import_s', 0) * 1e3:.0f} ms, RSS "
        f"{imp.get('rss_start', 0) / 2**20:.1f} -> {imp.get('rss_after_import', 0) / 2**20:.1f}"
        f" MiB; node start {nd.get('start_s', 0) * 1e3:.0f} ms, first broadcast "
        f"{nd.get('first_broadcast_s', 0) * 1e3:.1f} ms, RSS {nd.get('rss_end', 0) / 2**20:.1f} MiB"
    )
    return out
