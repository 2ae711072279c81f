"""``python -m etcdraft.cli``: the ``etcdraft`` command."""

import sys

from etcdraft.cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
