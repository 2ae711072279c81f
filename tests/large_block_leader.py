"""A node in its own process, for tests that kill or stop a leader in the middle of a
large broadcast (tests/test_large_blocks_process.py). Not a test module.

It starts a ``Node`` (the Config from ``--config``, a JSON object), records every entry
it applies, and obeys commands on stdin, one a line:

* ``lead``: wait until this node leads, then answer ``leading <term>``;
* ``go <height> <bytes>``: broadcast a block of random bytes of that encoded size at
  that height (timeout 60 s); answers ``start <height> <hash hex>`` before the call and
  ``outcome <height> <ok|lost|not_leader|conflict|unavailable|invalid|error> <text>``
  after it.

Every applied entry is a line ``applied <height> <hash hex>``. Lines are flushed at
once, so the test sees them up to the moment the process is killed or stopped.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time

from etcdraft import Config, Node, RaftApplyMsg, RaftBlockState
from etcdraft.errors import (
    EtcdraftError,
    EtcdUnavailableError,
    HeightConflictError,
    InvalidStateError,
    LeadershipLostError,
    NotLeaderError,
)

_out_lock = threading.Lock()


def say(*words: object) -> None:
    with _out_lock:
        sys.stdout.write(" ".join(str(w) for w in words) + "\n")
        sys.stdout.flush()


def sized_block(height: int, size: int, prev_ts: int) -> RaftBlockState:
    """A block of exactly ``size`` encoded bytes of random data after ``prev_ts``."""
    ts = max(prev_ts + 1, time.time_ns())
    digest = os.urandom(32)
    base = RaftBlockState(height=height, timestamp=ts, hash=digest, header=digest[:8])
    pad = size - len(base.SerializeToString())
    for prefix in range(6, 1, -1):  # the data field's tag and length
        base.data = os.urandom(max(0, pad - prefix))
        if len(base.SerializeToString()) == size:
            return base
    raise ValueError(f"cannot build a state of {size} bytes")


def main() -> int:
    cfg = json.loads(sys.argv[sys.argv.index("--config") + 1])
    node = Node(Config(**cfg))
    applied: queue.Queue[RaftApplyMsg] = queue.Queue()
    node.set_apply_callback(applied)
    stop = threading.Event()

    def report_applies() -> None:
        while not stop.is_set():
            try:
                msg = applied.get(timeout=0.05)
            except queue.Empty:
                continue
            say("applied", msg.state.height, msg.state.hash.hex())

    threading.Thread(target=report_applies, daemon=True, name="applies").start()
    deadline = time.monotonic() + 60
    while True:
        try:
            node.start()
            break
        except EtcdUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    say("started")
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "lead":
            end = time.monotonic() + 30
            while not node.is_leader() and time.monotonic() < end:
                node.wait_role_change(False, 0.05)
            say("leading" if node.is_leader() else "not-leading", node.term)
        elif words[0] == "go":
            height, size = int(words[1]), int(words[2])
            state = sized_block(height, size, node.get_state().timestamp)
            say("start", height, state.hash.hex())
            outcome, text = "ok", ""
            try:
                node.broadcast(state, timeout=60.0)
            except LeadershipLostError as exc:
                outcome, text = "lost", str(exc)
            except NotLeaderError as exc:
                outcome, text = "not_leader", str(exc)
            except HeightConflictError as exc:
                outcome, text = "conflict", str(exc)
            except EtcdUnavailableError as exc:
                outcome, text = "unavailable", str(exc)
            except InvalidStateError as exc:
                outcome, text = "invalid", str(exc)
            except EtcdraftError as exc:
                outcome, text = "error", f"{type(exc).__name__}: {exc}"
            say("outcome", height, outcome, text.replace("\n", " "))
        elif words[0] == "quit":
            break
    stop.set()
    node.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
