"""The replication part of a :class:`~etcdraft.Node`: catching up by range reads,
healing after compaction and after a broken watch, and turning watch events into
applied entries and view updates. It owns the watch (and its thread), the applier
thread, the pieces of large blocks seen on the watch until their manifest commits,
and the counters of what it skipped.

Threads: the watch's reader decodes each batch and hands it over. A batch that needs
no etcd I/O (no large block's manifest) and finds the applier idle is applied on the
reader at once, which keeps an isolated write's path short; every other batch, and
every heal (compaction, reconnect), goes in order through a queue, bounded by bytes,
to the applier thread. So the reader never does etcd I/O, and order is kept: a batch
is applied on the reader only when nothing is queued or being applied."""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import tenacity

from etcdraft import protocol
from etcdraft._context import NodeContext
from etcdraft._deadline import Deadline
from etcdraft._worker import Worker
from etcdraft.blocks import Manifest, PieceBuffer, assemble, is_manifest, parse_manifest
from etcdraft.cluster_view import ClusterView
from etcdraft.elector import Elector
from etcdraft.errors import CorruptDataError, EtcdraftError, EtcdUnavailableError
from etcdraft.etcd import KV, CompactedError, EtcdClient, prefix_end
from etcdraft.fsm import FSM, Snapshot, decode_state
from etcdraft.heartbeat import Heartbeat
from etcdraft.view import View
from etcdraft.watch import Watcher, WatchEvent

__all__ = ["Replicator"]

#: Log entries fetched per range request when catching up.
CATCHUP_PAGE = 64

#: Bytes of watch events the applier's queue holds before the watch reader waits
#: (then the stream's flow control holds etcd back): with the piece buffer, this
#: bounds what a follower holds in flight (docs/architecture.md, "Memory").
INBOX_BYTES = 16 << 20


@dataclass(eq=False)
class _Heal:
    """A heal the watch asked for: re-read the namespace, apply what is missing."""

    why: str  # "compacted" or "reconnect"
    watched_upto: int  # the revision up to which the watch delivered everything
    budget: float  # seconds the re-read may take, retries included
    done: threading.Event = field(default_factory=threading.Event)
    revision: int | None = None  # the revision read at; None: the heal failed


@dataclass(eq=False)
class _Batch:
    events: list[WatchEvent]
    top: int
    size: int


class _Applier(Worker):
    """The thread that applies queued batches and runs heals, in order."""

    def __init__(self, replicator: Replicator, name: str) -> None:
        super().__init__(name)
        self._rep = replicator

    def signal_stop(self) -> None:
        super().signal_stop()
        with self._rep._inbox_cond:
            self._rep._inbox_cond.notify_all()

    def _run(self) -> None:
        rep = self._rep
        while True:
            with rep._inbox_cond:
                while (not rep._inbox or rep._busy) and not self.stop_event.is_set():
                    rep._inbox_cond.wait(5.0)  # woken by every enqueue and by stop
                if self.stop_event.is_set():
                    for item in rep._inbox:  # nobody waits for the rest
                        if isinstance(item, _Heal):
                            item.done.set()
                    rep._inbox.clear()
                    return
                item = rep._inbox.popleft()
                rep._busy = True
            try:
                if isinstance(item, _Heal):
                    rep._run_heal(item)
                else:
                    rep._process(item.events, item.top)
            except Exception:  # never let the applier die; the watch heals on reconnect
                rep._ctx.log.exception("applying watch events failed", extra=rep._ctx.extra())
            finally:
                with rep._inbox_cond:
                    rep._busy = False
                    if isinstance(item, _Batch):
                        rep._inbox_bytes -= item.size
                    rep._inbox_cond.notify_all()


