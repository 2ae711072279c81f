from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class BlockManifest(_message.Message):
    __slots__ = ("height", "timestamp", "hash", "size", "sha256", "nonce", "pieces", "piece_size")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    PIECES_FIELD_NUMBER: _ClassVar[int]
    PIECE_SIZE_FIELD_NUMBER: _ClassVar[int]
    height: int
    timestamp: int
    hash: bytes
    size: int
    sha256: bytes
    nonce: str
    pieces: int
    piece_size: int
    def __init__(self, height: _Optional[int] = ..., timestamp: _Optional[int] = ..., hash: _Optional[bytes] = ..., size: _Optional[int] = ..., sha256: _Optional[bytes] = ..., nonce: _Optional[str] = ..., pieces: _Optional[int] = ..., piece_size: _Optional[int] = ...) -> None: ...
