"""etcd in Docker containers through testcontainers (the ``ETCDRAFT_TEST_ETCD=docker`` backend).

The engine is the private, loopback-only one of ``scripts/docker-engine`` and the image
is the local scratch image of ``scripts/build-etcd-image`` (nothing is ever pulled)::

    eval "$(scripts/docker-engine start)"   # prints export DOCKER_HOST=unix://.../docker.sock
    scripts/build-etcd-image                 # etcdraft/etcd-local:3.5.1

Containers run with ``network_mode="host"`` and listen on free 127.0.0.1 ports only.
When ``DOCKER_HOST`` is unset and the private engine's socket exists
(``$ETCDRAFT_DOCKER_DIR/docker.sock``, default ``<repo>/.docker/docker.sock``), that
engine is used. ``ETCDRAFT_ETCD_IMAGE`` overrides the image name.

A test helper only: it imports nothing from ``etcdraft``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

# testcontainers' reaper (Ryuk) is an image from a registry; there is none here.
# Must be set before testcontainers reads its configuration (imports below).
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

import docker  # the Docker SDK, a dependency of testcontainers
import docker.errors
import requests
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer

# Whatever the environment says, never let testcontainers try to pull and run Ryuk.
testcontainers_config.ryuk_disabled = True

REPO = Path(__file__).resolve().parent.parent
DEFAULT_IMAGE = "etcdraft/etcd-local:3.5.1"
DEFAULT_NODE_IMAGE = "etcdraft/node-local:dev"
START_HINT = 'run: eval "$(scripts/docker-engine start)" && scripts/build-etcd-image'
LABEL = "org.etcdraft.test"


def etcd_image() -> str:
    """The local etcd image the tests run (``ETCDRAFT_ETCD_IMAGE`` or the default)."""
    return os.environ.get("ETCDRAFT_ETCD_IMAGE") or DEFAULT_IMAGE


def node_image() -> str:
    """The local node image of ``scripts/build-node-image`` (``ETCDRAFT_NODE_IMAGE`` or the
    default)."""
    return os.environ.get("ETCDRAFT_NODE_IMAGE") or DEFAULT_NODE_IMAGE


def _private_engine_socket() -> Path:
    return Path(os.environ.get("ETCDRAFT_DOCKER_DIR") or REPO / ".docker") / "docker.sock"


def docker_host() -> str | None:
    """``DOCKER_HOST``, defaulted to the private engine's socket when that exists."""
    host = os.environ.get("DOCKER_HOST")
    if host:
        return host
    sock = _private_engine_socket()
    if sock.is_socket():
        os.environ["DOCKER_HOST"] = f"unix://{sock}"
        return os.environ["DOCKER_HOST"]
    return None


def docker_unavailable_reason(
    image: str | None = None, build: str = "scripts/build-etcd-image"
) -> str | None:
    """None if a Docker engine answers and the local image (default: the etcd image)
    exists there, else why not; ``build`` is the command that makes the image."""
    image = image or etcd_image()
    host = docker_host()
    if host is None:
        return (
            f"no Docker engine: DOCKER_HOST is not set and there is no private engine socket "
            f"at {_private_engine_socket()}; {START_HINT}"
        )
    try:
        client = docker.DockerClient(base_url=host, timeout=10)
    except Exception as exc:
        return f"no Docker engine answers at DOCKER_HOST={host} ({exc}); {START_HINT}"
    try:
        try:
            client.ping()
        except Exception as exc:
            return f"no Docker engine answers at DOCKER_HOST={host} ({exc}); {START_HINT}"
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            return (
                f"the local image {image} is missing from the engine at "
                f"DOCKER_HOST={host}; run: {build}"
            )
        except Exception as exc:
            return f"cannot inspect image {image} at DOCKER_HOST={host}: {exc}"
    finally:
        client.close()
    return None


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held together while choosing)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class DockerEtcdError(RuntimeError):
    """The etcd containers could not be started or did not become healthy."""


class _Member:
    def __init__(self, name: str, client_port: int, peer_port: int) -> None:
        self.name = name
        self.client_port = client_port
        self.peer_port = peer_port
        self.container: DockerContainer | None = None
        self.last_logs = ""

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def container_logs(self) -> str:
        if self.container is None:
            return self.last_logs
        try:
            raw = self.container.get_wrapped_container().logs(stdout=True, stderr=True)
        except Exception as exc:  # removed already, engine gone, ...
            return self.last_logs or f"(logs unavailable: {exc!r})"
        self.last_logs = raw.decode("utf-8", "replace")
        return self.last_logs


