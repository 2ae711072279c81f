"""A follower process's RSS while large blocks replicate (issue #14's memory bound).

    .venv/bin/python -m bench.follower_memory [--size 5MiB] [--n 40] [--env K=V ...]

Starts a 1-member etcd (fsync off: memory, not speed, is measured), a leader Node in
this process and a follower process (tests/large_block_leader.py), broadcasts ``n``
blocks of ``size`` encoded bytes and prints the follower's RSS when idle and its peak
(``VmHWM``) after the last block was applied, in MiB and in blocks above idle.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from etcdraft import Config, Node
from etcdraft._config_values import parse_size
from etcdraft.embedded import EtcdCluster

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))
from large_block_leader import sized_block  # noqa: E402

MiB = 1 << 20


def memory(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.follower_memory")
    ap.add_argument("--size", default="5MiB", help="encoded block size")
    ap.add_argument("--n", type=int, default=40, help="blocks")
    ap.add_argument("--env", action="append", default=[], help="K=V for the follower")
    args = ap.parse_args()
    size = parse_size(args.size)
    with EtcdCluster(1, extra_args=["--quota-backend-bytes=8589934592"]) as etcd:
        peers = ["a@127.0.0.1:7401", "f@127.0.0.1:7402"]
        common = {
            "endpoints": list(etcd.endpoints),
            "namespace": "/bench-memory",
            "peers": peers,
            "trailing_logs": 8,
            "send_timeout": "2s",
        }
        leader = Node(Config(node_id="a", raft_addr="127.0.0.1:7401", bootstrap=True, **common))
        leader.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDRAFT_")}
        env.update(e.split("=", 1) for e in args.env)
        cfg = {"node_id": "f", "raft_addr": "127.0.0.1:7402", **common}
        proc = subprocess.Popen(
            [sys.executable, str(TESTS / "large_block_leader.py"), "--config", json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
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

        threading.Thread(target=read, daemon=True).start()
        try:
            if not started.wait(60):
                raise SystemExit("the follower process did not start")
            end = time.monotonic() + 10
            while not leader.is_leader() and time.monotonic() < end:
                leader.wait_role_change(False, 0.1)
            leader.broadcast(sized_block(1, 1000, 0))
            while applied[0] < 1:
                time.sleep(0.01)
            idle = memory(proc.pid)["VmRSS"]
            ts = leader.get_state().timestamp
            t0 = time.monotonic()
            for height in range(2, args.n + 2):
                state = sized_block(height, size, ts)
                ts = state.timestamp
                leader.broadcast(state, timeout=60)
            while applied[0] < args.n + 1:
                time.sleep(0.01)
            took = time.monotonic() - t0
            peak = memory(proc.pid)["VmHWM"]
            print(
                f"{args.n} x {size / MiB:.1f} MiB in {took:.1f} s; follower RSS idle "
                f"{idle / MiB:.0f} MiB, peak {peak / MiB:.0f} MiB: +{(peak - idle) / MiB:.0f} MiB "
                f"= {(peak - idle) / size:.1f} blocks above idle"
                + (f" ({' '.join(args.env)})" if args.env else "")
            )
        finally:
            if proc.stdin is not None:
                proc.stdin.write("quit\n")
                proc.stdin.flush()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            leader.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
