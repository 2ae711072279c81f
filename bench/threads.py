"""A follower process's CPU per applied entry, split by thread, for one tree or two.

    .venv/bin/python -m bench.threads [--ab OLD_TREE] [--n 5000] [--rounds 6]
    .venv/bin/python -m bench.threads --idle 30 [--ab OLD_TREE]

A 1-member etcd (fsync on), a leader Node in this process broadcasting ``n`` blocks of
600 bytes as fast as it can, and a follower process started fresh for each round that
imports etcdraft from the tree under test (this one, and with ``--ab`` the other,
alternated per round). The follower reads its threads' CPU from
``/proc/self/task/*/stat`` before the first and after the last entry is applied and
prints it per applied entry, by thread (Python threads by name; grpc-core's own as
``native``). Medians over the rounds. ``python -m bench --ab`` gives the whole
process's CPU per entry; this says which thread spends it (issue #13's A/B).

``--idle S``: a leader process and a follower process, no blocks, each reading its
threads' CPU over S seconds after a 4 s warm-up, in % of a core (the idle cost of
``python -m bench``'s idle section, split by thread; issue #12's idle target).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
WAIT = 120.0  # longest a round may take
TICK = os.sysconf("SC_CLK_TCK")
PEERS = ["a@127.0.0.1:7601", "f@127.0.0.1:7602"]
PAD = b"x" * 600  # a block's data


def thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's threads, by name (``etcdraft-watch-f-reader`` →
    ``etcdraft-watch``; threads unknown to Python → ``native``)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = defaultdict(float)
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        name = names.get(int(tid), "native")
        if name.startswith("etcdraft-"):
            name = "-".join(name.split("-")[:2])
        out[name.replace(" ", "_")] += (int(fields[11]) + int(fields[12])) / TICK
    return out


def child(ep: str, ns: str, n: int) -> None:
    import etcdraft
    from etcdraft import Config, Node

    print(f"lib {Path(etcdraft.__file__).resolve().parent.parent}", flush=True)
    node = Node(
        Config(node_id="f", raft_addr="127.0.0.1:7602", peers=PEERS, endpoints=[ep], namespace=ns)
    )
    node.start()
    print("ready", flush=True)
    sys.stdin.readline()  # the leader starts broadcasting
    before, cpu0 = thread_cpu(), time.process_time()
    deadline = time.monotonic() + WAIT
    while node.get_state().height < n and time.monotonic() < deadline:
        time.sleep(0.01)
    after, cpu = thread_cpu(), time.process_time() - cpu0
    print(f"process {1e6 * cpu / n:.1f}")
    for name, seconds in after.items():
        print(f"{name} {1e6 * (seconds - before.get(name, 0.0)) / n:.1f}")
    print("end", flush=True)
    node.shutdown()


def idle_child(node_id: str, ep: str, ns: str, seconds: float) -> None:
    from etcdraft import Config, Node

    node = Node(
        Config(
            node_id=node_id,
            raft_addr="127.0.0.1:7601" if node_id == "a" else "127.0.0.1:7602",
            bootstrap=node_id == "a",
            peers=PEERS,
            endpoints=[ep],
            namespace=ns,
        )
    )
    node.start()
    deadline = time.monotonic() + WAIT
    while node_id == "a" and not node.is_leader() and time.monotonic() < deadline:
        time.sleep(0.01)
    print("ready", flush=True)
    sys.stdin.readline()  # both nodes are up
    time.sleep(4.0)  # warm-up: the follower's first heartbeats, progress reports
    before, cpu0, t0 = thread_cpu(), time.process_time(), time.monotonic()
    time.sleep(seconds)  # the idle period measured (no synchronisation)
    after, cpu, elapsed = thread_cpu(), time.process_time() - cpu0, time.monotonic() - t0
    print(f"process {100 * cpu / elapsed:.2f} leader={node.is_leader()}")
    for name, secs in after.items():
        print(f"{name} {100 * (secs - before.get(name, 0.0)) / elapsed:.2f}")
    print("end", flush=True)
    sys.stdin.readline()  # both measured: stop
    node.shutdown()


def idle(tree: Path, ep: str, seconds: float) -> None:
    ns = f"/bench-threads/{time.monotonic_ns()}"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    procs = []
    try:
        for node_id in ("a", "f"):
            cmd = [sys.executable, str(Path(__file__).resolve()), "--idle-child", node_id, ep, ns]
            proc = subprocess.Popen(
                [*cmd, str(seconds)],
                cwd=tree,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            procs.append(proc)
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"bench.threads: node {node_id} from {tree} did not start")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outs = []
        for proc in procs:
            assert proc.stdout is not None
            outs.append(list(iter(proc.stdout.readline, "end\n")))
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("stop\n")
            proc.stdin.flush()
            proc.wait(WAIT)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    print(f"{tree}: idle CPU over {seconds:.0f} s, % of a core")
    for role, lines in zip(("leader", "follower"), outs, strict=True):
        rows = [line.split() for line in lines]
        print(f"  {role}: {' '.join(rows[0][1:])}")
        for name, pct in sorted(rows[1:], key=lambda r: -float(r[1])):
            if float(pct) >= 0.01:
                print(f"    {name:32s} {pct}")


def one_round(tree: Path, ep: str, n: int) -> dict[str, float]:
    from etcdraft import Config, Node, RaftBlockState

    ns = f"/bench-threads/{time.monotonic_ns()}"
    leader = Node(
        Config(
            node_id="a",
            raft_addr="127.0.0.1:7601",
            bootstrap=True,
            peers=PEERS,
            endpoints=[ep],
            namespace=ns,
        )
    )
    env = {**os.environ, "PYTHONPATH": str(tree)}
    # this file by path: the other tree may not have it; PYTHONPATH puts its etcdraft first
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", ep, ns, str(n)]
    from bench.common import wait_for  # here: a child runs this file from another tree

    with leader:
        wait_for(leader.is_leader, WAIT, "the leader to lead")
        proc = subprocess.Popen(
            cmd, cwd=tree, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            lib = proc.stdout.readline().split()[-1]
            if Path(lib) != tree:
                raise RuntimeError(f"bench.threads: the follower imported etcdraft from {lib}")
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"bench.threads: the follower from {tree} did not start")
            proc.stdin.write("go\n")
            proc.stdin.flush()
            for h in range(1, n + 1):
                block_hash = h.to_bytes(32, "big")
                leader.broadcast(RaftBlockState(height=h, timestamp=h, hash=block_hash, data=PAD))
            out, _ = proc.communicate(timeout=WAIT)
        finally:
            if proc.poll() is None:
                proc.kill()
    rows = [line.split() for line in out.splitlines() if line not in ("end", "")]
    return {name: float(value) for name, value in rows}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.threads", description=__doc__.split("\n")[0])
    p.add_argument("--ab", type=Path, help="another tree (a checkout) to alternate with")
    p.add_argument("--n", type=int, default=5000, help="entries a round (5000)")
    p.add_argument("--rounds", type=int, default=6, help="rounds a tree (6)")
    p.add_argument("--idle", type=float, metavar="S", help="idle CPU over S seconds instead")
    p.add_argument("--child", nargs=3, metavar=("EP", "NS", "N"), help=argparse.SUPPRESS)
    p.add_argument("--idle-child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    if args.idle_child:
        node_id, ep, ns, seconds = args.idle_child
        idle_child(node_id, ep, ns, float(seconds))
        return
    from etcdraft.embedded import EtcdCluster

    trees = [HERE] + ([args.ab.resolve()] if args.ab else [])
    if args.idle:
        with EtcdCluster(1, unsafe_no_fsync=False) as etcd:
            for tree in trees:
                idle(tree, etcd.endpoints[0], args.idle)
        return
    results: dict[Path, dict[str, list[float]]] = {t: defaultdict(list) for t in trees}
    with EtcdCluster(1, unsafe_no_fsync=False) as etcd:
        for r in range(args.rounds):
            for tree in trees if r % 2 == 0 else trees[::-1]:
                for name, value in one_round(tree, etcd.endpoints[0], args.n).items():
                    results[tree][name].append(value)
    print(f"follower CPU per applied entry (µs), medians of {args.rounds} rounds of {args.n}")
    names = sorted(results[HERE], key=lambda k: -statistics.median(results[HERE][k]))
    print(f"{'thread':24s}" + "".join(f"{str(t)[-28:]:>30s}" for t in trees))
    for name in names:
        rounds = [results[t].get(name, [0.0]) for t in trees]
        if max(statistics.median(r) for r in rounds) >= 0.5:
            cells = [f"{statistics.median(r):.1f} [{min(r):.0f}-{max(r):.0f}]" for r in rounds]
            print(f"{name:24s}" + "".join(f"{c:>30s}" for c in cells))


if __name__ == "__main__":
    main()
