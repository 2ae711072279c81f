"""The ``etcdraft`` command: a live demo and the operator's tools.

Subcommands (``etcdraft <command> --help`` for each; docs/cli.md has examples):

* ``demo``: a live failover demo on a local 3-member etcd (started for you).
* ``status``: leader, term, height, members with liveness, applied height and lag,
  the maintenance mode, and etcd's side (each endpoint's health, alarms).
* ``history``: the terms etcd records: when, which node, how, how long.
* ``watch``: stream the replicated blocks, one line per entry.
* ``members list|add|remove``: the membership (who may lead).
* ``resign``: force the current leader to step down and report its successor.
* ``pause`` / ``resume``: maintenance mode: no failover while paused.
* ``config``: the effective configuration (from ``ETCDRAFT_*``), secrets masked.
* ``etcd``: run a local development etcd in the foreground.
* ``node``: run one toy sequencer node (config from ``ETCDRAFT_*``; used by
  ``compose.yaml``).

Every command that prints takes ``-o json|table`` (``--json`` is ``-o json``).
``resign`` and ``members remove`` ask for confirmation when stdin is a terminal,
unless ``--force``.

Connection options (``--endpoints``, ``--namespace``, ``--tls-ca-file``,
``--tls-cert-file``, ``--tls-key-file``, ``--username``, ``--password``) fall back to
the ``ETCDRAFT_*`` environment variables, like :class:`etcdraft.Config`. Errors end
the command with one line on stderr and a non-zero exit status: 1 for runtime errors
(etcd unreachable, refused, no leader...), 2 for bad arguments or configuration,
130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from etcdraft._signals import install_stop_signals
from etcdraft._version import __version__

__all__ = ["main"]

log = logging.getLogger("etcdraft.cli")

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_CONN_FIELDS = (
    "endpoints",
    "namespace",
    "tls_ca_file",
    "tls_cert_file",
    "tls_key_file",
    "username",
    "password",
)


class CommandError(Exception):
    """Ends a command with a one-line message and an exit status."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line: ``etcdraft status: <problem> (see --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")


# ---------------------------------------------------------------------------- helpers


def _duration(text: str) -> float:
    from etcdraft.config import parse_duration

    try:
        value = parse_duration(text)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: {exc}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: must not be negative")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _install_stop_handlers(stop: threading.Event) -> Callable[[], None]:
    """SIGINT/SIGTERM set ``stop``; returns a function restoring the old handlers."""
    return install_stop_signals(stop)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


#: What the CLI says for an unreachable etcd, by the error's ``reason``.
_UNREACHABLE = {
    "refused": "connection refused",
    "unknown_host": "unknown host",
    "timeout": "no answer in time",
    "no_leader": "etcd has no leader (lost quorum?)",
    "deadline": "deadline too short",
    "not_etcd": "not etcd's client port",
    "closed": "connection closed",
}


def _unreachable_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", "")
    if reason in _UNREACHABLE:
        return _UNREACHABLE[reason]
    return _one_line(str(exc)).rsplit("last error:", 1)[-1].strip()[:160]


def _explain(exc: BaseException, args: argparse.Namespace) -> CommandError:
    """Turn a library error into a one-line :class:`CommandError`."""
    from etcdraft.errors import (
        ConfigError,
        EtcdAuthError,
        EtcdraftError,
        EtcdUnavailableError,
    )

    if isinstance(exc, ConfigError):
        return CommandError(_one_line(str(exc)), EXIT_USAGE)
    if isinstance(exc, EtcdUnavailableError):
        endpoints = getattr(args, "_endpoints", None) or []
        where = ", ".join(endpoints) if endpoints else "the configured endpoints"
        timeout = getattr(args, "timeout", None)
        within = f" within {timeout:g}s" if isinstance(timeout, float) else ""
        return CommandError(
            f"etcd unreachable at {where}{within} ({_unreachable_reason(exc)}); "
            "check --endpoints (or ETCDRAFT_ENDPOINTS) and that etcd is running"
        )
    if isinstance(exc, EtcdAuthError):
        return CommandError(_one_line(str(exc)))
    if isinstance(exc, EtcdraftError | TimeoutError):
        return CommandError(_one_line(str(exc)))
    return CommandError(f"unexpected error: {type(exc).__name__}: {_one_line(str(exc))}")


