"""asyncio form of etcdraft: :class:`AsyncNode` and :class:`AsyncDynamicLeaderElection`.

One protocol: nothing here elects, fences or replicates. ``AsyncNode`` drives the
threaded :class:`~etcdraft.Node` and ``AsyncDynamicLeaderElection`` drives the threaded
:class:`~etcdraft.DynamicLeaderElection` state machine; this module only moves calls
between the event loop and their threads (see ``docs/asyncio.md`` for why).

Threads, each with an owner:

* ``etcdraft-aio-broadcast-<id>_0``: runs ``broadcast`` calls one at a time, in the
  order they were awaited (owned by the ``AsyncNode``; joined by ``stop()``);
* ``etcdraft-aio-<id>_<n>`` (up to :data:`POOL_WORKERS`): the other blocking calls
  (``has_quorum``, ``resign_leader``, ``add_peer``, ``wait_role_change``...); same owner;
* ``etcdraft-aio-<start|stop|shutdown>-<id>``: one per lifecycle call, ends with it;
* ``etcdraft-aio-election-<id>``: the election state machine, while ``run()`` is awaited.

User code (worker coroutines, ``is_synced``, the factories, the apply queue) only ever
runs on the event loop's thread.
"""

from __future__ import annotations

from etcdraft.aio._election import AsyncDynamicLeaderElection, AsyncLeaderNode, AsyncRunnable
from etcdraft.aio._node import AsyncNode

__all__ = ["AsyncDynamicLeaderElection", "AsyncLeaderNode", "AsyncNode", "AsyncRunnable"]
