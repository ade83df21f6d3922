"""The local "VMs" behind simulated servers: loopback addresses, user_data and harnessd."""

from __future__ import annotations

from pathlib import Path

import httpx
from hcloud import Client

from .support import (
    FIRST_ADDRESS,
    HARNESSD_USER_DATA,
    RunningSimulator,
    create_running_server,
    find_alive,
    healthz_status,
    process_is_alive,
    public_ip,
    wait_until,
)


def test_healthz_serves_on_server_address(client: Client) -> None:
    server = create_running_server(client, "vm-health", user_data=HARNESSD_USER_DATA)
    ip = public_ip(server)

    ready = wait_until(lambda: healthz_status(ip) == 200)
    response = httpx.get(f"http://{ip}:8080/healthz", trust_env=False)

    assert ready
    assert response.json() == {"status": "ok"}
    assert response.headers["content-type"] == "application/json"


def test_harnessd_rejects_other_paths(client: Client) -> None:
    server = create_running_server(client, "vm-404", user_data=HARNESSD_USER_DATA)
    ip = public_ip(server)
    wait_until(lambda: healthz_status(ip) == 200)

    response = httpx.get(f"http://{ip}:8080/other", trust_env=False)

    assert response.status_code == 404


def test_harnessd_binds_only_its_server(client: Client) -> None:
    first = create_running_server(client, "vm-one", user_data=HARNESSD_USER_DATA)
    second = create_running_server(client, "vm-two", start_after_create=True)
    first_ip = public_ip(first)
    second_ip = public_ip(second)
    wait_until(lambda: healthz_status(first_ip) == 200)

    assert first_ip != second_ip
    assert healthz_status(second_ip) is None
    assert healthz_status("127.0.0.1") != 200


def test_servers_get_consecutive_addresses(client: Client) -> None:
    servers = [create_running_server(client, f"vm-ip-{index}") for index in range(3)]

    addresses = [public_ip(server) for server in servers]

    prefix = FIRST_ADDRESS.rsplit(".", 1)[0]
    assert addresses == [f"{prefix}.2", f"{prefix}.3", f"{prefix}.4"]


def test_user_data_sees_its_environment(client: Client, sim: RunningSimulator) -> None:
    script = '#!/bin/sh\necho "$SIM_PUBLIC_IPV4 $(command -v harnessd)" > env.txt\n'
    server = create_running_server(client, "vm-env", user_data=script)
    entry = find_alive(sim, "vm-env")
    assert entry is not None
    env_file = Path(entry["vm_dir"]) / "env.txt"

    written = wait_until(env_file.exists)
    wait_until(lambda: env_file.read_text().endswith("\n"))
    ip, harnessd_path = env_file.read_text().split()

    assert written
    assert ip == public_ip(server)
    assert harnessd_path.endswith("/harnessd")


def test_user_data_output_goes_to_log(client: Client, sim: RunningSimulator) -> None:
    create_running_server(client, "vm-log", user_data="#!/bin/sh\necho hello from user_data\n")
    entry = find_alive(sim, "vm-log")
    assert entry is not None
    log_file = Path(entry["vm_dir"]) / "user_data.log"

    logged = wait_until(lambda: log_file.exists() and "hello from user_data" in log_file.read_text())

    assert logged


def test_delete_stops_harnessd(client: Client, sim: RunningSimulator) -> None:
    server = create_running_server(client, "vm-del", user_data=HARNESSD_USER_DATA + "sleep 300\n")
    ip = public_ip(server)
    wait_until(lambda: healthz_status(ip) == 200)
    entry = find_alive(sim, "vm-del")
    assert entry is not None and entry["pgid"] is not None

    client.servers.delete(server).wait_until_finished()

    assert healthz_status(ip) is None
    assert not process_is_alive(entry["pgid"])


def test_deleted_address_is_reused(client: Client) -> None:
    first = create_running_server(client, "vm-reuse-1", user_data=HARNESSD_USER_DATA)
    ip = public_ip(first)
    wait_until(lambda: healthz_status(ip) == 200)

    client.servers.delete(first).wait_until_finished()
    second = create_running_server(client, "vm-reuse-2", user_data=HARNESSD_USER_DATA)
    back = wait_until(lambda: healthz_status(ip) == 200)

    assert public_ip(second) == ip
    assert back


def test_power_off_stops_and_power_on_restarts(client: Client) -> None:
    server = create_running_server(client, "vm-cycle", user_data=HARNESSD_USER_DATA)
    ip = public_ip(server)
    wait_until(lambda: healthz_status(ip) == 200)

    client.servers.power_off(server).wait_until_finished()
    after_off = healthz_status(ip)
    client.servers.power_on(server).wait_until_finished()
    after_on = wait_until(lambda: healthz_status(ip) == 200)

    assert after_off is None
    assert after_on


def test_harnessd_rejects_foreign_host(client: Client, sim: RunningSimulator) -> None:
    script = "#!/bin/sh\nHARNESS_ADDR=127.0.0.1:8080 harnessd\necho exit=$?\n"
    create_running_server(client, "vm-foreign", user_data=script)
    entry = find_alive(sim, "vm-foreign")
    assert entry is not None
    log_file = Path(entry["vm_dir"]) / "user_data.log"

    finished = wait_until(lambda: log_file.exists() and "exit=" in log_file.read_text())

    assert finished
    assert "exit=2" in log_file.read_text()
    assert "is not this server's address" in log_file.read_text()
