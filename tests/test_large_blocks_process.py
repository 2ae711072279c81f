"""Large blocks (issue #14): a leader *process* killed (SIGKILL) or stopped (SIGSTOP) in
the middle of a large broadcast, against real etcd.

The leader runs as a child process (tests/large_block_leader.py) with a small
``etcd_max_request_bytes``, so one block is well over a hundred pieces; two followers
run in the test process. The test waits (condition, deadline) until pieces of height h
are in etcd and ``log/<h>`` is not, then signals the child. Whether the signal lands
before the commit is a race: if the commit won (``log/<h>`` written), the attempt does
not count and the next height is tried (bounded); the test fails rather than pass
without the scenario having happened.

Raw reads go through etcd's JSON gateway (``RawEtcd``), independently of the library's
client."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until
from test_large_blocks import big_block, broadcast_through_any_leader, drain
from test_node_api import Harness, RawEtcd, addr_of, one_leader, wait_height

from etcdraft import Node, RaftApplyMsg
from etcdraft.blocks import MANIFEST_MAGIC
from etcdraft.keys import Keys
from etcdraft.proto.block_manifest_pb2 import BlockManifest

pytestmark = pytest.mark.timeout(240)

CHILD = Path(__file__).with_name("large_block_leader.py")
#: What every node is told etcd takes in one request: pieces of 48 KiB (the library
#: keeps 16 KiB of each request for the transaction around a piece).
REQUEST_BYTES = 64 * 1024
PIECE_BYTES = REQUEST_BYTES - 16 * 1024
#: The child's blocks: about 120 pieces, written 8 at a time.
CHILD_BLOCK = 6_000_000
CHILD_PIECES = -(-CHILD_BLOCK // PIECE_BYTES)
#: The new leader's block at the same height (pieces too).
MINE = 1_000_000
#: Heights tried before giving up on catching the child between pieces and commit.
ATTEMPTS = 6
#: Timing of every node: a 2 s lease, takeover after 500 ms without a heartbeat.
TIMING: dict[str, Any] = {
    "election_timeout": "2s",
    "heartbeat_timeout": "500ms",
    "leader_lease_timeout": "500ms",
    "send_timeout": "2s",
    "etcd_max_request_bytes": REQUEST_BYTES,
}
PEERS = [f"n{i}@{addr_of(f'n{i}')}" for i in (1, 2, 3)]


class LeaderProcess:
    """The child node: commands on stdin, its lines collected by a reader thread."""

    def __init__(self, endpoints: list[str], namespace: str, tmp: Path) -> None:
        config = {
            **TIMING,
            "node_id": "n1",
            "raft_addr": addr_of("n1"),
            "raft_dir": str(tmp / "n1"),
            "endpoints": endpoints,
            "namespace": namespace,
            "peers": PEERS,
            "bootstrap": True,
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDRAFT_")}
        env.update(PYTHONUNBUFFERED="1")
        if "ETCDRAFT_ETCD_BINARY" in os.environ:
            env["ETCDRAFT_ETCD_BINARY"] = os.environ["ETCDRAFT_ETCD_BINARY"]
        self.stderr_path = tmp / "n1.stderr"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(CHILD), "--config", json.dumps(config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=env,
            )
        self.lines: queue.Queue[list[str]] = queue.Queue()
        self.applied: list[tuple[int, str]] = []
        self.outcomes: dict[int, str] = {}
        self._reader = threading.Thread(target=self._read, daemon=True, name="child-reader")
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            words = line.split()
            if not words:
                continue
            if words[0] == "applied":
                self.applied.append((int(words[1]), words[2]))
            elif words[0] == "outcome":
                self.outcomes[int(words[1])] = words[2]
            self.lines.put(words)

    def send(self, *words: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(" ".join(str(w) for w in words) + "\n")
        self.proc.stdin.flush()

    def expect(self, *first: str, timeout: float) -> list[str]:
        """The next line starting with the words ``first`` (others are skipped)."""
        n = len(first)

        def got() -> list[str] | None:
            try:
                words = self.lines.get(timeout=0.05)
            except queue.Empty:
                return None
            return words if tuple(words[:n]) == first else None

        return wait_until(got, timeout, lambda: f"child never said {first}; {self.tail()}")

    def outcome(self, height: int, timeout: float) -> str:
        return wait_until(
            lambda: self.outcomes.get(height),
            timeout,
            lambda: f"child reported no outcome for height {height}; {self.tail()}",
        )

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def tail(self) -> str:
        try:
            return "child stderr: " + self.stderr_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "no child stderr"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # works on a stopped process too
        self.proc.wait(timeout=10)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self._reader.join(5)


def piece_keys(raw: RawEtcd, keys: Keys, height: int) -> list[bytes]:
    """Keys of every piece at ``height`` (keys only: no multi-MB reads while polling)."""
    prefix = keys.blocks(height)
    body = {
        "key": base64.b64encode(prefix).decode(),
        "range_end": base64.b64encode(prefix[:-1] + bytes([prefix[-1] + 1])).decode(),
        "keys_only": True,
    }
    return [base64.b64decode(kv["key"]) for kv in raw._post("kv/range", body).get("kvs", [])]


def nonce_of(keys: Keys, key: bytes) -> str:
    return keys.parse(key).name


class Scene:
    """The child leading at height 1, two followers in this process recording what
    they apply."""

    def __init__(self, harness: Harness) -> None:
        self.h = harness
        self.child = LeaderProcess(harness.endpoints, harness.namespace, harness.tmp_path)
        self.child.expect("started", timeout=60)
        self.child.send("lead")
        words = self.child.expect("leading", timeout=40)
        assert words[0] == "leading", self.child.tail()
        self.child_term = int(words[1])
        self.queues: dict[str, queue.Queue[RaftApplyMsg]] = {}
        self.rest: list[Node] = []
        for nid in ("n2", "n3"):
            node = harness.node(nid, start=False, peers=PEERS, **TIMING)
            self.queues[nid] = queue.Queue()
            node.set_apply_callback(self.queues[nid])
            node.start()
            self.rest.append(node)
        self.child.send("go", 1, 2000)
        assert self.child.outcome(1, timeout=30) == "ok"
        for node in self.rest:
            wait_height(node, 1, timeout=20)

    def catch_between_pieces_and_commit(self, sig: int) -> tuple[int, str]:
        """Start a large broadcast in the child and deliver ``sig`` once some of its
        pieces are in etcd and its commit is not: returns (height, the child's block
        hash). A height whose commit won the race is left committed; the next one is
        tried (at most ATTEMPTS)."""
        raw, keys = self.h.raw, self.h.keys
        height = 2
        for _ in range(ATTEMPTS):
            self.child.send("go", height, CHILD_BLOCK)
            child_hash = self.child.expect("start", str(height), timeout=30)[2]

            def caught(height: int = height) -> str | None:
                if raw.get(keys.log(height)) is not None or height in self.child.outcomes:
                    return "committed"
                n = len(piece_keys(raw, keys, height))
                return "between" if 1 <= n <= CHILD_PIECES // 2 else None

            state = wait_until(
                caught, 60, f"height {height}: neither pieces nor a commit; {self.child.tail()}"
            )
            if state == "between":
                self.child.signal(sig)
                # the scenario happened only if the commit is still absent now
                if raw.get(keys.log(height)) is None:
                    return height, child_hash
                pytest.fail(f"height {height}: the commit landed after the signal")
            assert self.child.outcome(height, timeout=60) == "ok", self.child.tail()
            for node in self.rest:
                wait_height(node, height, timeout=30)
            height += 1
        pytest.fail(
            f"in {ATTEMPTS} heights the child was never seen between its pieces and its "
            "commit: the scenario did not happen"
        )

    def take_over_and_write(self, height: int) -> tuple[Node, Any]:
        """One of the followers leads and writes its own large block at ``height``."""
        leader = one_leader(self.rest, timeout=20)
        mine = big_block(height, MINE)  # random data; a timestamp after the child's
        mine.timestamp = max(time.time_ns(), leader.get_state().timestamp + 1)
        leader = broadcast_through_any_leader(self.rest, mine, within=60.0)
        return leader, mine

    def check_one_block_at(self, height: int, mine: Any, child_hash: str) -> None:
        """Both followers applied heights 1..height exactly once each, and at
        ``height`` the new leader's block, whole; etcd holds that block only."""
        raw, keys = self.h.raw, self.h.keys
        for node in self.rest:
            wait_height(node, height, timeout=30)
            assert node.get_state() == mine
            applied = drain(self.queues[node.node_id])
            assert [m.state.height for m in applied] == list(range(1, height + 1)), node.node_id
            at_h = [m.state for m in applied if m.state.height == height]
            assert at_h == [mine], f"{node.node_id} applied something else at {height}"
            assert child_hash not in {m.state.hash.hex() for m in applied}
        kv = raw.get(keys.log(height))
        assert kv is not None and kv["version"] == 1, "log/<h> written more than once"
        assert kv["value"].startswith(MANIFEST_MAGIC)
        manifest = BlockManifest.FromString(kv["value"][len(MANIFEST_MAGIC) :])
        assert manifest.sha256 == hashlib.sha256(mine.SerializeToString()).digest()

    def child_pieces(self, height: int) -> list[bytes]:
        prefix = f"{self.child_term:x}-"
        keys = self.h.keys
        return [
            k for k in piece_keys(self.h.raw, keys, height) if nonce_of(keys, k).startswith(prefix)
        ]

    def close(self) -> None:
        self.child.close()


