"""The node's view of the namespace, as one part: the :class:`~etcdraft.view.View`
(candidates, members, liveness, term records, pruned marker, heartbeat, pause,
succession), its lock, and a condition every change is announced on.

The watch thread (:class:`~etcdraft.replicator.Replicator`) is the only writer; every
other part reads copies (:meth:`ClusterView.snapshot`) or single answers, and waits
for changes with :meth:`ClusterView.wait`. Leadership changes are announced on the
same condition (:meth:`ClusterView.notify`), so a waiter sees both."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from etcdraft.view import Candidate, Progress, View

__all__ = ["ClusterView"]

#: Longest wait between two checks of a waiter's condition (in case a change came
#: without an announcement, e.g. leadership lapsing by time).
POLL = 0.1


class _Editing:
    """``ClusterView.editing()``: holds the view's lock, yields the live view."""

    __slots__ = ("_owner",)

    def __init__(self, owner: ClusterView) -> None:
        self._owner = owner

    def __enter__(self) -> View:
        self._owner._lock.acquire()
        return self._owner._view

    def __exit__(self, *exc: object) -> None:
        self._owner._lock.release()


class ClusterView:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._view = View()
        self._editing = _Editing(self)

    # -- the writer (the watch thread, and start()) --------------------------------

    def replace(self, view: View) -> None:
        """Install a view read from etcd at one revision (start, compaction heal)."""
        with self._cond:
            self._view = view
            self._cond.notify_all()

    def editing(self) -> _Editing:
        """The live view, for the writer only, under the lock (``with ... as view``;
        a plain context manager: this runs for every watch batch)."""
        return self._editing

    def notify(self) -> None:
        """Wake every waiter (the view or leadership changed)."""
        with self._cond:
            self._cond.notify_all()

    # -- readers ---------------------------------------------------------------------

    def snapshot(self) -> View:
        """A copy of the view, independent of later changes."""
        with self._lock:
            v = self._view
            return dataclasses.replace(
                v,
                candidates=dict(v.candidates),
                members=dict(v.members),
                alive=dict(v.alive),
                term_revs=list(v.term_revs),
                terms=list(v.terms),
                term_nodes=list(v.term_nodes),
            )

    def leader(self) -> Candidate | None:
        with self._lock:
            return self._view.leader()

    def members(self) -> dict[str, str]:
        with self._lock:
            return dict(self._view.members)

    def alive(self) -> dict[str, Progress | None]:
        with self._lock:
            return dict(self._view.alive)

    def is_member(self, node_id: str) -> bool:
        """Without the lock: the session thread asks before each progress report, and
        keep-alives must never wait for a busy view (one dict lookup on the current
        view is atomic; at worst it answers for the view of a moment ago)."""
        return node_id in self._view.members

    def figures(self) -> dict[str, Any]:
        """This part's fields of :class:`~etcdraft.stats.NodeStats`."""
        with self._lock:
            v = self._view
            return {
                "members": len(v.members),
                "live_nodes": len(v.alive),
                "paused": v.pause is not None,
            }

    def latest_term(self) -> tuple[int, str]:
        with self._lock:
            return self._view.latest_term()

    def responsive(self, timeout: float) -> bool:
        """True when the view's lock could be taken within ``timeout`` (a probe)."""
        if not self._lock.acquire(timeout=timeout):
            return False
        self._lock.release()
        return True

    def wait(self, changed: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``changed()`` holds (checked under the lock at every
        announcement, and at least every POLL seconds); False after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not changed():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, POLL))
            return True

    @contextmanager
    def condition(self) -> Iterator[threading.Condition]:
        """The condition itself, held (for waits that need it directly)."""
        with self._cond:
            yield self._cond