def _add_conn_args(p: argparse.ArgumentParser, *, timeout: bool = True, demo: bool = False) -> None:
    if demo:
        g = p.add_argument_group(
            "your own etcd instead of a local one (TLS and auth options fall back to "
            "their ETCDRAFT_* environment variables; the endpoints do not)"
        )
        g.add_argument("--endpoints", metavar="URLS", help="comma-separated etcd client URLs")
        g.add_argument(
            "--namespace",
            metavar="PREFIX",
            help="an empty key prefix for the run (default: /etcdraft/demo-<random>)",
        )
    else:
        g = p.add_argument_group(
            "etcd connection (each defaults to its ETCDRAFT_* environment variable)"
        )
        g.add_argument(
            "--endpoints",
            metavar="URLS",
            help="comma-separated etcd client URLs (ETCDRAFT_ENDPOINTS)",
        )
        g.add_argument(
            "--namespace",
            metavar="PREFIX",
            help="key prefix of the cluster (ETCDRAFT_NAMESPACE; default /etcdraft/default)",
        )
    g.add_argument("--tls-ca-file", metavar="PEM", help="CA bundle (ETCDRAFT_TLS_CA_FILE)")
    g.add_argument(
        "--tls-cert-file", metavar="PEM", help="client certificate (ETCDRAFT_TLS_CERT_FILE)"
    )
    g.add_argument("--tls-key-file", metavar="PEM", help="client key (ETCDRAFT_TLS_KEY_FILE)")
    g.add_argument("--username", help="etcd user (ETCDRAFT_USERNAME)")
    g.add_argument(
        "--password",
        help="etcd password (ETCDRAFT_PASSWORD; prefer the variable: arguments are visible "
        "to other local users)",
    )
    if timeout:
        g.add_argument(
            "--timeout",
            type=_duration,
            default=5.0,
            metavar="DURATION",
            help="deadline for etcd requests, e.g. 5s or 500ms (default 5s)",
        )


def _conn_fields(args: argparse.Namespace) -> dict[str, Any]:
    return {f: getattr(args, f) for f in _CONN_FIELDS if getattr(args, f, None) is not None}


def _connect(args: argparse.Namespace) -> tuple[Any, Any]:
    """(EtcdClient, Keys) from the connection options and the environment."""
    from etcdraft.config import Config
    from etcdraft.status import client_for

    # a tool is no member: node-only settings of the environment it may run in (a
    # node's container sets ETCDRAFT_RAFT_ADDR with ETCDRAFT_PEERS) must not fail it
    config = Config(node_id="etcdraft-cli", raft_addr="", **_conn_fields(args))
    args._endpoints = list(config.endpoints)
    from etcdraft.keys import Keys

    return client_for(config), Keys(config.namespace)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, separators=(",", ":"), sort_keys=False), flush=True)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _add_output(p: argparse.ArgumentParser, table: str = "a table") -> None:
    """``-o json|table`` and its alias ``--json``."""
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default="table",
        help=f"table: {table} (default); json: JSON",
    )
    g.add_argument(
        "--json", dest="output", action="store_const", const="json", help="same as -o json"
    )


def _as_json(args: argparse.Namespace) -> bool:
    return getattr(args, "output", "table") == "json"


def _add_force(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-f",
        "--force",
        action="store_true",
        help="do not ask for confirmation (it is only asked when stdin is a terminal)",
    )


