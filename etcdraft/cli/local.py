"""The commands that run local processes in the foreground: ``node`` (a toy sequencer
node), ``etcd`` (a development etcd) and ``demo``."""

from __future__ import annotations

import argparse
import threading

from etcdraft.cli.common import CommandError, _as_json, _install_stop_handlers, _one_line
from etcdraft.cli.output import _print_json


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


def _cmd_demo(args: argparse.Namespace) -> int:
    from etcdraft import demo

    args._endpoints = (args.endpoints or "").split(",") if args.endpoints else []
    if args.output == "json":
        args.json = True
    return demo.run(args)
