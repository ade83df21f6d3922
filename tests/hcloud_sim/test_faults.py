"""Failure injection through the admin API: every fault kind, global and per server."""

from __future__ import annotations

import time

import pytest
from hcloud import APIException, Client
from hcloud.actions import ActionFailedException
from hcloud.images import Image
from hcloud.server_types import ServerType

from .support import (
    HARNESSD_USER_DATA,
    RunningSimulator,
    create_running_server,
    create_server,
    find_alive,
    healthz_status,
    public_ip,
    wait_until,
)


def test_slow_boot_for_one_server(client: Client, sim: RunningSimulator) -> None:
    sim.add_fault(kind="boot_delay", seconds=60, name="slow-boot")
    slow = create_server(client, "slow-boot")

    create_running_server(client, "fast-boot")
    slow_status = client.servers.get_by_id(slow.id).status
    sim.admin("DELETE", "/faults")
    recovered = wait_until(lambda: client.servers.get_by_id(slow.id).status == "running")

    assert slow_status in ("initializing", "starting")
    assert recovered


def test_slow_bootstrap_delays_harnessd(client: Client, sim: RunningSimulator) -> None:
    sim.add_fault(kind="bootstrap_delay", seconds=60)
    server = create_running_server(client, "slow-boot-strap", user_data=HARNESSD_USER_DATA)
    ip = public_ip(server)

    time.sleep(0.3)
    pending = find_alive(sim, "slow-boot-strap")
    sim.admin("DELETE", "/faults")
    started = wait_until(lambda: healthz_status(ip) == 200)

    assert pending is not None
    assert pending["bootstrap"] == "pending"
    assert started


def test_broken_bootstrap_by_label(client: Client, sim: RunningSimulator) -> None:
    sim.add_fault(kind="broken_bootstrap", label_selector="bootstrap=broken")
    broken = create_running_server(client, "boot-broken", labels={"bootstrap": "broken"}, user_data=HARNESSD_USER_DATA)
    healthy = create_running_server(client, "boot-fine", user_data=HARNESSD_USER_DATA)

    healthy_up = wait_until(lambda: healthz_status(public_ip(healthy)) == 200)
    skipped = wait_until(lambda: find_alive(sim, "boot-broken")["bootstrap"] == "skipped")

    assert healthy_up
    assert skipped
    assert broken.status == "running"
    assert healthz_status(public_ip(broken)) is None


def test_harnessd_crashes_after_delay(client: Client, sim: RunningSimulator) -> None:
    sim.add_fault(kind="harnessd_crash", after_seconds=1.5, name="crashy")
    server = create_running_server(client, "crashy", user_data=HARNESSD_USER_DATA)
    ip = public_ip(server)

    came_up = wait_until(lambda: healthz_status(ip) == 200)
    went_down = wait_until(lambda: healthz_status(ip) is None)

    assert came_up
    assert went_down


def test_create_action_ends_in_error(client: Client, sim: RunningSimulator) -> None:
    sim.add_fault(kind="create_action_error", message="no capacity in fsn1", name="doomed")
    response = client.servers.create(name="doomed", server_type=ServerType(name="cx22"), image=Image(name="debian-12"))

    with pytest.raises(ActionFailedException) as caught:
        response.action.wait_until_finished()

    assert caught.value.action.error == {"code": "action_failed", "message": "no capacity in fsn1"}
    assert client.servers.get_by_id(response.server.id).status == "off"


def test_create_action_error_reaches_booting_server(client: Client, sim: RunningSimulator) -> None:
    sim.add_fault(kind="boot_delay", seconds=60, name="late-fail")
    response = client.servers.create(
        name="late-fail", server_type=ServerType(name="cx22"), image=Image(name="debian-12")
    )

    sim.add_fault(kind="create_action_error", name="late-fail")
    sim.add_fault(kind="boot_delay", seconds=0, name="late-fail")

    with pytest.raises(ActionFailedException):
        response.action.wait_until_finished()
    assert client.servers.get_by_id(response.server.id).status == "off"


def test_locked_server_rejects_changes(client: Client, sim: RunningSimulator) -> None:
    sim.add_fault(kind="locked", seconds=2.0, name="held")
    server = create_running_server(client, "held")

    with pytest.raises(APIException) as caught:
        client.servers.delete(server)
    shown_locked = client.servers.get_by_id(server.id).locked
    unlocked = wait_until(lambda: not client.servers.get_by_id(server.id).locked)
    client.servers.delete(server).wait_until_finished()

    assert caught.value.code == "locked"
    assert shown_locked is True
    assert unlocked


def test_locked_status_is_423(client: Client, sim: RunningSimulator) -> None:
    sim.add_fault(kind="locked", seconds=30, name="held-raw")
    server = create_server(client, "held-raw", start_after_create=False)

    response = sim.api("POST", f"/servers/{server.id}/actions/poweron")

    assert response.status_code == 423
    assert response.json()["error"]["code"] == "locked"