@pytest.fixture
def scene(etcd: Any, namespace: str, tmp_path: Path) -> Iterator[Scene]:
    harness = Harness(list(etcd.endpoints), namespace, tmp_path)
    s: Scene | None = None
    try:
        s = Scene(harness)
        yield s
    finally:
        if s is not None:
            s.close()
        harness.close()


def test_leader_process_killed_between_pieces_and_commit(scene: Scene) -> None:
    """SIGKILL while the pieces of height h are being written: no node applies any
    block of the dead leader at h, the next leader writes its own block at h, and the
    dead leader's pieces are removed (the leader's sweep runs every 5 s)."""
    height, child_hash = scene.catch_between_pieces_and_commit(signal.SIGKILL)
    scene.child.proc.wait(timeout=10)
    assert scene.child_pieces(height), "precondition: the dead leader's pieces are in etcd"
    assert scene.h.raw.get(scene.h.keys.log(height)) is None
    _, mine = scene.take_over_and_write(height)
    scene.check_one_block_at(height, mine, child_hash)
    wait_until(
        lambda: scene.child_pieces(height) == [],
        timeout=40,
        message="the dead leader's pieces were never removed",
    )


def test_leader_process_stopped_between_pieces_and_commit_is_fenced_out(scene: Scene) -> None:
    """SIGSTOP while the pieces of height h are being written: another node takes
    over; resumed (SIGCONT) before anyone wrote h, the old leader's remaining writes
    are fenced out (its broadcast fails, it commits nothing at h); the new leader's
    block is the only one at h, everywhere, the old leader's included; its pieces go."""
    height, child_hash = scene.catch_between_pieces_and_commit(signal.SIGSTOP)
    raw, keys = scene.h.raw, scene.h.keys
    new = one_leader(scene.rest, timeout=20)  # took over from the stopped process
    assert raw.get(keys.log(height)) is None
    written = sorted(scene.child_pieces(height))
    assert written, "precondition: the stopped leader's pieces are in etcd"
    scene.child.signal(signal.SIGCONT)
    outcome = scene.child.outcome(height, timeout=90)
    assert outcome in ("lost", "not_leader"), f"the resumed leader's broadcast: {outcome}"
    assert raw.get(keys.log(height)) is None, "the resumed leader committed height h"
    assert sorted(scene.child_pieces(height)) == written, "a deposed leader wrote pieces"
    assert new.is_leader() or any(n.is_leader() for n in scene.rest)
    _, mine = scene.take_over_and_write(height)
    scene.check_one_block_at(height, mine, child_hash)
    # the resumed process follows: it applies the new leader's block at h, never its own
    wait_until(
        lambda: (height, mine.hash.hex()) in scene.child.applied,
        timeout=30,
        message=lambda: f"the resumed process never applied h: {scene.child.tail()}",
    )
    at_h = [hx for h, hx in scene.child.applied if h == height]
    assert at_h == [mine.hash.hex()] and child_hash not in at_h
    wait_until(
        lambda: scene.child_pieces(height) == [],
        timeout=40,
        message="the stopped leader's pieces were never removed",
    )
