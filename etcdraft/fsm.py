"""The finite state machine: applies replicated block states, in order, and keeps
local snapshots of the applied state in ``raft_dir``."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Protocol

from google.protobuf.message import DecodeError

from etcdraft.proto import RaftBlockState
from etcdraft.types import RaftApplyMsg

__all__ = ["FSM", "ApplyQueue", "Snapshot", "SnapshotStore", "decode_state"]

log = logging.getLogger(__name__)


class ApplyQueue(Protocol):
    def put_nowait(self, item: RaftApplyMsg) -> None: ...


def decode_state(data: bytes) -> RaftBlockState:
    """Decode protobuf bytes of a ``RaftBlockState``.

    Raises:
        ValueError: the bytes are not a ``RaftBlockState``.
    """
    state = RaftBlockState()
    try:
        state.ParseFromString(data)
    except DecodeError as exc:
        raise ValueError(f"not a RaftBlockState: {exc}") from exc
    return state


def short_hash(state: RaftBlockState) -> str:
    return state.hash[:4].hex() if state.hash else "-"


class Snapshot:
    __slots__ = ("index", "state", "term")

    def __init__(self, index: int, term: int, state: RaftBlockState) -> None:
        self.index = index
        self.term = term
        self.state = state


_SNAP_RE = re.compile(r"^snapshot-(\d{20})-(\d{20})\.json$")


class SnapshotStore:
    """Snapshots of the applied state in a directory: ``snapshot-<height>-<index>.json``
    files, written atomically (temp file, fsync, rename, fsync of the directory);
    the newest ``retain`` are kept."""

    def __init__(
        self, directory: str | os.PathLike[str], retain: int, *, namespace: str = ""
    ) -> None:
        self.directory = Path(directory)
        self.retain = max(1, retain)
        self.namespace = namespace

    def save(self, snap: Snapshot) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"snapshot-{snap.state.height:020d}-{snap.index:020d}.json"
        body = json.dumps(
            {
                "format": 1,
                "namespace": self.namespace,
                "index": snap.index,
                "term": snap.term,
                "height": snap.state.height,
                "state": snap.state.SerializeToString().hex(),
            }
        ).encode()
        fd, tmp = tempfile.mkstemp(prefix=".snapshot-", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            final = self.directory / name
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._prune()
        return final

    def _files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if _SNAP_RE.match(p.name))

    def _prune(self) -> None:
        for old in self._files()[: -self.retain]:
            with contextlib.suppress(OSError):
                old.unlink()

    def load_latest(self) -> Snapshot | None:
        """The newest readable snapshot; unreadable files are logged and skipped."""
        for path in reversed(self._files()):
            try:
                raw: dict[str, Any] = json.loads(path.read_bytes())
                if self.namespace and raw.get("namespace", self.namespace) != self.namespace:
                    log.warning(
                        "ignoring snapshot %s: it belongs to namespace %r, not %r",
                        path,
                        raw.get("namespace"),
                        self.namespace,
                    )
                    continue
                state = decode_state(bytes.fromhex(raw["state"]))
                return Snapshot(int(raw["index"]), int(raw["term"]), state)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("skipping unreadable snapshot %s: %s", path, exc)
        return None


class FSM:
    """Applies replicated block states (Go: ``FSM``).

    Thread-safe. ``apply`` is called in etcd revision order by the node's watch (and
    by the leader for its own committed writes); entries at or below the applied
    index are ignored, so each entry is applied exactly once.
    """

    def __init__(self, node_id: str = "", snapshots: SnapshotStore | None = None) -> None:
        self.node_id = node_id
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        # Held from an entry's apply through its notification, so notifications leave
        # in apply (index) order although two threads apply (the leader's broadcast
        # and the watch). Never held by readers or wait_applied.
        self._notify_lock = threading.Lock()
        self._state = RaftBlockState()
        self._encoded = b""
        self._index = 0
        self._seen = 0  # highest revision processed in order, applied or skipped
        self._term = 0
        self._queue: ApplyQueue | None = None
        self._snapshots = snapshots
        self._snapshot_index = 0
        self.applied = 0
        self.dropped = 0
        self.skipped = 0
        # (height, encoded size) of entries applied since start, oldest first: what the
        # leader's pruner needs to bound the log in etcd by bytes
        self._sizes: deque[tuple[int, int]] = deque()
        self._last_drop_log = -float("inf")

    # -- reads ---------------------------------------------------------------------

    def state(self) -> RaftBlockState:
        """A copy of the latest applied state."""
        with self._lock:
            copy = RaftBlockState()
            copy.CopyFrom(self._state)
            return copy

    def snapshot(self) -> Snapshot:
        with self._lock:
            copy = RaftBlockState()
            copy.CopyFrom(self._state)
            return Snapshot(self._index, self._term, copy)

    def head(self) -> tuple[int, int, bytes]:
        """(height, timestamp, encoded bytes) of the applied state, without a copy."""
        with self._lock:
            return self._state.height, self._state.timestamp, self._encoded

    @property
    def index(self) -> int:
        return self._index

    @property
    def term(self) -> int:
        return self._term

    @property
    def height(self) -> int:
        return self._state.height

    def figures(self) -> dict[str, Any]:
        """This part's fields of :class:`~etcdraft.stats.NodeStats`."""
        with self._lock:
            return {
                "applied_index": self._index,
                "applied_height": self._state.height,
                "applied_term": self._term,
                "applied": self.applied,
                "dropped": self.dropped,
                "skipped": self.skipped,
            }

    def set_apply_callback(self, queue: ApplyQueue | None) -> None:
        with self._lock:
            self._queue = queue

    # -- writes --------------------------------------------------------------------

    def restore(self, snap: Snapshot, *, notify: bool = False) -> None:
        """Replace the state wholesale (raft's Restore), e.g. from a local snapshot
        or after the entries in between were pruned from etcd."""
        with self._notify_lock:
            with self._cond:
                self._state = snap.state
                self._encoded = snap.state.SerializeToString()
                self._index = snap.index
                self._term = max(self._term, snap.term)
                queue = self._queue if notify else None
                self._cond.notify_all()
            if queue is not None:
                self._offer(queue, RaftApplyMsg(snap.index, snap.term, snap.state))

    def apply_entry(self, height: int, data: bytes, index: int, term: int) -> bool:
        """Apply the entry stored at ``log/<height>`` with revision ``index``.

        Returns False (logged and counted) when the entry is skipped: already
        applied, not a ``RaftBlockState``, a height that does not match its key, or
        not above the applied height (written by someone else).
        """
        if index <= self._index:
            return False
        try:
            state = decode_state(data)
        except ValueError as exc:
            self._skip(index, f"log/{height} at revision {index} is corrupt ({exc})", seen=True)
            return False
        if state.height != height:
            self._skip(
                index,
                f"log/{height} at revision {index} holds height {state.height}: foreign write",
                seen=True,
            )
            return False
        return self.apply(state, index, term, encoded=data)

    def apply(
        self, state: RaftBlockState, index: int, term: int, *, encoded: bytes | None = None
    ) -> bool:
        with self._notify_lock:
            with self._cond:
                if index <= self._index:
                    return False
                if state.height <= self._state.height:
                    reason = (
                        f"height {state.height} at revision {index} is not above the applied "
                        f"height {self._state.height}: written by someone else"
                    )
                else:
                    reason = ""
                    self._state = state
                    self._encoded = encoded if encoded is not None else state.SerializeToString()
                    self._sizes.append((state.height, len(self._encoded)))
                    self._index = index
                    self._term = max(self._term, term)
                    self.applied += 1
                    queue = self._queue
                    self._cond.notify_all()
            if reason:
                self._skip(index, reason, seen=True)
                return False
            if queue is not None:
                self._offer(queue, RaftApplyMsg(index, term, state))
            return True

    def byte_cut(self, keep_bytes: int) -> int:
        """The highest height to prune so that the applied entries above it (as far as
        this node saw them applied) total at most ``keep_bytes``; 0 when all fit."""
        with self._lock:
            total = 0
            for height, size in reversed(self._sizes):
                total += size
                if total > keep_bytes:
                    return height
            return 0

    def forget_sizes(self, upto: int) -> None:
        """Drop the sizes of entries at or below ``upto`` (pruned from etcd)."""
        with self._lock:
            while self._sizes and self._sizes[0][0] <= upto:
                self._sizes.popleft()

    def skip(self, reason: str) -> None:
        """Count and log an entry that is not applied (found out of order)."""
        self._skip(self._index, reason)

    def skip_entry(self, index: int, reason: str) -> None:
        """Count and log the entry at revision ``index`` as never to be applied
        (corrupt); it counts as processed for :meth:`wait_applied`."""
        if index > self._index:
            self._skip(index, reason, seen=True)

    def _skip(self, index: int, reason: str, *, seen: bool = False) -> None:
        """Count and log a skipped entry; with ``seen``, the entry at revision
        ``index`` counts as processed for :meth:`wait_applied` (a skipped entry is
        never applied: waiting for it would never end)."""
        self.skipped += 1
        if seen:
            with self._cond:
                if index > self._seen:
                    self._seen = index
                    self._cond.notify_all()
        log.warning("skipping entry: %s", reason, extra={"node_id": self.node_id, "index": index})

    def _offer(self, queue: ApplyQueue, msg: RaftApplyMsg) -> None:
        try:
            queue.put_nowait(msg)
        except Exception:  # queue.Full, or any queue-like that refuses
            self.dropped += 1
            now = time.monotonic()
            if now - self._last_drop_log >= 5.0:
                self._last_drop_log = now
                log.warning(
                    "apply queue full: dropped notification for height %d (%d dropped so "
                    "far); drain the queue faster or give it more room",
                    msg.state.height,
                    self.dropped,
                    extra={"node_id": self.node_id, "height": msg.state.height},
                )

    def wait_applied(
        self, index: int, timeout: float, cancel: threading.Event | None = None
    ) -> bool:
        """Wait until an entry at revision ``index`` or later is applied."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while max(self._index, self._seen) < index:
                left = deadline - time.monotonic()
                if left <= 0 or (cancel is not None and cancel.is_set()):
                    return False
                self._cond.wait(min(left, 0.1))
            return True

    # -- snapshots -----------------------------------------------------------------

    def load_snapshot(self) -> Snapshot | None:
        if self._snapshots is None:
            return None
        snap = self._snapshots.load_latest()
        if snap is not None:
            self.restore(snap)
            self._snapshot_index = snap.index
        return snap

    def save_snapshot(self) -> bool:
        """Write a snapshot if anything was applied since the last one."""
        if self._snapshots is None:
            return False
        snap = self.snapshot()
        if snap.index <= self._snapshot_index or snap.state.height == 0:
            return False
        self._snapshots.save(snap)
        self._snapshot_index = snap.index
        return True
