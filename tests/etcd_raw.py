"""An independent reader of etcd for the chaos judge: raw gRPC calls on a plain
``grpc`` channel (etcd's own method paths, the messages of
``etcdraft.proto.etcd_rpc_pb2``) and a decoder of the stored block wire format written
here from the ``.proto`` files, so that the judge shares neither the library's etcd
client nor its decoder, keys or pruning logic.

* :func:`decode_block` decodes a ``<ns>/log/<height>`` value: ``evnode.v1.RaftBlockState``
  protobuf bytes, or a large block's manifest (``0xFF "etcdraft-block" 0x01`` then an
  ``etcdraft.v1.BlockManifest``); raises ``ValueError`` on anything else.
* :class:`RawEtcd` is one member's channel: ``range`` (linearizable or serializable),
  ``put``, ``delete_range``, ``status``, ``member_list``, ``move_leader``, ``compact``,
  and for a full etcd ``alarms``, ``alarm_disarm`` and ``defragment``.
* :func:`read_log` reads ``<ns>/log/`` and ``<ns>/pruned`` at one revision.
* :func:`compare_members` reads the namespace from every member with serializable
  reads at one common revision and reports every key on which they differ.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import grpc

from etcdraft.proto import etcd_rpc_pb2 as pb

__all__ = [
    "Block",
    "MemberDiff",
    "RawEtcd",
    "RawLog",
    "compare_members",
    "decode_block",
    "read_log",
]

MANIFEST_MAGIC = b"\xffetcdraft-block\x01"
_HEIGHT_DIGITS = 20


# --------------------------------------------------------------------------- wire format


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            if value >= 1 << 64:
                raise ValueError("varint longer than 64 bits")
            return value, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint too long")


def _fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of every field of a protobuf message."""
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, wire, value
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise ValueError(f"field {number}: {size} bytes announced, {len(data) - pos} left")
            yield number, wire, data[pos : pos + size]
            pos += size
        elif wire == 1:
            if pos + 8 > len(data):
                raise ValueError("truncated fixed64")
            yield number, wire, data[pos : pos + 8]
            pos += 8
        elif wire == 5:
            if pos + 4 > len(data):
                raise ValueError("truncated fixed32")
            yield number, wire, data[pos : pos + 4]
            pos += 4
        else:
            raise ValueError(f"field {number}: wire type {wire} not used by these messages")


@dataclass(frozen=True)
class Block:
    height: int
    timestamp: int
    hash: bytes
    manifest: bool = False


