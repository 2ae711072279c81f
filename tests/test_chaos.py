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
from chaos_harness import BRIEF_SPANS, FAULT_KINDS, NODE_KINDS, ChaosRun, load_records

DEFAULT_SEED = 20250105
#: the whole schedule must run within this (it takes about 60 s on 2 loaded cores;
#: filling etcd for etcd_nospace took up to 25 s under a load average of 36)
TIME_CAP = 180.0
#: etcd's quota here: the run is one round (about a minute), so etcd holds less than
#: the soak's, and a smaller quota fills in a few seconds
QUOTA = 96 * 1024**2
#: judge checks that flag a known library behaviour awaiting a decision, reproduced by an
#: checks printed but not failed on (none today)
KNOWN_LIBRARY_FINDINGS: frozenset[str] = frozenset()
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
    with ChaosRun(
        seed, spans=BRIEF_SPANS, leader_first=True, quiet=(0.2, 0.6), quota_bytes=QUOTA
    ) as run:
        run.tolerated = KNOWN_LIBRARY_FINDINGS
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
            f"seed {seed}: a stalled follower did not heal by a range read: "
            f"{[f.note for f in stalls]}"
        )
        full = [f for f in run.faults if f.kind == "etcd_nospace"]
        assert all(f.revision is not None for f in full), (
            f"seed {seed}: etcd was not filled up to its NOSPACE alarm: {[f.note for f in full]}"
        )
        assert all("freed" in f.note and "NOT FREED" not in f.note for f in full), full
        # the toys recorded what the judge checks: has_quorum() answers (True from
        # leaders), each acknowledgement's term and lease deadline; blocks over etcd's
        # request limit were written as pieces
        assert verdict.quorum_true > 0 and verdict.quorum_answers > verdict.quorum_true
        acks = [a for r in load_records(run.record_dirs()).values() for a in r.acks]
        assert acks and all("term" in a and "lease_dl" in a for a in acks), acks[:3]
        assert len(run.archive.manifests) >= 2, sorted(run.archive.manifests)
        assert not verdict.etcd_faults, (
            f"seed {seed}: etcd itself failed (not an etcdraft violation), kept in "
            f"{run.base}\n{verdict.report()}"
        )
        unexpected = [v for v in verdict.violations if v.check not in KNOWN_LIBRARY_FINDINGS]
        assert not unexpected, (
            f"seed {seed}: chaos run failed, kept in {run.base}\n{verdict.report()}"
        )
    print(f"chaos run: {len(run.faults)} faults in {time.monotonic() - began:.1f}s")
