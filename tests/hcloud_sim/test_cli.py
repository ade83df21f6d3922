"""The hcloud-sim command line: flags, loopback-only listening, and shutdown on signals."""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Callable

import pytest
from hcloud import Client

from .support import (
    HARNESSD_USER_DATA,
    TOKEN,
    create_running_server,
    create_server,
    find_alive,
    healthz_status,
    process_is_alive,
    public_ip,
    RunningSimulator,
    wait_until,
)


def ipv6_loopback_available() -> bool:
    """Return True if this machine can bind ::1."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def sdk_client(endpoint: str, token: str = TOKEN) -> Client:
    """Return an SDK client that polls fast and retries without sleeping."""
    client = Client(token=token, api_endpoint=endpoint, poll_interval=0.05, poll_max_retries=400)
    client._client._retry_interval_func = lambda retries: 0
    return client


@pytest.mark.parametrize("host", ["10.0.0.1", "0.0.0.0", "::", "192.168.1.1", "localhost"])
def test_non_loopback_host_is_rejected(host: str) -> None:
    result = subprocess.run(
        ["hcloud-sim", "--port", "0", "--host", host], capture_output=True, text=True, timeout=10
    )

    assert result.returncode == 2
    assert result.stdout == ""
    assert "--host" in result.stderr


def test_other_loopback_host_is_accepted(start_sim: Callable[..., RunningSimulator]) -> None:
    sim = start_sim("--host", "127.0.0.9")

    response = sim.api("GET", "/servers")

    assert sim.endpoint.startswith("http://127.0.0.9:")
    assert response.status_code == 200


@pytest.mark.skipif(not ipv6_loopback_available(), reason="::1 cannot be bound on this machine")
def test_ipv6_loopback_host(start_sim: Callable[..., RunningSimulator]) -> None:
    sim = start_sim("--host", "::1")

    response = sim.api("GET", "/servers")

    assert sim.endpoint.startswith("http://[::1]:")
    assert response.status_code == 200


def test_module_entry_point_starts(start_sim: Callable[..., RunningSimulator]) -> None:
    sim = start_sim(module=True)

    response = sim.api("GET", "/servers")

    assert response.status_code == 200


def test_token_flag_accepts_only_that_token(start_sim: Callable[..., RunningSimulator]) -> None:
    sim = start_sim("--token", "s3cret-token")

    wrong = sim.api("GET", "/servers", token=TOKEN)
    right = sim.api("GET", "/servers", token="s3cret-token")
    empty = sim.api("GET", "/servers", token=None, headers={"Authorization": "Bearer"})

    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "unauthorized"
    assert right.status_code == 200
    assert empty.status_code == 401
    assert "s3cret-token" not in sim.log_path.read_text()


def test_rate_limit_flag_sets_bucket(start_sim: Callable[..., RunningSimulator]) -> None:
    sim = start_sim("--rate-limit", "2")

    statuses = [sim.api("GET", "/servers").status_code for _ in range(3)]

    assert statuses == [200, 200, 429]
    assert sim.stats()["rate_limit"]["limit"] == 2


def test_broken_bootstrap_flag(start_sim: Callable[..., RunningSimulator]) -> None:
    sim = start_sim("--boot-delay", "0.1", "--bootstrap-delay", "0", "--broken-bootstrap")
    client = sdk_client(sim.endpoint)

    server = create_running_server(client, "never-boots", user_data=HARNESSD_USER_DATA)
    skipped = wait_until(lambda: find_alive(sim, "never-boots")["bootstrap"] == "skipped")

    assert skipped
    assert healthz_status(public_ip(server)) is None


def test_boot_delay_flag_keeps_server_booting(start_sim: Callable[..., RunningSimulator]) -> None:
    sim = start_sim("--boot-delay", "60")
    client = sdk_client(sim.endpoint)

    server = create_server(client, "slow-kernel")
    status = client.servers.get_by_id(server.id).status

    assert status == "initializing"


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_vm_processes(start_sim: Callable[..., RunningSimulator], stop_signal: int) -> None:
    sim = start_sim("--boot-delay", "0.1", "--bootstrap-delay", "0")
    client = sdk_client(sim.endpoint)
    servers = [
        create_running_server(client, f"sig-{index}", user_data=HARNESSD_USER_DATA + "sleep 300\n")
        for index in range(2)
    ]
    addresses = [public_ip(server) for server in servers]
    assert wait_until(lambda: all(healthz_status(ip) == 200 for ip in addresses))
    pgids = [entry["pgid"] for entry in sim.stats()["alive_servers"]]

    returncode = sim.stop(stop_signal)

    assert returncode == 0
    assert [healthz_status(ip) for ip in addresses] == [None, None]
    assert not any(process_is_alive(pgid) for pgid in pgids)
