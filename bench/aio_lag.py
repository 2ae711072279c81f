"""Event-loop lag under ``etcdraft.aio``: ``python -m bench.aio_lag``.

An :class:`~etcdraft.aio.AsyncNode` leads in this process and broadcasts at full rate
(one ``await node.broadcast(...)`` after the other, ~600-byte states) while a consumer
task drains its apply queue on the same loop, and two follower nodes, each in its own
process, apply the stream. All on an embedded 3-member etcd with etcd's default raft
timing and fsync on. A probe task measures the loop's lag: how late a 1 ms
``asyncio.sleep`` wakes up (p50, p99, max), first with the leader idle, then under load.

The target (issue #17): p99 lag <= 5 ms under load. ``run()`` returns the figures as a
dict (for ``make bench``); ``main()`` prints them (``--json``: one JSON object).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # python bench/aio_lag.py
    sys.path.append(str(Path(__file__).resolve().parent.parent))

from bench.common import (
    ETCD_ELECTION_MS,
    ETCD_HEARTBEAT_MS,
    Child,
    cpu_seconds,
    etcd_binary,
    make_state,
    pct,
    wait_for,
)

# this process starts the follower processes while its own gRPC threads run: grpc's
# fork handlers would only log that they are skipped (children exec at once anyway)
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

PEERS3 = "n1@n1:1,n2@n2:1,n3@n3:1"
#: The 1 ms probe and the issue's bound on its p99 lag.
PROBE_S = 0.001
TARGET_P99_MS = 5.0


def log(msg: str) -> None:
    print(f"[aio_lag {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def summarize_ms(lags: list[float]) -> dict[str, float]:
    ms = [x * 1e3 for x in lags]
    return {
        "n": len(ms),
        "p50": round(pct(ms, 50), 3),
        "p99": round(pct(ms, 99), 3),
        "max": round(max(ms), 3) if ms else math.nan,
    }


class Probe:
    """Sleeps 1 ms in a loop and records how late each wake-up is, while recording."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.recording = False

    async def run(self) -> None:
        mono = time.monotonic
        while True:
            t0 = mono()
            await asyncio.sleep(PROBE_S)
            if self.recording:
                self.lags.append(max(0.0, mono() - t0 - PROBE_S))

    async def window(self, seconds: float) -> list[float]:
        self.lags = []
        self.recording = True
        await asyncio.sleep(seconds)
        self.recording = False
        return self.lags


