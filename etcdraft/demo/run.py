"""The run of ``etcdraft demo``: set up etcd and the nodes, strike the leader on a
schedule, show the cluster, stop everything and verify (see :mod:`etcdraft.demo`)."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from etcdraft.demo.check import DemoResult, Fault, read_etcd_log, verify
from etcdraft.demo.nodes import NodeProc, _own_session_wrapper, _toy_supports_metrics
from etcdraft.demo.view import _bar, _View, summary_text

__all__ = ["FAULT_MARGIN", "NODE_TIMINGS", "Demo", "run"]

#: Node timings: short, for a 1 s lease (the embedded etcd's minimum TTL).
NODE_TIMINGS = {
    "election_timeout": "1s",
    "heartbeat_timeout": "200ms",
    "leader_lease_timeout": "300ms",
    "send_timeout": "500ms",
}
#: No new fault this close to the end (it could not show a failover).
FAULT_MARGIN = 2.5
REFRESH = 0.25


class _Stop:
    """SIGINT/SIGTERM end the run early (a second Ctrl-C aborts the summary)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.interrupted = False
        self._restore: Callable[[], None] = lambda: None

    def install(self) -> None:
        from etcdraft._signals import install_stop_signals

        self._restore = install_stop_signals(self.event, on_signal=self._on_signal)

    def restore(self) -> None:
        self._restore()

    def _on_signal(self, signum: int) -> None:
        # runs in the signal handler: no locks here (see etcdraft._signals)
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.nodes_n: int = args.nodes
        self.seconds: float = args.seconds
        self.every: float = args.kill_leader_every
        self.fault_kind: str = args.fault
        self.out: IO[str] = sys.stderr if args.json else sys.stdout
        self.view = _View(args.view, self.out)
        self.stop = _Stop()
        self.workdir = Path(tempfile.mkdtemp(prefix="etcdraft-demo-"))
        self.cluster: Any = None
        self.client: Any = None
        self.keys: Any = None
        self.namespace = ""
        self.endpoints: list[str] = []
        self.nodes: list[NodeProc] = []
        self.faults: list[Fault] = []
        self.unexpected_exits = 0
        self.messages: deque[tuple[float, str]] = deque(maxlen=6)
        self.heights: deque[tuple[float, int]] = deque()
        self.status: Any = None
        self.status_error = ""
        self.t0 = 0.0
        self.first_leader_ms: float | None = None
        self.metrics_server: Any = None

    # -- setup ----------------------------------------------------------------

    def _say(self, text: str) -> None:
        if self.view.mode != "none":
            self.out.write(text + "\n")
            self.out.flush()

    def _note(self, text: str, t: float | None = None) -> None:
        when = time.monotonic() if t is None else t
        stamp = f"{when - self.t0:6.2f}s" if self.t0 else "  start"
        self.messages.append((when, f"{stamp}  {text}"))
        self.view.event(f"{stamp} {text}")

    def setup(self) -> None:
        from etcdraft.config import Config
        from etcdraft.keys import Keys
        from etcdraft.status import client_for

        args = self.args
        secure = ("tls_ca_file", "tls_cert_file", "tls_key_file", "username", "password")
        conn: dict[str, Any] = {
            f: getattr(args, f) for f in secure if getattr(args, f, None) is not None
        }
        if not args.endpoints:
            # the local etcd is plain http without auth: ignore ETCDRAFT_TLS_* etc.
            conn = {f: None for f in secure}
        if args.endpoints:
            self.endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
            where = "etcd " + ",".join(self.endpoints)
        else:
            from etcdraft.embedded import EtcdCluster, find_etcd_binary

            self._say("starting a local 3-member etcd ...")
            binary = _own_session_wrapper(find_etcd_binary(), self.workdir)
            self.cluster = EtcdCluster(size=3, binary=binary, data_dir=self.workdir / "etcd")
            self.cluster.start()
            self.endpoints = list(self.cluster.endpoints)
            where = "local 3-member etcd"
        self.namespace = args.namespace or f"/etcdraft/demo-{secrets.token_hex(4)}"
        config = Config(
            node_id="etcdraft-demo", endpoints=self.endpoints, namespace=self.namespace, **conn
        )
        self.config = config
        self.client = client_for(config, name="etcdraft-demo")
        self.keys = Keys(config.namespace)
        from etcdraft._deadline import Deadline
        from etcdraft.etcd import prefix_end

        existing = self.client.range(
            self.keys.root, prefix_end(self.keys.root), Deadline(10.0), count_only=True
        )
        if existing.count:
            from etcdraft.errors import ConfigError

            raise ConfigError(
                f"namespace {self.namespace} already holds {existing.count} keys: the demo "
                "needs an empty one to verify its run; pick another --namespace",
                field="namespace",
            )
        if args.metrics_port is not None:
            from etcdraft.metrics import serve_cluster

            self.metrics_server = serve_cluster(self.client, self.keys, args.metrics_port)
        fault = f"{self.fault_kind} the leader every {self.every:g}s" if self.every else "no faults"
        self.title = (
            f"etcdraft demo: {self.nodes_n} nodes on {where}, {fault}, "
            f"{self.seconds:g}s (namespace {self.namespace})"
        )
        self._spawn_nodes(config)

    def _spawn_nodes(self, config: Any) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDRAFT_")}
        # connection secrets go through the environment, not the command line
        for name in ("tls_ca_file", "tls_cert_file", "tls_key_file", "username"):
            value = getattr(config, name)
            if value:
                env[f"ETCDRAFT_{name.upper()}"] = str(value)
        if config.password is not None:
            env["ETCDRAFT_PASSWORD"] = config.password.get_secret_value()
        ids = [f"node{i + 1}" for i in range(self.nodes_n)]
        peers = ",".join(f"{nid}@127.0.0.1:{7001 + i}" for i, nid in enumerate(ids))
        toy_metrics = self.args.metrics_port is not None and _toy_supports_metrics()
        for i, nid in enumerate(ids):
            rec = self.workdir / "records" / nid
            rec.mkdir(parents=True, exist_ok=True)
            cmd = [
                sys.executable,
                "-m",
                "etcdraft.demo.toy",
                "--node-id", nid,
                "--endpoints", ",".join(self.endpoints),
                "--namespace", self.namespace,
                "--peers", peers,
                "--raft-addr", f"127.0.0.1:{7001 + i}",
                "--raft-dir", str(self.workdir / "raft" / nid),
                "--bootstrap",
                "--election-timeout", NODE_TIMINGS["election_timeout"],
                "--heartbeat-timeout", NODE_TIMINGS["heartbeat_timeout"],
                "--leader-lease-timeout", NODE_TIMINGS["leader_lease_timeout"],
                "--send-timeout", NODE_TIMINGS["send_timeout"],
                "--block-interval", str(self.args.block_interval),
                "--record-dir", str(rec),
                "--log-level", "WARNING",
            ]  # fmt: skip
            if toy_metrics:
                cmd += ["--metrics-port", str(self.args.metrics_port + 1 + i)]
            node = NodeProc(nid, cmd, env, rec, self.workdir / f"{nid}.log")
            self.nodes.append(node)
        for node in self.nodes:
            node.start()
        self.t0 = time.monotonic()
        if self.metrics_server is not None:
            port = self.metrics_server.port
            extra = f"; nodes on {port + 1}..{port + self.nodes_n}" if toy_metrics else ""
            self._note(f"metrics on http://127.0.0.1:{port}/metrics{extra}")

    # -- the loop -------------------------------------------------------------

    def loop(self) -> None:
        next_fault = self.t0 + self.every if self.every else math.inf
        end = self.t0 + self.seconds
        while not self.stop.event.is_set():
            now = time.monotonic()
            if now >= end:
                break
            self._poll_processes(now)
            self._poll_events()
            self._poll_status(now)
            if now >= next_fault and self._can_strike(now, end):
                if self._strike(now):
                    next_fault = now + self.every
            elif now >= next_fault and end - now < FAULT_MARGIN:
                next_fault = math.inf
            if self.first_leader_ms is None and now - self.t0 > 30:
                self.status_error = "no leader after 30 s"
                self._note("no leader elected within 30 s: giving up")
                break
            self._draw(now)
            self.stop.event.wait(max(0.0, REFRESH - (time.monotonic() - now)))

    def _poll_processes(self, now: float) -> None:
        for node in self.nodes:
            if node.resume_at is not None and now >= node.resume_at:
                node.resume()
                self._note(f"SIGCONT {node.node_id} (resumed)")
            if node.proc is None or node.running():
                continue
            code = node.proc.returncode
            if node.expect_exit:
                if node.restart_after_exit:
                    node.restarts += 1
                    node.start()
                    self._note(f"restarted {node.node_id} (pid {node.pid})")
                else:
                    node.state = "down"
            else:
                self.unexpected_exits += 1
                self._note(f"{node.node_id} exited on its own (code {code}); restarting")
                node.restarts += 1
                node.start()

    def _poll_events(self) -> None:
        for node in self.nodes:
            for ev in node.events.read():
                if ev.get("ev") != "leader":
                    continue
                t = float(ev.get("t", 0))
                term = int(ev.get("term", 0))
                if self.first_leader_ms is None:
                    self.first_leader_ms = (t - self.t0) * 1000
                    self._note(f"{node.node_id} leads (term {term})", t)
                    continue
                done = False
                for f in self.faults:
                    if f.t_leader is None and t >= f.t:
                        f.t_leader = t
                        f.successor = node.node_id
                        ms = f.ms or 0.0
                        self._note(f"{node.node_id} leads (term {term}): failover {ms:.0f} ms", t)
                        done = True
                if not done:
                    self._note(f"{node.node_id} leads (term {term})", t)

    def _poll_status(self, now: float) -> None:
        from etcdraft.errors import EtcdraftError
        from etcdraft.status import read_status

        try:
            self.status = read_status(self.client, self.keys, timeout=1.0)
            self.status_error = ""
        except EtcdraftError as exc:
            self.status_error = " ".join(str(exc).split())[:120]
            return
        self.heights.append((now, self.status.height))
        while self.heights and now - self.heights[0][0] > 3.0:
            self.heights.popleft()

    def _rate(self) -> float:
        if len(self.heights) < 2:
            return 0.0
        (t1, h1), (t2, h2) = self.heights[0], self.heights[-1]
        return (h2 - h1) / (t2 - t1) if t2 > t1 else 0.0

    def _can_strike(self, now: float, end: float) -> bool:
        if end - now < FAULT_MARGIN:
            return False
        if any(f.t_leader is None for f in self.faults):
            return False  # the previous failover is not over yet
        st = self.status
        return st is not None and bool(st.leader) and not self.status_error

    def _strike(self, now: float) -> bool:
        st = self.status
        node = next((n for n in self.nodes if n.node_id == st.leader), None)
        if node is None or node.state != "up" or not node.running():
            return False
        kind = self.fault_kind
        t = time.monotonic()
        if kind == "kill":
            node.kill()
            node.restart_after_exit = True
            self._note(f"SIGKILL {node.node_id} (leader, term {st.term}); restarting it")
        elif kind == "pause":
            node.pause(t + self.args.pause_for)
            self._note(
                f"SIGSTOP {node.node_id} (leader, term {st.term}) for {self.args.pause_for:g}s"
            )
        else:
            node.terminate()
            node.restart_after_exit = True
            self._note(f"SIGTERM {node.node_id} (leader, term {st.term}): handover, restart")
        self.faults.append(Fault(kind, node.node_id, t, st.term))
        return True

    def _draw(self, now: float) -> None:
        elapsed = now - self.t0
        st = self.status
        done = [f.ms for f in self.faults if f.ms is not None]
        fo = f"failovers {len(done)}" + (
            f" (last {done[-1]:.0f} ms, avg {sum(done) / len(done):.0f} ms)" if done else ""
        )
        if st is None:
            head = "waiting for etcd ..."
        else:
            leader = st.leader or (f"(electing: {st.next_in_line})" if st.next_in_line else "-")
            head = (
                f"leader {leader}  term {st.term}  height {st.height}  "
                f"{self._rate():.1f} blocks/s  {fo}"
            )
            if st.paused is not None:  # `etcdraft pause` on the demo's namespace
                head += "  PAUSED (no failover)"
        if self.status_error:
            head += f"  [etcd: {self.status_error}]"
        if self.view.mode == "lines":
            applied = " ".join(
                f"{n.node_id}={self._applied(n.node_id)}"
                + ("" if n.state == "up" else f"({n.state})")
                for n in self.nodes
            )
            self.view.line(f"[{elapsed:5.1f}s/{self.seconds:g}s] {head}  applied {applied}", now)
            return
        if self.view.mode != "live":
            return
        lines = [
            self.title,
            f"pause: etcdraft pause --endpoints {self.client.endpoints[0]} "
            f"--namespace {self.namespace}",
            f"{_bar(elapsed / self.seconds)} {elapsed:5.1f}s / {self.seconds:g}s",
            head,
            "",
            f"  {'NODE':<7} {'PID':>7}  {'PROCESS':<9} {'ROLE':<9} {'APPLIED':>8} {'LAG':>5}",
        ]
        for n in self.nodes:
            m = st.member(n.node_id) if st is not None else None
            role = "LEADER" if m is not None and m.leader else ("follower" if m else "-")
            if m is not None and not m.alive:
                role = "(no lease)"
            applied = "-" if m is None or m.applied_height is None else str(m.applied_height)
            lag = "-" if m is None or m.lag is None else str(m.lag)
            bold = "\x1b[1m" if role == "LEADER" else ""
            reset = "\x1b[0m" if bold else ""
            lines.append(
                f"  {bold}{n.node_id:<7} {n.pid or '-':>7}  {n.state:<9} {role:<9} "
                f"{applied:>8} {lag:>5}{reset}"
            )
        lines.append("")
        lines.extend(text for _, text in sorted(self.messages))
        self.view.frame(lines)

    def _applied(self, node_id: str) -> str:
        st = self.status
        m = st.member(node_id) if st is not None else None
        return "-" if m is None or m.applied_height is None else str(m.applied_height)

    # -- teardown -------------------------------------------------------------

    def stop_nodes(self) -> None:
        """Followers first (fast), then the leader (no one left to hand over to)."""
        for node in self.nodes:
            node.restart_after_exit = False
            if node.resume_at is not None:
                node.resume()
        leader = self.status.leader if self.status is not None else ""
        order = [n for n in self.nodes if n.node_id != leader] + [
            n for n in self.nodes if n.node_id == leader
        ]
        followers, last = order[:-1], order[-1:]
        for group in (followers, last):
            for node in group:
                node.terminate()
            deadline = time.monotonic() + (3.0 if self.stop.interrupted else 6.0)
            for node in group:
                if node.proc is None:
                    continue
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.proc.wait(max(0.05, deadline - time.monotonic()))
                if node.running():
                    self._note(f"{node.node_id} did not stop in time: SIGKILL")
                    node.force_kill()
                elif node.proc.returncode not in (0, -signal.SIGTERM):
                    self._note(f"{node.node_id} exited with code {node.proc.returncode}")
                node.state = "down"

    def cleanup(self) -> None:
        for node in self.nodes:
            node.resume()
            node.force_kill()
        if self.metrics_server is not None:
            with contextlib.suppress(Exception):
                self.metrics_server.close()
        if self.client is not None and self.cluster is None and not self.args.keep:
            from etcdraft._deadline import Deadline
            from etcdraft.errors import EtcdraftError
            from etcdraft.etcd import prefix_end

            with contextlib.suppress(EtcdraftError):
                root = self.keys.root
                self.client.delete(root, prefix_end(root), Deadline(5.0))
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        if self.args.keep:
            self._say(f"work directory kept: {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    """Run the demo (``etcdraft demo``); returns the exit status."""
    demo = Demo(args)
    demo.stop.install()
    result: DemoResult | None = None
    try:
        demo.setup()
        if demo.view.mode != "live":
            demo._say(demo.title)
        demo.loop()
        end_t = time.monotonic()
        elapsed = end_t - demo.t0
        demo.view.finish()
        demo._say("stopping the nodes ...")
        demo.stop_nodes()
        etcd_error = None
        log: dict[int, str] = {}
        pruned = 0
        try:
            log, pruned = read_etcd_log(
                demo.client, demo.keys, 5.0 if demo.stop.interrupted else 15.0
            )
        except Exception as exc:
            etcd_error = " ".join(str(exc).split())[:200]
        result = verify(
            {n.node_id: n.record_dir for n in demo.nodes},
            log,
            pruned,
            faults=demo.faults,
            unexpected_exits=demo.unexpected_exits,
            seconds=elapsed,
            end_t=end_t,
            etcd_error=etcd_error,
            interrupted=demo.stop.interrupted,
        )
        result.namespace, result.endpoints = demo.namespace, list(demo.endpoints)
        if demo.status_error == "no leader after 30 s":
            result.problems.append("no leader was elected within 30 s")
    finally:
        demo.stop.restore()
        demo.cleanup()
    if result is None:  # pragma: no cover - exceptions propagate above
        return 1
    print(summary_text(result, "summary:"), file=demo.out, flush=True)
    if args.json:
        print(json.dumps(result.to_dict(), separators=(",", ":")), flush=True)
    if demo.stop.interrupted:
        return 130
    return 0 if result.ok else 1