def _confirm(args: argparse.Namespace, question: str) -> None:
    """Ask ``question`` on a terminal unless --force; raise CommandError unless yes.
    Without a terminal on stdin (scripts, pipes, CI) nothing is asked."""
    if args.force or not sys.stdin.isatty():
        return
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    try:
        answer = sys.stdin.readline()
    except (OSError, ValueError):
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise CommandError("not confirmed: nothing changed (--force skips the question)")


def _size(n: int) -> str:
    if n <= 0:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


# ---------------------------------------------------------------------------- commands


def _cmd_node(args: argparse.Namespace) -> int:
    from etcdraft.config import Config
    from etcdraft.demo.toy import run_node

    stop = threading.Event()
    _install_stop_handlers(stop)
    config = Config() if args.http is None else Config(http_addr=args.http)
    return run_node(
        config, block_interval=args.block_interval, record_dir=args.record_dir, stop=stop
    )


def _cmd_etcd(args: argparse.Namespace) -> int:
    from etcdraft.embedded import EmbeddedEtcdError, EtcdCluster

    stop = threading.Event()
    _install_stop_handlers(stop)
    try:
        cluster = EtcdCluster(
            size=args.members, data_dir=args.data_dir, keep_data=args.data_dir is not None
        )
        cluster.start()
    except EmbeddedEtcdError as exc:
        raise CommandError(_one_line(str(exc))) from exc
    try:
        if _as_json(args):
            _print_json({"endpoints": list(cluster.endpoints)})
        else:
            print("ETCDRAFT_ENDPOINTS=" + ",".join(cluster.endpoints), flush=True)
        stop.wait()
    finally:
        cluster.close()
    return 0


def _pause_text(p: Any) -> str:
    who = f" by {p.by}" if p.by else ""
    since = f" since {p.at}" if p.at else f" since revision {p.revision}"
    why = f" ({p.reason})" if p.reason else ""
    return f"yes{since}{who}{why}: no failover until `etcdraft resume`"


def _status_text(st: Any, etcd: Any) -> str:
    if st.leader:
        leader = st.leader
    elif st.next_in_line and st.paused is not None:
        leader = f"none (paused: {st.next_in_line} is first in line but does not claim)"
    elif st.next_in_line:
        leader = f"none (election in progress: {st.next_in_line} is next)"
    else:
        leader = "none (no candidate)"
    lines = [
        f"namespace  {st.namespace}  (etcd revision {st.revision})",
        f"leader     {leader}",
        f"term       {st.term}" + (f" ({st.term_holder})" if st.term_holder else ""),
        f"height     {st.height}" + (f"  (pruned up to {st.pruned})" if st.pruned else ""),
    ]
    if st.paused is not None:
        lines.append(f"paused     {_pause_text(st.paused)}")
    lines.append("")
    rows = [["NODE", "ADDRESS", "ROLE", "LIVE", "APPLIED", "LAG"]]
    for m in st.members:
        if m.leader:
            role = "leader"
        elif not m.member:
            role = "observer"
        elif m.candidate:
            role = "follower"
        else:
            role = "member"
        rows.append(
            [
                m.node_id,
                m.address or "-",
                role,
                "yes" if m.alive else "no",
                "-" if m.applied_height is None else str(m.applied_height),
                "-" if m.lag is None else str(m.lag),
            ]
        )
    if len(rows) == 1:
        lines.append("no members and no live nodes under this namespace")
    else:
        lines.append(_table(rows))
    if etcd is not None:
        lines.append("")
        lines.append(_etcd_text(etcd))
    return "\n".join(lines)


