"""Output of the ``etcdraft`` commands: JSON lines, aligned tables, sizes, and the
text of ``status``."""

from __future__ import annotations

import json
from typing import Any


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, separators=(",", ":"), sort_keys=False), flush=True)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _size(n: int) -> str:
    if n <= 0:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


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