class Replicator:
    """Owns: the watch, the applier thread and its queue, the piece buffer,
    ``corrupt_blocks``, ``foreign_keys`` and ``gap_entries``. Batches are applied
    on the watch reader or the applier (see the module's docstring); :meth:`resync`
    runs at start on the caller and afterwards only on the applier."""

    def __init__(
        self,
        ctx: NodeContext,
        cluster: ClusterView,
        fsm: FSM,
        heartbeat: Heartbeat,
        elector: Elector,
    ) -> None:
        self._ctx = ctx
        self._cluster = cluster
        self._fsm = fsm
        self._heartbeat = heartbeat
        self._elector = elector
        self._pieces = PieceBuffer(max_bytes=2 * ctx.config.max_block_bytes)
        self.watcher: Watcher | None = None
        self.applier = _Applier(self, f"etcdraft-apply-{ctx.id}")
        self.corrupt_blocks = 0
        self.foreign_keys = 0
        self.gap_entries = 0  # entries a reconnect heal found the watch had skipped
        self.heals = {"compacted": 0, "reconnect": 0}  # heals that succeeded, by cause
        self._inbox: deque[_Batch | _Heal] = deque()
        self._inbox_cond = threading.Condition(threading.Lock())
        self._inbox_bytes = 0
        self._busy = False  # a batch or heal is being applied (on either thread)

    def start(self, revision: int) -> None:
        """Follow the namespace from ``revision`` + 1 (the revision read at)."""
        client = self._ctx.client
        assert client is not None
        cfg = self._ctx.config
        self.watcher = Watcher(
            client,
            self._ctx.keys.root,
            revision + 1,
            self._on_events,
            self._on_compacted,
            on_reconnect=self._on_reconnect,
            name=f"etcdraft-watch-{self._ctx.id}",
            probe_after=max(1.0, cfg.heartbeat_timeout * 2),
            probe_timeout=cfg.send_timeout,
        )
        self.applier.start()
        self.watcher.start()

    def signal_stop(self) -> None:
        if self.watcher is not None:
            self.watcher.signal_stop()
        self.applier.signal_stop()

    def threads(self) -> dict[str, threading.Thread | None]:
        """The threads this part owns, by role (joined by the node at stop)."""
        watcher = self.watcher
        return {"watch": watcher.thread if watcher else None, "apply": self.applier.thread}

    def figures(self) -> dict[str, Any]:
        """This part's fields of :class:`~etcdraft.stats.NodeStats`."""
        watcher = self.watcher
        return {
            "foreign_keys": self.foreign_keys,
            "corrupt_blocks": self.corrupt_blocks,
            "watch_reconnects": watcher.reconnects if watcher is not None else 0,
            "watch_resyncs": watcher.resyncs if watcher is not None else 0,
            "watch_connected": watcher is not None and watcher.connected.is_set(),
            "watch_gap_entries": self.gap_entries,
        }

    def resync(self, deadline: Deadline, *, watched_upto: int = 0) -> int:
        """Read the namespace at one revision, rebuild the view and apply every log
        entry above the applied height (or restore the latest, when pruned).
        Returns the revision read at. ``watched_upto``: the revision up to which the
        watch claims to have delivered everything; an entry at or below it that was
        never applied is a gap in the watch (counted in ``gap_entries``, logged)."""
        client = self._ctx.require_client() if self._ctx.started else self._ctx.client
        assert client is not None
        view = protocol.read_view(client, self._ctx.keys, deadline, on_foreign=self._foreign)
        rev = view.revision
        self._note_heartbeat(view)
        self._cluster.replace(view)
        self._catch_up(client, view, rev, deadline, watched_upto)
        self._elector.refresh()
        return rev

    def _catch_up(
        self, client: EtcdClient, view: View, rev: int, deadline: Deadline, watched_upto: int = 0
    ) -> None:
        k = self._ctx.keys
        height = self._fsm.height
        end = prefix_end(k.log_prefix)
        if view.pruned > height:
            res = client.range(k.log_prefix, end, deadline, revision=rev, limit=1, descending=True)
            if res.kvs and self._restore_from(res.kvs[0], view, height):
                return
        start = k.log(height + 1)
        late = self._written_late(client, start, end, rev, deadline)
        while True:
            res = client.range(start, end, deadline, revision=rev, limit=CATCHUP_PAGE)
            for kv in res.kvs:
                parsed = k.parse(kv.key)
                if parsed.kind != "log":
                    continue
                if kv.mod_revision in late:
                    self._fsm.skip(
                        f"log/{parsed.number} at revision {kv.mod_revision} was written after "
                        "higher heights: not written by etcdraft"
                    )
                    continue
                data = self._resolve(parsed.number, kv.value, kv.mod_revision, deadline)
                if data is None:
                    continue
                term = view.term_at(kv.mod_revision)
                applied = self._fsm.apply_entry(parsed.number, data, kv.mod_revision, term)
                if applied and kv.mod_revision <= watched_upto:
                    self._gap(parsed.number, kv.mod_revision, watched_upto)
            if not res.more or not res.kvs:
                return
            start = res.kvs[-1].key + b"\x00"

    def _written_late(
        self, client: EtcdClient, start: bytes, end: bytes, rev: int, deadline: Deadline
    ) -> set[int]:
        """Revisions of log entries written after a higher height existed.

        etcdraft creates log entries in height order, so their revisions increase
        with the height. An entry with a revision above that of a higher height was
        put there later by someone else (a foreign write or overwrite): the watch skips
        it on live nodes (its height is not above the applied one), and catch-up must
        too: applying it would make every genuine entry after it look already applied
        (a lower revision) and drop it."""
        revs: list[int] = []
        while True:
            res = client.range(start, end, deadline, revision=rev, limit=1000, keys_only=True)
            revs += [
                kv.mod_revision for kv in res.kvs if self._ctx.keys.parse(kv.key).kind == "log"
            ]
            if not res.more or not res.kvs:
                break
            start = res.kvs[-1].key + b"\x00"
        late: set[int] = set()
        floor = math.inf  # the lowest revision among the higher heights
        for r in reversed(revs):
            if r > floor:
                late.add(r)
            else:
                floor = r
        return late

    def _restore_from(self, kv: KV, view: View, height: int) -> bool:
        parsed = self._ctx.keys.parse(kv.key)
        data = self._resolve(parsed.number, kv.value, kv.mod_revision, Deadline(30.0))
        if data is None:
            return False
        try:
            state = decode_state(data)
        except ValueError as exc:
            self._ctx.warn_once("restore", "cannot restore from corrupt %r: %s", kv.key, exc)
            return False
        if state.height <= height:
            return False
        self._ctx.log.warning(
            "entries after height %d were pruned from etcd; restoring the latest state "
            "(height %d) as a snapshot",
            height,
            state.height,
            extra=self._ctx.extra(height=state.height),
        )
        self._fsm.restore(
            Snapshot(kv.mod_revision, view.term_at(kv.mod_revision), state), notify=True
        )
        return True

    def _resolve(
        self, height: int, value: bytes, rev: int, deadline: Deadline | None
    ) -> bytes | None:
        """The state's bytes stored at ``log/<height>``: the value itself, or, for a
        large block's manifest, its pieces assembled and checked against the digest
        (from the pieces the watch delivered, else read back from etcd). None when
        they are corrupt or missing: logged, counted, the entry skipped."""
        if not is_manifest(value):
            return value
        try:
            manifest = parse_manifest(value)
            if manifest.height != height:
                raise CorruptDataError(
                    f"log/{height} holds the manifest of height {manifest.height}"
                )
            pieces = self._pieces.take(manifest)
            if pieces is None:
                pieces = self._read_pieces(manifest, rev, deadline)
            try:
                return assemble(manifest, pieces)
            except CorruptDataError:
                # what the watch delivered may have been superseded: read it once more
                return assemble(manifest, self._read_pieces(manifest, rev, deadline))
        except CorruptDataError as exc:
            self.corrupt_blocks += 1
            self._fsm.skip_entry(rev, f"log/{height} at revision {rev}: {exc}")
            return None

    def _read_pieces(self, manifest: Manifest, rev: int, deadline: Deadline | None) -> list[bytes]:
        """The pieces of ``manifest`` as etcd holds them at revision ``rev`` (when
        the manifest was committed; pieces are never changed after that)."""
        client = self._ctx.client
        if client is None:
            raise CorruptDataError("no etcd client to read the pieces with")
        prefix = self._ctx.keys.pieces(manifest.height, manifest.nonce)
        d = deadline or Deadline(max(self._ctx.config.send_timeout * 4, 5.0), self._ctx.stopping)
        pieces: list[bytes] = []
        start = prefix
        end = prefix_end(prefix)
        try:
            while True:
                res = client.range(start, end, d, revision=rev, limit=8)
                for kv in res.kvs:
                    parsed = self._ctx.keys.parse(kv.key)
                    if parsed.kind != "piece" or parsed.index != len(pieces):
                        raise CorruptDataError(
                            f"height {manifest.height}: unexpected piece key {kv.key!r}"
                        )
                    pieces.append(kv.value)
                if not res.more or not res.kvs:
                    return pieces
                start = res.kvs[-1].key + b"\x00"
        except CompactedError:
            # compacted past the commit revision: the pieces are still there, unchanged
            return self._read_pieces(manifest, 0, deadline)

    def _gap(self, height: int, rev: int, watched_upto: int) -> None:
        self.gap_entries += 1
        self._ctx.log.warning(
            "the watch never delivered log/%d (revision %d, at or below revision %d it "
            "had delivered up to); applied it from a range read. This is an etcd watch "
            "fault: upgrade etcd (see docs/operations.md)",
            height,
            rev,
            watched_upto,
            extra=self._ctx.extra(height=height, index=rev),
        )

    # -- heals (on the applier) ----------------------------------------------------

    def _on_compacted(self, compact_revision: int, watched_upto: int) -> int | None:
        """The watch's next revision was compacted: heal on the applier (re-read the
        namespace) and return the revision read at; None when it failed (the watch
        retries later). Runs on the watch's supervisor thread, which only waits."""
        return self._heal("compacted", watched_upto, max(self._ctx.config.shutdown_timeout, 5.0))

    def _on_reconnect(self, watched_upto: int) -> int | None:
        """The watch broke and is about to resume after ``watched_upto``: re-read the
        namespace first, so events a faulty etcd does not replay on resume (etcd
        3.5 issues 18089, 19179) are applied anyway. None: resume where it broke."""
        return self._heal("reconnect", watched_upto, max(self._ctx.config.send_timeout, 1.0))

    def _heal(self, why: str, watched_upto: int, budget: float) -> int | None:
        item = _Heal(why, watched_upto, budget)
        with self._inbox_cond:
            self._inbox.append(item)
            self._inbox_cond.notify_all()
        stopping = self._ctx.stopping
        # the queue ahead of it is bounded (INBOX_BYTES); each batch's reads have
        # their own deadline: this only stops waiting when the node stops
        while not item.done.wait(0.2):
            if stopping.is_set() or self.applier.stop_event.is_set():
                return None
        return item.revision

    def _run_heal(self, item: _Heal) -> None:
        """Re-read the namespace (retried with backoff on transient failures, bounded,
        interruptible), then wake whoever acts on the view."""
        budget = item.budget
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(EtcdUnavailableError),
            stop=tenacity.stop_any(
                tenacity.stop_after_delay(budget), tenacity.stop_when_event_set(self._ctx.stopping)
            ),
            wait=tenacity.wait_exponential(multiplier=0.05, max=0.5),
            sleep=tenacity.sleep_using_event(self._ctx.stopping),
            reraise=True,
        )
        try:
            item.revision = retrying(
                self.resync, Deadline(budget, self._ctx.stopping), watched_upto=item.watched_upto
            )
        except EtcdraftError as exc:
            self._ctx.warn_once("heal", "could not re-read the namespace (%s): %s", item.why, exc)
        finally:
            item.done.set()
        if item.revision is not None:
            self.heals[item.why] += 1
            self._ctx.log.info(
                "watch: re-read the namespace at revision %d before resuming after "
                "revision %d (%s); applied height %d",
                item.revision,
                item.watched_upto,
                item.why,
                self._fsm.height,
                extra=self._ctx.extra(height=self._fsm.height),
            )
            self._cluster.notify()
            self._elector.wake()

    # -- the watch -------------------------------------------------------------------

    def _foreign(self, key: bytes, why: str) -> None:
        self.foreign_keys += 1
        self._ctx.warn_once(
            "foreign",
            "ignoring foreign key %r under the namespace (%s); another program writes here",
            key,
            why,
        )

    def _on_events(self, events: list[WatchEvent], top: int) -> None:
        """On the watch reader: apply at once, or queue for the applier (see the
        module's docstring). Waits while the queue is full (bounded by bytes)."""
        io = False  # a large block's manifest: its pieces may have to be read
        log_prefix = self._ctx.keys.log_prefix
        for ev in events:
            if not ev.deleted and is_manifest(ev.kv.value) and ev.kv.key.startswith(log_prefix):
                io = True
                break
        with self._inbox_cond:
            inline = not io and not self._inbox and not self._busy
            if inline:
                self._busy = True
            else:
                size = sum(len(ev.kv.value) for ev in events)
                while (
                    self._inbox_bytes
                    and self._inbox_bytes + size > INBOX_BYTES
                    and not self.applier.stop_event.is_set()
                ):
                    self._inbox_cond.wait(0.5)
                self._inbox.append(_Batch(events, top, size))
                self._inbox_bytes += size
                self._inbox_cond.notify_all()
        if not inline:
            return
        try:
            self._process(events, top)
        finally:
            with self._inbox_cond:
                self._busy = False
                if self._inbox:  # a heal was queued meanwhile: the applier may go on
                    self._inbox_cond.notify_all()

    def _process(self, events: list[WatchEvent], top: int) -> None:
        k = self._ctx.keys
        entries: list[tuple[int, bytes, int]] = []  # (height, value, revision)
        view_changed = False  # anything but log entries
        wake = False  # a change the control loop or role waiters act on
        my_term = self._elector.leadership.term
        with self._cluster.editing() as view:
            for ev in events:
                kv = ev.kv
                parsed = k.parse(kv.key)
                if parsed.kind == "log":
                    if not ev.deleted:
                        entries.append((parsed.number, kv.value, kv.mod_revision))
                    continue
                if parsed.kind == "piece":
                    # buffer others' pieces; the leader's own (nonce "<its term>-...")
                    # need not come back to it
                    own = my_term and parsed.name.startswith(f"{my_term:x}-")
                    if not ev.deleted and not own and parsed.number > self._fsm.height:
                        self._pieces.add(parsed.number, parsed.name, parsed.index, kv.value)
                    continue
                view_changed = True
                if parsed.kind not in ("heartbeat", "alive"):
                    wake = True
                if ev.deleted:
                    view.delete(k, kv.key)
                else:
                    why = view.put(k, kv)
                    if why:
                        self._foreign(kv.key, why)
            terms = [view.term_at(rev) for _, _, rev in entries]
        # Apply outside the node's lock (the apply queue is user code), and before
        # leadership is derived from this batch: a term record delivered here must
        # not make this node leader until every earlier entry is applied.
        for (height, value, rev), term in zip(entries, terms, strict=True):
            if rev <= self._fsm.index:
                continue  # already applied (the leader's own write, or a redelivery)
            data = self._resolve(height, value, rev, None)
            if data is not None:
                self._fsm.apply_entry(height, data, rev, term)
        if entries:
            self._pieces.drop_upto(self._fsm.height)  # applied or superseded attempts
        with self._cluster.editing() as view:
            view.revision = top
            if view_changed:
                self._note_heartbeat(view)
        if not wake:
            # log entries, heartbeats and progress reports only: leadership is as it
            # was; the control loop watches the heartbeat on its own timer, so neither
            # it nor role waiters need waking
            return
        self._elector.refresh()
        self._cluster.notify()
        self._elector.wake()

    def _note_heartbeat(self, view: View) -> None:
        """Restart the silence timer when the leader or its heartbeat changed."""
        leader = view.leader()
        self._heartbeat.observe(leader.key if leader is not None else b"", view.heartbeat_rev)
