"""Profile the broadcast hot path and the watch decoding with py-spy.

    .venv/bin/pip install py-spy
    .venv/bin/python -m bench.profile [--n 6000] [--lib PATH] [--out DIR]

Starts a 1-member etcd, a leader process doing sequential broadcasts and a follower
process, and records both with ``py-spy record --gil --threads`` (samples only the
thread holding the GIL: where the Python CPU goes). Writes collapsed stacks and
speedscope files into DIR and prints the heaviest functions (inclusive and self) per
process, plus a per-thread breakdown.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO_DIR, Child, cpu_seconds, kill_children
from bench.run import PEERS3, node_args, start_cluster


def summarize(path: Path, top: int = 30) -> str:
    threads: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    selff: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        stack, n_s = line.rsplit(" ", 1)
        n = int(n_s)
        frames = stack.split(";")
        threads[re.sub(r"\(\d+\)", "", frames[0]).strip()] += n
        total += n
        seen = set()
        for f in frames[1:]:
            fn = re.sub(r":\d+\)", ")", f)
            if fn not in seen:
                incl[fn] += n
                seen.add(fn)
        selff[re.sub(r":\d+\)", ")", frames[-1])] += n
    out = [f"{path.name}: {total} samples holding the GIL"]
    out.append("  per thread:")
    out += [f"    {100 * c / total:5.1f}%  {t}" for t, c in threads.most_common()]
    out.append("  inclusive:")
    out += [f"    {100 * c / total:5.1f}%  {f}" for f, c in incl.most_common(top)]
    out.append("  self:")
    out += [f"    {100 * c / total:5.1f}%  {f}" for f, c in selff.most_common(top // 2)]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile")
    ap.add_argument("--n", type=int, default=6000)
    ap.add_argument("--size", type=int, default=1)
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--lib", default=None)
    ap.add_argument("--out", default=str(REPO_DIR / "bench" / "profile-out"))
    args = ap.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy not found: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="etcdraft-profile-"))
    cluster = start_cluster(args.size)
    try:
        eps = ",".join(cluster.endpoints)
        ns = "/bench/profile"
        leader = Child(
            "bench.node_proc",
            node_args("n1", eps, ns, "--peers", PEERS3, "--bootstrap"),
            log_dir=work,
            name="leader",
            pythonpath=args.lib,
        )
        leader.call("wait_leader", timeout=60)
        fol = Child(
            "bench.node_proc",
            node_args("n2", eps, ns, "--peers", PEERS3),
            log_dir=work,
            name="follower",
            pythonpath=args.lib,
        )
        fol.call("status", timeout=60)
        leader.call("run", n=300, timeout=60)  # warm-up
        fol.call("flush", out=str(work / "warm.txt"))
        spies = []
        for name, c in (("leader", leader), ("follower", fol)):
            for fmt, ext in (("raw", "txt"), ("speedscope", "speedscope.json")):
                spies.append(
                    subprocess.Popen(
                        [
                            spy,
                            "record",
                            "-p",
                            str(c.pid),
                            "--gil",
                            "--threads",
                            "-r",
                            str(args.rate),
                            "-f",
                            fmt,
                            "-o",
                            str(out / f"{name}.{ext}"),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
        time.sleep(1.0)
        c0, f0, t0 = cpu_seconds(leader.pid), cpu_seconds(fol.pid), time.monotonic()
        leader.call("run", n=args.n, timeout=600)
        el = time.monotonic() - t0
        c1, f1 = cpu_seconds(leader.pid), cpu_seconds(fol.pid)
        for s in spies:
            s.send_signal(2)  # SIGINT: py-spy writes its output and exits
        for s in spies:
            s.wait(30)
        print(
            f"{args.n} broadcasts in {el:.2f} s ({args.n / el:.0f}/s); leader CPU "
            f"{(c1 - c0) / args.n * 1e6:.0f} us/broadcast, follower CPU "
            f"{(f1 - f0) / args.n * 1e6:.0f} us/entry (sampling adds a little)"
        )
        for name in ("leader", "follower"):
            print(summarize(out / f"{name}.txt"))
        leader.stop()
        fol.stop()
    finally:
        kill_children()
        cluster.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"profiles in {out} (open *.speedscope.json at speedscope.app)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
