"""A short chaos run (about a minute): three toy node processes over a private
3-member etcd, one fault at a time from a seeded schedule, judged afterwards.

The schedule covers every fault kind of ``chaos_harness.FAULT_KINDS`` (two seeded
rounds, each a shuffle of all kinds). The seed is fixed so that runs are comparable;
set ``ETCDRAFT_CHAOS_SEED=<n>`` to replay one, or ``ETCDRAFT_CHAOS_SEED=random`` for a
fresh one. A failing run prints its seed and keeps its records, node logs and etcd
logs (the path is printed); the long version is ``tests/soak.py``.
"""

from __future__ import annotations

import os
import random
import time

import pytest
from chaos_harness import FAULT_KINDS, ChaosRun

DEFAULT_SEED = 20250105
ROUNDS = 2
MAX_FAULT_SECONDS = 45.0


def chaos_seed() -> int:
    raw = os.environ.get("ETCDRAFT_CHAOS_SEED", "").strip()
    if raw.lower() == "random":
        return random.SystemRandom().randrange(1, 2**31)
    return int(raw) if raw else DEFAULT_SEED


@pytest.mark.timeout(240)
def test_chaos_short_run() -> None:
    seed = chaos_seed()
    print(f"chaos seed: {seed} (replay with ETCDRAFT_CHAOS_SEED={seed})")
    began = time.monotonic()
    with ChaosRun(seed) as run:
        run.run(duration=MAX_FAULT_SECONDS, faults=ROUNDS * len(FAULT_KINDS))
        verdict = run.finish()
        print(verdict.report())
        assert {f.kind for f in run.faults} == set(FAULT_KINDS), (
            f"seed {seed}: not every fault kind ran: {[f.kind for f in run.faults]}"
        )
        assert verdict.ok, f"seed {seed}: chaos run failed, kept in {run.base}\n{verdict.report()}"
    print(f"chaos run: {len(run.faults)} faults in {time.monotonic() - began:.1f}s")
