"""Fixtures: real etcd for every test that needs one.

Backends, chosen by environment variables:

* default: the embedded launcher (``etcdraft.embedded``) starts local etcd processes;
* ``ETCDRAFT_TEST_ETCD=docker``: etcd in containers through testcontainers (needs a
  Docker engine and the local image: ``make docker-up``);
* ``ETCDRAFT_TEST_ENDPOINTS=http://h:2379,...``: an existing cluster you run.

Fault-injection tests (kill, pause, restart a member) always use the embedded
launcher, since they need to own the processes. A missing etcd binary is an error
with install instructions, never a skip.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Protocol

import pytest

from etcdraft.embedded import EtcdCluster


class EtcdBackend(Protocol):
    @property
    def endpoints(self) -> list[str]: ...

    def logs(self) -> str: ...


class ExternalEtcd:
    """An etcd cluster run by someone else (``ETCDRAFT_TEST_ENDPOINTS``)."""

    def __init__(self, endpoints: list[str]) -> None:
        self._endpoints = endpoints

    @property
    def endpoints(self) -> list[str]:
        return list(self._endpoints)

    def logs(self) -> str:
        return "(external etcd: logs are with its operator)"


def _backend_name() -> str:
    if os.environ.get("ETCDRAFT_TEST_ENDPOINTS"):
        return "external"
    return os.environ.get("ETCDRAFT_TEST_ETCD", "embedded")


def _make_backend(size: int) -> Iterator[EtcdBackend]:
    name = _backend_name()
    if name == "external":
        eps = [e.strip() for e in os.environ["ETCDRAFT_TEST_ENDPOINTS"].split(",") if e.strip()]
        yield ExternalEtcd(eps)
    elif name == "docker":
        from _docker import DockerEtcd, docker_unavailable_reason

        reason = docker_unavailable_reason()
        if reason is not None:
            pytest.fail(f"ETCDRAFT_TEST_ETCD=docker but {reason}")
        with DockerEtcd(size=size) as etcd:
            yield etcd
    elif name == "embedded":
        with EtcdCluster(size=size) as cluster:
            yield cluster
    else:
        pytest.fail(f"unknown ETCDRAFT_TEST_ETCD={name!r}: use 'embedded' or 'docker'")


@pytest.fixture(scope="session")
def etcd() -> Iterator[EtcdBackend]:
    """A 1-member etcd shared by the session; tests isolate themselves by namespace."""
    yield from _make_backend(1)


@pytest.fixture(scope="session")
def etcd3() -> Iterator[EtcdBackend]:
    """A 3-member etcd shared by the session."""
    yield from _make_backend(3)


@pytest.fixture
def etcd_cluster_factory(
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., EtcdCluster]]:
    """Start private embedded clusters for fault injection; all are closed afterwards
    (their logs are attached to the report of a failing test)."""
    clusters: list[EtcdCluster] = []
    request.node._etcd_clusters = clusters

    def make(size: int = 1, **kwargs: object) -> EtcdCluster:
        cluster = EtcdCluster(size=size, **kwargs)  # type: ignore[arg-type]
        clusters.append(cluster)
        return cluster.start()

    yield make
    for cluster in clusters:
        cluster.close()


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> str:
    """A key prefix of this test's own, e.g. ``/etcdraft-test/test_foo-1a2b3c4d``."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:60]
    return f"/etcdraft-test/{name}-{uuid.uuid4().hex[:8]}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    for name, value in funcargs.items():
        logs = getattr(value, "logs", None)
        if callable(logs) and name != "caplog":
            try:
                report.sections.append((f"etcd logs ({name})", str(logs())))
            except Exception as exc:  # pragma: no cover - diagnostics only
                report.sections.append((f"etcd logs ({name})", f"unavailable: {exc!r}"))
    for cluster in getattr(item, "_etcd_clusters", []):
        report.sections.append(("etcd logs (factory)", cluster.logs()))
