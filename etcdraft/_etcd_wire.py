"""The JSON shapes of etcd's v3 gateway: base64 keys and values, compare and request
builders for transactions, and the key-value and result records the client returns.
Pure data, no I/O; :mod:`etcdraft.etcd` re-exports all of it."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

__all__ = [
    "KV",
    "RangeResult",
    "TxnResult",
    "b64",
    "cmp_create",
    "cmp_lease",
    "cmp_mod",
    "cmp_value",
    "cmp_version",
    "op_delete",
    "op_put",
    "op_range",
    "prefix_end",
    "unb64",
]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(data: str | None) -> bytes:
    # binascii directly: base64.b64decode only adds type checks around this call
    return binascii.a2b_base64(data) if data else b""


def prefix_end(prefix: bytes) -> bytes:
    """The range end covering every key that starts with ``prefix``."""
    buf = bytearray(prefix)
    for i in range(len(buf) - 1, -1, -1):
        if buf[i] < 0xFF:
            buf[i] += 1
            return bytes(buf[: i + 1])
    return b"\x00"


# -- transaction builders (gateway JSON shapes) --------------------------------


def _cmp(key: bytes, target: str, result: str, field: str, value: Any) -> dict[str, Any]:
    return {"key": b64(key), "target": target, "result": result, field: value}


def cmp_create(
    key: bytes, result: str, revision: int, *, range_end: bytes | None = None
) -> dict[str, Any]:
    """Compare the key's create revision (0 = key absent). With ``range_end``, every
    key of ``[key, range_end)`` must match (an empty range counts as absent)."""
    cmp = _cmp(key, "CREATE", result, "create_revision", str(revision))
    if range_end is not None:
        cmp["range_end"] = b64(range_end)
    return cmp


def cmp_mod(key: bytes, result: str, revision: int) -> dict[str, Any]:
    return _cmp(key, "MOD", result, "mod_revision", str(revision))


def cmp_version(key: bytes, result: str, version: int) -> dict[str, Any]:
    return _cmp(key, "VERSION", result, "version", str(version))


def cmp_value(key: bytes, result: str, value: bytes) -> dict[str, Any]:
    return _cmp(key, "VALUE", result, "value", b64(value))


def cmp_lease(key: bytes, result: str, lease: int) -> dict[str, Any]:
    return _cmp(key, "LEASE", result, "lease", str(lease))


def op_put(key: bytes, value: bytes, lease: int = 0) -> dict[str, Any]:
    req: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease:
        req["lease"] = str(lease)
    return {"request_put": req}


def op_delete(key: bytes, range_end: bytes | None = None) -> dict[str, Any]:
    req: dict[str, Any] = {"key": b64(key)}
    if range_end is not None:
        req["range_end"] = b64(range_end)
    return {"request_delete_range": req}


def op_range(key: bytes, range_end: bytes | None = None, limit: int = 0) -> dict[str, Any]:
    req: dict[str, Any] = {"key": b64(key)}
    if range_end is not None:
        req["range_end"] = b64(range_end)
    if limit:
        req["limit"] = str(limit)
    return {"request_range": req}


@dataclass(frozen=True, slots=True)
class KV:
    """One key-value as etcd returns it."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_json(cls, kv: dict[str, Any]) -> KV:
        return cls(
            key=unb64(kv.get("key")),
            value=unb64(kv.get("value")),
            create_revision=int(kv.get("create_revision", 0)),
            mod_revision=int(kv.get("mod_revision", 0)),
            version=int(kv.get("version", 0)),
            lease=int(kv.get("lease", 0)),
        )


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int
    responses: list[dict[str, Any]]

    def range_kvs(self, i: int) -> list[KV]:
        """The kvs of the ``i``-th response, which must be a range."""
        resp = self.responses[i].get("response_range", {}) if i < len(self.responses) else {}
        return [KV.from_json(kv) for kv in resp.get("kvs", [])]


@dataclass(frozen=True, slots=True)
class RangeResult:
    kvs: list[KV]
    revision: int
    more: bool
    count: int
