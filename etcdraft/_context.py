"""What every part of a :class:`~etcdraft.Node` shares and nobody changes after
``start()``: the configuration, the node id, the key layout, the logger, the stop
signal and the etcd client; plus the rate-limited warning every part uses. Nothing
here is public."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from etcdraft.config import Config
from etcdraft.errors import ConfigError, EtcdUnavailableError
from etcdraft.etcd import EtcdClient
from etcdraft.keys import Keys

__all__ = ["NodeContext"]

#: Seconds between two warnings of the same kind.
WARN_EVERY = 10.0


class NodeContext:
    """Read-only for the parts (``client`` is set once, by ``Node.start()``). Refuses
    what no node can run with: a ``config`` that is no :class:`Config`, or one without
    etcd endpoints (``ConfigError``)."""

    def __init__(self, config: Config, log: logging.Logger) -> None:
        if not isinstance(config, Config):
            raise TypeError(f"config must be an etcdraft.Config, not {type(config).__name__}")
        if not config.endpoints:
            raise ConfigError(
                "Node needs etcd endpoints: set Config.endpoints (env ETCDRAFT_ENDPOINTS), "
                "e.g. http://127.0.0.1:2379; for a local etcd use etcdraft.embedded",
                field="endpoints",
            )
        self.config = config
        self.log = log
        self.id = config.node_id
        self.keys = Keys(config.namespace)
        self.stopping = threading.Event()  # set once, when the node stops
        self.client: EtcdClient | None = None
        self.started = False
        #: the current term for log records (the elector's, set when it exists)
        self.current_term: Callable[[], int] = lambda: 0
        self._warned: dict[str, float] = {}
        self._warn_lock = threading.Lock()

    def require_client(self) -> EtcdClient:
        client = self.client
        if client is None or not self.started:
            raise EtcdUnavailableError(f"node {self.id} is not started; call start() first")
        return client

    def figures(self) -> dict[str, Any]:
        """The node id and the etcd client's fields of
        :class:`~etcdraft.stats.NodeStats` (0 before ``start()``)."""
        client = self.client
        return {
            "node_id": self.id,
            "observed_revision": client.max_revision if client is not None else 0,
            "endpoint_failovers": client.failovers if client is not None else 0,
        }

    def extra(self, **fields: Any) -> dict[str, Any]:
        """The structured fields of a log record (node id, term, ...)."""
        fields.setdefault("node_id", self.id)
        fields.setdefault("term", self.current_term())
        return fields

    def warn_once(self, key: str, msg: str, *args: Any) -> None:
        """Log a warning of kind ``key`` at most every WARN_EVERY seconds."""
        now = time.monotonic()
        with self._warn_lock:
            if now - self._warned.get(key, -math.inf) < WARN_EVERY:
                return
            self._warned[key] = now
        self.log.warning(msg, *args, extra=self.extra())
