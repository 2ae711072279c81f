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

Modules: :mod:`~etcdraft.cli.parser` (the arguments), :mod:`~etcdraft.cli.ops` (the
operator's commands), :mod:`~etcdraft.cli.local` (``node``, ``etcd``, ``demo``),
:mod:`~etcdraft.cli.output` (tables and JSON), :mod:`~etcdraft.cli.common` (errors,
exit statuses, the connection).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from etcdraft.cli.common import EXIT_INTERRUPTED, EXIT_USAGE, CommandError, _explain
from etcdraft.cli.parser import build_parser

__all__ = ["main"]

log = logging.getLogger("etcdraft.cli")


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
