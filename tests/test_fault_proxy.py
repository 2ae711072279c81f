"""``etcdraft.testing.FaultProxy`` itself: the fault tools must fail the way networks
do, and no other way (a proxy that reordered bytes would fabricate faults TCP never
makes)."""

from __future__ import annotations

import socket
import threading
import time

from helpers import wait_until

from etcdraft.testing import FaultProxy


class Sink:
    """A loopback TCP server that records every byte of its first connection."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self.data = bytearray()
        self.closed = threading.Event()
        threading.Thread(target=self._serve, daemon=True, name="sink").start()

    def _serve(self) -> None:
        conn, _ = self._server.accept()
        with conn:
            while chunk := conn.recv(65536):
                self.data += chunk
        self.closed.set()

    def close(self) -> None:
        self._server.close()


def test_a_healed_slow_link_keeps_the_byte_order() -> None:
    """Chunks delayed by a slow link are not overtaken by chunks sent after the heal
    (the chaos suite's slow_link fault once reordered a watch stream that way)."""
    sink = Sink()
    proxy = FaultProxy(sink.port)
    try:
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        proxy.delay(0.2)
        sent = bytearray()
        for i in range(40):
            if i == 20:
                proxy.heal()  # the first 20 are still on their way
            chunk = b"%04d;" % i
            client.sendall(chunk)
            sent += chunk
            time.sleep(0.002)  # separate reads at the proxy
        client.shutdown(socket.SHUT_WR)
        wait_until(sink.closed.is_set, 10, lambda: f"sink got {bytes(sink.data)!r}")
        assert bytes(sink.data) == bytes(sent)
        client.close()
    finally:
        proxy.close()
        sink.close()
