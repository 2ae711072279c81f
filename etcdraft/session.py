"""The session: one etcd lease per node, kept alive in the background.

Leadership and liveness keys are bound to it. The local view of its validity is
measured on the monotonic clock from when the last successful keep-alive was
*sent*: etcd cannot expire the lease before ``sent + ttl``, so the node may claim
leadership until ``sent + ttl - leader_lease_timeout``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from etcdraft._deadline import Deadline
from etcdraft._worker import Worker
from etcdraft.errors import EtcdraftError
from etcdraft.etcd import EtcdClient, LeaseNotFoundError

__all__ = ["Session"]

log = logging.getLogger(__name__)


class Session(Worker):
    """A lease and its keep-alive thread.

    Args:
        client: etcd client.
        ttl: requested lease TTL in seconds (etcd rounds up and enforces a minimum).
        interval: keep-alive interval (``heartbeat_timeout``).
        send_timeout: deadline of one keep-alive.
        on_lost: called (from the keep-alive thread) when the lease is gone.
        on_tick: called after each keep-alive round (successful or not).
    """

    def __init__(
        self,
        client: EtcdClient,
        *,
        ttl: float,
        interval: float,
        send_timeout: float,
        on_lost: Callable[[int], None],
        on_tick: Callable[[], None] | None = None,
        name: str = "etcdraft-session",
    ) -> None:
        self.client = client
        self.requested_ttl = max(1, math.ceil(ttl))
        self.interval = interval
        self.send_timeout = send_timeout
        self.on_lost = on_lost
        self.on_tick = on_tick
        super().__init__(name)
        self.lease_id = 0
        self.ttl = 0
        self._valid_until = -math.inf  # monotonic: etcd cannot have expired it before
        self._lock = threading.Lock()
        self.keepalive_failures = 0
        self.last_keepalive_latency = 0.0
        # one LeaseKeepAlive stream, used only by the keep-alive thread (and
        # keepalive_once's callers before start)
        self._keepalive = client.keepalive_stream(f"{name}-keepalive")

    def grant(self, deadline: Deadline) -> int:
        """Grant a fresh lease (the old one, if any, is forgotten)."""
        sent = time.monotonic()
        lease_id, ttl = self.client.lease_grant(self.requested_ttl, deadline)
        with self._lock:
            self.lease_id = lease_id
            self.ttl = ttl
            self._valid_until = sent + ttl
        log.info("session lease %x granted (ttl %ds)", lease_id, ttl)
        return lease_id

    def expires_at(self) -> float:
        """Monotonic time before which etcd cannot have expired the lease."""
        with self._lock:
            return self._valid_until

    def stop(self, timeout: float = 2.0) -> None:
        super().stop(timeout)
        self._keepalive.close(join=1.0)

    def revoke(self, deadline: Deadline) -> None:
        """Revoke the lease: its keys vanish at once."""
        with self._lock:
            lease_id, self.lease_id = self.lease_id, 0
            self._valid_until = -math.inf
        if lease_id:
            self.client.lease_revoke(lease_id, deadline)

    def keepalive_once(self) -> bool:
        with self._lock:
            lease_id = self.lease_id
        if not lease_id:
            return False
        sent = time.monotonic()
        try:
            ttl = self._keepalive.keepalive(lease_id, Deadline(self.send_timeout, self.stop_event))
        except LeaseNotFoundError:
            ttl = 0
        except EtcdraftError as exc:
            self.keepalive_failures += 1
            if self.keepalive_failures == 1 or self.keepalive_failures % 20 == 0:
                log.warning(
                    "lease keep-alive failed (%d in a row): %s", self.keepalive_failures, exc
                )
            return False
        if ttl <= 0:
            with self._lock:
                if self.lease_id == lease_id:
                    self._valid_until = -math.inf
            log.warning("session lease %x expired at etcd", lease_id)
            self.on_lost(lease_id)
            return False
        if self.keepalive_failures:
            log.info("lease keep-alive recovered after %d failures", self.keepalive_failures)
        self.keepalive_failures = 0
        self.last_keepalive_latency = time.monotonic() - sent
        with self._lock:
            if self.lease_id == lease_id:
                self._valid_until = max(self._valid_until, sent + ttl)
        return True

    def _run(self) -> None:
        try:
            while not self.stop_event.is_set():
                started = time.monotonic()
                try:
                    self.keepalive_once()
                    if self.on_tick is not None:
                        self.on_tick()
                except Exception:  # never let the keep-alive thread die
                    log.exception("session keep-alive round failed")
                # at least a short pause even if the round overran (no hot loop)
                self.stop_event.wait(max(0.01, self.interval - (time.monotonic() - started)))
        finally:
            self._keepalive.close(join=1.0)  # the stream's reader thread is ours too
