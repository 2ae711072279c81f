"""The testcontainers-backed etcd (tests/_docker.py) against the loopback-only engine.

Needs ``scripts/docker-engine start`` and ``scripts/build-etcd-image``. Skipped without
them, except when ``ETCDRAFT_REQUIRE_DOCKER=1`` (CI), where a missing engine fails.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from _docker import DockerEtcd, docker_host, docker_unavailable_reason, require_or_skip

pytestmark = pytest.mark.docker

require_or_skip(docker_unavailable_reason(), "a Docker engine")

TIMEOUT = 5.0


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _post(endpoint: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = requests.post(f"{endpoint}{path}", json=body, timeout=TIMEOUT)
    r.raise_for_status()
    data: dict[str, Any] = r.json()
    return data


def _put(endpoint: str, key: str, value: str) -> dict[str, Any]:
    return _post(endpoint, "/v3/kv/put", {"key": _b64(key), "value": _b64(value)})


def _get(endpoint: str, key: str) -> str | None:
    data = _post(endpoint, "/v3/kv/range", {"key": _b64(key)})
    kvs = data.get("kvs") or []
    if not kvs:
        return None
    return base64.b64decode(kvs[0]["value"]).decode()


def _docker_ps_ids() -> set[str]:
    """Full ids of all containers (running or not) at the engine, via the docker CLI."""
    out = subprocess.run(
        ["docker", "ps", "-a", "-q", "--no-trunc"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "DOCKER_HOST": docker_host() or ""},
    ).stdout
    return {line.strip() for line in out.splitlines() if line.strip()}


@pytest.fixture(scope="module")
def docker_etcd() -> Iterator[DockerEtcd]:
    with DockerEtcd() as e:
        yield e


def test_container_starts_and_answers_health(docker_etcd: DockerEtcd) -> None:
    assert len(docker_etcd.endpoints) == 1
    endpoint = docker_etcd.endpoints[0]
    assert endpoint.startswith("http://127.0.0.1:")
    r = requests.get(f"{endpoint}/health", timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.json()["health"] == "true"
    assert "etcd" in docker_etcd.logs()


def test_container_uses_host_network_only(docker_etcd: DockerEtcd) -> None:
    import docker

    client = docker.DockerClient(base_url=docker_host(), timeout=10)
    try:
        (cid,) = docker_etcd.container_ids
        attrs = client.containers.get(cid).attrs
    finally:
        client.close()
    assert attrs["HostConfig"]["NetworkMode"] == "host"
    assert attrs["State"]["Running"] is True


def test_put_and_get_through_json_gateway(docker_etcd: DockerEtcd) -> None:
    endpoint = docker_etcd.endpoints[0]
    key = f"/etcdraft-test/docker/{uuid.uuid4().hex}"
    reply = _put(endpoint, key, "hello from a container")
    assert int(reply["header"]["revision"]) >= 2
    assert _get(endpoint, key) == "hello from a container"
    assert _get(endpoint, key + "-absent") is None


def test_three_member_cluster_replicates() -> None:
    with DockerEtcd(size=3) as etcd3:
        assert len(etcd3.endpoints) == 3
        assert len(set(etcd3.endpoints)) == 3
        members = _post(etcd3.endpoints[0], "/v3/cluster/member/list", {})["members"]
        assert len(members) == 3
        key = f"/etcdraft-test/docker3/{uuid.uuid4().hex}"
        _put(etcd3.endpoints[0], key, "replicated")
        # Range reads are linearizable by default: every member sees the write.
        for endpoint in etcd3.endpoints:
            assert _get(endpoint, key) == "replicated"


def test_close_removes_the_container() -> None:
    etcd = DockerEtcd().start()
    try:
        ids = etcd.container_ids
        assert len(ids) == 1
        if shutil.which("docker"):
            assert ids[0] in _docker_ps_ids()
    finally:
        etcd.close()
    etcd.close()  # idempotent
    if shutil.which("docker"):
        assert ids[0] not in _docker_ps_ids()
    import docker
    import docker.errors

    client = docker.DockerClient(base_url=docker_host(), timeout=10)
    try:
        with pytest.raises(docker.errors.NotFound):
            client.containers.get(ids[0])
    finally:
        client.close()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{etcd.endpoints[0]}/health", timeout=TIMEOUT)
    # The logs survive the container.
    assert "etcd" in etcd.logs()
