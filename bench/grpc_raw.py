"""The cheapest etcd client there is, shared by the raw baseline (``bench/raw_proc.py``)
and the floor (``bench/floor.py``): one plain grpcio channel, etcd's generated stubs and
messages (``etcdraft.proto.etcd_rpc_pb2`` and ``etcd_rpc_pb2_grpc``), and nothing of
etcdraft's client (no ``EtcdClient``, no failover, no deadline bookkeeping, no header
checks).

:class:`Fence` sets up what a leading node has in etcd (an election key whose create
revision is the term, a member key) and builds the fenced transaction that
``Node.broadcast`` sends for a block: the same three compares (leader key
``create_revision == term``, member key ``version > 0``, log key ``create_revision ==
0``), the put of the encoded state under the 20-digit log key on success, a range of
the log key on failure. :class:`PrefixWatch` is one ``Watch/Watch`` stream over a
prefix, read by its own thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import grpc

from etcdraft.proto import etcd_kv_pb2 as mvccpb
from etcdraft.proto import etcd_rpc_pb2 as pb
from etcdraft.proto import etcd_rpc_pb2_grpc as pb_grpc

__all__ = ["Fence", "PrefixWatch", "fenced_txn", "log_key", "new_channel", "prefix_end", "pb"]

#: The digits of a log key's height, as etcdraft's ``Keys.log``.
HEIGHT_DIGITS = 20
#: An election key shaped like etcdraft's (``election/<lease id in hex>``).
LEADER_KEY = b"election/694d8a1b2c3d4e5f"
MEMBER_KEY = b"members/raw"


def new_channel(endpoint: str) -> grpc.Channel:
    """A plain channel to ``endpoint`` (``http://host:port``): no proxy (as etcdraft),
    no limit on the size of the answers (a range of a large value)."""
    return grpc.insecure_channel(
        urlsplit(endpoint).netloc,
        options=[("grpc.enable_http_proxy", 0), ("grpc.max_receive_message_length", -1)],
    )


def prefix_end(prefix: bytes) -> bytes:
    """The range end of every key that starts with ``prefix``."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"


def log_key(log_prefix: bytes, height: int) -> bytes:
    return log_prefix + str(height).zfill(HEIGHT_DIGITS).encode()


def fenced_txn(fence: Sequence[pb.Compare], key: bytes, value: bytes) -> pb.TxnRequest:
    """The transaction of a broadcast: ``fence`` (the leader key's and the member key's
    compares, built once per term), the log key unused, put on success, range on
    failure."""
    free = pb.Compare(key=key, target=pb.Compare.CREATE, result=pb.Compare.EQUAL, create_revision=0)
    return pb.TxnRequest(
        compare=[*fence, free],
        success=[pb.RequestOp(request_put=pb.PutRequest(key=key, value=value))],
        failure=[pb.RequestOp(request_range=pb.RangeRequest(key=key))],
    )


class Fence:
    """The keys of a leading node under ``prefix``, created with plain puts, and the two
    compares of its term (built once, as ``Node`` does per term)."""

    def __init__(self, kv: Any, prefix: bytes, timeout: float = 5.0) -> None:
        self.leader_key = prefix + LEADER_KEY
        self.member_key = prefix + MEMBER_KEY
        kv.Put(pb.PutRequest(key=self.member_key, value=b"raw:1"), timeout=timeout)
        answer = kv.Put(pb.PutRequest(key=self.leader_key, value=b"raw"), timeout=timeout)
        self.term = int(answer.header.revision)  # the leader key's create revision
        self.compares = (
            pb.Compare(
                key=self.leader_key,
                target=pb.Compare.CREATE,
                result=pb.Compare.EQUAL,
                create_revision=self.term,
            ),
            pb.Compare(
                key=self.member_key,
                target=pb.Compare.VERSION,
                result=pb.Compare.GREATER,
                version=0,
            ),
        )

    def txn(self, key: bytes, value: bytes) -> pb.TxnRequest:
        return fenced_txn(self.compares, key, value)


class PrefixWatch:
    """One ``Watch/Watch`` stream over every key under ``prefix``, on a channel of its
    own, read by a daemon thread that calls ``on_events(events, t)`` for each message
    carrying events (``t``: ``time.monotonic()`` once the message is decoded)."""

    def __init__(
        self,
        endpoint: str,
        prefix: bytes,
        on_events: Callable[[Sequence[mvccpb.Event], float], None],
        *,
        name: str = "raw-watch",
        timeout: float = 10.0,
    ) -> None:
        self.channel = new_channel(endpoint)
        self._stop = threading.Event()
        self.created = threading.Event()
        self.error: BaseException | None = None
        create = pb.WatchRequest(
            create_request=pb.WatchCreateRequest(key=prefix, range_end=prefix_end(prefix))
        )

        def requests() -> Iterator[pb.WatchRequest]:
            yield create
            self._stop.wait()  # keep the request side open until closed

        self._call = pb_grpc.WatchStub(self.channel).Watch(requests())

        def read() -> None:
            mono = time.monotonic
            try:
                for msg in self._call:
                    now = mono()
                    if msg.created:
                        self.created.set()
                    if msg.events:
                        on_events(msg.events, now)
            except grpc.RpcError as exc:
                if not self._stop.is_set():  # not our own cancel
                    self.error = exc
            finally:
                self.created.set()  # never leave a waiter hanging on a dead stream

        self.thread = threading.Thread(target=read, daemon=True, name=name)
        self.thread.start()
        if not self.created.wait(timeout) or self.error is not None:
            self.close()
            raise RuntimeError(f"watch on {endpoint} not created: {self.error}")

    def close(self) -> None:
        self._stop.set()
        self._call.cancel()
        self.channel.close()