def _etcd_text(etcd: Any) -> str:
    rows = [
        ["ETCD ENDPOINT", "MEMBER", "VERSION", "RAFT LEADER", "TERM", "DB SIZE", "IN USE", "QUOTA"]
    ]
    notes: list[str] = []
    for ep in etcd.endpoints:
        if not ep.reachable:
            rows.append([ep.endpoint, "-", "unreachable", "-", "-", "-", "-", "-"])
            notes.append(f"{ep.endpoint}: {ep.error}")
            continue
        name = (ep.name or ep.member_id) + (" (learner)" if ep.is_learner else "")
        leader = (ep.leader or "none") + (" (itself)" if ep.is_leader else "")
        rows.append(
            [
                ep.endpoint,
                name,
                ep.version,
                leader,
                str(ep.raft_term),
                _size(ep.db_size),
                _size(ep.db_size_in_use),
                _size(ep.db_size_quota),
            ]
        )
        notes += [f"{ep.name or ep.endpoint}: {err}" for err in ep.errors]
    text = _table(rows)
    if etcd.alarms_error:
        alarms = f"unknown ({etcd.alarms_error})"
    elif etcd.alarms:
        alarms = ", ".join(f"{a['alarm']} on {a['member'] or a['member_id']}" for a in etcd.alarms)
    else:
        alarms = "none"
    text += f"\netcd alarms  {alarms}"
    for note in notes:
        text += f"\n  {note}"
    return text


def _cmd_status(args: argparse.Namespace) -> int:
    from etcdraft.status import read_etcd, read_status

    client, keys = _connect(args)
    try:
        st = read_status(client, keys, timeout=args.timeout)
        etcd = None if args.no_etcd else read_etcd(client, timeout=args.timeout)
    finally:
        client.close()
    if _as_json(args):
        out = st.to_dict()
        out["etcd"] = etcd.to_dict() if etcd is not None else None
        _print_json(out)
    else:
        print(_status_text(st, etcd), flush=True)
    if args.check:
        problems = []
        if not st.leader:
            problems.append("no leader" + (" (paused)" if st.paused is not None else ""))
        down = [m.node_id for m in st.members if m.member and not m.alive]
        if down:
            problems.append("down: " + ", ".join(down))
        if etcd is not None:
            problems += etcd.problems()
        if problems:
            raise CommandError("unhealthy: " + "; ".join(problems))
    return 0


def _cmd_history(args: argparse.Namespace) -> int:
    from etcdraft.history import read_history

    client, keys = _connect(args)
    try:
        hist = read_history(client, keys, timeout=args.timeout, blocks=not args.no_blocks)
    finally:
        client.close()
    terms = hist.terms[-args.last :] if args.last else hist.terms
    if _as_json(args):
        out = hist.to_dict()
        out["terms"] = [t.to_dict() for t in terms]
        _print_json(out)
        return 0
    print(f"namespace  {hist.namespace}  (etcd revision {hist.revision})", flush=True)
    if not terms:
        print("no term records under this namespace (no node has led yet)", flush=True)
        return 0
    rows = [["TERM", "LEADER", "BEGAN AT REV", "HOW", "LASTED (REVS)", "BLOCKS", "HEIGHTS"]]
    for t in terms:
        heights = "-" if t.first_height is None else f"{t.first_height}-{t.last_height}"
        rows.append(
            [
                str(t.term),
                t.node_id,
                str(t.revision),
                t.cause,
                f"{t.revisions} (current)" if t.current else str(t.revisions),
                "-" if args.no_blocks else str(t.blocks),
                "-" if args.no_blocks else heights,
            ]
        )
    print(_table(rows), flush=True)
    if any(t.cause == "unknown" for t in terms):
        print(
            "HOW unknown: the term record (written by an earlier version) does not say how "
            "the term began, and etcd does not keep it (see docs/operations.md#history)",
            file=sys.stderr,
        )
    if hist.pruned:
        print(f"older terms were pruned with the log (up to height {hist.pruned})", file=sys.stderr)
    return 0


def _cmd_pause(args: argparse.Namespace) -> int:
    from etcdraft.status import pause, read_status

    client, keys = _connect(args)
    try:
        changed, p = pause(client, keys, reason=args.reason or "", timeout=args.timeout)
        st = read_status(client, keys, timeout=args.timeout)
    finally:
        client.close()
    if _as_json(args):
        from dataclasses import asdict

        _print_json({"changed": changed, "paused": asdict(p), "leader": st.leader})
        return 0
    if changed:
        leader = f"{st.leader} keeps leading" if st.leader else "there is no leader now"
        print(
            f"paused {keys.namespace}: {leader}; no node claims a term or deposes a leader "
            "until `etcdraft resume` (a handover still works)",
            flush=True,
        )
    else:
        print(f"already paused: {_pause_text(p)}", flush=True)
    return 0