async def _measure(endpoints: list[str], seconds: float, idle: float, work: Path) -> dict[str, Any]:
    from etcdraft import Config, RaftApplyMsg
    from etcdraft.aio import AsyncNode
    from etcdraft.errors import EtcdUnavailableError

    namespace = f"/bench/aio-lag-{os.getpid()}"
    eps = ",".join(endpoints)
    cfg = Config(
        node_id="n1",
        raft_addr="n1:1",
        endpoints=endpoints,
        namespace=namespace,
        peers=PEERS3,
        bootstrap=True,
    )
    children: list[Child] = []
    node = AsyncNode(cfg)
    probe = Probe()
    probe_task = asyncio.create_task(probe.run())
    try:
        await node.start()
        while not node.is_leader():
            await node.wait_role_change(False, 1.0)
        for nid in ("n2", "n3"):
            args = ["--node-id", nid, "--endpoints", eps, "--namespace", namespace]
            children.append(
                Child("bench.node_proc", [*args, "--peers", PEERS3], log_dir=work, name=nid)
            )
        for child in children:
            await asyncio.to_thread(child.call, "status", 60.0)
        log(f"leader n1 in this process, followers n2 n3 (pids {[c.pid for c in children]})")

        idle_lags = await probe.window(idle)

        applied: asyncio.Queue[RaftApplyMsg] = asyncio.Queue(maxsize=4096)
        node.set_apply_callback(applied)
        consumed = 0

        async def consume() -> None:
            nonlocal consumed
            while True:
                await applied.get()
                consumed += 1

        broadcasts = 0
        unavailable = 0
        running = True

        async def produce() -> None:
            nonlocal broadcasts, unavailable
            head = node.get_state()
            height, ts = head.height, head.timestamp
            while running:
                state = make_state(height + 1, ts)
                try:
                    await node.broadcast(state)
                except EtcdUnavailableError:
                    unavailable += 1
                    continue
                height, ts = state.height, state.timestamp
                broadcasts += 1

        consumer = asyncio.create_task(consume())
        producer = asyncio.create_task(produce())
        cpu0, t0 = cpu_seconds(os.getpid()), time.monotonic()
        load_lags = await probe.window(seconds)
        running = False
        await producer
        elapsed = time.monotonic() - t0
        cpu = cpu_seconds(os.getpid()) - cpu0
        top = node.get_state().height
        for child in children:
            await asyncio.to_thread(
                wait_for,
                lambda c=child: c.call("status")["height"] >= top,
                30.0,
                f"{child.name} to apply height {top}",
            )
        followers = {
            c.name: (await asyncio.to_thread(c.call, "status"))["applied"] for c in children
        }
        drained = time.monotonic() + 5.0
        while consumed < broadcasts and time.monotonic() < drained:
            await asyncio.sleep(0.01)  # the consumer catches up with what is queued
        consumer.cancel()
        load = summarize_ms(load_lags)
        return {
            "etcd_members": len(endpoints),
            "fsync": True,
            "seconds": round(elapsed, 2),
            "broadcasts": broadcasts,
            "broadcast_rate_per_s": round(broadcasts / elapsed, 1),
            "unavailable_retries": unavailable,
            "applied_on_loop": consumed,
            "apply_dropped": node.dropped,
            "followers_applied": followers,
            "process_cpu_percent": round(100 * cpu / elapsed, 1),
            "switch_interval_ms": sys.getswitchinterval() * 1e3,
            "idle_lag_ms": summarize_ms(idle_lags),
            "lag_ms": load,
            "target_p99_ms": TARGET_P99_MS,
            "ok": load["p99"] <= TARGET_P99_MS,
        }
    finally:
        probe_task.cancel()
        await node.shutdown()
        for child in children:
            await asyncio.to_thread(child.stop)


def run(seconds: float = 10.0, idle: float = 2.0) -> dict[str, Any]:
    """Measure and return the figures (starts and removes its own etcd)."""
    from etcdraft.embedded import EtcdCluster

    work = Path(tempfile.mkdtemp(prefix="etcdraft-aio-lag-"))
    cluster = EtcdCluster(
        size=3,
        binary=etcd_binary(),
        heartbeat_interval_ms=ETCD_HEARTBEAT_MS,
        election_timeout_ms=ETCD_ELECTION_MS,
        unsafe_no_fsync=False,
        data_dir=work / "etcd",
    )
    log(f"3-member etcd with fsync, {seconds:.0f}s of load after {idle:.0f}s idle")
    try:
        with cluster:
            return asyncio.run(_measure(cluster.endpoints, seconds, idle, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(res: dict[str, Any]) -> str:
    idle, load = res["idle_lag_ms"], res["lag_ms"]
    lines = [
        "event-loop lag of an AsyncNode leader (1 ms asyncio.sleep probe), "
        f"{res['etcd_members']}-member etcd, fsync on",
        f"  idle     p50 {idle['p50']:.3f} ms  p99 {idle['p99']:.3f} ms  max {idle['max']:.3f} ms"
        f"  ({idle['n']} probes)",
        f"  load     p50 {load['p50']:.3f} ms  p99 {load['p99']:.3f} ms  max {load['max']:.3f} ms"
        f"  ({load['n']} probes)",
        f"  load     {res['broadcasts']} broadcasts in {res['seconds']:.1f}s "
        f"({res['broadcast_rate_per_s']:.0f}/s), {res['applied_on_loop']} applied on the loop, "
        f"{res['apply_dropped']} dropped, followers applied {res['followers_applied']}",
        f"  process  {res['process_cpu_percent']:.0f}% of a core; "
        f"switch interval {res['switch_interval_ms']:.1f} ms",
        f"  target   p99 <= {res['target_p99_ms']:.0f} ms: {'met' if res['ok'] else 'MISSED'}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.aio_lag", description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of the load phase")
    ap.add_argument("--idle", type=float, default=2.0, help="duration of the idle phase")
    ap.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="sys.setswitchinterval(seconds) first (Python's default: 0.005)",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    res = run(args.seconds, args.idle)
    print(json.dumps(res) if args.json else report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
