"""
Tests of the harnessd simulator image, run as real containers on the host network.

Each container binds a free 127.0.0.1 port (network_mode="host"), so the tests
reach it on loopback and need no Docker bridge network.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import httpx
import pytest
from docker.models.containers import Container

from simulators.harnessd_image import CONTENT_LABEL, _is_static_elf, build_image, find_static_busybox
from workers.probe import probe_healthz

TEST_LABEL = "workspace-provisioner.test"

StartSim = Callable[..., Container]


def wait_until(condition: Callable[[], object], timeout_s: float, message: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {message}")
        time.sleep(0.05)


def get(url: str) -> httpx.Response:
    return httpx.get(url, trust_env=False, timeout=2.0)


def logs_of(container: Container) -> str:
    return container.logs().decode(errors="replace")


def refuses_connections(url: str) -> bool:
    try:
        get(url)
    except httpx.ConnectError:
        return True
    return False


def serves(url: str) -> bool:
    try:
        return get(url).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def start_sim(docker_client: docker.DockerClient, harnessd_image: str) -> Iterator[StartSim]:
    """Yield a function that starts a simulator container; every container it started is removed afterwards."""
    started: list[Container] = []

    def start(environment: dict[str, str]) -> Container:
        container = docker_client.containers.run(
            harnessd_image, detach=True, network_mode="host", environment=environment, labels={TEST_LABEL: "1"}
        )
        started.append(container)
        return container

    yield start

    for container in started:
        container.remove(force=True)


def test_build_is_noop_when_unchanged(docker_client: docker.DockerClient, harnessd_image: str) -> None:
    before = docker_client.images.get(harnessd_image)

    tag = build_image(docker_client, harnessd_image)

    after = docker_client.images.get(tag)
    assert tag == harnessd_image
    assert after.id == before.id
    assert len(after.labels[CONTENT_LABEL]) == 64


def test_image_is_scratch_plus_busybox(docker_client: docker.DockerClient, harnessd_image: str) -> None:
    busybox_size = find_static_busybox().stat().st_size

    image = docker_client.images.get(harnessd_image)

    assert image.attrs["Config"]["Entrypoint"] == ["/bin/busybox", "sh", "/entrypoint.sh"]
    assert busybox_size <= image.attrs["Size"] < busybox_size + 64 * 2**10


def test_static_busybox_is_found() -> None:
    path = find_static_busybox()

    assert path.is_file()
    assert _is_static_elf(path.read_bytes())


def test_dynamic_binary_is_not_static() -> None:
    shell = Path("/bin/sh").resolve()

    assert not _is_static_elf(shell.read_bytes())
    assert not _is_static_elf(b"#!/bin/sh\necho not an ELF file\n" * 4)


def test_serve_starts_after_boot_delay(start_sim: StartSim, free_port: int) -> None:
    url = f"http://127.0.0.1:{free_port}"
    boot_delay_s = 2.0

    container = start_sim({"HARNESS_ADDR": f"127.0.0.1:{free_port}", "HARNESSD_BOOT_DELAY": str(boot_delay_s)})
    started = time.monotonic()
    refused_while_booting = refuses_connections(url + "/healthz")
    wait_until(lambda: serves(url + "/healthz"), 15, "the simulator to serve /healthz")
    ready_after_s = time.monotonic() - started

    response = get(url + "/healthz")
    assert refused_while_booting
    assert ready_after_s >= boot_delay_s - 0.1
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "booting (mode serve, boot delay 2.0s)" in logs_of(container)
    assert f"serving on 127.0.0.1:{free_port}" in logs_of(container)


def test_serve_returns_404_elsewhere(start_sim: StartSim, free_port: int) -> None:
    url = f"http://127.0.0.1:{free_port}"
    start_sim({"HARNESS_ADDR": f"127.0.0.1:{free_port}"})
    wait_until(lambda: serves(url + "/healthz"), 15, "the simulator to serve /healthz")

    response = get(url + "/not-healthz")

    assert response.status_code == 404


def test_probe_finds_serving_simulator_ready(start_sim: StartSim, free_port: int) -> None:
    url = f"http://127.0.0.1:{free_port}"
    start_sim({"HARNESS_ADDR": f"127.0.0.1:{free_port}"})
    wait_until(lambda: serves(url + "/healthz"), 15, "the simulator to serve /healthz")

    result = probe_healthz(url, budget_s=2.0)

    assert result.ready, result.error
    assert result.status_code == 200


@pytest.mark.parametrize(("environment", "expected_code"), [({}, 3), ({"HARNESSD_EXIT_CODE": "7"}, 7)])
def test_exit_mode_exits_with_code(
    start_sim: StartSim, free_port: int, environment: dict[str, str], expected_code: int
) -> None:
    container = start_sim({"HARNESS_ADDR": f"127.0.0.1:{free_port}", "HARNESSD_MODE": "exit", **environment})

    outcome = container.wait(timeout=15)

    assert outcome["StatusCode"] == expected_code
    assert f"exiting with code {expected_code}" in logs_of(container)


def test_never_mode_never_binds(start_sim: StartSim, free_port: int) -> None:
    container = start_sim({"HARNESS_ADDR": f"127.0.0.1:{free_port}", "HARNESSD_MODE": "never"})
    wait_until(lambda: "never binding" in logs_of(container), 15, "the simulator's never-binding log line")
    time.sleep(0.5)

    refused = refuses_connections(f"http://127.0.0.1:{free_port}/healthz")

    container.reload()
    assert refused
    assert container.status == "running"


def test_crash_after_serves_then_exits(start_sim: StartSim, free_port: int) -> None:
    url = f"http://127.0.0.1:{free_port}/healthz"
    container = start_sim(
        {"HARNESS_ADDR": f"127.0.0.1:{free_port}", "HARNESSD_MODE": "crash-after", "HARNESSD_CRASH_AFTER": "2"}
    )
    wait_until(lambda: serves(url), 15, "the simulator to serve /healthz")

    outcome = container.wait(timeout=15)

    assert outcome["StatusCode"] == 4
    assert refuses_connections(url)
    assert "exiting with code 4" in logs_of(container)


def test_missing_harness_addr_exits_2(start_sim: StartSim) -> None:
    container = start_sim({})

    outcome = container.wait(timeout=15)

    assert outcome["StatusCode"] == 2
    assert "HARNESS_ADDR is missing" in logs_of(container)


def test_invalid_mode_exits_2(start_sim: StartSim, free_port: int) -> None:
    container = start_sim({"HARNESS_ADDR": f"127.0.0.1:{free_port}", "HARNESSD_MODE": "sideways"})

    outcome = container.wait(timeout=15)

    assert outcome["StatusCode"] == 2
    assert "HARNESSD_MODE 'sideways' is invalid" in logs_of(container)


@pytest.mark.parametrize("mode", ["serve", "never"])
def test_sigterm_stops_container(start_sim: StartSim, free_port: int, mode: str) -> None:
    container = start_sim({"HARNESS_ADDR": f"127.0.0.1:{free_port}", "HARNESSD_MODE": mode})
    wait_until(lambda: "booting" in logs_of(container), 15, "the simulator's booting log line")

    container.stop(timeout=10)

    container.reload()
    # 143 is 128 + SIGTERM: the entry point's trap ran. 137 would mean the engine had to SIGKILL it.
    assert container.attrs["State"]["ExitCode"] == 143
    assert "stopping on SIGTERM" in logs_of(container)
