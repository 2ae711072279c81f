"""What every ``etcdraft`` command shares: exit statuses, the one-line
:class:`CommandError`, library errors explained in one line, the etcd connection from
the options and the environment, and the confirmation question."""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable
from typing import Any

from etcdraft._signals import install_stop_signals

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_USAGE", "CommandError"]

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


def _install_stop_handlers(stop: threading.Event) -> Callable[[], None]:
    """SIGINT/SIGTERM set ``stop``; returns a function restoring the old handlers."""
    return install_stop_signals(stop)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _explain(exc: BaseException, args: argparse.Namespace) -> CommandError:
    """Turn a library error into a one-line :class:`CommandError`."""
    from etcdraft.errors import (
        ConfigError,
        EtcdAuthError,
        EtcdraftError,
        EtcdUnavailableError,
    )
    from etcdraft.status import unreachable_reason

    if isinstance(exc, ConfigError):
        return CommandError(_one_line(str(exc)), EXIT_USAGE)
    if isinstance(exc, EtcdUnavailableError):
        endpoints = getattr(args, "_endpoints", None) or []
        where = ", ".join(endpoints) if endpoints else "the configured endpoints"
        timeout = getattr(args, "timeout", None)
        within = f" within {timeout:g}s" if isinstance(timeout, float) else ""
        return CommandError(
            f"etcd unreachable at {where}{within} ({unreachable_reason(exc)}); "
            "check --endpoints (or ETCDRAFT_ENDPOINTS) and that etcd is running"
        )
    if isinstance(exc, EtcdAuthError):
        return CommandError(_one_line(str(exc)))
    if isinstance(exc, EtcdraftError | TimeoutError):
        return CommandError(_one_line(str(exc)))
    return CommandError(f"unexpected error: {type(exc).__name__}: {_one_line(str(exc))}")


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


def _as_json(args: argparse.Namespace) -> bool:
    return getattr(args, "output", "table") == "json"


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
