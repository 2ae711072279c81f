"""A short chaos run (about a minute): three toy node processes over a private
3-member etcd, each node reaching each member through its own fault proxy, one fault
at a time from a seeded schedule, judged afterwards.

The schedule is one seeded round of every fault kind of ``chaos_harness.FAULT_KINDS``
(a shuffle of all kinds, the timed faults shortened), and the first fault of each
node kind targets the leader. The seed is fixed so that runs are comparable; set
``ETCDRAFT_CHAOS_SEED=<n>`` to replay one, or ``ETCDRAFT_CHAOS_SEED=random`` for a
fresh one. A failing run prints its seed and keeps its records, node logs and etcd
logs (the path is printed); the long version is ``tests/soak.py`` (``make soak``).
"""

from __future__ import annotations

import os
import random
import time

import pytest
from chaos_harness import BRIEF_SPANS, FAULT_KINDS, NODE_KINDS, ChaosRun

DEFAULT_SEED = 20250105
#: the whole schedule must run within this (it takes about 45 s on 2 loaded cores)
TIME_CAP = 120.0
#: node faults that the schedule aims at the leader first (slow_consumer stalls a
#: follower by design)
LEADER_KINDS = tuple(k for k in NODE_KINDS if k != "slow_consumer")


def chaos_seed() -> int:
    raw = os.environ.get("ETCDRAFT_CHAOS_SEED", "").strip()
    if raw.lower() == "random":
        return random.SystemRandom().randrange(1, 2**31)
    return int(raw) if raw else DEFAULT_SEED


@pytest.mark.timeout(300)
def test_chaos_short_run() -> None:
    seed = chaos_seed()
    print(f"chaos seed: {seed} (replay with ETCDRAFT_CHAOS_SEED={seed})")
    began = time.monotonic()
    planned = len(FAULT_KINDS)
    with ChaosRun(seed, spans=BRIEF_SPANS, leader_first=True, quiet=(0.2, 0.6)) as run:
        run.run(duration=TIME_CAP, faults=planned)
        verdict = run.finish()
        print(verdict.report())
        kinds = [f.kind for f in run.faults]
        assert len(run.faults) == planned, (
            f"seed {seed}: {len(run.faults)} of {planned} scheduled faults ran "
            f"(time cap {TIME_CAP:.0f}s, or a fault did not heal): {kinds}"
        )
        assert set(kinds) == set(FAULT_KINDS), f"seed {seed}: not every fault kind ran: {kinds}"
        missed = [
            k for k in LEADER_KINDS if not any(f.was_leader for f in run.faults if f.kind == k)
        ]
        assert not missed, f"seed {seed}: these node faults never hit the leader: {missed}"
        stalls = [f for f in run.faults if f.kind == "slow_consumer"]
        assert all("resynced 0x" not in f.note for f in stalls), (
            f"seed {seed}: a stalled follower did not go through the compaction path: "
            f"{[f.note for f in stalls]}"
        )
        assert not verdict.etcd_faults, (
            f"seed {seed}: etcd itself failed (not an etcdraft violation), kept in "
            f"{run.base}\n{verdict.report()}"
        )
        assert verdict.ok, f"seed {seed}: chaos run failed, kept in {run.base}\n{verdict.report()}"
    print(f"chaos run: {len(run.faults)} faults in {time.monotonic() - began:.1f}s")
