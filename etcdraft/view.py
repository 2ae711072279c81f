"""The node's view of the namespace, rebuilt from range reads and kept current by
the watch: election candidates, members, liveness/progress, and term records."""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field

__all__ = ["Candidate", "Progress", "View"]


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
    revision: int = 0

    def leader(self) -> Candidate | None:
        """The candidate with the smallest create revision (etcd's election rule)."""
        if not self.candidates:
            return None
        return min(self.candidates.values(), key=lambda c: c.create_revision)

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
