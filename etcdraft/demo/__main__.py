"""``python -m etcdraft.demo``: the same as ``etcdraft demo``."""

import sys

from etcdraft.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
