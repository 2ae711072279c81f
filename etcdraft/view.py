"""The node's view of the namespace, rebuilt from range reads and kept current by
the watch: election candidates, members, liveness/progress, and term records."""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from etcdraft._etcd_wire import KV
    from etcdraft.keys import Keys

__all__ = ["Candidate", "Pause", "Progress", "Succession", "TermRecord", "View"]


@dataclass(frozen=True, slots=True)
class Candidate:
    key: bytes
    create_revision: int
    node_id: str
    lease: int


@dataclass(frozen=True, slots=True)
class Progress:
    index: int
    height: int

    @classmethod
    def parse(cls, raw: bytes) -> Progress | None:
        try:
            data = json.loads(raw)
            return cls(int(data["index"]), int(data["height"]))
        except (ValueError, KeyError, TypeError):
            return None

    def encode(self) -> bytes:
        return json.dumps({"index": self.index, "height": self.height}).encode()


@dataclass(frozen=True, slots=True)
class Pause:
    """``<ns>/paused`` (``etcdraft pause``): maintenance mode. While it exists no node
    claims a term or deposes a leader, except the claim of the candidate a handover
    named: ``handover`` is the create revision of its election key (0: none). Any
    value counts as paused; the JSON fields (``by``, ``at``, ``reason``) are
    informational (a value that is not a JSON object is taken as the reason)."""

    mod_revision: int
    raw: bytes
    handover: int = 0
    by: str = ""
    at: str = ""
    reason: str = ""

    @classmethod
    def parse(cls, raw: bytes, mod_revision: int) -> Pause:
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return cls(mod_revision, raw, reason=raw.decode(errors="replace"))
        try:
            handover = int(data.get("handover") or 0)
        except (ValueError, TypeError):
            handover = 0

        def text(name: str) -> str:
            value = data.get(name)
            return value if isinstance(value, str) else ""

        return cls(mod_revision, raw, handover, text("by"), text("at"), text("reason"))

    def with_handover(self, create_revision: int) -> bytes:
        """The value naming ``create_revision`` as the candidate allowed to claim."""
        try:
            data = json.loads(self.raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            data = {"note": self.raw.decode(errors="replace")}
        data["handover"] = create_revision
        return json.dumps(data, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class TermRecord:
    """The value of ``<ns>/terms/<term>``: a JSON object ``{"node": <id>, "cause": <how
    the term began>, ...}`` (see docs/key-layout.md), or the bare node id (what
    earlier development versions wrote; still read). The object has at least two members, so it
    holds a ``,``, which no node id may contain: the two forms cannot be confused."""

    node_id: str
    cause: str = ""  # "" when the record does not say

    @classmethod
    def parse(cls, raw: bytes) -> TermRecord:
        if raw[:1] == b"{":
            try:
                data = json.loads(raw)
            except ValueError:
                data = None
            if isinstance(data, dict) and len(data) > 1 and isinstance(data.get("node"), str):
                cause = data.get("cause")
                return cls(data["node"], cause if isinstance(cause, str) else "")
        return cls(raw.decode(errors="replace"))

    def encode(self) -> bytes:
        return json.dumps(
            {"node": self.node_id, "cause": self.cause or "unknown"}, separators=(",", ":")
        ).encode()


#: How a term can begin (the ``cause`` of a term record).
CAUSES = {
    "first": "the namespace's first term",
    "election": "the previous leader's session ended (crash, shutdown(), lease expiry, "
    "removal) and the next candidate in line claimed",
    "takeover": "the claimer's side deposed a silent leader (fast takeover)",
    "handover": "the previous leader's key was deleted on purpose while its session "
    "lived: Node.resign_leader, stop() or etcdraft resign",
    "unknown": "the record does not say (a bare node id, from an earlier version)",
}


@dataclass(frozen=True, slots=True)
class Succession:
    """``<ns>/succession``: written, in the same transaction, by whoever ends a term
    on purpose (a depose: ``takeover``; a handover: ``handover``), so the next leader
    can record how its term began. ``term`` is the term that was ended, ``by`` the
    node (or tool) that ended it. A term that ended otherwise (a crash, a lease
    expiry) leaves an older succession record behind, whose ``term`` does not match."""

    term: int
    cause: str
    by: str = ""

    @classmethod
    def parse(cls, raw: bytes) -> Succession | None:
        try:
            data = json.loads(raw)
            cause = data["cause"]
            if not isinstance(cause, str) or cause not in CAUSES:
                return None
            return cls(int(data["term"]), cause, str(data.get("by", "")))
        except (ValueError, KeyError, TypeError):
            return None

    def encode(self) -> bytes:
        return json.dumps(
            {"term": self.term, "cause": self.cause, "by": self.by}, separators=(",", ":")
        ).encode()


@dataclass
class View:
    """Not thread-safe by itself: the node guards it with its lock."""

    candidates: dict[bytes, Candidate] = field(default_factory=dict)
    members: dict[str, str] = field(default_factory=dict)
    alive: dict[str, Progress | None] = field(default_factory=dict)
    # term records: parallel sorted lists (record revision, term, node id)
    term_revs: list[int] = field(default_factory=list)
    terms: list[int] = field(default_factory=list)
    term_nodes: list[str] = field(default_factory=list)
    pruned: int = 0
    heartbeat_rev: int = 0  # mod revision of <ns>/heartbeat
    pause: Pause | None = None  # <ns>/paused: maintenance mode while not None
    succession: Succession | None = None  # <ns>/succession: how the last term ended
    revision: int = 0

    def leader(self) -> Candidate | None:
        """The candidate with the smallest create revision (etcd's election rule)."""
        if not self.candidates:
            return None
        return min(self.candidates.values(), key=lambda c: c.create_revision)

    def confirmed_leader(self) -> Candidate | None:
        """The node that holds the current term: the first candidate in line, whose
        claim wrote the latest term record (term = its key's create revision). None
        while an election is in progress or no node campaigns."""
        first = self.leader()
        term, holder = self.latest_term()
        if first is not None and term == first.create_revision and holder == first.node_id:
            return first
        return None

    def handover_target(
        self, leader_key: bytes, leader_node: str, to: str | None = None
    ) -> Candidate | None:
        """Who takes over from the leader (``leader_key``, ``leader_node``) in a
        handover: the live member candidate that has applied the most (ties: the
        earliest in line); ``to``: only that node. None when nobody can."""
        best: tuple[int, int, Candidate] | None = None
        for cand in self.candidates.values():
            if cand.key == leader_key or cand.node_id == leader_node:
                continue
            if cand.node_id not in self.members or cand.node_id not in self.alive:
                continue
            if to is not None and cand.node_id != to:
                continue
            prog = self.alive.get(cand.node_id)
            rank = (prog.index if prog is not None else 0, -cand.create_revision, cand)
            if best is None or rank[:2] > best[:2]:
                best = rank
        return best[2] if best is not None else None

    def put(self, keys: Keys, kv: KV) -> str:
        """Take a key's new value into the view (range reads and watch events alike).
        Returns ``""``, or why the key is foreign (ignored) under the namespace. Log
        entries and pieces are not the view's: they are ignored here."""
        parsed = keys.parse(kv.key)
        kind = parsed.kind
        if kind == "election":
            self.candidates[kv.key] = Candidate(
                kv.key, kv.create_revision, kv.value.decode(errors="replace"), kv.lease
            )
        elif kind == "member":
            self.members[parsed.name] = kv.value.decode(errors="replace")
        elif kind == "alive":
            self.alive[parsed.name] = Progress.parse(kv.value)
        elif kind == "term":  # the JSON form, or the bare node id (TermRecord)
            self.add_term(kv.create_revision, parsed.number, TermRecord.parse(kv.value).node_id)
        elif kind == "heartbeat":
            self.heartbeat_rev = kv.mod_revision
        elif kind == "paused":  # maintenance mode
            self.pause = Pause.parse(kv.value, kv.mod_revision)
        elif kind == "succession":  # how the last term ended on purpose (history)
            self.succession = Succession.parse(kv.value)
        elif kind == "pruned":
            try:
                self.pruned = max(self.pruned, int(kv.value))
            except ValueError:
                return "pruned marker is not a number"
        elif kind == "foreign":
            return "unknown key shape"
        return ""

    def delete(self, keys: Keys, key: bytes) -> None:
        """Take a key's deletion into the view."""
        parsed = keys.parse(key)
        kind = parsed.kind
        if kind == "election":
            self.candidates.pop(key, None)
        elif kind == "member":
            self.members.pop(parsed.name, None)
        elif kind == "alive":
            self.alive.pop(parsed.name, None)
        elif kind == "term":
            self.remove_term(parsed.number)
        elif kind == "paused":  # etcdraft resume
            self.pause = None
        elif kind == "succession":
            self.succession = None

    def add_term(self, record_rev: int, term: int, node_id: str) -> None:
        i = bisect.bisect_left(self.term_revs, record_rev)
        if i < len(self.term_revs) and self.term_revs[i] == record_rev:
            return
        self.term_revs.insert(i, record_rev)
        self.terms.insert(i, term)
        self.term_nodes.insert(i, node_id)

    def remove_term(self, term: int) -> None:
        if term in self.terms:
            i = self.terms.index(term)
            del self.term_revs[i], self.terms[i], self.term_nodes[i]

    def term_at(self, revision: int) -> int:
        """The term under which a write at ``revision`` was made: the latest term
        recorded before it (0 before any)."""
        i = bisect.bisect_left(self.term_revs, revision)
        return self.terms[i - 1] if i else 0

    def latest_term(self) -> tuple[int, str]:
        if not self.terms:
            return 0, ""
        return self.terms[-1], self.term_nodes[-1]

    def claim_cause(self) -> str:
        """How a term claimed now begins (see :data:`CAUSES`): ``first`` when no term
        was ever recorded; the succession record's cause when it ended the latest
        term; else ``election`` (the latest leader's session ended)."""
        term, _ = self.latest_term()
        if not term:
            return "first" if not self.pruned else "election"
        succ = self.succession
        if succ is not None and succ.term == term:
            return succ.cause
        return "election"
