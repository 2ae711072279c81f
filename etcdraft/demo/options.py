"""The command line of ``etcdraft demo`` (added to the ``etcdraft`` parser)."""

from __future__ import annotations

import argparse
import math
from typing import Any

__all__ = ["DESCRIPTION", "add_arguments"]

DESCRIPTION = (
    "Live failover demo. Starts a local 3-member etcd (unless --endpoints is given), "
    "runs --nodes toy sequencer processes through DynamicLeaderElection, shows leader, "
    "term, height, each node's applied height and lag and the block rate, and strikes "
    "the leader every --kill-leader-every seconds. Ends with a verified summary "
    "(blocks, failover durations, double signs, gaps); exits 0 only if every invariant "
    "held. Every process it starts is stopped on exit, Ctrl-C included."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", type=_int_range(1, 9), default=3, help="node processes (3)")
    p.add_argument("--seconds", type=_float_min(1.0), default=30.0, help="length of the run (30)")
    p.add_argument(
        "--kill-leader-every",
        type=_float_min(0.0),
        default=8.0,
        metavar="S",
        help="strike the leader every S seconds; 0 = never (8)",
    )
    p.add_argument(
        "--fault",
        choices=("kill", "pause", "term"),
        default="kill",
        help="kill: SIGKILL + restart; pause: SIGSTOP for --pause-for; term: SIGTERM "
        "(graceful handover) + restart (kill)",
    )
    p.add_argument(
        "--pause-for",
        type=_float_min(0.1),
        default=3.0,
        metavar="S",
        help="how long --fault pause freezes the leader (3; > 1.5 s to force a failover)",
    )
    p.add_argument(
        "--block-interval",
        type=_float_min(0.005),
        default=0.05,
        metavar="S",
        help="seconds between blocks of the leader (0.05)",
    )
    p.add_argument("--json", action="store_true", help="summary as JSON on the last line")
    p.add_argument(
        "--view",
        choices=("auto", "live", "lines", "none"),
        default="auto",
        help="live: redraw (ANSI); lines: a line per second; auto: live on a terminal",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics of the cluster on 127.0.0.1:PORT/metrics",
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory (records, logs)")


def _int_range(lo: int, hi: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be {lo} to {hi}, got {value}")
        return value

    return parse


def _float_min(lo: float) -> Any:
    def parse(text: str) -> float:
        from etcdraft.config import parse_duration

        try:
            value = float(text)
        except ValueError:
            try:
                value = parse_duration(text)
            except (ValueError, TypeError):
                raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not math.isfinite(value) or value < lo:
            raise argparse.ArgumentTypeError(f"must be at least {lo:g}, got {text}")
        return value

    return parse