def _cmd_resume(args: argparse.Namespace) -> int:
    from etcdraft.status import resume

    client, keys = _connect(args)
    try:
        lifted = resume(client, keys, timeout=args.timeout)
    finally:
        client.close()
    if _as_json(args):
        from dataclasses import asdict

        _print_json({"changed": lifted is not None, "was": asdict(lifted) if lifted else None})
        return 0
    if lifted is None:
        print(f"{keys.namespace} is not paused: nothing to do", flush=True)
    else:
        print(f"resumed {keys.namespace}: failover is automatic again", flush=True)
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from etcdraft.config import Config

    overrides = _conn_fields(args)
    if args.node_id is not None:
        overrides["node_id"] = args.node_id
    config = Config(**overrides)
    described = config.describe()
    if _as_json(args):
        _print_json(described)
        return 0
    rows = [["FIELD", "VALUE", "FROM"]]
    for name, value in described.items():
        env = Config.env_var(name)
        if name in overrides:
            source = "--" + name.replace("_", "-")
        elif os.environ.get(env):
            source = env
        else:
            source = "default"
        if isinstance(value, list):
            shown = ",".join(str(v) for v in value)
        elif value is None:
            shown = "-"
        elif isinstance(value, bool):
            shown = "true" if value else "false"
        else:
            shown = str(value)
        rows.append([name, shown or '""', source])
    print(_table(rows), flush=True)
    return 0


def _cmd_members(args: argparse.Namespace) -> int:
    from etcdraft.status import add_member, read_status, remove_member

    client, keys = _connect(args)
    try:
        if args.action == "add":
            changed = add_member(client, keys, args.node_id, args.address, timeout=args.timeout)
            if _as_json(args):
                _print_json({"id": args.node_id, "address": args.address, "changed": changed})
                return 0
            print(
                f"member {args.node_id} {'added at' if changed else 'already at'} {args.address}",
                flush=True,
            )
            return 0
        if args.action == "remove":
            st = read_status(client, keys, timeout=args.timeout)
            target = st.member(args.node_id)
            if target is not None and target.member:
                role = " (the leader: it steps down at once)" if target.leader else ""
                paused = (
                    "; the cluster is paused: no other node will claim until `etcdraft resume`"
                    if target.leader and st.paused is not None
                    else ""
                )
                _confirm(args, f"remove member {args.node_id}{role}{paused}?")
            changed = remove_member(client, keys, args.node_id, timeout=args.timeout)
            left = [m.node_id for m in st.members if m.member and m.node_id != args.node_id]
            if _as_json(args):
                _print_json(
                    {
                        "id": args.node_id,
                        "changed": changed,
                        "was_leader": changed and st.leader == args.node_id,
                        "members_left": len(left),
                    }
                )
                return 0
            if not changed:
                print(f"{args.node_id} is not a member: nothing to do", flush=True)
                return 0
            note = " (it was the leader: it stepped down)" if st.leader == args.node_id else ""
            print(f"member {args.node_id} removed{note}; {len(left)} left", flush=True)
            if not left:
                print(
                    "warning: no members left: no node can lead until one is added "
                    "(etcdraft members add ID ADDR)",
                    file=sys.stderr,
                )
            return 0
        st = read_status(client, keys, timeout=args.timeout)
    finally:
        client.close()
    members = [m for m in st.members if m.member]
    if _as_json(args):
        _print_json(
            [
                {
                    "id": m.node_id,
                    "address": m.address,
                    "alive": m.alive,
                    "leader": m.leader,
                    "candidate": m.candidate,
                }
                for m in members
            ]
        )
        return 0
    if not members:
        print("no members", flush=True)
        return 0
    rows = [["NODE", "ADDRESS", "LIVE", "LEADER"]]
    for m in members:
        rows.append(
            [m.node_id, m.address or "-", "yes" if m.alive else "no", "yes" if m.leader else ""]
        )
    print(_table(rows), flush=True)
    return 0


