"""The toy sequencer moved to :mod:`etcdraft.demo.toy`; this module keeps the old
import path and ``python -m etcdraft.toy`` working."""

import sys

from etcdraft.demo.toy import Recorder, ToyFollower, ToyProducer, main, run_node
from etcdraft.demo.toy import local_deadlines as local_deadlines
from etcdraft.demo.toy import make_block as make_block

__all__ = ["Recorder", "ToyFollower", "ToyProducer", "main", "run_node"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
