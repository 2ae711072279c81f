"""The errors of the local etcd launcher."""

from __future__ import annotations

__all__ = ["EmbeddedEtcdError", "EtcdBinaryNotFoundError"]


class EmbeddedEtcdError(RuntimeError):
    """A local etcd process could not be started, did not become ready in time, or
    was asked to do something its state does not allow."""


class EtcdBinaryNotFoundError(EmbeddedEtcdError, FileNotFoundError):
    """No etcd binary was found. The message says how to install one."""
