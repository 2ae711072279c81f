"""The key layout under a namespace: a wire contract (see docs/key-layout.md).

=====================================  ================================================
key                                    value
=====================================  ================================================
``<ns>/election/<lease id, hex>``      node id; bound to the candidate's session lease
``<ns>/members/<node id>``             advertised address (``raft_addr``)
``<ns>/alive/<node id>``               JSON ``{"index":…, "height":…}``; session lease
``<ns>/log/<height, 20 digits>``       protobuf bytes of ``evnode.v1.RaftBlockState``, or
                                       (a large block) 0xFF "etcdraft-block" 0x01 and
                                       an ``etcdraft.v1.BlockManifest``
``<ns>/blocks/<height>/<nonce>/<i>``   piece ``i`` (6 digits) of a large block's bytes
``<ns>/terms/<term, 20 digits>``       JSON ``{"node", "cause"}``: the leader that started
                                       the term and how (older records: the bare node id)
``<ns>/succession``                    JSON ``{"term", "cause", "by"}``: written by the
                                       transaction that ended ``term`` on purpose
``<ns>/pruned``                        highest height deleted by pruning (decimal)
``<ns>/heartbeat``                     current term (decimal), put by the leader often
``<ns>/paused``                        maintenance mode (``etcdraft pause``): JSON
                                       ``{"by", "at", "reason"[, "handover"]}``
=====================================  ================================================

Nothing else lives here; nothing else of etcdraft knows these shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HEIGHT_DIGITS", "PIECE_DIGITS", "Keys", "ParsedKey"]

HEIGHT_DIGITS = 20  # enough for any uint64
PIECE_DIGITS = 6


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """A key classified by :meth:`Keys.parse`. ``kind`` is one of ``election``,
    ``member``, ``alive``, ``log``, ``piece``, ``term``, ``pruned``, ``heartbeat``,
    ``paused``, ``succession`` or ``foreign``. A ``piece`` has its height in
    ``number``, its nonce in ``name`` and its position in ``index``."""

    kind: str
    name: str = ""
    number: int = 0
    index: int = 0


class Keys:
    """Builds and parses the keys of one namespace (e.g. ``/etcdraft/chain-1``)."""

    def __init__(self, namespace: str) -> None:
        ns = namespace.rstrip("/")
        self.namespace = ns
        self.root = (ns + "/").encode()
        self.election_prefix = self.root + b"election/"
        self.members_prefix = self.root + b"members/"
        self.alive_prefix = self.root + b"alive/"
        self.log_prefix = self.root + b"log/"
        self.blocks_prefix = self.root + b"blocks/"
        self.terms_prefix = self.root + b"terms/"
        self.pruned = self.root + b"pruned"
        self.heartbeat = self.root + b"heartbeat"
        self.paused = self.root + b"paused"
        self.succession = self.root + b"succession"

    @property
    def election_name(self) -> str:
        """The election name for ``etcdctl elect -l <name>`` (no trailing slash)."""
        return (self.election_prefix[:-1]).decode()

    def election(self, lease_id: int) -> bytes:
        return self.election_prefix + format(lease_id, "x").encode()

    def member(self, node_id: str) -> bytes:
        return self.members_prefix + node_id.encode()

    def alive(self, node_id: str) -> bytes:
        return self.alive_prefix + node_id.encode()

    def log(self, height: int) -> bytes:
        return self.log_prefix + str(height).zfill(HEIGHT_DIGITS).encode()

    def blocks(self, height: int) -> bytes:
        """The prefix of every piece of every attempt at ``height``."""
        return self.blocks_prefix + str(height).zfill(HEIGHT_DIGITS).encode() + b"/"

    def pieces(self, height: int, nonce: str) -> bytes:
        """The prefix of the pieces of one attempt at ``height``."""
        return self.blocks(height) + nonce.encode() + b"/"

    def piece(self, height: int, nonce: str, index: int) -> bytes:
        return self.pieces(height, nonce) + str(index).zfill(PIECE_DIGITS).encode()

    def term(self, term: int) -> bytes:
        return self.terms_prefix + str(term).zfill(HEIGHT_DIGITS).encode()

    def parse(self, key: bytes) -> ParsedKey:
        """Classify ``key`` (which must start with the namespace root)."""
        if not key.startswith(self.root):
            return ParsedKey("foreign")
        rest = key[len(self.root) :]
        try:
            text = rest.decode()
        except UnicodeDecodeError:
            return ParsedKey("foreign")
        head, sep, tail = text.partition("/")
        if head == "blocks":
            return self._parse_piece(tail)
        if not sep:
            if text in ("pruned", "heartbeat", "paused", "succession"):
                return ParsedKey(text)
            return ParsedKey("foreign")
        if not tail or "/" in tail:
            return ParsedKey("foreign")
        if head == "log" or head == "terms":
            if len(tail) != HEIGHT_DIGITS or not tail.isdigit():
                return ParsedKey("foreign")
            return ParsedKey("log" if head == "log" else "term", number=int(tail))
        if head == "election":
            # any candidate counts, as for etcdctl elect and clientv3/concurrency
            try:
                lease = int(tail, 16)
            except ValueError:
                lease = 0
            return ParsedKey("election", name=tail, number=lease)
        if head == "members":
            return ParsedKey("member", name=tail)
        if head == "alive":
            return ParsedKey("alive", name=tail)
        return ParsedKey("foreign")

    @staticmethod
    def _parse_piece(tail: str) -> ParsedKey:
        parts = tail.split("/")
        if len(parts) != 3:
            return ParsedKey("foreign")
        height, nonce, index = parts
        if (
            len(height) != HEIGHT_DIGITS
            or not height.isdigit()
            or not nonce
            or len(index) != PIECE_DIGITS
            or not index.isdigit()
        ):
            return ParsedKey("foreign")
        return ParsedKey("piece", name=nonce, number=int(height), index=int(index))
