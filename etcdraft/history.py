"""The leadership history of a namespace, from the term records etcd keeps
(``etcdraft history``; also importable from :mod:`etcdraft.status`).

Every term starts with a record ``<ns>/terms/<term>`` written by the node that claims
it (see docs/key-layout.md). What etcd keeps of it, and so all this module can say:

* **when**: the record's create revision. etcd stores no wall-clock time for a key
  (revisions are its only clock), and the blocks' ``timestamp`` is whatever the
  application put there, so the history is in revisions, not in seconds;
* **who**: the record's value, the node that claimed the term;
* **how long**: the revisions until the next record (the current term: until the
  revision read at), and the log entries of the term that etcd still holds;
* **how it began**: the record's ``cause`` (see :data:`CAUSES`). The claimer takes it
  from ``<ns>/succession``, which the transaction that ended the previous term on
  purpose writes (a depose: ``takeover``; ``Node.resign_leader``, ``stop()`` or
  ``etcdraft resign``: ``handover``); a term whose leader's session simply ended (a
  crash, ``shutdown()``, a lease expiry, a removal) begins by ``election``, and the
  namespace's first term by ``first``. Records written by earlier development versions
  hold only the node id: ``first`` is then derived for the earliest record when nothing was
  ever pruned, ``unknown`` for the others.

The history is as deep as the records etcd still holds: pruning deletes the records
no remaining log entry needs.
"""

from __future__ import annotations

import bisect
import contextlib
from dataclasses import asdict, dataclass
from typing import Any

from etcdraft import protocol
from etcdraft._deadline import Deadline
from etcdraft.etcd import EtcdClient
from etcdraft.keys import Keys
from etcdraft.view import CAUSES, TermRecord

__all__ = ["CAUSES", "History", "TermInfo", "read_history"]


@dataclass(frozen=True)
class TermInfo:
    """One term. ``revision``: the etcd revision of its record (when it began);
    ``ended``: the next term's record revision, None for the current term;
    ``revisions``: how long it lasted in revisions (to the revision read at for the
    current term); ``blocks``, ``first_height``, ``last_height``: the log entries
    written in it that etcd still holds (0 and None when none); ``cause``: how it
    began (see :data:`CAUSES`), ``recorded`` True when the record itself says so."""

    term: int
    node_id: str
    revision: int
    ended: int | None
    revisions: int
    cause: str
    recorded: bool
    blocks: int
    first_height: int | None
    last_height: int | None

    @property
    def current(self) -> bool:
        return self.ended is None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["current"] = self.current
        return out


@dataclass(frozen=True)
class History:
    """The terms, oldest first, read at ``revision``. ``pruned`` is the highest height
    pruned from the log (records older than the oldest entry left are pruned too)."""

    namespace: str
    revision: int
    pruned: int
    terms: list[TermInfo]

    def to_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "revision": self.revision,
            "pruned": self.pruned,
            "terms": [t.to_dict() for t in self.terms],
        }


def read_history(
    client: EtcdClient, keys: Keys, timeout: float = 5.0, *, blocks: bool = True
) -> History:
    """The terms etcd records for the namespace, oldest first, at one revision.

    ``blocks``: also count each term's log entries (a keys-only read of the log,
    paged; False skips it for a very long log).

    Raises:
        EtcdUnavailableError: etcd could not be reached within ``timeout``.
        EtcdAuthError: credentials rejected or no permission on the namespace.
    """
    deadline = Deadline(timeout)
    records, rev = protocol.range_all(client, keys.terms_prefix, deadline)
    pruned = 0
    for kv in client.range(keys.pruned, None, deadline, revision=rev).kvs:
        with contextlib.suppress(ValueError):
            pruned = int(kv.value)
    rows: list[tuple[int, int, TermRecord]] = []  # (record revision, term, record)
    for kv in records:
        parsed = keys.parse(kv.key)
        if parsed.kind == "term":
            rows.append((kv.create_revision, parsed.number, TermRecord.parse(kv.value)))
    rows.sort(key=lambda r: r[0])
    revs = [r[0] for r in rows]
    counts = [0] * len(rows)
    first: list[int | None] = [None] * len(rows)
    last: list[int | None] = [None] * len(rows)
    if blocks and rows:
        logs, _ = protocol.range_all(client, keys.log_prefix, deadline, rev, keys_only=True)
        for kv in logs:
            parsed = keys.parse(kv.key)
            if parsed.kind != "log":
                continue
            i = bisect.bisect_left(revs, kv.mod_revision) - 1  # the term in force
            if i < 0:
                continue
            counts[i] += 1  # the range is in height order
            if first[i] is None:
                first[i] = parsed.number
            last[i] = parsed.number
    terms: list[TermInfo] = []
    for i, (record_rev, term, record) in enumerate(rows):
        ended = revs[i + 1] if i + 1 < len(rows) else None
        if record.cause:
            cause, recorded = record.cause, True
        elif i == 0 and pruned == 0:
            cause, recorded = "first", False
        else:
            cause, recorded = "unknown", False
        terms.append(
            TermInfo(
                term=term,
                node_id=record.node_id,
                revision=record_rev,
                ended=ended,
                revisions=(ended if ended is not None else rev) - record_rev,
                cause=cause,
                recorded=recorded,
                blocks=counts[i],
                first_height=first[i],
                last_height=last[i],
            )
        )
    return History(keys.namespace, rev, pruned, terms)
