"""compose.yaml run for real: the dev cluster brought up with Debian's docker-compose
1.29.2 on the loopback-only engine of scripts/docker-engine, from the repository's
compose.yaml plus an override file, with the local images built offline
(scripts/build-etcd-image, scripts/build-node-image). See docs/testing-docker.md.

The override changes only what this engine needs:

* ``image``: the local images (nothing can be pulled); ``entrypoint: []`` on etcd, whose
  local image has an entrypoint where the official one has none (compose.yaml's etcd
  commands and healthchecks run unchanged: the local image has the binaries at
  /usr/local/bin/ too);
* ``networks``: one *internal* network instead of the project's default one, so that the
  embedded DNS answers the service names only and forwards nothing, and no container has
  a way off the machine (the engine does no NAT or forwarding either);
* ``healthcheck.interval``: 1 s instead of 5 s, only to wait less.

Published ports stay as compose.yaml declares them (compose cannot remove them in an
override); the engine runs no proxy or NAT behind them, so they must only be free.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from _docker import docker_host, docker_unavailable_reason, etcd_image, node_image, require_or_skip

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "compose.yaml"
ETCD_SERVICES = ("etcd1", "etcd2", "etcd3")
NODE_SERVICES = ("node1", "node2", "node3")
#: Bound on one docker-compose command (up waits for etcd to be healthy first).
COMMAND_TIMEOUT = 240.0
#: Bound on the cluster becoming healthy, and on a failover being seen.
HEALTH_TIMEOUT = 180.0
FAILOVER_TIMEOUT = 60.0
PROJECT_LABEL = "com.docker.compose.project"


def _unavailable_reason() -> str | None:
    if shutil.which("docker-compose") is None:
        return (
            "docker-compose is missing: apt-get install -y --no-install-recommends docker-compose"
        )
    reason = docker_unavailable_reason()
    if reason is None:
        reason = docker_unavailable_reason(node_image(), build="scripts/build-node-image")
    if reason is not None:
        return reason
    forward = Path("/proc/sys/net/ipv4/ip_forward")
    if forward.exists() and forward.read_text().strip() != "0":
        # The engine does no NAT, but a host that forwards would route a container's
        # packets onwards: refuse rather than risk traffic leaving the machine.
        return "IP forwarding is on (/proc/sys/net/ipv4/ip_forward = 1): not running compose"
    return None


require_or_skip(_unavailable_reason(), "the compose run")


def _published_ports(compose: dict[str, Any]) -> list[tuple[str, int]]:
    out = []
    for service in compose["services"].values():
        for spec in service.get("ports", []):
            ip, published, _target = str(spec).split(":")
            out.append((ip, int(published)))
    return out


def _port_in_use(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((ip, port))
        except OSError:
            return True
    return False


class ComposeCluster:
    """One docker-compose project: ``compose.yaml`` + an override, a unique name."""

    def __init__(self, override: Path) -> None:
        self.project = f"etcdraft-compose-{uuid.uuid4().hex[:8]}"
        self.files = [COMPOSE, override]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
        host = docker_host()
        assert host is not None
        self.env["DOCKER_HOST"] = host

    def run(
        self, *args: str, timeout: float = COMMAND_TIMEOUT, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        cmd = ["docker-compose", "--ansi", "never", "-p", self.project]
        for f in self.files:
            cmd += ["-f", str(f)]
        cmd += list(args)
        result = subprocess.run(
            cmd,
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd[3:])} exited {result.returncode}:\n{result.stdout}"
                f"{result.stderr}\n{self.logs()}"
            )
        return result

    def container_id(self, service: str) -> str:
        return self.run("ps", "-q", service, timeout=60).stdout.strip()

    def health(self, service: str) -> str:
        cid = self.container_id(service)
        if not cid:
            return "missing"
        result = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Status}} {{.State.Health.Status}}", cid],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return result.stdout.strip() or result.stderr.strip()

    def status(self, service: str) -> dict[str, Any]:
        """``etcdraft status -o json`` run inside ``service``'s container."""
        result = self.run(
            "exec", "-T", service, "etcdraft", "status", "-o", "json", "--timeout", "5s",
            timeout=60,
        )  # fmt: skip
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    def logs(self) -> str:
        with contextlib.suppress(Exception):
            cmd = ["docker-compose", "--ansi", "never", "-p", self.project]
            for f in self.files:
                cmd += ["-f", str(f)]
            result = subprocess.run(
                [*cmd, "logs", "--no-color", "--tail", "60"],
                cwd=REPO,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            return f"--- docker-compose logs (last 60 lines per service) ---\n{result.stdout}"
        return "(logs unavailable)"

    def down(self) -> subprocess.CompletedProcess[str]:
        return self.run("down", "-v", "--remove-orphans", "-t", "5", check=False)


def _override(compose: dict[str, Any]) -> dict[str, Any]:
    services: dict[str, Any] = {}
    for name in compose["services"]:
        entry: dict[str, Any] = {"networks": ["isolated"], "healthcheck": {"interval": "1s"}}
        if name in ETCD_SERVICES:
            entry.update(image=etcd_image(), entrypoint=[])
        else:
            entry["image"] = node_image()
        services[name] = entry
    return {
        "version": compose.get("version", "3.9"),
        "services": services,
        "networks": {"isolated": {"internal": True}},
    }


@pytest.fixture(scope="module")
def compose_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeCluster]:
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    busy = [f"{ip}:{port}" for ip, port in _published_ports(compose) if _port_in_use(ip, port)]
    assert not busy, f"compose.yaml's published ports are in use on this host: {busy}"
    override = tmp_path_factory.mktemp("compose") / "compose.override.yaml"
    override.write_text(yaml.safe_dump(_override(compose)), encoding="utf-8")
    cluster = ComposeCluster(override)
    try:
        cluster.run("up", "-d", "--no-build")
        yield cluster
    finally:
        result = cluster.down()
        assert result.returncode == 0, f"down -v failed:\n{result.stdout}{result.stderr}"
        left = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label={PROJECT_LABEL}={cluster.project}"],
            env=cluster.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout.split()
        assert not left, f"containers left after down -v: {left}"


