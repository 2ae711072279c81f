"""Many etcdraft nodes in one process, none of them a member: they only watch the
namespace and apply its entries (the "50 nodes watching" idle-cost figure).

Commands: ``status`` (nodes started, entries applied in total).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from bench.common import serve


class CountQueue:
    def __init__(self) -> None:
        self.count = 0

    def put_nowait(self, msg: Any) -> None:
        self.count += 1


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--endpoints", required=True)
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--fast-takeover", default="true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from etcdraft import Config, Node

    fast = args.fast_takeover.lower() in ("1", "true", "yes", "on")
    nodes: list[Node] = []
    queues: list[CountQueue] = []
    for i in range(args.count):
        # not in the membership (no peers, no bootstrap): a watcher only
        cfg = Config(
            node_id=f"watcher-{i}",
            endpoints=args.endpoints,
            namespace=args.namespace,
            fast_takeover=fast,
        )
        node = Node(cfg)
        q = CountQueue()
        node.set_apply_callback(q)
        node.start()
        nodes.append(node)
        queues.append(q)

    def status() -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "nodes": len(nodes),
            "applied": sum(q.count for q in queues),
            "leaders": sum(1 for n in nodes if n.is_leader()),
            "heights": sorted({n.get_state().height for n in nodes}),
        }

    serve({"status": status})
    for node in nodes:
        node.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