@pytest.mark.parametrize(("status", "code"), [(500, "server_error"), (503, "unavailable")])
def test_error_burst_hits_next_requests(sim: RunningSimulator, status: int, code: str) -> None:
    sim.add_fault(kind="http_error", status=status, count=2)

    responses = [sim.api("GET", "/servers") for _ in range(3)]

    assert [response.status_code for response in responses] == [status, status, 200]
    assert responses[0].json()["error"]["code"] == code
    assert "RateLimit-Remaining" in responses[0].headers


def test_error_burst_reaches_sdk(client: Client, sim: RunningSimulator) -> None:
    sim.add_fault(kind="http_error", status=503, count=1)

    with pytest.raises(APIException) as caught:
        client.servers.get_all()

    assert caught.value.code == "unavailable"
    assert client.servers.get_all() == []


def test_error_burst_for_one_server(client: Client, sim: RunningSimulator) -> None:
    target = create_server(client, "burst-me", start_after_create=False)
    bystander = create_server(client, "not-me", start_after_create=False)
    sim.add_fault(kind="http_error", status=500, count=1, name="burst-me")

    bystander_status = sim.api("GET", f"/servers/{bystander.id}").status_code
    first = sim.api("GET", f"/servers/{target.id}").status_code
    second = sim.api("GET", f"/servers/{target.id}").status_code

    assert bystander_status == 200
    assert first == 500
    assert second == 200


def test_uniqueness_error_on_free_name(client: Client, sim: RunningSimulator) -> None:
    sim.add_fault(kind="uniqueness_error", name="ghost-name")

    with pytest.raises(APIException) as caught:
        create_server(client, "ghost-name")
    other = create_server(client, "real-name", start_after_create=False)

    assert caught.value.code == "uniqueness_error"
    assert other.name == "real-name"


def test_vanish_endpoint_removes_server(client: Client, sim: RunningSimulator) -> None:
    server = create_running_server(client, "gone-soon", user_data=HARNESSD_USER_DATA)
    ip = public_ip(server)
    wait_until(lambda: healthz_status(ip) == 200)

    response = sim.admin("POST", f"/servers/{server.id}/vanish")
    stats = sim.stats()

    assert response.status_code == 200
    assert healthz_status(ip) is None
    assert stats["servers"]["vanished"] == 1
    assert stats["servers"]["alive"] == 0
    with pytest.raises(APIException) as caught:
        client.servers.get_by_id(server.id)
    assert caught.value.code == "not_found"


def test_vanish_fault_after_delay(client: Client, sim: RunningSimulator) -> None:
    sim.add_fault(kind="vanish", after_seconds=0.5, label_selector="fate=vanish")
    doomed = create_server(client, "fade", labels={"fate": "vanish"}, start_after_create=False)
    survivor = create_server(client, "stay", start_after_create=False)

    vanished = wait_until(lambda: client.servers.get_by_name("fade") is None)

    assert vanished
    assert client.servers.get_by_id(survivor.id).name == "stay"
    assert sim.api("GET", f"/servers/{doomed.id}").status_code == 404


def test_vanish_unknown_server_is_404(sim: RunningSimulator) -> None:
    response = sim.admin("POST", "/servers/424242/vanish")

    assert response.status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "earthquake"},
        {"kind": "boot_delay"},
        {"kind": "boot_delay", "seconds": -1},
        {"kind": "http_error", "status": 418},
        {"kind": "rate_limit", "per_minute": 5, "name": "one"},
        {"kind": "broken_bootstrap", "name": "a", "label_selector": "b"},
        {"kind": "broken_bootstrap", "label_selector": "bad key!"},
    ],
)
def test_invalid_fault_is_rejected(sim: RunningSimulator, body: dict[str, object]) -> None:
    response = sim.admin("POST", "/faults", body)

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"


def test_faults_are_listed_and_removed(sim: RunningSimulator) -> None:
    first = sim.add_fault(kind="broken_bootstrap", name="a")
    sim.add_fault(kind="boot_delay", seconds=3)

    listed = sim.admin("GET", "/faults").json()["faults"]
    removed = sim.admin("DELETE", f"/faults/{first['id']}")
    remaining = sim.admin("GET", "/faults").json()["faults"]
    cleared = sim.admin("DELETE", "/faults").json()

    assert [fault["kind"] for fault in listed] == ["broken_bootstrap", "boot_delay"]
    assert removed.status_code == 200
    assert [fault["kind"] for fault in remaining] == ["boot_delay"]
    assert cleared == {"removed": 1}


def test_vanish_during_boot_fails_create_action(client: Client, sim: RunningSimulator) -> None:
    sim.add_fault(kind="boot_delay", seconds=60, name="half-born")
    response = client.servers.create(name="half-born", server_type=ServerType(name="cx22"), image=Image(name="debian-12"))

    sim.admin("POST", f"/servers/{response.server.id}/vanish")

    with pytest.raises(ActionFailedException) as caught:
        response.action.wait_until_finished()
    assert caught.value.action.error["code"] == "action_failed"