def _cmd_resign(args: argparse.Namespace) -> int:
    from etcdraft.status import force_resign, read_status

    client, keys = _connect(args)
    try:
        if not args.force and sys.stdin.isatty():
            st = read_status(client, keys, timeout=args.timeout)
            if st.leader:  # else force_resign explains that there is none
                to = args.to or "the most up-to-date live member"
                _confirm(args, f"force {st.leader} (leader, term {st.term}) to hand over to {to}?")
        res = force_resign(client, keys, to=args.to, timeout=args.timeout)
    finally:
        client.close()
    if _as_json(args):
        _print_json(
            {
                "old_leader": res.old_leader,
                "old_term": res.old_term,
                "leader": res.new_leader,
                "term": res.new_term,
                "ms": round(res.seconds * 1000, 1),
            }
        )
    else:
        print(
            f"{res.old_leader} stepped down (term {res.old_term}); {res.new_leader} leads "
            f"(term {res.new_term}) after {res.seconds * 1000:.0f} ms",
            flush=True,
        )
    return 0


def _cmd_watch(args: argparse.Namespace) -> int:
    from etcdraft.status import LogFollower

    client, keys = _connect(args)
    follower = LogFollower(client, keys, timeout=args.timeout)
    stop = threading.Event()
    restore = _install_stop_handlers(stop)
    printed = 0
    try:
        follower.start(from_height=args.from_height)
        if not _as_json(args):
            print(
                f"watching {keys.namespace} on {', '.join(args._endpoints)} (Ctrl-C to stop)",
                file=sys.stderr,
                flush=True,
            )
        disconnected_since: float | None = None
        warned = False
        while not stop.is_set() and (args.count is None or printed < args.count):
            entry = follower.get(timeout=0.2)
            if entry is None:
                if follower.connected:
                    disconnected_since, warned = None, False
                else:
                    now = time.monotonic()
                    disconnected_since = disconnected_since or now
                    if not warned and now - disconnected_since > args.timeout:
                        log.warning("watch: etcd not reachable; retrying")
                        warned = True
                continue
            if _as_json(args):
                _print_json(entry.to_dict())
            else:
                ts = entry.state.timestamp
                if ts > 10**15:  # nanoseconds since the epoch, as the toy writes
                    clock = time.strftime("%H:%M:%S", time.localtime(ts / 1e9))
                    when = f"{clock}.{ts // 1_000_000 % 1000:03d}"
                else:
                    when = str(ts)
                print(
                    f"height {entry.height}  hash {entry.state.hash[:4].hex() or '-'}  "
                    f"term {entry.term} ({entry.leader or '?'})  index {entry.index}  "
                    f"time {when}",
                    flush=True,
                )
            printed += 1
    except BrokenPipeError:
        # the reader went away (e.g. `| head`): not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        restore()
        follower.stop()
        client.close()
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from etcdraft import demo

    args._endpoints = (args.endpoints or "").split(",") if args.endpoints else []
    if args.output == "json":
        args.json = True
    return demo.run(args)


