"""``etcdraft demo``: a live failover demo that checks its own result.

It starts a local 3-member etcd (unless ``--endpoints`` points at yours), runs
``--nodes`` toy sequencer processes (``python -m etcdraft.demo.toy``, each a ``Node``
driven by ``DynamicLeaderElection`` that broadcasts a block every ``--block-interval``
while it leads), shows the cluster live, and every ``--kill-leader-every`` seconds
strikes the leader process (``--fault kill``: SIGKILL then restart; ``pause``: SIGSTOP
for ``--pause-for`` seconds; ``term``: SIGTERM, a graceful stop with handover, then
restart). After ``--seconds`` it stops everything and verifies, from what every
process recorded (fsynced JSON lines) and from etcd's log:

* **double signs**: heights at which two different block hashes were acknowledged,
  applied or stored, across all processes and etcd (must be 0);
* **gaps**: acknowledged heights missing from etcd's log, plus heights missing in a
  node's applied stream during one process lifetime (must be 0);
* **order**: applied index strictly increasing and term never decreasing, per process
  lifetime (no violation allowed);
* **failovers**: from each fault to the successor's ``leader`` event (the leader worker
  starting), in ms; a fault that got no successor within 10 s fails the run;
* no node process exited on its own.

It exits 0 only if all of these held. Every process it started (etcd members and
nodes) is stopped on exit, Ctrl-C included.

Modules: :mod:`~etcdraft.demo.options` (the command line), :mod:`~etcdraft.demo.run`
(the run), :mod:`~etcdraft.demo.nodes` (the node processes), :mod:`~etcdraft.demo.view`
(the terminal view and the summary), :mod:`~etcdraft.demo.records` (reading the
processes' JSON-lines records), :mod:`~etcdraft.demo.check` (the verdict) and
:mod:`~etcdraft.demo.toy` (the toy sequencer, ``python -m etcdraft.demo.toy``).
``python -m etcdraft.demo`` is ``etcdraft demo``.
"""

from __future__ import annotations

from etcdraft.demo.check import DemoResult, verify
from etcdraft.demo.options import DESCRIPTION, add_arguments
from etcdraft.demo.run import run

__all__ = ["DESCRIPTION", "DemoResult", "add_arguments", "run", "verify"]
