"""The ``etcdraft`` argument parser: every subcommand, its options and the command
function it runs."""

from __future__ import annotations

import argparse
from typing import NoReturn

from etcdraft._version import __version__
from etcdraft.cli.common import EXIT_USAGE
from etcdraft.cli.local import _cmd_demo, _cmd_etcd, _cmd_node
from etcdraft.cli.ops import (
    _cmd_config,
    _cmd_history,
    _cmd_members,
    _cmd_pause,
    _cmd_resign,
    _cmd_resume,
    _cmd_status,
    _cmd_watch,
)

__all__ = ["build_parser"]


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line: ``etcdraft status: <problem> (see --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")


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


def _add_force(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-f",
        "--force",
        action="store_true",
        help="do not ask for confirmation (it is only asked when stdin is a terminal)",
    )


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
