"""Fast takeover's clock (see docs/safety.md): one part, one lock.

Leader side: when the next heartbeat is due (about four per ``heartbeat_timeout``),
and the send time of the last heartbeat of the current term that etcd acknowledged.
The leader's belief ends ``heartbeat_timeout`` after that send time: a follower
deposes only after seeing no heartbeat for that long, and it sees each heartbeat after
it was sent.

Follower side: when the leader (its election key) or its heartbeat (the mod revision
of ``<ns>/heartbeat``) last changed, as the watch delivered it: the silence a follower
measures before deposing.

Everything is in ``time.monotonic()`` seconds; readers get plain values, never the
lock.
"""

from __future__ import annotations

import math
import threading
import time

__all__ = ["Heartbeat", "Silence"]


class Silence:
    """What a follower last saw of the leader's heartbeat (an immutable snapshot)."""

    __slots__ = ("leader_key", "revision", "since")

    def __init__(self, leader_key: bytes, revision: int, since: float) -> None:
        self.leader_key = leader_key
        self.revision = revision  # mod revision of <ns>/heartbeat
        self.since = since  # monotonic: when the leader or its heartbeat last changed


class Heartbeat:
    """The heartbeat state of one node (leader and follower sides)."""

    def __init__(self, heartbeat_timeout: float) -> None:
        self.timeout = heartbeat_timeout
        self.interval = heartbeat_timeout / 4
        self._lock = threading.Lock()
        self._last_sent = -math.inf  # leader: send time of the last heartbeat sent
        self._acked = -math.inf  # leader: send time of the last one etcd acknowledged
        self._seen = Silence(b"", 0, time.monotonic())

    # -- leader side ---------------------------------------------------------------

    def new_term(self, sent: float) -> None:
        """The claim of a new term, which carried its first heartbeat, was
        acknowledged: only this term's heartbeats count from now on."""
        with self._lock:
            self._acked = sent
            self._last_sent = sent

    def take_due(self, now: float) -> bool:
        """True (and counted as sent at ``now``) when a heartbeat is due."""
        with self._lock:
            if now - self._last_sent < self.interval:
                return False
            self._last_sent = now
            return True

    def sent(self, at: float) -> None:
        """A heartbeat was sent at ``at`` by a write that did not ask (a piece)."""
        with self._lock:
            self._last_sent = max(self._last_sent, at)

    def acked(self, sent: float) -> None:
        """etcd acknowledged a heartbeat of this term sent at ``sent``."""
        with self._lock:
            if sent > self._acked:
                self._acked = sent

    def forget_sent(self) -> None:
        """Make the next heartbeat due at once."""
        with self._lock:
            self._last_sent = -math.inf

    @property
    def acked_at(self) -> float:
        """Send time of the last acknowledged heartbeat (-inf: none)."""
        return self._acked

    def belief_until(self) -> float:
        """Until when the leader may believe it leads, as far as heartbeats go."""
        return self._acked + self.timeout

    def next_due(self, now: float) -> float:
        """Seconds until the next heartbeat is due (may be negative)."""
        return self._last_sent + self.interval - now

    # -- follower side -------------------------------------------------------------

    def observe(self, leader_key: bytes, revision: int) -> None:
        """The view now shows ``leader_key`` first in line and the heartbeat at
        ``revision``: restart the silence timer if either changed."""
        with self._lock:
            seen = self._seen
            if revision != seen.revision or leader_key != seen.leader_key:
                self._seen = Silence(leader_key, revision, time.monotonic())

    def spoke(self) -> None:
        """The leader proved alive (a depose lost to its heartbeat): a fresh period."""
        with self._lock:
            seen = self._seen
            self._seen = Silence(seen.leader_key, seen.revision, max(seen.since, time.monotonic()))

    @property
    def seen(self) -> Silence:
        return self._seen
