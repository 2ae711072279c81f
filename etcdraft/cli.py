"""The ``etcdraft`` command: a live demo and the operator's tools.

Subcommands (``etcdraft <command> --help`` for each; docs/cli.md has examples):

* ``demo``: a live failover demo on a local 3-member etcd (started for you).
* ``status``: leader, term, height, members with liveness, applied height and lag.
* ``watch``: stream the replicated blocks, one line per entry.
* ``members list|add|remove``: the membership (who may lead).
* ``resign``: force the current leader to step down and report its successor.
* ``etcd``: run a local development etcd in the foreground.
* ``node``: run one toy sequencer node (config from ``ETCDRAFT_*``; used by
  ``compose.yaml``).

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


def _unreachable_reason(text: str) -> str:
    low = text.lower()
    if "connection refused" in low:
        return "connection refused"
    if "name or service not known" in low or "nodename nor servname" in low:
        return "unknown host"
    if "did not answer in time" in low or "timed out" in low:
        return "no answer in time"
    if "no leader" in low or "unhealthy" in low:
        return "etcd has no leader (lost quorum?)"
    if "deadline expired before any attempt" in low:
        return "deadline too short"
    tail = text.rsplit("last error:", 1)[-1].strip()
    return tail[:160]


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
            f"etcd unreachable at {where}{within} ({_unreachable_reason(str(exc))}); "
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

    config = Config(node_id="etcdraft-cli", **_conn_fields(args))
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


# ---------------------------------------------------------------------------- commands


def _cmd_node(args: argparse.Namespace) -> int:
    from etcdraft.config import Config
    from etcdraft.toy import run_node

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
        print("ETCDRAFT_ENDPOINTS=" + ",".join(cluster.endpoints), flush=True)
        stop.wait()
    finally:
        cluster.close()
    return 0


def _status_text(st: Any) -> str:
    if st.leader:
        leader = st.leader
    elif st.next_in_line:
        leader = f"none (election in progress: {st.next_in_line} is next)"
    else:
        leader = "none (no candidate)"
    lines = [
        f"namespace  {st.namespace}  (etcd revision {st.revision})",
        f"leader     {leader}",
        f"term       {st.term}" + (f" ({st.term_holder})" if st.term_holder else ""),
        f"height     {st.height}" + (f"  (pruned up to {st.pruned})" if st.pruned else ""),
        "",
    ]
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
    return "\n".join(lines)


def _cmd_status(args: argparse.Namespace) -> int:
    from etcdraft.status import read_status

    client, keys = _connect(args)
    try:
        st = read_status(client, keys, timeout=args.timeout)
    finally:
        client.close()
    if args.json:
        _print_json(st.to_dict())
    else:
        print(_status_text(st), flush=True)
    if args.check:
        problems = []
        if not st.leader:
            problems.append("no leader")
        down = [m.node_id for m in st.members if m.member and not m.alive]
        if down:
            problems.append("down: " + ", ".join(down))
        if problems:
            raise CommandError("unhealthy: " + "; ".join(problems))
    return 0


def _cmd_members(args: argparse.Namespace) -> int:
    from etcdraft.status import add_member, read_status, remove_member

    client, keys = _connect(args)
    try:
        if args.action == "add":
            changed = add_member(client, keys, args.node_id, args.address, timeout=args.timeout)
            print(
                f"member {args.node_id} {'added at' if changed else 'already at'} {args.address}",
                flush=True,
            )
            return 0
        if args.action == "remove":
            st = read_status(client, keys, timeout=args.timeout)
            changed = remove_member(client, keys, args.node_id, timeout=args.timeout)
            if not changed:
                print(f"{args.node_id} is not a member: nothing to do", flush=True)
                return 0
            left = [m.node_id for m in st.members if m.member and m.node_id != args.node_id]
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
    if args.json:
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
    from etcdraft.status import force_resign

    client, keys = _connect(args)
    try:
        res = force_resign(client, keys, to=args.to, timeout=args.timeout)
    finally:
        client.close()
    if args.json:
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
        if not args.json:
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
            if args.json:
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
    _add_conn_args(p_demo, timeout=False, demo=True)
    p_demo.set_defaults(func=_cmd_demo, default_level="WARNING")

    p_status = add("status", "leader, term, height and every member's liveness and lag")
    p_status.add_argument("--json", action="store_true", help="one JSON object")
    p_status.add_argument(
        "--check",
        action="store_true",
        help="exit 1 unless there is a leader and every member is alive",
    )
    _add_conn_args(p_status)
    p_status.set_defaults(func=_cmd_status)

    p_watch = add("watch", "stream the replicated blocks, one line per new entry")
    p_watch.add_argument("--count", type=_positive_int, help="stop after N entries")
    p_watch.add_argument(
        "--from-height",
        type=_positive_int,
        metavar="H",
        help="print the entries from height H on first (default: only new ones)",
    )
    p_watch.add_argument("--json", action="store_true", help="JSON lines")
    _add_conn_args(p_watch)
    p_watch.set_defaults(func=_cmd_watch)

    p_members = add("members", "list, add or remove members (nodes allowed to lead)")
    msub = p_members.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    msub.required = True
    p_list = msub.add_parser("list", help="the members with liveness", parents=[common])
    p_list.add_argument("--json", action="store_true", help="a JSON array")
    _add_conn_args(p_list)
    p_add = msub.add_parser(
        "add",
        help="add a member (same id or address: replaced)",
        parents=[common],
    )
    p_add.add_argument("node_id", metavar="ID")
    p_add.add_argument("address", metavar="ADDR")
    _add_conn_args(p_add)
    p_remove = msub.add_parser(
        "remove",
        help="remove a member (a removed leader steps down at once)",
        parents=[common],
    )
    p_remove.add_argument("node_id", metavar="ID")
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
    p_resign.add_argument("--json", action="store_true", help="one JSON object")
    _add_conn_args(p_resign)
    p_resign.set_defaults(func=_cmd_resign)

    p_etcd = add("etcd", "run a local development etcd in the foreground (Ctrl-C stops it)")
    p_etcd.add_argument("--members", type=int, default=1, choices=(1, 3))
    p_etcd.add_argument("--data-dir", default=None, help="keep data here (default: temporary)")
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
