#!/usr/bin/env python3
"""Soak: the chaos run for minutes, hundreds of faults, then the judge and a summary
table per fault kind (faults, acknowledgements during them, violations, worst
unavailability, failovers, worst recovery), and per kind the failed broadcasts by
error type.

    .venv/bin/python tests/soak.py --minutes 13 --seed 1

Exit status 0 when no invariant was violated, 1 otherwise, 2 when etcd itself failed
(members disagreeing at one revision, a member refusing to restart after its
corruption check) but etcdraft broke nothing; on 1 or 2 the seed is printed and the
run's directory is kept: records, node logs, etcd data and logs. ``--kinds``
restricts the fault kinds; ``--keep`` keeps the directory of a passing run too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos_harness import FAULT_KINDS, ChaosRun, Timing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="fault phase length")
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    parser.add_argument(
        "--kinds",
        default=",".join(FAULT_KINDS),
        help=f"comma-separated fault kinds (default: all of {', '.join(FAULT_KINDS)})",
    )
    parser.add_argument("--dir", help="run directory (default: a new temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the directory of a passing run")
    parser.add_argument("--quiet-min", type=float, default=0.2, help="seconds between faults, min")
    parser.add_argument("--quiet-max", type=float, default=0.8, help="seconds between faults, max")
    parser.add_argument("--json", help="also write the summary as JSON to this file")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]

    print(f"soak: seed {args.seed}, {args.minutes:g} minutes, kinds {', '.join(kinds)}")
    print(f"replay: .venv/bin/python tests/soak.py --minutes {args.minutes:g} --seed {args.seed}")
    began = time.monotonic()
    timing = Timing()
    run = ChaosRun(
        args.seed,
        timing=timing,
        base_dir=args.dir,
        kinds=kinds,
        quiet=(args.quiet_min, args.quiet_max),
    )
    passed = False
    status = 1
    try:
        run.start()
        run.run(duration=args.minutes * 60)
        verdict = run.finish()
        passed = verdict.ok and not verdict.etcd_faults
        status = 0 if passed else (1 if not verdict.ok else 2)
        wall = time.monotonic() - began
        print()
        print(
            f"soak summary: seed {args.seed}, {len(run.faults)} faults in {wall / 60:.1f} min, "
            f"{verdict.acks} acknowledged blocks, {verdict.applied} applied records, "
            f"bounds: failover {timing.failover_bound:g}s, quorum loss {timing.quorum_bound:g}s, "
            f"production back {timing.production_back:g}s"
        )
        print(verdict.table())
        print(verdict.report().split("\n", 1)[0])
        for kind, st in sorted(verdict.stats.items()):
            if st.errors:
                shown = ", ".join(f"{k} {v}" for k, v in sorted(st.errors.items()))
                print(f"failed broadcasts during {kind}: {shown}")
        if verdict.etcd_faults:
            print(f"{len(verdict.etcd_faults)} etcd fault(s) (etcd itself, not etcdraft):")
            for x in verdict.etcd_faults:
                print(f"  - {x}")
        if verdict.violations:
            print(f"{len(verdict.violations)} violation(s):")
            for v in verdict.violations[:40]:
                print(f"  - {v}")
        else:
            print("no violations")
        if args.json:
            summary = {
                "seed": args.seed,
                "minutes": args.minutes,
                "faults": len(run.faults),
                "acks": verdict.acks,
                "violations": [str(v) for v in verdict.violations],
                "etcd_faults": verdict.etcd_faults,
                "faults_detail": [f.as_dict() for f in run.faults],
                "kinds": {k: vars(s) for k, s in verdict.stats.items()},
            }
            Path(args.json).write_text(json.dumps(summary, indent=1, default=str))
    except KeyboardInterrupt:
        print(f"\ninterrupted; seed {args.seed}", file=sys.stderr)
    finally:
        run.close(passed=passed, keep=args.keep)
    return status


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
