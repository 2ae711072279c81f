"""``python -m etcdraft``: the ``etcdraft`` command (see :mod:`etcdraft.cli`)."""

import sys

from etcdraft.cli import main

if __name__ == "__main__":
    sys.exit(main())
