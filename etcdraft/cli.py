"""The ``etcdraft`` command.

Subcommands available now:

* ``etcdraft node``: run one toy sequencer node through ``DynamicLeaderElection``
  (configured from ``ETCDRAFT_*`` environment variables); used by ``compose.yaml``.
* ``etcdraft etcd``: run a local development etcd in the foreground.

``demo``, ``status``, ``watch``, ``members`` and ``resign`` arrive with the CLI issue.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from etcdraft._version import __version__

__all__ = ["main"]

log = logging.getLogger("etcdraft.cli")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _install_stop_handlers(stop: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _cmd_node(args: argparse.Namespace) -> int:
    from etcdraft.config import Config
    from etcdraft.errors import EtcdraftError
    from etcdraft.toy import run_node

    stop = threading.Event()
    _install_stop_handlers(stop)
    try:
        config = Config()
    except EtcdraftError as exc:
        print(f"etcdraft node: {exc}", file=sys.stderr)
        return 2
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
        print(f"etcdraft etcd: {exc}", file=sys.stderr)
        return 1
    try:
        print("ETCDRAFT_ENDPOINTS=" + ",".join(cluster.endpoints), flush=True)
        stop.wait()
    finally:
        cluster.close()
    return 0


def _not_yet(name: str) -> int:
    print(
        f"etcdraft {name}: not there yet (arrives with the CLI issue; see CHANGELOG.md)",
        file=sys.stderr,
    )
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="etcdraft", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"etcdraft {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", required=True)
    p_node = sub.add_parser("node", help="run a toy sequencer node (config from ETCDRAFT_*)")
    p_node.add_argument("--block-interval", type=float, default=1.0, help="seconds per block")
    p_node.add_argument("--record-dir", default=None, help="record acks/applies (JSON lines)")
    p_etcd = sub.add_parser("etcd", help="run a local development etcd in the foreground")
    p_etcd.add_argument("--members", type=int, default=1, choices=(1, 3))
    p_etcd.add_argument("--data-dir", default=None, help="keep data here (default: temporary)")
    for name in ("demo", "status", "watch", "members", "resign"):
        sub.add_parser(name, help="not there yet")
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    if args.command == "node":
        return _cmd_node(args)
    if args.command == "etcd":
        return _cmd_etcd(args)
    return _not_yet(args.command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