def _wait(what: str, timeout: float, probe: Any, cluster: ComposeCluster) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:.0f}s (last: {last!r})\n{cluster.logs()}")


# up, health, a failover and down take about 45 s; the bounds above allow more under load
@pytest.mark.timeout(COMMAND_TIMEOUT + HEALTH_TIMEOUT + FAILOVER_TIMEOUT)
def test_compose_cluster_elects_fails_over_and_goes_down(compose_cluster: ComposeCluster) -> None:
    cluster = compose_cluster
    services = (*ETCD_SERVICES, *NODE_SERVICES)

    def all_healthy() -> bool | dict[str, str]:
        states = {s: cluster.health(s) for s in services}
        for state in states.values():
            assert not state.startswith(("exited", "dead")), f"{states}\n{cluster.logs()}"
        return all(v == "running healthy" for v in states.values()) or False

    _wait("every service healthy (etcd: endpoint health; nodes: /health/ready)",
          HEALTH_TIMEOUT, all_healthy, cluster)  # fmt: skip

    st = _wait("a leader in `etcdraft status`", HEALTH_TIMEOUT,
               lambda: (s := cluster.status("node1"))["leader"] and s, cluster)  # fmt: skip
    leader = st["leader"]
    assert leader in NODE_SERVICES, st
    assert st["namespace"] == "/etcdraft/compose-demo"
    assert {m["node_id"] for m in st["members"]} == set(NODE_SERVICES)
    assert all(ep["reachable"] for ep in st["etcd"]["endpoints"]), st["etcd"]
    assert len(st["etcd"]["endpoints"]) == 3

    cluster.run("kill", "-s", "SIGKILL", leader, timeout=60)
    survivor = next(n for n in NODE_SERVICES if n != leader)

    def new_leader() -> str | None:
        try:
            current = cluster.status(survivor)["leader"]
        except AssertionError:  # one exec may fail while things move; the deadline bounds it
            return None
        return current if current and current != leader else None

    successor = _wait(f"a node other than {leader} leading after its container was killed",
                      FAILOVER_TIMEOUT, new_leader, cluster)  # fmt: skip
    assert successor in NODE_SERVICES and successor != leader
    height = cluster.status(survivor)["height"]
    assert height >= 1, "the toy nodes write blocks; none were committed"
