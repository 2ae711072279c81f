from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class RaftBlockState(_message.Message):
    __slots__ = ("height", "last_submitted_da_header_height", "last_submitted_da_data_height", "hash", "timestamp", "header", "data")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    LAST_SUBMITTED_DA_HEADER_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    LAST_SUBMITTED_DA_DATA_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    height: int
    last_submitted_da_header_height: int
    last_submitted_da_data_height: int
    hash: bytes
    timestamp: int
    header: bytes
    data: bytes
    def __init__(self, height: _Optional[int] = ..., last_submitted_da_header_height: _Optional[int] = ..., last_submitted_da_data_height: _Optional[int] = ..., hash: _Optional[bytes] = ..., timestamp: _Optional[int] = ..., header: _Optional[bytes] = ..., data: _Optional[bytes] = ...) -> None: ...
