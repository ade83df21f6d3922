"""
VM provisions through the real hcloud SDK against hcloud-sim, whose servers run real harnessd stand-ins.

Each test resets the session's simulator first. Provision ids here are already
valid server names, so a test can aim a fault at a server by its name.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
from hcloud import Client
from hcloud.images import Image
from hcloud.server_types import ServerType

from tests.hcloud_sim.support import TOKEN, RunningSimulator
from tests.integration.conftest import event_names, handoffs, store_label, unique_id, wait_terminal, wait_until
from tests.integration.handoff_recorder import record_hand_off
from workers.backends.vm import LABEL_PROVISION, LABEL_STORE, provision_label
from workers.runner import Provisioner
from workflows import events
from workflows.model import ProvisionRequest, Status, WorkspaceType
from workflows.store import Store

TIMEOUT_MESSAGE = re.compile(
    r"^vm workspace (?P<id>\S+): harnessd at http://127\.\d+\.\d+\.\d+:8080 never became ready within 4s "
    r"\(\d+ attempts; last error: connection refused\)$"
)


@pytest.fixture
def sim(hcloud_sim: RunningSimulator) -> RunningSimulator:
    assert hcloud_sim.admin("POST", "/reset").status_code == 200
    return hcloud_sim


def _servers_of(sim: RunningSimulator, provision_id: str) -> list[dict]:  # type: ignore[type-arg]
    label = provision_label(provision_id)
    return [server for server in sim.stats()["alive_servers"] if server["labels"].get(LABEL_PROVISION) == label]


def _vm(provision_id: str, ready_timeout_s: float = 30, **options: str) -> ProvisionRequest:
    return ProvisionRequest(id=provision_id, type=WorkspaceType.VM, ready_timeout_s=ready_timeout_s, options=options)


def test_vm_broken_bootstrap_times_out(provisioner: Provisioner, store: Store, sim: RunningSimulator, worker) -> None:
    provision_id = unique_id("vm-broken")
    sim.add_fault(kind="broken_bootstrap", name=provision_id)

    started = time.monotonic()
    provisioner.submit(_vm(provision_id, ready_timeout_s=4))
    record = provisioner.wait(provision_id, timeout_s=60)
    elapsed = time.monotonic() - started

    assert record.status is Status.FAILED
    assert record.failure_reason == "ready_timeout"
    assert TIMEOUT_MESSAGE.match(record.last_error), record.last_error
    assert elapsed < 1.5 + 4 + 5
    assert wait_terminal(provisioner, provision_id, 30).destroyed_at is not None
    assert _servers_of(sim, provision_id) == []


def test_vm_slow_boot_becomes_ready(provisioner: Provisioner, store: Store, sim: RunningSimulator, worker) -> None:
    provision_id = unique_id("vm-slow")
    sim.add_fault(kind="boot_delay", seconds=3, name=provision_id)
    sim.add_fault(kind="bootstrap_delay", seconds=2, name=provision_id)

    provisioner.submit(_vm(provision_id), secrets={"API_TOKEN": "s3cret"}, continuation=record_hand_off.s())
    record = wait_terminal(provisioner, provision_id, 60)

    assert record.status is Status.READY
    assert (record.running_at - record.created_at).total_seconds() >= 2.5
    assert (record.ready_at - record.created_at).total_seconds() >= 4.5
    assert [json.loads(item)["harness_url"] for item in handoffs(store, provision_id)] == [record.harness_url]
    assert len(_servers_of(sim, provision_id)) == 1


def test_vm_crash_after_create_adopts_server(provisioner: Provisioner, store: Store, sim: RunningSimulator, worker) -> None:
    provision_id = unique_id("vm-crash")
    store.client.set(f"test:crash:{provision_id}:create", "child")

    provisioner.submit(_vm(provision_id), continuation=record_hand_off.s())
    record = wait_terminal(provisioner, provision_id, 60)

    assert record.status is Status.READY
    assert store.client.exists(f"test:crash:{provision_id}:create") == 0
    assert len(_servers_of(sim, provision_id)) == 1
    assert sim.stats()["servers"]["created"] == 1
    assert len(handoffs(store, provision_id)) == 1


def test_vm_thirty_at_once_under_rate_limit(provisioner: Provisioner, sim: RunningSimulator, start_worker) -> None:
    sim.add_fault(kind="rate_limit", per_minute=100)
    start_worker(concurrency=8)
    provision_ids = [unique_id("vm-many") for _ in range(30)]

    for provision_id in provision_ids:
        provisioner.submit(_vm(provision_id, ready_timeout_s=120))
    records = [wait_terminal(provisioner, provision_id, 300) for provision_id in provision_ids]

    assert [record.status for record in records] == [Status.READY] * 30
    assert sim.stats()["requests"]["rate_limited_after_first"] == 0
    assert len(sim.stats()["alive_servers"]) == 30


def test_vm_invalid_server_type_fails_at_once(provisioner: Provisioner, sim: RunningSimulator, worker) -> None:
    provision_id = unique_id("vm-invalid")

    provisioner.submit(_vm(provision_id, server_type="no-such-type"))
    record = wait_terminal(provisioner, provision_id, 30)

    assert record.status is Status.FAILED
    assert record.failure_reason == "backend_error"
    assert record.last_error.startswith(f"vm workspace {provision_id}: Hetzner API failed to create server: ")
    assert "invalid_input" in record.last_error
    assert sim.stats()["servers"]["created"] == 0


def test_vm_create_action_error_fails_and_deletes(provisioner: Provisioner, sim: RunningSimulator, worker) -> None:
    provision_id = unique_id("vm-action")
    sim.add_fault(kind="create_action_error", message="host is on fire", name=provision_id)

    provisioner.submit(_vm(provision_id))
    record = wait_terminal(provisioner, provision_id, 30)

    assert record.status is Status.FAILED
    assert record.failure_reason == "workspace_exited"
    assert "action create_server failed: host is on fire" in record.last_error
    assert _servers_of(sim, provision_id) == []


def test_vm_server_errors_are_retried(provisioner: Provisioner, store: Store, sim: RunningSimulator, worker) -> None:
    provision_id = unique_id("vm-5xx")
    sim.add_fault(kind="http_error", status=500, count=2)

    provisioner.submit(_vm(provision_id))
    record = wait_terminal(provisioner, provision_id, 60)

    assert record.status is Status.READY
    assert sim.stats()["requests"]["by_status"].get("500") == 2


def test_vm_locked_delete_is_retried(provisioner: Provisioner, sim: RunningSimulator, worker) -> None:
    provision_id = unique_id("vm-locked")
    sim.add_fault(kind="broken_bootstrap", name=provision_id)
    sim.add_fault(kind="locked", seconds=4, name=provision_id)

    provisioner.submit(_vm(provision_id, ready_timeout_s=1))
    record = wait_terminal(provisioner, provision_id, 60)

    assert record.status is Status.FAILED
    assert record.destroyed_at is not None
    assert _servers_of(sim, provision_id) == []


def test_vm_taken_name_is_not_adopted(provisioner: Provisioner, sim: RunningSimulator, worker) -> None:
    provision_id = unique_id("vm-taken")
    sim.add_fault(kind="uniqueness_error", name=provision_id)

    provisioner.submit(_vm(provision_id))
    record = wait_terminal(provisioner, provision_id, 30)

    assert record.status is Status.FAILED
    assert record.last_error == (
        f"vm workspace {provision_id}: server name {provision_id} is used by a server that is not this provision's; "
        "delete it or use another id"
    )


def test_vm_vanished_server_fails_fast(provisioner: Provisioner, sim: RunningSimulator, worker) -> None:
    provision_id = unique_id("vm-vanish")
    sim.add_fault(kind="broken_bootstrap", name=provision_id)
    sim.add_fault(kind="vanish", after_seconds=2, name=provision_id)

    started = time.monotonic()
    provisioner.submit(_vm(provision_id, ready_timeout_s=60))
    record = provisioner.wait(provision_id, timeout_s=60)

    assert record.status is Status.FAILED
    assert time.monotonic() - started < 20
    # The server may vanish before or after wait_running saw it running; both must fail at once.
    assert record.last_error in (
        f"vm workspace {provision_id}: the workspace disappeared while starting",
        f"vm workspace {provision_id}: the workspace disappeared while harnessd at {record.harness_url} was being probed",
    )


def test_vm_without_token_fails_before_any_request(provisioner: Provisioner, sim: RunningSimulator, start_worker) -> None:
    start_worker(env={"HCLOUD_TOKEN": ""})
    provision_id = unique_id("vm-token")

    provisioner.submit(_vm(provision_id))
    record = wait_terminal(provisioner, provision_id, 30)

    assert record.status is Status.FAILED
    assert "HCLOUD_TOKEN is not set" in record.last_error
    assert sim.stats()["requests"]["total"] == 0


def test_gc_deletes_leaked_server(services_env: dict[str, str], sim: RunningSimulator) -> None:
    client = Client(token=TOKEN, api_endpoint=sim.endpoint)
    leaked = client.servers.create(
        name="leaked-one",
        server_type=ServerType(name="cx22"),
        image=Image(name="debian-12"),
        labels={LABEL_PROVISION: provision_label("gone"), LABEL_STORE: store_label(services_env)},
    ).server
    client.servers.create(
        name="another-deployment", server_type=ServerType(name="cx22"), image=Image(name="debian-12"), labels={LABEL_PROVISION: provision_label("x")}
    )

    listed = subprocess.run(["provisioner", "gc"], env=services_env, capture_output=True, text=True, check=False)
    deleted = subprocess.run(["provisioner", "gc", "--delete"], env=services_env, capture_output=True, text=True, check=False)

    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith(f"{leaked.id}\tleaked-one\t")
    assert "found 1 leaked server(s); run with --delete to remove them" in listed.stderr
    assert deleted.returncode == 0
    assert "deleted 1 leaked server(s)" in deleted.stderr
    wait_until(lambda: [server["name"] for server in sim.stats()["alive_servers"]] == ["another-deployment"], 10, message="the leaked server to go")
