"""A follower process's RSS while large blocks replicate (issue #14's memory bound).

    .venv/bin/python -m bench.follower_memory [--size 5MiB] [--n 40] [--env K=V ...]

Starts a 1-member etcd (fsync off: memory, not speed, is measured), a leader Node in
this process and a follower process (tests/large_block_leader.py), broadcasts ``n``
blocks of ``size`` encoded bytes and prints the follower's RSS when idle and its peak
(``VmHWM``) after the last block was applied, in MiB and in blocks above idle.
:func:`measure` is what ``tests/test_follower_memory.py`` checks the bound with.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import wait_for
from etcdraft import Config, Node
from etcdraft._config_values import parse_size
from etcdraft.embedded import EtcdCluster

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))
from large_block_leader import sized_block  # noqa: E402

MiB = 1 << 20
#: Longest wait for the follower to start, and for it to apply what was broadcast.
WAIT = 60.0


@dataclass(frozen=True)
class Memory:
    idle: int  # the follower's RSS after it applied one small block (bytes)
    peak: int  # its peak RSS (VmHWM) after it applied every large block (bytes)
    seconds: float  # the large blocks' broadcast and apply


def memory(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak) of ``pid`` in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def measure(
    endpoints: Sequence[str],
    namespace: str,
    size: int,
    n: int,
    *,
    env: Mapping[str, str] = {},
    ports: tuple[int, int] = (7401, 7402),
) -> Memory:
    """Broadcast one small block, then ``n`` blocks of ``size`` bytes, from a leader
    in this process to a follower process, and read the follower's memory."""
    peers = [f"a@127.0.0.1:{ports[0]}", f"f@127.0.0.1:{ports[1]}"]
    common = {
        "endpoints": list(endpoints),
        "namespace": namespace,
        "peers": peers,
        "trailing_logs": 8,
        "send_timeout": "2s",
    }
    leader = Node(Config(node_id="a", raft_addr=f"127.0.0.1:{ports[0]}", bootstrap=True, **common))
    leader.start()
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDRAFT_")}
    child_env.update(env)
    cfg = {"node_id": "f", "raft_addr": f"127.0.0.1:{ports[1]}", **common}
    proc = subprocess.Popen(
        [sys.executable, str(TESTS / "large_block_leader.py"), "--config", json.dumps(cfg)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env,
    )
    applied = [0]
    started = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("started"):
                started.set()
            elif line.startswith("applied"):
                applied[0] = int(line.split()[1])

    threading.Thread(target=read, daemon=True, name="follower-reader").start()
    try:
        wait_for(started.is_set, WAIT, "the follower process to start")
        wait_for(leader.is_leader, WAIT, "a leader")
        leader.broadcast(sized_block(1, 1000, 0))
        wait_for(lambda: applied[0] == 1, WAIT, "the follower to apply height 1")
        idle = memory(proc.pid)["VmRSS"]
        ts = leader.get_state().timestamp
        t0 = time.monotonic()
        for height in range(2, n + 2):
            state = sized_block(height, size, ts)
            ts = state.timestamp
            leader.broadcast(state, timeout=WAIT)
        wait_for(lambda: applied[0] == n + 1, WAIT, f"the follower to apply {n} blocks")
        return Memory(idle, memory(proc.pid)["VmHWM"], time.monotonic() - t0)
    finally:
        if proc.stdin is not None:
            proc.stdin.write("quit\n")
            proc.stdin.flush()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        leader.shutdown()


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.follower_memory")
    ap.add_argument("--size", default="5MiB", help="encoded block size")
    ap.add_argument("--n", type=int, default=40, help="blocks")
    ap.add_argument("--env", action="append", default=[], help="K=V for the follower")
    args = ap.parse_args()
    size = parse_size(args.size)
    env = dict(e.split("=", 1) for e in args.env)
    with EtcdCluster(1, extra_args=["--quota-backend-bytes=8589934592"]) as etcd:
        m = measure(etcd.endpoints, "/bench-memory", size, args.n, env=env)
    print(
        f"{args.n} x {size / MiB:.1f} MiB in {m.seconds:.1f} s; follower RSS idle "
        f"{m.idle / MiB:.0f} MiB, peak {m.peak / MiB:.0f} MiB: +{(m.peak - m.idle) / MiB:.0f} MiB "
        f"= {(m.peak - m.idle) / size:.1f} blocks above idle"
        + (f" ({' '.join(args.env)})" if args.env else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
