"""Pure pieces: the protobuf wire format, RaftApplyMsg, Runnable, the error tree."""

from __future__ import annotations

import dataclasses
import inspect
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

import etcdraft
from etcdraft import RaftApplyMsg, RaftBlockState, Runnable, errors

# ev-node's proto/evnode/v1 RaftBlockState: (name, number, type)
EXPECTED_FIELDS = [
    ("height", 1, "uint64"),
    ("last_submitted_da_header_height", 2, "uint64"),
    ("last_submitted_da_data_height", 3, "uint64"),
    ("hash", 4, "bytes"),
    ("timestamp", 5, "uint64"),
    ("header", 6, "bytes"),
    ("data", 7, "bytes"),
]
_TYPES = {4: "uint64", 12: "bytes"}  # FieldDescriptor.TYPE_UINT64 / TYPE_BYTES


def test_raft_block_state_matches_ev_node_wire_format() -> None:
    desc = RaftBlockState.DESCRIPTOR
    assert desc.full_name == "evnode.v1.RaftBlockState"
    got = [(f.name, f.number, _TYPES.get(f.type, str(f.type))) for f in desc.fields]
    assert got == EXPECTED_FIELDS


def test_known_bytes_decode() -> None:
    # height=5 (field 1 varint), hash=b"\xaa" (field 4 bytes), timestamp=7 (field 5)
    wire = bytes([0x08, 0x05, 0x22, 0x01, 0xAA, 0x28, 0x07])
    state = RaftBlockState.FromString(wire)
    assert (state.height, state.hash, state.timestamp) == (5, b"\xaa", 7)
    assert state.SerializeToString() == wire


@given(
    height=st.integers(0, 2**64 - 1),
    header_h=st.integers(0, 2**64 - 1),
    data_h=st.integers(0, 2**64 - 1),
    ts=st.integers(0, 2**64 - 1),
    blobs=st.tuples(st.binary(max_size=64), st.binary(max_size=64), st.binary(max_size=64)),
)
def test_round_trip(
    height: int, header_h: int, data_h: int, ts: int, blobs: tuple[bytes, bytes, bytes]
) -> None:
    state = RaftBlockState(
        height=height,
        last_submitted_da_header_height=header_h,
        last_submitted_da_data_height=data_h,
        hash=blobs[0],
        timestamp=ts,
        header=blobs[1],
        data=blobs[2],
    )
    assert RaftBlockState.FromString(state.SerializeToString()) == state


def test_raft_apply_msg_is_frozen() -> None:
    msg = RaftApplyMsg(index=3, term=2, state=RaftBlockState(height=1))
    assert (msg.index, msg.term, msg.state.height) == (3, 2, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.index = 4  # type: ignore[misc]


def test_runnable_protocol() -> None:
    class Worker:
        def run(self, stop: threading.Event) -> None: ...

        def is_synced(self, state: RaftBlockState) -> int:
            return 0

        def recover(self, stop: threading.Event, state: RaftBlockState) -> None: ...

    assert isinstance(Worker(), Runnable)
    assert not isinstance(object(), Runnable)


def test_error_hierarchy() -> None:
    assert issubclass(errors.LeadershipLostError, errors.NotLeaderError)
    assert errors.ErrLeadershipLost is errors.LeadershipLostError
    assert str(errors.LeadershipLostError()) == "leader lock lost"
    assert issubclass(errors.EtcdTimeoutError, TimeoutError)
    assert issubclass(errors.EtcdTimeoutError, errors.EtcdUnavailableError)
    assert issubclass(errors.ConfigError, ValueError)
    assert issubclass(errors.InvalidStateError, ValueError)
    for name in errors.__all__:
        obj = getattr(errors, name)
        assert issubclass(obj, errors.EtcdraftError), name
        assert inspect.getdoc(obj), f"{name} has no docstring saying when it is raised"
        assert getattr(etcdraft, name) is obj, f"{name} not exported at the top level"


def test_public_api_names() -> None:
    for name in (
        "Config", "Node", "FSM", "RaftBlockState", "RaftApplyMsg", "Runnable",
        "DynamicLeaderElection", "LeadershipLostError", "ErrLeadershipLost",
        "NotLeaderError", "HeightConflictError", "InvalidStateError",
        "EtcdUnavailableError", "ConfigError", "EtcdraftError", "__version__",
    ):  # fmt: skip
        assert hasattr(etcdraft, name), name
