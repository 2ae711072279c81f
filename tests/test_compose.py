"""compose.yaml (the docker-compose dev cluster), its Dockerfile and .dockerignore.

Checked offline: the structure with PyYAML, and `docker-compose -f compose.yaml config -q`
with Debian's docker-compose 1.29.2 (no engine and no network needed). The cluster is
run for real by tests/test_compose_run.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from _docker import require_or_skip

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "compose.yaml"
ETCD_SERVICES = ("etcd1", "etcd2", "etcd3")
NODE_SERVICES = ("node1", "node2", "node3")
ENDPOINTS = [f"http://{name}:2379" for name in ETCD_SERVICES]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    with COMPOSE.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    assert isinstance(data, dict)
    return data


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    services = compose.get("services") or {}
    assert name in services, f"compose.yaml has no service {name!r}"
    service: dict[str, Any] = services[name]
    return service


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the ["KEY=value", ...] form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _flags(service: dict[str, Any]) -> dict[str, str]:
    command = service.get("command")
    assert isinstance(command, list), "etcd services take their flags as a command list"
    flags: dict[str, str] = {}
    args = [str(a) for a in command]
    for i, arg in enumerate(args):
        if not arg.startswith("--"):
            continue
        if "=" in arg:
            key, value = arg.split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            key, value = arg, args[i + 1]
        else:
            key, value = arg, "true"
        flags[key] = value
    return flags


def test_three_etcd_members_with_pinned_images_and_healthchecks(compose: dict[str, Any]) -> None:
    for name in ETCD_SERVICES:
        service = _service(compose, name)
        image = str(service.get("image", ""))
        assert re.fullmatch(
            r"(gcr\.io/etcd-development/etcd|quay\.io/coreos/etcd):v3\.5\.\d+", image
        ), f"{name}: image {image!r} is not the official etcd image pinned to a v3.5 tag"
        assert not image.endswith(":latest")
        test = service.get("healthcheck", {}).get("test")
        assert test, f"{name} has no healthcheck"
        text = " ".join(test) if isinstance(test, list) else str(test)
        assert "etcdctl" in text and "endpoint" in text and "health" in text, text
        volumes = [str(v) for v in service.get("volumes", [])]
        data_dir = _flags(service)["--data-dir"]
        assert any(v.endswith(f":{data_dir}") for v in volumes), (name, volumes, data_dir)
        for v in volumes:
            volume_name = v.split(":", 1)[0]
            assert volume_name in (compose.get("volumes") or {}), f"{name}: {v} is no named volume"


def test_etcd_follows_the_operations_advice(compose: dict[str, Any]) -> None:
    """docs/operations.md's recommended flags: auto-compaction, an explicit quota,
    progress notifications; and etcd's client port published on loopback only."""
    for name in ETCD_SERVICES:
        service = _service(compose, name)
        flags = _flags(service)
        assert flags.get("--auto-compaction-mode") == "periodic", name
        assert flags.get("--auto-compaction-retention"), name
        assert int(flags.get("--quota-backend-bytes", "0")) > 0, name
        assert flags.get("--experimental-watch-progress-notify-interval") == "1s", name
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_initial_cluster_lists_all_three_members(compose: dict[str, Any]) -> None:
    expected = {f"{name}=http://{name}:2380" for name in ETCD_SERVICES}
    tokens = set()
    for name in ETCD_SERVICES:
        flags = _flags(_service(compose, name))
        assert flags["--name"] == name
        assert set(flags["--initial-cluster"].split(",")) == expected
        assert flags["--initial-advertise-peer-urls"] == f"http://{name}:2380"
        assert flags["--advertise-client-urls"] == f"http://{name}:2379"
        assert flags.get("--initial-cluster-state", "new") == "new"
        tokens.add(flags.get("--initial-cluster-token"))
    assert len(tokens) == 1, "all members must share one initial-cluster-token"


def test_three_nodes_use_all_endpoints_and_wait_for_healthy_etcd(
    compose: dict[str, Any],
) -> None:
    for name in NODE_SERVICES:
        service = _service(compose, name)
        build = service.get("build")
        assert build, f"{name} is not built from the repository"
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        assert (REPO / context / dockerfile).resolve() == (REPO / "Dockerfile").resolve()
        assert service.get("command") == ["etcdraft", "node"]

        env = _env(service)
        assert env["ETCDRAFT_NODE_ID"] == name
        assert env["ETCDRAFT_ENDPOINTS"].split(",") == ENDPOINTS
        assert env["ETCDRAFT_NAMESPACE"] == "/etcdraft/compose-demo"
        # the node's own peers entry; the tools run in this environment too (`docker
        # compose exec node1 etcdraft status`, tests/test_cli.py)
        assert env["ETCDRAFT_RAFT_ADDR"] == f"{name}:7000"
        assert env["ETCDRAFT_HTTP_ADDR"] == "0.0.0.0:8080"
        bootstrap = env.get("ETCDRAFT_BOOTSTRAP", "false").lower() == "true"
        assert bootstrap == (name == "node1"), f"{name}: only node1 bootstraps"
        if name == "node1" or "ETCDRAFT_PEERS" in env:
            assert env["ETCDRAFT_PEERS"].split(",") == [f"{n}@{n}:7000" for n in NODE_SERVICES]

        assert service.get("ports") == [f"127.0.0.1:1808{name[-1]}:8080"], (
            f"{name}: its HTTP port is published on the host's loopback only"
        )
        health = " ".join(service.get("healthcheck", {}).get("test", []))
        assert "/health/ready" in health and "ETCDRAFT_HTTP_ADDR" in health, health

        depends = service.get("depends_on")
        assert isinstance(depends, dict), f"{name}: depends_on must carry conditions"
        for etcd in ETCD_SERVICES:
            assert depends.get(etcd, {}).get("condition") == "service_healthy", (name, etcd)


def test_dockerfile_runs_the_compose_command() -> None:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    instructions = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
    # python:3.11-slim for users; scripts/build-node-image passes its offline base
    assert instructions[:2] == ["ARG BASE_IMAGE=python:3.11-slim", "FROM ${BASE_IMAGE}"]
    assert 'pip install --no-cache-dir "/src[metrics]"' in text
    # offline: from the wheelhouse only
    assert "--no-index --find-links /src/.wheels" in text
    # compose's command is the whole command line: an ENTRYPOINT would be prepended to it.
    assert not any(i.upper().startswith("ENTRYPOINT") for i in instructions)
    assert 'CMD ["etcdraft", "node"]' in instructions


def test_dockerignore_keeps_local_state_out_of_the_build() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for required in (".venv", ".docker", ".git"):
        assert required in patterns, f".dockerignore does not exclude {required}"


def test_docker_compose_config_validates_offline() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        reason = (
            "install Debian docker-compose to validate compose.yaml offline: "
            "apt-get install -y --no-install-recommends docker-compose"
        )
        require_or_skip(reason, "docker-compose")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    result = subprocess.run(
        [binary, "-f", str(COMPOSE), "config", "-q"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stdout}{result.stderr}"
