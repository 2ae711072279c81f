"""The operator's commands on a running cluster: ``status``, ``history``, ``pause``,
``resume``, ``config``, ``members``, ``resign`` and ``watch``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time

from etcdraft.cli.common import (
    CommandError,
    _as_json,
    _confirm,
    _conn_fields,
    _connect,
    _install_stop_handlers,
)
from etcdraft.cli.output import _pause_text, _print_json, _status_text, _table

log = logging.getLogger("etcdraft.cli")


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
