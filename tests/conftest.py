"""
Fixtures shared by all tests: free loopback ports, the Docker engine, the harnessd simulator image.

Outside CI, tests that need Docker are skipped when no engine responds. In CI
(CI=true) they fail instead, because scripts/ensure-services.sh starts an
engine before the tests run. Importing `tests.network_guard` here makes any
connection from the test process to an address outside loopback fail.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import docker
import docker.errors
import pytest
import requests.exceptions

from simulators.harnessd_image import build_image
from tests import network_guard  # noqa: F401 - installs the loopback-only guard in this process

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def free_port() -> int:
    """Return a 127.0.0.1 TCP port that nothing listened on a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        if IN_CI:
            pytest.fail(f"no Docker engine responds ({exc}); scripts/ensure-services.sh should have started one")
        pytest.skip(f"no Docker engine responds ({exc}); run scripts/ensure-services.sh to start one")

    yield client
    client.close()


@pytest.fixture(scope="session")
def harnessd_image(docker_client: docker.DockerClient) -> str:
    return build_image(docker_client)
