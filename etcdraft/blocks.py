"""Large blocks: a state bigger than one etcd request, as pieces and a manifest.

ev-node's ``RaftBlockState`` carries the whole block (up to 5 MB by default); etcd refuses
a request over its ``--max-request-bytes`` (1.5 MiB by default, often lower on shared
clusters). A state that fits in one request is stored exactly as before: its bytes under
``log/<height>``. A larger one is written as pieces first, under
``blocks/<height>/<nonce>/<index>``, each piece put by a transaction fenced like every
leader write; then the one fenced transaction that commits the height puts a *manifest*
under ``log/<height>``: magic bytes, then an ``etcdraft.v1.BlockManifest`` (height,
timestamp, hash, size, SHA-256, nonce, piece count). Nothing is visible before that
transaction; a follower applies the height only once every piece is there and the
assembled bytes match the manifest's digest. Pieces of an attempt that never committed
(a failed broadcast, a deposed or dead leader) are garbage, removed by the next leader.

This module holds the pure parts: the codec and the bounded buffer in which a follower
collects pieces from its watch. No I/O.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from etcdraft.errors import CorruptDataError
from etcdraft.proto import RaftBlockState
from etcdraft.proto.block_manifest_pb2 import BlockManifest

__all__ = [
    "MANIFEST_MAGIC",
    "BlockManifest",
    "Manifest",
    "PieceBuffer",
    "assemble",
    "encode_manifest",
    "is_manifest",
    "make_manifest",
    "parse_manifest",
    "split",
    "summarize",
]

#: The first bytes of a manifest under ``log/<height>``. 0xFF cannot start a protobuf
#: message (field 31 with the invalid wire type 7), so no reader mistakes a manifest for
#: a ``RaftBlockState`` or the reverse; ev-node's Go type rejects it as corrupt.
MANIFEST_MAGIC = b"\xffetcdraft-block\x01"

Manifest = BlockManifest


def is_manifest(value: bytes) -> bool:
    return value.startswith(MANIFEST_MAGIC)


def make_manifest(
    height: int,
    timestamp: int,
    block_hash: bytes,
    data: bytes,
    nonce: str,
    piece_size: int,
    sha256: bytes | None = None,
) -> BlockManifest:
    """The manifest of ``data``; ``sha256``: its digest when the caller has it already."""
    return BlockManifest(
        height=height,
        timestamp=timestamp,
        hash=block_hash,
        size=len(data),
        sha256=sha256 if sha256 is not None else hashlib.sha256(data).digest(),
        nonce=nonce,
        pieces=(len(data) + piece_size - 1) // piece_size,
        piece_size=piece_size,
    )


def encode_manifest(manifest: BlockManifest) -> bytes:
    return MANIFEST_MAGIC + manifest.SerializeToString()


def parse_manifest(value: bytes) -> BlockManifest:
    """The manifest stored in ``value``.

    Raises:
        CorruptDataError: ``value`` is not a well-formed manifest.
    """
    if not is_manifest(value):
        raise CorruptDataError("not a large-block manifest (no magic bytes)")
    manifest = BlockManifest()
    try:
        manifest.ParseFromString(value[len(MANIFEST_MAGIC) :])
    except Exception as exc:
        raise CorruptDataError(f"large-block manifest does not decode: {exc}") from None
    if (
        not manifest.nonce
        or "/" in manifest.nonce
        or manifest.pieces < 1
        or manifest.piece_size < 1
        or len(manifest.sha256) != 32
        or manifest.size > manifest.pieces * manifest.piece_size
        or manifest.size <= (manifest.pieces - 1) * manifest.piece_size
    ):
        raise CorruptDataError(
            f"large-block manifest for height {manifest.height} is inconsistent "
            f"({manifest.pieces} pieces of {manifest.piece_size} bytes for {manifest.size})"
        )
    return manifest


def summarize(value: bytes) -> tuple[RaftBlockState, int]:
    """What the operator tools show of a ``log/<height>`` value, without payloads:
    a state with the block's height, timestamp and hash (and, for a small block, the
    rest), and the encoded size of the whole state.

    Raises:
        ValueError: the value is neither a state nor a manifest.
    """
    if is_manifest(value):
        try:
            manifest = parse_manifest(value)
        except CorruptDataError as exc:
            raise ValueError(str(exc)) from None
        state = RaftBlockState(
            height=manifest.height, timestamp=manifest.timestamp, hash=manifest.hash
        )
        return state, manifest.size
    state = RaftBlockState()
    try:
        state.ParseFromString(value)
    except DecodeError as exc:
        raise ValueError(f"not a RaftBlockState: {exc}") from exc
    return state, len(value)


def split(data: bytes, piece_size: int) -> list[bytes]:
    return [data[i : i + piece_size] for i in range(0, len(data), piece_size)]


def assemble(manifest: BlockManifest, pieces: list[bytes]) -> bytes:
    """The block's bytes from its pieces, checked against the manifest.

    Raises:
        CorruptDataError: a piece is missing or the bytes do not match the digest.
    """
    if len(pieces) != manifest.pieces:
        raise CorruptDataError(
            f"height {manifest.height}: {len(pieces)} of {manifest.pieces} pieces found "
            f"under blocks/{manifest.height}/{manifest.nonce}/"
        )
    data = b"".join(pieces)
    if len(data) != manifest.size or hashlib.sha256(data).digest() != manifest.sha256:
        raise CorruptDataError(
            f"height {manifest.height}: the {manifest.pieces} pieces under "
            f"blocks/{manifest.height}/{manifest.nonce}/ do not match the manifest's "
            f"SHA-256 ({len(data)} bytes, manifest says {manifest.size}): corrupt data "
            "under the namespace; check what else writes there"
        )
    return data


@dataclass
class _Attempt:
    pieces: dict[int, bytes]
    size: int = 0


class PieceBuffer:
    """Pieces seen on the watch, by (height, nonce), until their manifest arrives.

    Bounded: at most ``max_attempts`` attempts and ``max_bytes`` bytes; the oldest
    attempt is evicted first (its block is then read back from etcd when committed).
    Pieces at or below the applied height are dropped as soon as it moves.
    """

    def __init__(self, max_bytes: int, max_attempts: int = 4) -> None:
        self.max_bytes = max_bytes
        self.max_attempts = max_attempts
        self._lock = threading.Lock()
        self._attempts: OrderedDict[tuple[int, str], _Attempt] = OrderedDict()
        self._bytes = 0
        self.evicted = 0

    @property
    def size(self) -> int:
        """Bytes held."""
        return self._bytes

    def add(self, height: int, nonce: str, index: int, value: bytes) -> None:
        with self._lock:
            key = (height, nonce)
            attempt = self._attempts.get(key)
            if attempt is None:
                attempt = self._attempts[key] = _Attempt({})
            old = attempt.pieces.get(index)
            if old is not None:
                attempt.size -= len(old)
                self._bytes -= len(old)
            attempt.pieces[index] = value
            attempt.size += len(value)
            self._bytes += len(value)
            while self._attempts and (
                self._bytes > self.max_bytes or len(self._attempts) > self.max_attempts
            ):
                _, dropped = self._attempts.popitem(last=False)
                self._bytes -= dropped.size
                self.evicted += 1

    def take(self, manifest: BlockManifest) -> list[bytes] | None:
        """The pieces of ``manifest`` if all are here (removed from the buffer)."""
        with self._lock:
            attempt = self._attempts.pop((manifest.height, manifest.nonce), None)
            if attempt is None:
                return None
            self._bytes -= attempt.size
        if len(attempt.pieces) != manifest.pieces:
            return None
        try:
            return [attempt.pieces[i] for i in range(manifest.pieces)]
        except KeyError:
            return None

    def drop_upto(self, height: int) -> None:
        """Forget every attempt at or below ``height`` (applied or superseded)."""
        with self._lock:
            for key in [k for k in self._attempts if k[0] <= height]:
                self._bytes -= self._attempts.pop(key).size
