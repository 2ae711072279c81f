"""Shared state of a :class:`~etcdraft.Node` and the helpers every part uses.

``Node`` is composed of this core, the election/membership part
(:mod:`etcdraft.election`) and the replication part (:mod:`etcdraft.replication`);
they are split by concern to keep each module readable, and share one lock and one
view. Nothing here is public.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

from etcdraft._deadline import Deadline
from etcdraft.blocks import PieceBuffer
from etcdraft.config import Config
from etcdraft.errors import EtcdUnavailableError
from etcdraft.etcd import EtcdClient
from etcdraft.fsm import FSM
from etcdraft.heartbeat import Heartbeat
from etcdraft.keys import Keys
from etcdraft.session import Session
from etcdraft.view import View
from etcdraft.watch import Watcher

__all__: list[str] = []


class NodeCore:
    """Attributes shared by the parts of ``Node`` (set in ``Node.__init__``)."""

    _config: Config
    _log: logging.Logger
    _id: str
    _keys: Keys
    _fsm: FSM
    _lock: threading.RLock
    _cond: threading.Condition
    _view: View
    _client: EtcdClient | None
    _session: Session | None
    _watcher: Watcher | None
    _control_thread: threading.Thread | None
    _changed: threading.Event
    _stopping: threading.Event
    _retiring: threading.Event
    _session_lost: threading.Event
    _started: bool
    _closed: bool
    _bcast_lock: threading.Lock
    _lease: int
    _my_key: bytes
    _my_rev: int
    _claimed: int
    _term: int
    _hold_campaign_until: float
    _warned: dict[str, float]
    _heartbeat: Heartbeat
    deposed: int
    foreign_keys: int
    _request_limit: int
    _pieces: PieceBuffer
    pieces_written: int
    pieces_cleaned: int
    _last_piece_sweep: float
    corrupt_blocks: int
    etcd_full: bool

    # -- implemented by the other parts ---------------------------------------------

    def is_leader(self) -> bool:
        raise NotImplementedError

    def leader_id(self) -> str:
        raise NotImplementedError

    def _holds_term(self) -> bool:
        raise NotImplementedError

    def _new_session(self, deadline: Deadline) -> None:
        raise NotImplementedError

    def _refresh_leadership(self) -> None:
        raise NotImplementedError

    def _read_view(self, client: EtcdClient, deadline: Deadline) -> View:
        raise NotImplementedError

    # -- shared helpers ----------------------------------------------------------------

    def _require_client(self) -> EtcdClient:
        client = self._client
        if client is None or not self._started:
            raise EtcdUnavailableError(f"node {self._id} is not started; call start() first")
        return client

    def _extra(self, **fields: Any) -> dict[str, Any]:
        fields.setdefault("node_id", self._id)
        fields.setdefault("term", self._term)
        return fields

    def _warn_once(self, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._warned.get(key, -math.inf) >= 10.0:
            self._warned[key] = now
            self._log.warning(msg, *args, extra=self._extra())

    def _step_down(self, reason: str) -> None:
        with self._cond:
            term, self._term = self._term, 0
            self._cond.notify_all()
        if term:
            self._log.info(
                "node %s stepped down (term %d): %s",
                self._id,
                term,
                reason,
                extra=self._extra(term=term),
            )

    # -- catch-up --------------------------------------------------------------------
