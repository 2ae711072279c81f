"""What the chaos judge's ``ack-after-deadline`` check found, reproduced in-process.

A leader's ``broadcast`` checks ``is_leader()`` before it sends, then waits for etcd's
answer. When the link slows down while the write is in flight (an etcd leader being
replaced stalled the keep-alive stream in the soak), the answer can arrive after the
node's own local lease deadline (``stats().lease_remaining`` less
``leader_lease_timeout``), and ``broadcast`` still returns success. The write itself
is safe (it is fenced: it committed while the election key, hence the lease, existed);
what breaks is the issue-15 rule the judge checks: a leader must not acknowledge a
write after its local lease deadline.

Here: a one-node cluster through a :class:`~etcdraft.testing.FaultProxy`; the link gets
400 ms of delay each way right before a broadcast, so its answer comes 0.8 s after it
was sent, while every keep-alive answered before then was sent before the delay, so
the lease deadline is at most 0.7 s (TTL 1 s less 0.3 s) after the broadcast started.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest
from helpers import wait_until

from etcdraft import Config, Node, RaftBlockState
from etcdraft.errors import EtcdUnavailableError, LeadershipLostError, NotLeaderError
from etcdraft.testing import FaultProxy

LEASE_MARGIN = 0.3  # leader_lease_timeout
DELAY = 0.4  # each way: a 0.8 s round trip, within send_timeout (1 s)


@pytest.mark.xfail(
    strict=True,
    reason="library: broadcast() returns success for a fenced write whose answer "
    "arrived after the node's local lease deadline (found by the chaos judge: soak "
    "seed 9, etcd_replace); proposed fix in broadcast: after the commit, if the lease "
    "deadline has passed, report the write as committed but leadership lapsed",
)
def test_broadcast_is_not_acknowledged_after_the_local_lease_deadline(
    etcd: object, namespace: str
) -> None:
    url = etcd.endpoints[0]  # type: ignore[attr-defined]
    port = urlsplit(url).port
    assert port is not None
    with FaultProxy(port) as proxy:
        node = Node(
            Config(
                node_id="n1",
                raft_addr="n1:7000",
                raft_dir="",
                bootstrap=True,
                endpoints=[proxy.url],
                namespace=namespace,
                election_timeout="1s",
                heartbeat_timeout="200ms",
                leader_lease_timeout=f"{int(LEASE_MARGIN * 1000)}ms",
                send_timeout="1s",
            )
        )
        try:
            node.start()
            wait_until(node.is_leader, 10, "n1 leads")
            for _attempt in range(5):
                height = node.get_state().height + 1
                block = RaftBlockState(height=height, timestamp=height, hash=b"\x02" * 32)
                proxy.delay(DELAY)
                try:
                    node.broadcast(block)
                except LeadershipLostError:
                    return  # sent, but not acknowledged: what the rule asks for
                except (NotLeaderError, EtcdUnavailableError):
                    # inconclusive: not sent (belief lapsed a moment) or timed out on a
                    # loaded machine; heal, lead again, retry with the next height
                    proxy.heal()
                    wait_until(node.is_leader, 10, "n1 leads again")
                    node.wait_applied(5)
                    continue
                acked = time.monotonic()
                st = node.stats()
                deadline = time.monotonic() + st.lease_remaining - LEASE_MARGIN  # upper bound
                assert acked <= deadline, (
                    f"broadcast acknowledged {acked - deadline:.3f}s after the local lease deadline"
                )
                return
            pytest.fail("5 inconclusive attempts (not sent, or timed out)")
        finally:
            proxy.heal()
            node.shutdown()