class DockerEtcd:
    """An etcd cluster of ``size`` members, one container each, on 127.0.0.1 ports.

    ::

        with DockerEtcd() as etcd:
            etcd.endpoints  # ["http://127.0.0.1:P"]

    ``close()`` removes the containers (and their anonymous volumes); ``logs()`` still
    answers afterwards with what the containers had written.
    """

    def __init__(
        self,
        size: int = 1,
        *,
        image: str | None = None,
        start_timeout: float = 30.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self.size = size
        self.image = image or etcd_image()
        self.start_timeout = start_timeout
        self.extra_args = list(extra_args)
        self._token = f"etcdraft-test-{uuid.uuid4().hex[:10]}"
        self._members: list[_Member] = []
        self._started = False
        self._allocate_ports()

    # -- setup -------------------------------------------------------------------------

    def _allocate_ports(self) -> None:
        ports = _free_ports(2 * self.size)
        names = ["default"] if self.size == 1 else [f"etcd{i}" for i in range(self.size)]
        self._members = [
            _Member(name, ports[2 * i], ports[2 * i + 1]) for i, name in enumerate(names)
        ]

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self._members)

    def _command(self, m: _Member) -> list[str]:
        return [
            "--name", m.name,
            "--data-dir", "/tmp/etcd-data",
            "--listen-client-urls", m.client_url,
            "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url,
            "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", self._token,
            "--experimental-watch-progress-notify-interval", "1s",
            "--unsafe-no-fsync",
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> DockerEtcd:
        if self._started:
            return self
        reason = docker_unavailable_reason(self.image)
        if reason is not None:
            raise DockerEtcdError(reason)
        attempts = 3
        for attempt in range(1, attempts + 1):
            try:
                self._start_once()
                self._started = True
                return self
            except DockerEtcdError as exc:
                port_clash = "address already in use" in str(exc)
                self._remove_containers()
                if not port_clash or attempt == attempts:
                    raise
                self._token = f"etcdraft-test-{uuid.uuid4().hex[:10]}"
                self._allocate_ports()  # someone took a port in between: pick new ones
        raise AssertionError("unreachable")

    def _start_once(self) -> None:
        run_id = uuid.uuid4().hex[:8]
        for m in self._members:
            container = DockerContainer(
                self.image,
                name=f"etcdraft-etcd-{run_id}-{m.name}",
                network_mode="host",
                labels={LABEL: "etcd"},
            )
            # A TESTCONTAINERS_HUB_IMAGE_NAME_PREFIX would turn the local name into a
            # remote one; the image is local only.
            container.image = self.image
            container.with_command(self._command(m))
            m.container = container
            m.last_logs = ""
            try:
                container.start()
            except Exception as exc:
                raise DockerEtcdError(
                    f"could not start etcd container {m.name} from {self.image}: {exc}\n"
                    f"{self.logs()}"
                ) from exc
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        pending = list(self._members)
        last: dict[str, str] = {}
        while pending:
            for m in list(pending):
                status = self._container_status(m)
                if status in ("exited", "dead"):
                    raise DockerEtcdError(
                        f"etcd container {m.name} exited during start-up\n{self.logs()}"
                    )
                try:
                    r = requests.get(f"{m.client_url}/health", timeout=1.0)
                    if r.status_code == 200 and r.json().get("health") == "true":
                        pending.remove(m)
                        continue
                    last[m.name] = f"HTTP {r.status_code}: {r.text.strip()[:200]}"
                except (requests.RequestException, ValueError) as exc:
                    last[m.name] = repr(exc)
            if not pending:
                return
            if time.monotonic() >= deadline:
                details = "; ".join(f"{m.name}: {last.get(m.name, '?')}" for m in pending)
                raise DockerEtcdError(
                    f"etcd containers not healthy after {self.start_timeout:.0f}s "
                    f"({details})\n{self.logs()}"
                )
            time.sleep(0.1)

    @staticmethod
    def _container_status(m: _Member) -> str:
        if m.container is None:
            return "missing"
        try:
            wrapped = m.container.get_wrapped_container()
            wrapped.reload()
            return str(wrapped.status)
        except Exception:
            return "unknown"

    # -- public API --------------------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self._members]

    @property
    def container_ids(self) -> list[str]:
        """Ids of the member containers started (empty before ``start()``)."""
        ids: list[str] = []
        for m in self._members:
            if m.container is not None:
                with contextlib.suppress(Exception):
                    ids.append(m.container.get_container_id())
        return ids

    def logs(self, max_bytes: int = 8000) -> str:
        """The tail of each member container's output (still there after ``close()``)."""
        parts = []
        for m in self._members:
            text = m.container_logs()
            if len(text) > max_bytes:
                text = "...\n" + text[-max_bytes:]
            parts.append(f"--- etcd container {m.name} ({m.client_url}) ---\n{text}")
        return "\n".join(parts)

    def _remove_containers(self) -> None:
        for m in self._members:
            container, m.container = m.container, None
            if container is None:
                continue
            with contextlib.suppress(Exception):
                raw = container.get_wrapped_container().logs(stdout=True, stderr=True)
                m.last_logs = raw.decode("utf-8", "replace")
            # Remove what can be removed (gone already: fine); a leftover carries LABEL.
            with contextlib.suppress(Exception):
                container.stop(force=True, delete_volume=True)

    def close(self) -> None:
        """Remove the containers (idempotent)."""
        self._remove_containers()
        self._started = False

    def __enter__(self) -> DockerEtcd:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DockerEtcd(size={self.size}, image={self.image!r}, endpoints={self.endpoints})"


def leftover_containers() -> list[dict[str, Any]]:
    """Containers with the test label still present at the engine (for diagnostics)."""
    host = docker_host()
    if host is None:
        return []
    client = docker.DockerClient(base_url=host, timeout=10)
    try:
        return [
            {"id": c.id, "name": c.name, "status": c.status}
            for c in client.containers.list(all=True, filters={"label": LABEL})
        ]
    finally:
        client.close()


def require_or_skip(reason: str | None, what: str = "a Docker engine") -> None:
    """At a container test module's top: nothing when ``reason`` is None; a failure
    when containers are required here (CI, ``ETCDRAFT_REQUIRE_DOCKER=1``); else a skip
    of the module (a developer machine without an engine)."""
    if reason is None:
        return
    if os.environ.get("ETCDRAFT_REQUIRE_DOCKER") == "1" or os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required here but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)
