"""Broadcast for :class:`~etcdraft.Node`: the leader's fenced write of the next block,
retries that turn out to be duplicates, and the outcome reported to observers.

Every write is one etcd transaction that compares the create revision of this node's
election key (its term) and its member key, and that the log key is still unused; the
leader's heartbeat rides along when one is due. Nothing here trusts local state for
safety: a write that etcd rejects steps the node down."""

from __future__ import annotations

import time
from collections.abc import Callable

from etcdraft._deadline import Deadline
from etcdraft._node_core import NodeCore
from etcdraft.errors import (
    EtcdRequestError,
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
from etcdraft.fsm import decode_state, short_hash
from etcdraft.proto import RaftBlockState

__all__ = ["MAX_ENTRY_BYTES", "BroadcastMixin"]

#: etcd's default ``--max-request-bytes`` (1.5 MiB) less room for the transaction.
MAX_ENTRY_BYTES = 1572864 - 1024


class BroadcastMixin(NodeCore):
    """The broadcast part of ``Node``."""

    broadcasts: int
    fenced_rejections: int
    _broadcast_observers: list[Callable[[str, float], None]]
    #: (election key, term, its create-revision compare, the member-key compare)
    _fence: tuple[bytes, int, Compare, Compare]
    #: a broadcast may have committed without our knowing (until the watch caught up)
    _ambiguous: bool

    def add_broadcast_observer(self, callback: Callable[[str, float], None]) -> None:
        """Call ``callback(outcome, seconds)`` after every ``broadcast()``, in the
        caller's thread, with its duration and outcome: ``ok`` (written),
        ``duplicate`` (the same block was already replicated: a retry),
        ``not_leader``, ``lost``, ``conflict``, ``invalid``, ``unavailable`` or
        ``error``. Used by ``etcdraft.metrics``; the callback must be quick and must
        not raise (exceptions are logged and ignored)."""
        with self._lock:
            self._broadcast_observers = [*self._broadcast_observers, callback]

    def broadcast(self, state: RaftBlockState, *, timeout: float | None = None) -> None:
        """Replicate ``state``; returns once etcd committed it.

        Raises:
            NotLeaderError: this node does not lead.
            HeightConflictError: a different block is replicated at that height.
            InvalidStateError: timestamp not strictly increasing, height pruned or
                skipped, or the state too large for etcd.
            LeadershipLostError: the fenced write was rejected; nothing written.
            EtcdUnavailableError: etcd did not answer in time (safe to retry).
        """
        observers = self._broadcast_observers
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
                    self._log.exception("broadcast observer failed", extra=self._extra())

    def _broadcast(self, state: RaftBlockState, timeout: float | None) -> str:
        """``broadcast()`` itself; returns ``"ok"`` or ``"duplicate"``."""
        if not isinstance(state, RaftBlockState):
            raise TypeError(f"state must be a RaftBlockState, not {type(state).__name__}")
        with self._bcast_lock:
            if not self.is_leader():
                raise NotLeaderError(
                    f"node {self._id} is not the leader (leader: {self.leader_id() or 'unknown'}); "
                    "send blocks to the leader"
                )
            client = self._require_client()
            deadline = Deadline(
                self._config.send_timeout if timeout is None else timeout, self._stopping
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
            if len(data) > MAX_ENTRY_BYTES:
                raise InvalidStateError(
                    f"state at height {height} encodes to {len(data)} bytes, over etcd's request "
                    f"limit ({MAX_ENTRY_BYTES} usable of --max-request-bytes 1.5 MiB); keep "
                    "block payloads out of the replicated state"
                )
            with self._lock:
                key, term = self._my_key, self._term
            fence = self._fence
            if fence[0] != key or fence[1] != term:
                # the compares that fence every write of this term, built once
                fence = self._fence = (
                    key,
                    term,
                    cmp_create(key, "EQUAL", term),
                    cmp_version(self._keys.member(self._id), "GREATER", 0),
                )
            log_key = self._keys.log(height)
            free = cmp_create(log_key, "EQUAL", 0)
            for _ in range(2):
                try:
                    result = client.txn(
                        [fence[2], fence[3], free],
                        self._with_heartbeat([op_put(log_key, data)], term),
                        [op_range(log_key)],
                        deadline=deadline,
                    )
                except EtcdRequestError as exc:
                    if "too large" in str(exc):
                        raise InvalidStateError(
                            f"state at height {height} ({len(data)} bytes) is too large for "
                            f"etcd: {exc}"
                        ) from exc
                    raise
                except EtcdUnavailableError:
                    # the write may have been committed: until the watch has caught up,
                    # let it apply our writes in revision order
                    self._ambiguous = True
                    raise
                if result.succeeded:
                    self.broadcasts += 1
                    self._land(state, data, result.revision, term, deadline)
                    return "ok"
                existing = result.range_kvs(0)
                if not existing:
                    break  # a leadership compare failed
                if existing[0].value == data:
                    # our own write, committed before a lost reply
                    self._land(state, data, existing[0].mod_revision, term, deadline)
                    return "ok"
                if _is_block_at(existing[0].value, height):
                    raise HeightConflictError(
                        f"a different block is already replicated at height {height} "
                        f"(hash {_hash_of(existing[0].value)}); resynchronise from get_state()",
                        height=height,
                    )
                # not a block of this height (corrupt, or another height's): every FSM
                # skipped it, so the height is still free. Replace exactly that value,
                # fenced like any leader write.
                self._log.warning(
                    "log/%d holds a value that is not a block of that height (written by "
                    "another program, skipped by every node): replacing it",
                    height,
                    extra=self._extra(height=height),
                )
                free = cmp_mod(log_key, "EQUAL", existing[0].mod_revision)
            else:
                raise HeightConflictError(
                    f"log/{height} keeps being rewritten by another program; check what else "
                    "writes under the namespace",
                    height=height,
                )
            self.fenced_rejections += 1
            self._step_down("fenced write rejected by etcd")
            raise LeadershipLostError()

    def _with_heartbeat(self, ops: list[RequestOp], term: int) -> list[RequestOp]:
        """Add the leader's heartbeat put to a leader write when one is due."""
        if self._config.fast_takeover:
            now = time.monotonic()
            if now - self._last_hb_sent >= self._hb_interval:
                self._last_hb_sent = now
                ops = [*ops, op_put(self._keys.heartbeat, str(term).encode())]
        return ops

    def _land(
        self, state: RaftBlockState, data: bytes, revision: int, term: int, deadline: Deadline
    ) -> None:
        """Apply the leader's own committed write locally. Directly when every
        earlier write is known applied; otherwise (after an ambiguous failure) wait
        for the watch to apply it in revision order, so no entry is skipped."""
        if not self._ambiguous:
            self._fsm.apply(state, revision, term, encoded=data)
        elif self._fsm.wait_applied(revision, deadline.remaining(), self._stopping):
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
        kv = client.get(self._keys.log(height), deadline)
        if kv is None:
            raise InvalidStateError(
                f"height {height} is at or below the replicated height {head_height} and no "
                "block is stored there (pruned, or skipped by an earlier gap); produce the "
                f"next block above height {head_height}"
            )
        if kv.value != data:
            raise HeightConflictError(
                f"a different block is already replicated at height {height} "
                f"(hash {_hash_of(kv.value)}, yours {short_hash(state)}); resynchronise from "
                "get_state()",
                height=height,
            )


def _is_block_at(data: bytes, height: int) -> bool:
    """True when the FSM would apply ``data`` stored under ``log/<height>``."""
    try:
        return decode_state(data).height == height
    except ValueError:
        return False


def _hash_of(data: bytes) -> str:
    try:
        return short_hash(decode_state(data))
    except ValueError:
        return "corrupt"
