"""
Fixtures for the hcloud-sim tests: one simulator per test module, reset before each test.

Teardown sends SIGTERM and checks that the simulator exited 0 and that no
VM process group it reported is still alive.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hcloud import Client

from .support import FAST_DELAYS, FIRST_ADDRESS, TOKEN, RunningSimulator, start_simulator


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSimulator]:
    """One simulator per test module, with short boot and bootstrap delays."""
    running = start_simulator(tmp_path_factory.mktemp("hcloud-sim"), *FAST_DELAYS, "--first-address", FIRST_ADDRESS)
    yield running
    assert running.stop() == 0


@pytest.fixture(autouse=True)
def clean_simulator(request: pytest.FixtureRequest) -> None:
    """Reset the module's simulator before each test that uses it."""
    if "sim" in request.fixturenames:
        running: RunningSimulator = request.getfixturevalue("sim")
        assert running.admin("POST", "/reset").status_code == 200


@pytest.fixture()
def client(sim: RunningSimulator) -> Client:
    """An hcloud SDK client on the simulator; it polls fast and retries without sleeping."""
    hcloud_client = Client(token=TOKEN, api_endpoint=sim.endpoint, poll_interval=0.05, poll_max_retries=400)
    hcloud_client._client._retry_interval_func = lambda retries: 0
    return hcloud_client


@pytest.fixture()
def start_sim(tmp_path: Path) -> Iterator[Callable[..., RunningSimulator]]:
    """Start simulators with custom flags for one test; stop each one afterwards."""
    started: list[RunningSimulator] = []

    def start(*args: str, module: bool = False) -> RunningSimulator:
        running = start_simulator(tmp_path / f"sim-{len(started)}", *args, module=module)
        started.append(running)
        return running

    yield start
    for running in started:
        assert running.stop() == 0