def _message(data: bytes, varints: dict[int, str], blobs: dict[int, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for number, wire, value in _fields(data):
        if number in varints:
            if wire != 0:
                raise ValueError(f"{varints[number]}: wire type {wire}, expected varint")
            out[varints[number]] = value
        elif number in blobs:
            if wire != 2:
                raise ValueError(f"{blobs[number]}: wire type {wire}, expected bytes")
            out[blobs[number]] = value
    return out


def decode_block(value: bytes) -> Block:
    """Decode a log value (see the module docstring). ``ValueError`` when it is not one.

    RaftBlockState (raft_block_state.proto): 1 height, 2 and 3 DA heights (varints),
    4 hash, 5 timestamp, 6 header, 7 data. BlockManifest (block_manifest.proto):
    1 height, 2 timestamp, 3 hash, 4 size, 5 sha256, 6 nonce, 7 pieces, 8 piece_size.
    """
    if value.startswith(MANIFEST_MAGIC):
        f = _message(
            value[len(MANIFEST_MAGIC) :],
            {1: "height", 2: "timestamp", 4: "size", 7: "pieces", 8: "piece_size"},
            {3: "hash", 5: "sha256", 6: "nonce"},
        )
        if not f.get("height") or not f.get("pieces"):
            raise ValueError("a block manifest without height or pieces")
        return Block(f["height"], f.get("timestamp", 0), f.get("hash", b""), manifest=True)
    f = _message(
        value, {1: "height", 2: "da1", 3: "da2", 5: "timestamp"}, {4: "hash", 6: "h", 7: "d"}
    )
    return Block(f.get("height", 0), f.get("timestamp", 0), f.get("hash", b""))


# --------------------------------------------------------------------------- raw gRPC


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key above every key starting with ``prefix`` (etcd's range_end)."""
    b = bytearray(prefix)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return b"\x00"


class RawEtcd:
    """A plain gRPC channel to one etcd member (``http://host:port``, no TLS, no auth)."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ValueError(f"RawEtcd speaks plain http only, not {url!r}")
        self.url = url
        self.timeout = timeout
        self._channel = grpc.insecure_channel(
            parts.netloc,
            options=[("grpc.max_receive_message_length", 256 * 1024 * 1024)],
        )

    def _call(self, method: str, request: Any, response: Any, timeout: float | None) -> Any:
        fn = self._channel.unary_unary(
            method,
            request_serializer=type(request).SerializeToString,
            response_deserializer=response.FromString,
        )
        return fn(request, timeout=timeout or self.timeout)

    def range(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        revision: int = 0,
        serializable: bool = False,
        limit: int = 0,
        timeout: float | None = None,
    ) -> pb.RangeResponse:
        req = pb.RangeRequest(
            key=key, range_end=range_end, revision=revision, serializable=serializable, limit=limit
        )
        return self._call("/etcdserverpb.KV/Range", req, pb.RangeResponse, timeout)

    def range_all(
        self, key: bytes, range_end: bytes, *, revision: int = 0, serializable: bool = False
    ) -> tuple[int, list[Any]]:
        """Every key of [key, range_end) at one revision (paged); (revision, kvs)."""
        out: list[Any] = []
        start = key
        while True:
            res = self.range(
                start, range_end, revision=revision, serializable=serializable, limit=1000
            )
            revision = revision or res.header.revision
            out += list(res.kvs)
            if not res.more or not res.kvs:
                return revision, out
            start = res.kvs[-1].key + b"\x00"

    def put(self, key: bytes, value: bytes, timeout: float | None = None) -> int:
        """Put one key (for tests of the reader); returns the revision."""
        res = self._call(
            "/etcdserverpb.KV/Put", pb.PutRequest(key=key, value=value), pb.PutResponse, timeout
        )
        return int(res.header.revision)

    def status(self, timeout: float | None = None) -> pb.StatusResponse:
        return self._call(
            "/etcdserverpb.Maintenance/Status", pb.StatusRequest(), pb.StatusResponse, timeout
        )

    def member_list(self, timeout: float | None = None) -> pb.MemberListResponse:
        return self._call(
            "/etcdserverpb.Cluster/MemberList",
            pb.MemberListRequest(),
            pb.MemberListResponse,
            timeout,
        )

    def move_leader(self, target_id: int, timeout: float | None = None) -> None:
        self._call(
            "/etcdserverpb.Maintenance/MoveLeader",
            pb.MoveLeaderRequest(targetID=target_id),
            pb.MoveLeaderResponse,
            timeout,
        )

    def compact(
        self, revision: int, timeout: float | None = None, *, physical: bool = False
    ) -> None:
        """Compact etcd's history up to ``revision``; with ``physical``, return only once
        the backend dropped it (so that a defragmentation right after reclaims it)."""
        self._call(
            "/etcdserverpb.KV/Compact",
            pb.CompactionRequest(revision=revision, physical=physical),
            pb.CompactionResponse,
            timeout,
        )

    def delete_range(self, key: bytes, range_end: bytes = b"", timeout: float | None = None) -> int:
        """Delete [key, range_end) (one key without ``range_end``); returns how many."""
        res = self._call(
            "/etcdserverpb.KV/DeleteRange",
            pb.DeleteRangeRequest(key=key, range_end=range_end),
            pb.DeleteRangeResponse,
            timeout,
        )
        return int(res.deleted)

    def _alarm(self, req: pb.AlarmRequest, timeout: float | None) -> pb.AlarmResponse:
        return self._call("/etcdserverpb.Maintenance/Alarm", req, pb.AlarmResponse, timeout)

    def alarms(self, timeout: float | None = None) -> list[tuple[int, int]]:
        """The cluster's raised alarms: (member id, ``pb.NOSPACE`` / ``pb.CORRUPT``)."""
        res = self._alarm(pb.AlarmRequest(action=pb.AlarmRequest.GET), timeout)
        return [(int(a.memberID), int(a.alarm)) for a in res.alarms]

    def alarm_disarm(self, member_id: int, alarm: int, timeout: float | None = None) -> None:
        self._alarm(
            pb.AlarmRequest(action=pb.AlarmRequest.DEACTIVATE, memberID=member_id, alarm=alarm),
            timeout,
        )

    def defragment(self, timeout: float | None = None) -> None:
        """Defragment this member's backend (it answers nothing else meanwhile)."""
        self._call(
            "/etcdserverpb.Maintenance/Defragment",
            pb.DefragmentRequest(),
            pb.DefragmentResponse,
            timeout,
        )

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RawEtcd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- the log


@dataclass
class RawLog:
    """``<ns>/log/`` at one revision: height → (hash hex, timestamp, mod revision)."""

    revision: int
    entries: dict[int, tuple[str, int, int]] = field(default_factory=dict)
    pruned: int = 0
    corrupt: list[str] = field(default_factory=list)
    #: heights stored as a large block's manifest (the block's data in pieces)
    manifests: set[int] = field(default_factory=set)


def read_log(conn: RawEtcd, namespace: str, *, serializable: bool = False) -> RawLog:
    """Read ``<ns>/pruned`` and ``<ns>/log/`` at one revision and decode every value."""
    ns = namespace.rstrip("/").encode()
    log_prefix = ns + b"/log/"
    res = conn.range(ns + b"/pruned", serializable=serializable)
    revision = res.header.revision
    out = RawLog(revision)
    if res.kvs:
        raw = res.kvs[0].value
        if raw.isdigit():
            out.pruned = int(raw)
        else:
            out.corrupt.append(f"pruned marker {raw!r}")
    _, kvs = conn.range_all(
        log_prefix, prefix_end(log_prefix), revision=revision, serializable=serializable
    )
    for kv in kvs:
        suffix = kv.key[len(log_prefix) :]
        if len(suffix) != _HEIGHT_DIGITS or not suffix.isdigit():
            out.corrupt.append(f"unexpected key {kv.key!r}")
            continue
        height = int(suffix)
        try:
            block = decode_block(kv.value)
        except ValueError as exc:
            out.corrupt.append(f"log/{height}: {exc}")
            continue
        if block.height != height:
            out.corrupt.append(f"log/{height} holds height {block.height}")
            continue
        out.entries[height] = (block.hash.hex(), block.timestamp, kv.mod_revision)
        if block.manifest:
            out.manifests.add(height)
    return out


@dataclass(frozen=True)
class MemberDiff:
    """The members' namespaces at one revision differ (an etcd fault, not etcdraft's)."""

    revision: int
    key: bytes
    values: dict[str, str]  # member url → "value@mod_revision" or "absent"

    def __str__(self) -> str:
        shown = ", ".join(f"{u}: {v}" for u, v in self.values.items())
        return f"at revision {self.revision}, key {self.key!r}: {shown}"


def compare_members(urls: Sequence[str], namespace: str) -> tuple[int, list[MemberDiff]]:
    """Read the whole namespace from every member with serializable reads (each member
    answers from its own store) at the highest revision every member has applied, and
    return (revision, differences). Raises ``grpc.RpcError`` when a member cannot be
    read."""
    conns = [RawEtcd(u) for u in urls]
    try:
        ns = namespace.rstrip("/").encode() + b"/"
        # the common revision: the highest one every member has applied
        revision = min(
            c.range(ns, prefix_end(ns), serializable=True, limit=1).header.revision for c in conns
        )
        views: dict[str, dict[bytes, str]] = {}
        for c in conns:
            _, kvs = c.range_all(ns, prefix_end(ns), revision=revision, serializable=True)
            views[c.url] = {kv.key: f"{kv.value[:40]!r}@{kv.mod_revision}" for kv in kvs}
        keys = sorted(set().union(*(v.keys() for v in views.values())))
        diffs = []
        for key in keys:
            vals = {u: v.get(key, "absent") for u, v in views.items()}
            if len(set(vals.values())) > 1:
                diffs.append(MemberDiff(revision, key, vals))
        return revision, diffs
    finally:
        for c in conns:
            c.close()
