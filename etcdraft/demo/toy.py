"""A toy sequencer: one node process producing blocks through ``DynamicLeaderElection``.

Used by ``etcdraft node``, the demo and the chaos tests. The leader worker broadcasts
a block every ``block_interval`` seconds; the follower worker only follows. With a
``record_dir``, every acknowledged broadcast and every applied entry is appended to
JSON-lines files, flushed and fsynced, so a judge can check the invariants after the
process was killed::

    acks.jsonl     {"h": height, "hash": hex, "ts": timestamp, "t": monotonic,
                    "sent": when the broadcast call began, "term": term,
                    "lease_dl": monotonic, "belief_dl": monotonic}
    applied.jsonl  {"i": index, "term": term, "h": height, "hash": hex, "t": monotonic}
    events.jsonl   {"ev": "leader"|"follower"|"lost"|"error"|"start"|"stop", "t": ..., ...}
    errors.jsonl   {"h": height, "err": exception type name, "term": term, "t": monotonic}
    quorum.jsonl   {"q": has_quorum(), "t0": call start, "t": its return, "term": term}

``t`` is ``time.monotonic()``, which is one clock for every process of a Linux machine.
An ack's ``term`` is the node's term when it called ``broadcast`` (the lower bound of
the write's term); ``lease_dl`` is the node's local lease deadline (``Node.stats()``'s
``lease_remaining`` less ``leader_lease_timeout``) and ``belief_dl`` the end of its
``is_leader()`` belief (also ``last_heartbeat_age`` against ``heartbeat_timeout``, with
fast takeover; absent when the node no longer believed it leads), both read right
after ``broadcast`` returned, as upper bounds. A failed broadcast is recorded in
``errors.jsonl`` (once per height and type, or once a second). With
``--quorum-interval``, a thread off the producer path calls ``has_quorum()`` that
often and records each answer; its ``term`` is the highest the node held around the
call.

Run one with ``python -m etcdraft.demo.toy --help`` (``python -m etcdraft.toy`` still works).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from etcdraft._signals import install_stop_signals
from etcdraft.config import Config
from etcdraft.errors import (
    EtcdNoSpaceError,
    EtcdraftError,
    EtcdUnavailableError,
    HeightConflictError,
    LeadershipLostError,
    NotLeaderError,
)
from etcdraft.leader_election import DynamicLeaderElection
from etcdraft.node import Node
from etcdraft.proto import RaftBlockState
from etcdraft.types import RaftApplyMsg

__all__ = ["Recorder", "ToyFollower", "ToyProducer", "main", "run_node"]

log = logging.getLogger("etcdraft.toy")


class Recorder:
    """Appends JSON lines durably (flush + fsync per line); no-op without a dir."""

    def __init__(self, directory: str | None) -> None:
        self._files: dict[str, IO[str]] = {}
        self._lock = threading.Lock()
        self._dir = Path(directory) if directory else None
        if self._dir is not None:
            self._dir.mkdir(parents=True, exist_ok=True)

    def write(self, name: str, record: dict[str, Any]) -> None:
        if self._dir is None:
            return
        record.setdefault("t", time.monotonic())
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            fh = self._files.get(name)
            if fh is None:
                fh = open(self._dir / f"{name}.jsonl", "a")  # noqa: SIM115 - kept open
                self._files[name] = fh
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def close(self) -> None:
        with self._lock:
            for fh in self._files.values():
                fh.close()
            self._files.clear()


def make_block(node_id: str, height: int, prev_ts: int, payload: int = 0) -> RaftBlockState:
    """The next toy block; ``payload`` random bytes in ``data`` (a block's transactions)."""
    ts = max(prev_ts + 1, time.time_ns())
    digest = hashlib.sha256(f"{node_id}:{height}:{ts}".encode()).digest()
    return RaftBlockState(
        height=height,
        timestamp=ts,
        hash=digest,
        header=digest[:8],
        data=os.urandom(payload) if payload else b"",
    )


def local_deadlines(node: Node) -> dict[str, float]:
    """The node's local lease deadline and the end of its leadership belief, on the
    monotonic clock, from public values (``stats()`` and the config). Each is an upper
    bound: "now" is read after the snapshot."""
    st = node.stats()
    now = time.monotonic()
    cfg = node.config
    lease = now + st.lease_remaining - cfg.leader_lease_timeout
    out = {"lease_dl": lease}
    if st.role == "leader":
        belief = lease
        if st.last_heartbeat_age is not None:
            belief = min(lease, now - st.last_heartbeat_age + cfg.heartbeat_timeout)
        out["belief_dl"] = belief
    return out


class ToyProducer:
    """Leader worker: broadcasts a block every ``interval`` seconds. After an
    ambiguous failure it retries the *same* block, so a retry never signs a second
    block at that height. A full etcd (``EtcdNoSpaceError``) is retried the same way."""

    def __init__(
        self,
        node: Node,
        interval: float,
        recorder: Recorder,
        payload_sizes: tuple[int, ...] = (),
    ) -> None:
        self.node = node
        self.interval = interval
        self.recorder = recorder
        self.payload_sizes = payload_sizes
        self.produced = 0
        self._last_error: tuple[str, int, float] = ("", 0, -1.0)

    def _failed(self, height: int, term: int, exc: Exception) -> None:
        """Record a failed broadcast: once per (height, type), or once a second."""
        err, now = type(exc).__name__, time.monotonic()
        last = self._last_error
        if (err, height) != last[:2] or now - last[2] >= 1.0:
            self._last_error = (err, height, now)
            self.recorder.write("errors", {"h": height, "err": err, "term": term})

    def run(self, stop: threading.Event) -> None:
        pending: RaftBlockState | None = None
        while not stop.is_set():
            started = time.monotonic()
            term = self.node.term
            if pending is None:
                head = self.node.get_state()
                sizes = self.payload_sizes
                payload = sizes[(head.height + 1) % len(sizes)] if sizes else 0
                pending = make_block(self.node.node_id, head.height + 1, head.timestamp, payload)
            sent = time.monotonic()
            try:
                self.node.broadcast(pending)
            except (NotLeaderError, LeadershipLostError) as exc:
                self._failed(pending.height, term, exc)
                # not leading right now (perhaps only for a moment: a keep-alive came
                # late). Keep the block and keep running: if leadership really ended,
                # DynamicLeaderElection stops this worker; a worker that returned on
                # its own would leave a leader producing nothing.
                stop.wait(min(self.interval, 0.05))
                continue
            except HeightConflictError as exc:
                self._failed(pending.height, term, exc)
                log.info("height %d taken by another leader: resyncing", pending.height)
                pending = None
                continue
            except (EtcdUnavailableError, EtcdNoSpaceError) as exc:
                self._failed(pending.height, term, exc)
                log.warning("broadcast of %d not confirmed (%s): retrying", pending.height, exc)
                stop.wait(min(self.interval, 0.05))
                continue
            acked = time.monotonic()
            self.recorder.write(
                "acks",
                {
                    "h": pending.height,
                    "hash": pending.hash.hex(),
                    "ts": pending.timestamp,
                    "t": acked,
                    "sent": sent,
                    "term": term or self.node.term,
                    **local_deadlines(self.node),
                },
            )
            self.produced += 1
            pending = None
            stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def is_synced(self, state: RaftBlockState) -> int:
        return 0

    def recover(self, stop: threading.Event, state: RaftBlockState) -> None:
        return None


class ToyFollower(ToyProducer):
    """Follower worker: nothing to do but wait (the node applies replicated blocks)."""

    def run(self, stop: threading.Event) -> None:
        stop.wait()


def _apply_recorder(q: queue.Queue[RaftApplyMsg], rec: Recorder, stop: threading.Event) -> None:
    while not stop.is_set() or not q.empty():
        try:
            msg = q.get(timeout=0.1)
        except queue.Empty:
            continue
        rec.write(
            "applied",
            {"i": msg.index, "term": msg.term, "h": msg.state.height, "hash": msg.state.hash.hex()},
        )


def _probe_quorum(node: Node, rec: Recorder, interval: float, stop: threading.Event) -> None:
    """Call ``has_quorum()`` every ``interval`` seconds and record each answer."""
    while not stop.wait(interval):
        before = node.term
        t0 = time.monotonic()
        ok = node.has_quorum()
        t = time.monotonic()
        rec.write("quorum", {"q": ok, "t0": t0, "t": t, "term": max(before, node.term)})


def run_node(
    config: Config,
    *,
    block_interval: float,
    record_dir: str | None,
    stop: threading.Event,
    metrics_port: int | None = None,
    payload_sizes: tuple[int, ...] = (),
    quorum_interval: float = 0.0,
) -> int:
    """Run a toy node until ``stop`` is set; returns a process exit code. With
    ``metrics_port``, serves Prometheus metrics on 127.0.0.1:<port>/metrics; with
    ``quorum_interval`` > 0, records ``has_quorum()`` that often (``quorum.jsonl``)."""
    rec = Recorder(record_dir)
    node = Node(config)
    metrics_server = None
    if metrics_port is not None:
        from etcdraft.metrics import serve

        metrics_server = serve(node, metrics_port)
    applied: queue.Queue[RaftApplyMsg] = queue.Queue(maxsize=100_000)
    node.set_apply_callback(applied)
    rec_stop = threading.Event()
    writer = threading.Thread(
        target=_apply_recorder, args=(applied, rec, rec_stop), name="toy-apply-recorder"
    )
    writer.start()
    rec.write("events", {"ev": "start", "node": config.node_id, "pid": os.getpid()})
    probe_stop = threading.Event()
    prober: threading.Thread | None = None
    try:
        start_deadline = time.monotonic() + 60
        while True:
            try:
                node.start()
                break
            except EtcdUnavailableError as exc:
                if stop.is_set() or time.monotonic() > start_deadline:
                    log.error("cannot start: %s", exc)
                    return 1
                log.warning("etcd not reachable yet (%s): retrying", exc)
                stop.wait(0.5)
        if quorum_interval > 0:
            prober = threading.Thread(
                target=_probe_quorum,
                args=(node, rec, quorum_interval, probe_stop),
                name="toy-quorum-probe",
            )
            prober.start()
        while not stop.is_set():
            dle = DynamicLeaderElection(
                lambda: _LoggedRole(
                    "leader", ToyProducer(node, block_interval, rec, payload_sizes), rec, node
                ),
                lambda: _LoggedRole("follower", ToyFollower(node, block_interval, rec), rec, node),
                node,
            )
            try:
                dle.run(stop)
            except LeadershipLostError:
                rec.write("events", {"ev": "lost", "node": config.node_id})
            except EtcdraftError as exc:
                rec.write("events", {"ev": "error", "node": config.node_id, "error": str(exc)})
                log.error("election loop: %s; restarting it", exc)
                stop.wait(0.5)
    finally:
        probe_stop.set()
        if prober is not None:
            prober.join(config.send_timeout + 5)
        node.stop()
        if metrics_server is not None:
            metrics_server.close()
        rec.write("events", {"ev": "stop", "node": config.node_id})
        rec_stop.set()
        writer.join(5)
        rec.close()
    return 0


class _LoggedRole:
    """Wraps a worker to record when its role starts."""

    def __init__(self, role: str, inner: ToyProducer, rec: Recorder, node: Node) -> None:
        self.role, self.inner, self.rec, self.node = role, inner, rec, node

    def run(self, stop: threading.Event) -> None:
        self.rec.write(
            "events",
            {
                "ev": self.role,
                "node": self.node.node_id,
                "term": self.node.term,
                "h": self.node.get_state().height,
            },
        )
        self.inner.run(stop)

    def is_synced(self, state: RaftBlockState) -> int:
        return self.inner.is_synced(state)

    def recover(self, stop: threading.Event, state: RaftBlockState) -> None:
        self.inner.recover(stop, state)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m etcdraft.demo.toy",
        description="Run one toy sequencer node. Every etcdraft Config field can also "
        "be given as an ETCDRAFT_* environment variable.",
    )
    parser.add_argument("--node-id")
    parser.add_argument("--endpoints", help="comma-separated etcd client URLs")
    parser.add_argument("--namespace")
    parser.add_argument("--peers", help="comma-separated id@addr")
    parser.add_argument("--raft-addr")
    parser.add_argument("--raft-dir")
    parser.add_argument("--bootstrap", action="store_true", default=None)
    parser.add_argument("--election-timeout")
    parser.add_argument("--heartbeat-timeout")
    parser.add_argument("--leader-lease-timeout")
    parser.add_argument("--send-timeout")
    parser.add_argument("--block-interval", type=float, default=0.02)
    parser.add_argument("--record-dir", help="write acks/applied/events JSON lines here")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics on 127.0.0.1:PORT"
    )
    parser.add_argument(
        "--payload-bytes",
        default="",
        help="comma-separated sizes of each block's data, used in turn by height "
        "(e.g. 0,0,2000000 for a 2 MB block every third height; default: none)",
    )
    parser.add_argument(
        "--quorum-interval",
        type=float,
        default=0.0,
        help="call has_quorum() every this many seconds off the producer path and record "
        "each answer in quorum.jsonl (default 0: never)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    fields = {
        k: v
        for k, v in vars(args).items()
        if v is not None
        and k
        not in (
            "block_interval",
            "record_dir",
            "log_level",
            "metrics_port",
            "payload_bytes",
            "quorum_interval",
        )
    }
    try:
        config = Config(**fields)
    except EtcdraftError as exc:
        print(f"toy: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    install_stop_signals(stop)
    return run_node(
        config,
        block_interval=args.block_interval,
        record_dir=args.record_dir,
        stop=stop,
        metrics_port=args.metrics_port,
        payload_sizes=tuple(int(x) for x in args.payload_bytes.split(",") if x.strip()),
        quorum_interval=args.quorum_interval,
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
