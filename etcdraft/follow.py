"""The stream of replicated blocks of a namespace, without a running
:class:`~etcdraft.Node` (``etcdraft watch``): :class:`LogFollower` and :class:`LogEntry`."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any

from etcdraft import protocol
from etcdraft._deadline import Deadline
from etcdraft.blocks import summarize
from etcdraft.errors import EtcdraftError
from etcdraft.etcd import KV, EtcdClient, prefix_end
from etcdraft.keys import Keys
from etcdraft.proto import RaftBlockState
from etcdraft.protocol import DEFAULT_TIMEOUT
from etcdraft.view import TermRecord, View
from etcdraft.watch import Watcher, WatchEvent

__all__ = ["LogEntry", "LogFollower"]


@dataclass(frozen=True)
class LogEntry:
    """One replicated block: ``index`` is its etcd revision, ``term`` the term it was
    written in and ``leader`` that term's leader."""

    height: int
    index: int
    term: int
    leader: str
    state: RaftBlockState
    #: encoded bytes of the whole state (a large block's ``state`` carries no payload)
    size: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "index": self.index,
            "term": self.term,
            "leader": self.leader,
            "hash": self.state.hash.hex(),
            "timestamp": self.state.timestamp,
            "size": self.size or self.state.ByteSize(),
        }


class LogFollower:
    """The stream of replicated blocks of a namespace, in order, from a watch.

    ``start(from_height)`` first reads the entries from ``from_height`` on (when
    given), then follows new ones; :meth:`get` returns them one at a time. Corrupt or
    foreign entries are skipped. After a compaction of the watched revision the entries
    in between are re-read, so none is missed.
    """

    def __init__(self, client: EtcdClient, keys: Keys, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.client = client
        self.keys = keys
        self.timeout = timeout
        self._view = View()
        self._lock = threading.Lock()
        self._queue: queue.Queue[LogEntry] = queue.Queue()
        self._last_height = 0
        self._watcher: Watcher | None = None

    def start(self, from_height: int | None = None) -> None:
        rev = self._read(from_height, 0)
        self._watcher = Watcher(
            self.client,
            self.keys.root,
            rev + 1,
            self._on_events,
            self._on_compacted,
            name="etcdraft-cli-watch",
            probe_after=2.0,
            probe_timeout=min(self.timeout, 2.0),
        )
        self._watcher.start()

    @property
    def connected(self) -> bool:
        return self._watcher is not None and self._watcher.connected.is_set()

    def get(self, timeout: float) -> LogEntry | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()

    def _read(self, from_height: int | None, revision: int) -> int:
        """Terms, then (when ``from_height``) the log from there, at one revision."""
        deadline = Deadline(self.timeout)
        k = self.keys
        terms, rev = protocol.range_all(self.client, k.terms_prefix, deadline, revision)
        if not rev:
            rev = self.client.range(k.pruned, None, deadline).revision
        with self._lock:
            for kv in terms:
                parsed = k.parse(kv.key)
                if parsed.kind == "term":
                    self._view.add_term(
                        kv.create_revision, parsed.number, TermRecord.parse(kv.value).node_id
                    )
        if from_height is not None:
            start = k.log(max(1, from_height))
            for page, _ in protocol.pages(
                self.client, start, prefix_end(k.log_prefix), deadline, rev, limit=256
            ):
                self._emit([(kv, False) for kv in page])
        else:
            self._last_height = protocol.log_head(self.client, k, deadline, rev)
        return rev

    def _emit(self, kvs: list[tuple[KV, bool]]) -> None:
        k = self.keys
        for kv, deleted in kvs:
            parsed = k.parse(kv.key)
            if parsed.kind == "term":
                with self._lock:
                    if deleted:
                        self._view.remove_term(parsed.number)
                    else:
                        self._view.add_term(
                            kv.create_revision, parsed.number, TermRecord.parse(kv.value).node_id
                        )
                continue
            if parsed.kind != "log" or deleted or parsed.number <= self._last_height:
                continue
            try:
                state, size = summarize(kv.value)  # a large block: its manifest, no payload
            except ValueError:
                continue
            with self._lock:
                term = self._view.term_at(kv.mod_revision)
                i = self._view.terms.index(term) if term in self._view.terms else -1
                leader = self._view.term_nodes[i] if i >= 0 else ""
            self._last_height = parsed.number
            self._queue.put(LogEntry(parsed.number, kv.mod_revision, term, leader, state, size))

    def _on_events(self, events: list[WatchEvent], top: int) -> None:
        self._emit([(ev.kv, ev.deleted) for ev in events])

    def _on_compacted(self, compact_revision: int, watched_upto: int) -> int | None:
        # re-read what the compaction took; on failure the watch loop tries again
        try:
            return self._read(self._last_height + 1, 0)
        except EtcdraftError:
            return None
