"""The demo's checks moved to :mod:`etcdraft.demo.check`; this module keeps the old
import path working."""

from etcdraft.demo.check import FAILOVER_LIMIT, DemoResult, Fault, read_jsonl, verify
from etcdraft.demo.check import _incarnations as _incarnations

__all__ = ["FAILOVER_LIMIT", "DemoResult", "Fault", "read_jsonl", "verify"]
