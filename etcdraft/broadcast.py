"""The broadcast part of a :class:`~etcdraft.Node`: the leader's fenced write of the
next block, retries that turn out to be duplicates, and the outcome reported to
observers.

Every write is one etcd transaction that compares the create revision of this node's
election key (its term) and its member key, and that the log key is still unused; the
leader's heartbeat rides along when one is due. Nothing here trusts local state for
safety: a write that etcd rejects steps the node down.

A state larger than one etcd request (:mod:`etcdraft.blocks`) is written as pieces,
each in a transaction with the same three compares, and then committed by the same
one transaction, which puts its manifest under ``log/<height>``."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from etcdraft._context import NodeContext
from etcdraft._deadline import Deadline
from etcdraft.blocks import encode_manifest, is_manifest, make_manifest, parse_manifest, split
from etcdraft.elector import Elector
from etcdraft.errors import (
    CorruptDataError,
    EtcdNoSpaceError,
    EtcdraftError,
    EtcdRequestTooLargeError,
    EtcdUnavailableError,
    HeightConflictError,
    InvalidStateError,
    LeadershipLostError,
    NotLeaderError,
)
from etcdraft.etcd import (
    Compare,
    EtcdClient,
    RequestOp,
    cmp_create,
    cmp_mod,
    cmp_version,
    op_put,
    op_range,
)
from etcdraft.fsm import FSM, decode_state, short_hash
from etcdraft.heartbeat import Heartbeat
from etcdraft.proto import RaftBlockState

__all__ = ["MAX_ENTRY_BYTES", "REQUEST_OVERHEAD", "Broadcaster"]

#: Room left in one etcd request for the transaction around a value (keys, compares,
#: the heartbeat put, etcd's own framing).
REQUEST_OVERHEAD = 16 * 1024
#: The largest state written in one request with etcd's default ``--max-request-bytes``
#: (1.5 MiB); larger ones are written as pieces (etcdraft.blocks).
MAX_ENTRY_BYTES = 1572864 - REQUEST_OVERHEAD
#: Rounds of halving the piece size after etcd refused a piece as too large.
MAX_SHRINKS = 6
#: Pieces in flight at once (Txn futures on one connection).
PIECE_WINDOW = 8


class Broadcaster:
    """Owns: the broadcast lock (one broadcast at a time, and none during a
    handover), the fencing compares of the current term, whether an earlier write's
    outcome is unknown, etcd's request limit as learned, the NOSPACE state, the
    observers and the counters. Every field below the lock is written only with it
    held (by the caller's thread)."""

    def __init__(
        self,
        ctx: NodeContext,
        fsm: FSM,
        elector: Elector,
        heartbeat: Heartbeat,
        leader_id: Callable[[], str],
    ) -> None:
        self._ctx = ctx
        self._leader_id = leader_id
        self._fsm = fsm
        self._elector = elector
        self._heartbeat = heartbeat
        self._lock = threading.Lock()
        self._observers: list[Callable[[str, float], None]] = []
        #: (election key, term, its create-revision compare, the member-key compare)
        self._fence: tuple[bytes, int, Compare, Compare] = (b"", 0, Compare(), Compare())
        #: a broadcast may have committed without our knowing (until the watch caught up)
        self._ambiguous = False
        #: what etcd accepts in one request, as learned
        self.request_limit = ctx.config.etcd_max_request_bytes
        #: the last write failed because etcd's backend is full (until one succeeds)
        self.etcd_full = False
        self.broadcasts = 0
        self.fenced_rejections = 0
        self.pieces_written = 0

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """No broadcast runs while this is held (a handover)."""
        with self._lock:
            yield

    def etcd_accepts_writes(self) -> bool:
        """After a write failed with NOSPACE: is the alarm gone? (A quorum that cannot
        take a block is no quorum for the caller of ``has_quorum``.)"""
        client = self._ctx.client
        if client is None:
            return False
        try:
            alarms = client.admin.alarms(
                Deadline(self._ctx.config.send_timeout, self._ctx.stopping)
            )
        except EtcdraftError:
            return False
        if any(a.alarm == "NOSPACE" for a in alarms):
            return False
        self.etcd_full = False
        return True

    def figures(self) -> dict[str, Any]:
        """This part's fields of :class:`~etcdraft.stats.NodeStats`."""
        return {
            "broadcasts": self.broadcasts,
            "fenced_rejections": self.fenced_rejections,
            "pieces_written": self.pieces_written,
            "etcd_full": self.etcd_full,
        }

    def add_broadcast_observer(self, callback: Callable[[str, float], None]) -> None:
        """See ``Node.add_broadcast_observer``."""
        with self._lock:
            self._observers = [*self._observers, callback]

    def broadcast(self, state: RaftBlockState, *, timeout: float | None = None) -> None:
        """See ``Node.broadcast``."""
        observers = self._observers
        if not observers:
            self._broadcast(state, timeout)
            return
        started = time.monotonic()
        outcome = "error"
        try:
            outcome = self._broadcast(state, timeout)
        except LeadershipLostError:
            outcome = "lost"
            raise
        except NotLeaderError:
            outcome = "not_leader"
            raise
        except HeightConflictError:
            outcome = "conflict"
            raise
        except InvalidStateError:
            outcome = "invalid"
            raise
        except EtcdUnavailableError:
            outcome = "unavailable"
            raise
        finally:
            elapsed = time.monotonic() - started
            for callback in observers:
                try:
                    callback(outcome, elapsed)
                except Exception:
                    self._ctx.log.exception("broadcast observer failed", extra=self._ctx.extra())

    def _broadcast(self, state: RaftBlockState, timeout: float | None) -> str:
        """``broadcast()`` itself; returns ``"ok"`` or ``"duplicate"``."""
        if not isinstance(state, RaftBlockState):
            raise TypeError(f"state must be a RaftBlockState, not {type(state).__name__}")
        ctx = self._ctx
        with self._lock:
            if not self._elector.is_leader():
                raise NotLeaderError(
                    f"node {ctx.id} is not the leader (leader: {self._leader_id() or 'unknown'}); "
                    "send blocks to the leader"
                )
            client = ctx.require_client()
            deadline = Deadline(
                ctx.config.send_timeout if timeout is None else timeout, ctx.stopping
            )
            data = state.SerializeToString()
            height = state.height
            head_height, head_ts, _ = self._fsm.head()
            if height <= head_height:
                self._check_retry(client, state, data, deadline, head_height)
                return "duplicate"
            if state.timestamp <= head_ts:
                raise InvalidStateError(
                    f"timestamp {state.timestamp} of height {height} does not strictly increase "
                    f"(replicated height {head_height} has timestamp {head_ts})"
                )
            max_block = ctx.config.max_block_bytes
            if len(data) > max_block:
                raise InvalidStateError(
                    f"state at height {height} encodes to {len(data)} bytes, over "
                    f"max_block_bytes ({max_block}); raise max_block_bytes "
                    "(ETCDRAFT_MAX_BLOCK_BYTES) or produce smaller blocks"
                )
            lead = self._elector.leadership
            key, term = lead.key, lead.term
            fence = self._fence
            if fence[0] != key or fence[1] != term:
                # the compares that fence every write of this term, built once
                fence = self._fence = (
                    key,
                    term,
                    cmp_create(key, "EQUAL", term),
                    cmp_version(ctx.keys.member(ctx.id), "GREATER", 0),
                )
            try:
                value = data
                if len(data) > self.request_limit - REQUEST_OVERHEAD:
                    value = self._write_pieces(client, state, data, fence, term, deadline)
                outcome = self._commit(client, state, data, value, fence, term, deadline)
            except EtcdNoSpaceError:
                if not self.etcd_full:
                    self.etcd_full = True
                    self._ctx.log.error(
                        "etcd's backend is full (NOSPACE alarm): broadcasts fail until an "
                        "operator compacts, defragments and disarms the alarm (etcdctl "
                        "compact / defrag / alarm disarm) or raises --quota-backend-bytes",
                        extra=self._ctx.extra(height=height),
                    )
                raise
            if self.etcd_full:
                self.etcd_full = False
                self._ctx.log.info(
                    "etcd accepts writes again", extra=self._ctx.extra(height=height)
                )
            return outcome

    def _commit(
        self,
        client: EtcdClient,
        state: RaftBlockState,
        data: bytes,
        value: bytes,
        fence: tuple[bytes, int, Compare, Compare],
        term: int,
        deadline: Deadline,
    ) -> str:
        """The one fenced transaction that makes ``log/<height>`` hold ``value``: the
        state's bytes, or the manifest of its pieces."""
        client_height = state.height
        log_key = self._ctx.keys.log(client_height)
        free = cmp_create(log_key, "EQUAL", 0)
        for _ in range(2):
            ops, hb_sent = self._with_heartbeat([op_put(log_key, value)], term)
            try:
                result = client.txn(
                    [fence[2], fence[3], free],
                    ops,
                    [op_range(log_key)],
                    deadline=deadline,
                )
            except EtcdRequestTooLargeError as exc:
                if value is not data:
                    raise InvalidStateError(
                        f"etcd refused the manifest of height {client_height} as too large: {exc}"
                    ) from exc
                # etcd's limit is lower than configured: learn it, write pieces
                self._learn_limit(len(value) + REQUEST_OVERHEAD - 1, exc)
                value = self._write_pieces(client, state, data, fence, term, deadline)
                continue
            except EtcdUnavailableError:
                # the write may have been committed: until the watch has caught up,
                # let it apply our writes in revision order
                self._ambiguous = True
                raise
            except EtcdNoSpaceError as exc:
                # etcd applies the write that crosses its quota and answers NOSPACE all
                # the same: this one may be committed too
                self._ambiguous = True
                raise EtcdNoSpaceError(
                    f"{exc}. The block of height {client_height} may have been committed "
                    "all the same (etcd applies the write that fills its quota): once space "
                    "is freed, retry the same block (identical bytes succeed as a duplicate)",
                    endpoint=exc.endpoint,
                    reason=exc.reason,
                ) from exc
            if result.succeeded:
                if hb_sent:
                    self._heartbeat.acked(hb_sent)
                self.broadcasts += 1
                self._land(state, data, result.revision, term, deadline)
                return "ok"
            existing = result.range_kvs(0)
            if not existing:
                break  # a leadership compare failed
            kv = existing[0]
            if kv.value == value or _same_block(kv.value, data):
                # our own write, committed before a lost reply
                self._land(state, data, kv.mod_revision, term, deadline)
                return "ok"
            if _is_block_at(kv.value, client_height):
                raise HeightConflictError(
                    f"a different block is already replicated at height {client_height} "
                    f"(hash {_hash_of(kv.value)}); resynchronise from get_state()",
                    height=client_height,
                )
            # not a block of this height (corrupt, or another height's): every FSM
            # skipped it, so the height is still free. Replace exactly that value,
            # fenced like any leader write.
            self._ctx.log.warning(
                "log/%d holds a value that is not a block of that height (written by "
                "another program, skipped by every node): replacing it",
                client_height,
                extra=self._ctx.extra(height=client_height),
            )
            free = cmp_mod(log_key, "EQUAL", kv.mod_revision)
        else:
            raise HeightConflictError(
                f"log/{client_height} keeps being rewritten by another program; check what "
                "else writes under the namespace",
                height=client_height,
            )
        self.fenced_rejections += 1
        self._elector.step_down("fenced write rejected by etcd")
        raise LeadershipLostError()

    def _write_pieces(
        self,
        client: EtcdClient,
        state: RaftBlockState,
        data: bytes,
        fence: tuple[bytes, int, Compare, Compare],
        term: int,
        deadline: Deadline,
    ) -> bytes:
        """Write ``data`` as pieces, each in a transaction fenced like the commit;
        returns the manifest to commit. A piece refused as too large halves the piece
        size (etcd's limit is learned). The nonce depends on the term and the bytes, so
        a retry of the same state by the same leader rewrites the same keys."""
        height = state.height
        log_key = self._ctx.keys.log(height)
        digest = hashlib.sha256(data).digest()  # once per broadcast, not per attempt
        nonce = f"{term:x}-{digest.hex()[:16]}"
        for _ in range(MAX_SHRINKS):
            piece_size = max(1024, self.request_limit - REQUEST_OVERHEAD)
            nonce_sized = f"{nonce}-{piece_size:x}"
            manifest = make_manifest(
                height, state.timestamp, state.hash, data, nonce_sized, piece_size, digest
            )
            # the first piece of every window of PIECE_WINDOW carries a heartbeat (with
            # fast takeover): a long large write keeps the leader's heartbeat going
            beat = [op_put(self._ctx.keys.heartbeat, str(term).encode())]
            txns = [
                (
                    [fence[2], fence[3], cmp_create(log_key, "EQUAL", 0)],
                    [op_put(self._ctx.keys.piece(height, nonce_sized, i), piece)]
                    + (beat if self._ctx.config.fast_takeover and i % PIECE_WINDOW == 0 else []),
                )
                for i, piece in enumerate(split(data, piece_size))
            ]
            sent = [0.0] * len(txns)
            try:
                results = client.txn_many(txns, deadline, window=PIECE_WINDOW, sent=sent)
            except EtcdRequestTooLargeError as exc:
                self._learn_limit(piece_size // 2 + REQUEST_OVERHEAD, exc)
                continue
            except EtcdUnavailableError:
                self._ambiguous = True
                raise
            if self._ctx.config.fast_takeover:
                for i in range(0, len(results), PIECE_WINDOW):
                    if results[i].succeeded:
                        self._heartbeat.sent(sent[i])
                        self._heartbeat.acked(sent[i])
            if not all(r.succeeded for r in results):
                # the height was taken or leadership lost: the commit transaction,
                # with the same compares, fails the same way and says which
                return encode_manifest(manifest)
            self.pieces_written += len(txns)
            return encode_manifest(manifest)
        raise InvalidStateError(
            f"etcd keeps refusing pieces of height {height} as too large (last limit "
            f"{self.request_limit} bytes): check etcd's --max-request-bytes"
        )

    def _learn_limit(self, limit: int, exc: EtcdRequestTooLargeError) -> None:
        if limit < self.request_limit:
            self._ctx.log.warning(
                "etcd refused a request as too large (%s): using %d bytes per request "
                "instead of %d (set etcd_max_request_bytes to etcd's --max-request-bytes)",
                exc,
                limit,
                self.request_limit,
                extra=self._ctx.extra(),
            )
            self.request_limit = limit

    def _with_heartbeat(self, ops: list[RequestOp], term: int) -> tuple[list[RequestOp], float]:
        """Add the leader's heartbeat put to a leader write when one is due; returns
        the ops and the heartbeat's send time (0.0: none added)."""
        if self._ctx.config.fast_takeover:
            now = time.monotonic()
            if self._heartbeat.take_due(now):
                return [*ops, op_put(self._ctx.keys.heartbeat, str(term).encode())], now
        return ops, 0.0

    def _land(
        self, state: RaftBlockState, data: bytes, revision: int, term: int, deadline: Deadline
    ) -> None:
        """Apply the leader's own committed write locally. Directly when every
        earlier write is known applied; otherwise (after an ambiguous failure) wait
        for the watch to apply it in revision order, so no entry is skipped."""
        if not self._ambiguous:
            self._fsm.apply(state, revision, term, encoded=data)
        elif self._fsm.wait_applied(revision, deadline.remaining(), self._ctx.stopping):
            self._ambiguous = False

    def _check_retry(
        self,
        client: EtcdClient,
        state: RaftBlockState,
        data: bytes,
        deadline: Deadline,
        head_height: int,
    ) -> None:
        height = state.height
        kv = client.get(self._ctx.keys.log(height), deadline)
        if kv is None:
            raise InvalidStateError(
                f"height {height} is at or below the replicated height {head_height} and no "
                "block is stored there (pruned, or skipped by an earlier gap); produce the "
                f"next block above height {head_height}"
            )
        if kv.value != data and not _same_block(kv.value, data):
            raise HeightConflictError(
                f"a different block is already replicated at height {height} "
                f"(hash {_hash_of(kv.value)}, yours {short_hash(state)}); resynchronise from "
                "get_state()",
                height=height,
            )


def _same_block(stored: bytes, data: bytes) -> bool:
    """True when ``stored`` (under ``log/<height>``) is the manifest of ``data``."""
    if not is_manifest(stored):
        return False
    try:
        manifest = parse_manifest(stored)
    except CorruptDataError:
        return False
    return manifest.size == len(data) and manifest.sha256 == hashlib.sha256(data).digest()


def _is_block_at(data: bytes, height: int) -> bool:
    """True when the FSM would apply ``data`` stored under ``log/<height>``."""
    if is_manifest(data):
        try:
            return parse_manifest(data).height == height
        except CorruptDataError:
            return False
    try:
        return decode_state(data).height == height
    except ValueError:
        return False


def _hash_of(data: bytes) -> str:
    if is_manifest(data):
        try:
            manifest = parse_manifest(data)
        except CorruptDataError:
            return "corrupt"
        return manifest.hash[:4].hex() if manifest.hash else "-"
    try:
        return short_hash(decode_state(data))
    except ValueError:
        return "corrupt"
