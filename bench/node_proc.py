"""One etcdraft node in its own process, driven by JSON commands on stdin.

Commands (one JSON object a line; one JSON answer a line):

* ``status``: role, height, pid.
* ``wait_leader {timeout}``: until this node leads.
* ``run {n, interval, out, state_bytes}``: ``n`` sequential broadcasts of states of
  ``state_bytes`` encoded bytes (~600 by default), ``interval`` seconds apart start to
  start (0 = back to back); writes ``height t_start t_end`` lines to ``out`` and answers
  with the count (the leader side of the broadcast benchmark). When the first
  broadcast raises ``InvalidStateError`` (a state too large for the node), answers
  ``{"n": 0, "refused": <message>}``.
* ``flush {out}``: write the apply stamps recorded since the last flush
  (``height t`` lines: ``time.monotonic()`` taken inside ``put_nowait``) to ``out``.
* ``resign``: ``resign_leader()``; answers with the monotonic time of the call.

With ``--produce INTERVAL`` the node also produces blocks on its own whenever it
leads (a toy sequencer), appending ``height t_start t_end`` to ``<record>/acks.txt``
and role changes to ``<record>/events.txt`` (flushed per line, so they survive a
SIGKILL): the failover and long-run benchmarks read those files. ``--state-bytes``
sets the size of those blocks (``large-long``), ``--trailing-bytes`` the node's
``trailing_bytes`` (default: the library's).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import ENTRY_BYTES, make_state, serve, write_lines


def write_timeout(state_bytes: int) -> float | None:
    """The deadline of one broadcast: the node's ``send_timeout`` (None) for small
    states; for multi-MB ones as long as the raw side allows a write (5 s + 2 s per MB),
    since on a loaded machine one such write can take longer than ``send_timeout``."""
    if state_bytes < 1_000_000:
        return None
    return 5.0 + 2.0 * state_bytes / 1e6


class StampQueue:
    """An apply queue that only records when each entry was offered to it."""

    def __init__(self) -> None:
        self.stamps: list[tuple[int, float]] = []
        self.count = 0

    def put_nowait(self, msg: Any) -> None:
        self.stamps.append((msg.state.height, time.monotonic()))
        self.count += 1


class Recorder:
    def __init__(self, directory: str | None) -> None:
        self.dir = Path(directory) if directory else None
        self._fh: dict[str, Any] = {}
        self._lock = threading.Lock()
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)

    def line(self, name: str, *fields: Any) -> None:
        if self.dir is None:
            return
        text = " ".join(repr(f) if isinstance(f, float) else str(f) for f in fields) + "\n"
        with self._lock:
            fh = self._fh.get(name)
            if fh is None:
                fh = self._fh[name] = open(self.dir / f"{name}.txt", "a")  # noqa: SIM115
            fh.write(text)
            fh.flush()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--node-id", required=True)
    ap.add_argument("--endpoints", required=True)
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--peers", default="")
    ap.add_argument("--bootstrap", action="store_true")
    ap.add_argument("--fast-takeover", default="true")
    ap.add_argument("--trailing-logs", type=int, default=1000)
    ap.add_argument("--snapshot-threshold", type=int, default=1000)
    ap.add_argument("--trailing-bytes", default=None, help="default: the library's")
    ap.add_argument("--state-bytes", type=int, default=0, help="--produce: encoded block size")
    ap.add_argument("--produce", type=float, default=-1.0, help="autonomous block interval")
    ap.add_argument("--max-height", type=int, default=0, help="stop producing at this height")
    ap.add_argument("--record", default=None)
    ap.add_argument("--no-apply-stamps", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    from etcdraft import Config, Node
    from etcdraft.errors import (
        EtcdraftError,
        EtcdUnavailableError,
        HeightConflictError,
        InvalidStateError,
        LeadershipLostError,
        NotLeaderError,
    )

    fast = args.fast_takeover.lower() in ("1", "true", "yes", "on")
    cfg = Config(
        node_id=args.node_id,
        raft_addr=f"{args.node_id}:1",
        endpoints=args.endpoints,
        namespace=args.namespace,
        peers=args.peers,
        bootstrap=args.bootstrap,
        fast_takeover=fast,
        trailing_logs=args.trailing_logs,
        snapshot_threshold=args.snapshot_threshold,
        **({"trailing_bytes": args.trailing_bytes} if args.trailing_bytes else {}),
    )
    node = Node(cfg)
    stamps = StampQueue()
    if not args.no_apply_stamps:
        node.set_apply_callback(stamps)
    rec = Recorder(args.record)
    rec.line("events", "start", time.monotonic(), os.getpid())
    deadline = time.monotonic() + 60
    while True:
        try:
            node.start()
            break
        except EtcdUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    rec.line("events", "ready", time.monotonic())
    stop = threading.Event()
    produce_gate = threading.Event()  # set while the autonomous producer may run
    produce_gate.set()
    bcast_lock = threading.Lock()

    def next_state() -> Any:
        head = node.get_state()
        return make_state(head.height + 1, head.timestamp, size=args.state_bytes or ENTRY_BYTES)

    def producer() -> None:
        interval = args.produce
        was_leader = False
        pending = None
        while not stop.is_set():
            if not node.is_leader():
                if was_leader:
                    rec.line("events", "follower", time.monotonic())
                    was_leader = False
                pending = None
                node.wait_role_change(False, 0.05)
                continue
            if not was_leader:
                was_leader = True
                rec.line("events", "leader", time.monotonic(), node.term)
            if not produce_gate.is_set():
                produce_gate.wait(0.05)
                continue
            if args.max_height and node.get_state().height >= args.max_height:
                stop.wait(0.05)
                continue
            if pending is None:
                pending = next_state()
            t0 = time.monotonic()
            try:
                with bcast_lock:
                    node.broadcast(pending, timeout=write_timeout(args.state_bytes))
            except (NotLeaderError, LeadershipLostError):
                pending = None
                continue
            except HeightConflictError:
                pending = None
                continue
            except EtcdUnavailableError:
                stop.wait(0.02)
                continue
            except EtcdraftError as exc:
                print(f"broadcast failed: {exc}", file=sys.stderr)
                pending = None
                stop.wait(0.05)
                continue
            t1 = time.monotonic()
            rec.line("acks", pending.height, t0, t1)
            pending = None
            if interval > 0:
                stop.wait(max(0.0, interval - (t1 - t0)))

    prod_thread = None
    if args.produce >= 0:
        prod_thread = threading.Thread(target=producer, name="bench-producer", daemon=True)
        prod_thread.start()

    def h_status() -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "leader": node.is_leader(),
            "leader_id": node.leader_id(),
            "height": node.get_state().height,
            "applied": stamps.count,
            "broadcasts": node.broadcasts,
            "trailing_bytes": cfg.trailing_bytes,
        }

    def h_wait_leader(timeout: float = 30.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while not node.is_leader():
            if time.monotonic() > end:
                raise TimeoutError("not leader")
            node.wait_role_change(False, 0.05)
        return h_status()

    def h_run(
        n: int, interval: float = 0.0, out: str = "", state_bytes: int = 0, **_: Any
    ) -> dict[str, Any]:
        rows: list[tuple[int, float, float]] = []
        head = node.get_state()
        h, ts = head.height, head.timestamp
        states = []
        for i in range(n):  # built before the clock runs, as on the raw side
            st = make_state(h + 1 + i, ts, size=state_bytes or ENTRY_BYTES)
            ts = st.timestamp
            states.append(st)
        mono = time.monotonic
        bcast = node.broadcast
        limit = write_timeout(state_bytes)
        next_at = mono()
        with bcast_lock:
            for st in states:
                if interval > 0:
                    delay = next_at - mono()
                    if delay > 0:
                        time.sleep(delay)
                    next_at += interval
                t0 = mono()
                try:
                    bcast(st, timeout=limit)
                except InvalidStateError as exc:
                    if rows:
                        raise
                    # the node refuses a state of this size: reported, not an error
                    return {"n": 0, "refused": str(exc)}
                rows.append((st.height, t0, mono()))
        if out:
            write_lines(out, rows)
        return {"n": len(rows), "first": rows[0][0] if rows else 0}

    def h_quorum(n: int = 200) -> dict[str, Any]:
        lat = []
        ok = 0
        for _ in range(n):
            t0 = time.monotonic()
            ok += node.has_quorum()
            lat.append((time.monotonic() - t0) * 1e3)
        return {"lat_ms": lat, "ok": ok}

    def h_flush(out: str) -> dict[str, Any]:
        taken = stamps.stamps
        stamps.stamps = []
        write_lines(out, taken)
        return {"n": len(taken)}

    def h_resign(timeout: float = 10.0) -> dict[str, Any]:
        t = time.monotonic()
        rec.line("events", "resign", t)
        node.resign_leader(timeout=timeout)
        return {"t": t, "t_done": time.monotonic()}

    def h_pause(on: bool = True) -> dict[str, Any]:
        if on:
            produce_gate.clear()
        else:
            produce_gate.set()
        return {}

    serve(
        {
            "status": h_status,
            "wait_leader": h_wait_leader,
            "run": h_run,
            "flush": h_flush,
            "quorum": h_quorum,
            "resign": h_resign,
            "pause": h_pause,
        }
    )
    stop.set()
    if prod_thread is not None:
        prod_thread.join(5)
    node.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