# ---------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--log-level",
        default=argparse.SUPPRESS,
        help="DEBUG, INFO, WARNING (default) or ERROR; env ETCDRAFT_LOG_LEVEL",
    )
    common.add_argument(
        "--log-format",
        choices=("auto", "human", "json"),
        default=argparse.SUPPRESS,
        help="log lines on stderr: human on a terminal and JSON otherwise (auto, default)",
    )
    parser = _Parser(
        prog="etcdraft",
        description="etcdraft: one leader and a replicated block stream on etcd. "
        "Start with `etcdraft demo`.",
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Connection options fall back to ETCDRAFT_* environment variables. "
        "Exit status: 0 ok, 1 error, 2 bad arguments, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"etcdraft {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def add(name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help,
            description=description or help,
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    from etcdraft import demo

    p_demo = add(
        "demo",
        "live failover demo: local 3-member etcd, N toy sequencer nodes, leader faults",
        demo.DESCRIPTION,
    )
    demo.add_arguments(p_demo)
    p_demo.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default="table",
        help="json: same as --json (the summary as JSON on the last line)",
    )
    _add_conn_args(p_demo, timeout=False, demo=True)
    p_demo.set_defaults(func=_cmd_demo, default_level="WARNING")

    p_status = add(
        "status",
        "leader, term, height, members' liveness and lag, pause, etcd's health",
        "Leader, term, height, every member's liveness, applied height and lag, the "
        "maintenance mode, and etcd's side: each endpoint's version, raft leader and term, "
        "database size, space in use and quota, and the cluster's alarms (NOSPACE...).",
    )
    _add_output(p_status, "the cluster, its nodes and etcd's endpoints")
    p_status.add_argument(
        "--check",
        action="store_true",
        help="exit 1 (after printing) unless there is a leader, every member is alive, "
        "every etcd endpoint answers and etcd has no alarm (such as NOSPACE)",
    )
    p_status.add_argument(
        "--no-etcd", action="store_true", help="skip etcd's side (the endpoints and alarms)"
    )
    _add_conn_args(p_status)
    p_status.set_defaults(func=_cmd_status)

    p_history = add(
        "history",
        "the terms, newest last: when, which node, how it began, how long it lasted",
        "The terms etcd still records (<ns>/terms/<term>), newest last: the revision the "
        "term began at (etcd keeps no wall-clock time), its leader, how it began (first, "
        "election, takeover or handover, as its record says; see "
        "docs/operations.md#history), "
        "how long it lasted in revisions and the log entries written in it that etcd "
        "still holds. Pruning the log prunes old records too.",
    )
    _add_output(p_history)
    p_history.add_argument("--last", type=_positive_int, metavar="N", help="only the last N terms")
    p_history.add_argument(
        "--no-blocks",
        action="store_true",
        help="do not count each term's blocks (skips a keys-only read of the whole log)",
    )
    _add_conn_args(p_history)
    p_history.set_defaults(func=_cmd_history)

    p_pause = add(
        "pause",
        "maintenance mode: no failover until `etcdraft resume`",
        "Pause automatic failover (like Patroni's pause): writes <ns>/paused in a "
        "transaction. While it exists no node claims a term or deposes a leader: the "
        "leader keeps leading, a handover (`etcdraft resign`, Node.resign_leader, a "
        "leader's graceful stop) still works, and a leader that dies or loses its "
        "session is not replaced until `etcdraft resume`. Every node and tool sees it.",
    )
    p_pause.add_argument("--reason", metavar="TEXT", help="recorded with the pause")
    _add_output(p_pause, "one line")
    _add_conn_args(p_pause)
    p_pause.set_defaults(func=_cmd_pause)

    p_resume = add("resume", "leave maintenance mode: failover is automatic again")
    _add_output(p_resume, "one line")
    _add_conn_args(p_resume)
    p_resume.set_defaults(func=_cmd_resume)

    p_config = add(
        "config",
        "the effective configuration, secrets masked",
        "Print the configuration a node started here would use: the ETCDRAFT_* "
        "environment variables, the options below, and the defaults, validated exactly "
        "like Config() (an invalid value exits 2 naming the field). Passwords are masked.",
    )
    p_config.add_argument("--node-id", metavar="ID", help="node id (ETCDRAFT_NODE_ID)")
    _add_output(p_config, "FIELD, VALUE and where it comes from")
    _add_conn_args(p_config, timeout=False)
    p_config.set_defaults(func=_cmd_config)

    p_watch = add("watch", "stream the replicated blocks, one line per new entry")
    p_watch.add_argument("--count", type=_positive_int, help="stop after N entries")
    p_watch.add_argument(
        "--from-height",
        type=_positive_int,
        metavar="H",
        help="print the entries from height H on first (default: only new ones)",
    )
    _add_output(p_watch, "one line per entry")
    _add_conn_args(p_watch)
    p_watch.set_defaults(func=_cmd_watch)

    p_members = add("members", "list, add or remove members (nodes allowed to lead)")
    msub = p_members.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    msub.required = True
    p_list = msub.add_parser("list", help="the members with liveness", parents=[common])
    _add_output(p_list)
    _add_conn_args(p_list)
    p_add = msub.add_parser(
        "add",
        help="add a member (same id or address: replaced)",
        parents=[common],
    )
    p_add.add_argument("node_id", metavar="ID")
    p_add.add_argument("address", metavar="ADDR")
    _add_output(p_add, "one line")
    _add_conn_args(p_add)
    p_remove = msub.add_parser(
        "remove",
        help="remove a member (a removed leader steps down at once)",
        parents=[common],
    )
    p_remove.add_argument("node_id", metavar="ID")
    _add_force(p_remove)
    _add_output(p_remove, "one line")
    _add_conn_args(p_remove)
    p_members.set_defaults(func=_cmd_members)

    p_resign = add(
        "resign",
        "force the current leader to step down; report its successor",
        "Force the current leader to step down (its election key is deleted in a "
        "transaction compared on its create revision: its later writes are fenced) and "
        "wait until the successor - the most up-to-date live member, or --to - claims "
        "the next term. The leader process is not asked: a broadcast in flight fails "
        "with LeadershipLostError (nothing written). For a graceful handover stop the "
        "leader process (SIGTERM) instead.",
    )
    p_resign.add_argument("--to", metavar="ID", help="the successor (a live member candidate)")
    _add_force(p_resign)
    _add_output(p_resign, "one line")
    _add_conn_args(p_resign)
    p_resign.set_defaults(func=_cmd_resign)

    p_etcd = add("etcd", "run a local development etcd in the foreground (Ctrl-C stops it)")
    p_etcd.add_argument("--members", type=int, default=1, choices=(1, 3))
    p_etcd.add_argument("--data-dir", default=None, help="keep data here (default: temporary)")
    _add_output(p_etcd, "ETCDRAFT_ENDPOINTS=...")
    p_etcd.set_defaults(func=_cmd_etcd)

    p_node = add("node", "run a toy sequencer node (config from ETCDRAFT_*)")
    p_node.add_argument("--block-interval", type=float, default=1.0, help="seconds per block")
    p_node.add_argument("--record-dir", default=None, help="record acks/applies (JSON lines)")
    p_node.add_argument(
        "--http",
        metavar="HOST:PORT",
        default=None,
        help="serve /raft/node, /health/live, /health/ready, /leader, /replica and "
        "/metrics there (ETCDRAFT_HTTP_ADDR; default: off)",
    )
    p_node.set_defaults(func=_cmd_node, default_level="INFO")
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    from etcdraft.logging_setup import configure

    level = str(
        getattr(args, "log_level", None)
        or os.environ.get("ETCDRAFT_LOG_LEVEL")
        or getattr(args, "default_level", "WARNING")
    )
    fmt = getattr(args, "log_format", "auto")
    try:
        configure(level, json={"auto": None, "human": False, "json": True}[fmt])
    except ValueError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from exc


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``etcdraft`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"etcdraft {args.command}"
    if getattr(args, "action", None):
        prog += f" {args.action}"
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        _configure_logging(args)
        return func(args)
    except CommandError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        err = _explain(exc, args)
        log.debug("%s failed", prog, exc_info=True)
        print(f"{prog}: {err}", file=sys.stderr)
        return err.code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
