"""
Crash safety: SIGKILL at every step, poison steps, cancels while workers are down, Redis restarts.

Crashes are armed through `crash_points`: the worker dies right after a step's
backend call and before its commit, the worst moment for exactly-once effects.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import (
    REPO_ROOT,
    RedisServer,
    containers_of,
    event_names,
    handoffs,
    unique_id,
    wait_terminal,
    wait_until,
)
from tests.integration.handoff_recorder import record_hand_off
from workers.runner import Provisioner
from workflows import events
from workflows.model import ProvisionRequest, Status, Step, WorkspaceType
from workflows.policy import MAX_STEP_STARTS
from workflows.store import Store

CONTAINER_STEPS = ["create", "wait_running", "probe_healthz", "hand_off"]


def _container(provision_id: str, image: str, ready_timeout_s: float = 60) -> ProvisionRequest:
    return ProvisionRequest(id=provision_id, type=WorkspaceType.CONTAINER, image=image, ready_timeout_s=ready_timeout_s)


@pytest.mark.parametrize("step", CONTAINER_STEPS)
def test_sigkill_of_whole_worker_at_each_step(step: str, provisioner: Provisioner, store: Store, harnessd_image, docker_client, start_worker) -> None:
    first = start_worker()
    provision_id = unique_id(f"kill-{step.replace('_', '-')}")
    store.client.set(f"test:crash:{provision_id}:{step}", "group")

    provisioner.submit(_container(provision_id, harnessd_image), secrets={"HARNESSD_BOOT_DELAY": "1"}, continuation=record_hand_off.s())
    wait_until(lambda: first.process.poll() is not None, 30, message=f"the worker to die in {step}")
    before = provisioner.get(provision_id)
    restarted = time.monotonic()
    start_worker()
    record = wait_terminal(provisioner, provision_id, 40)

    assert record.status is Status.READY, record.last_error
    assert time.monotonic() - restarted < 20
    assert before.step.value == step
    assert before.deadline is None or record.deadline == before.deadline
    assert len(containers_of(docker_client, provision_id)) == 1
    assert len(handoffs(store, provision_id)) == 1
    names = event_names(store, provision_id)
    assert names.count(events.CREATED) == 1
    assert names.count(events.PROVISIONED) == 1


def test_poison_step_fails_with_worker_lost(provisioner: Provisioner, store: Store, harnessd_image, docker_client, start_worker) -> None:
    start_worker()
    provision_id = unique_id("poison")
    store.client.set(f"test:crash:{provision_id}:wait_running", "child-always")

    provisioner.submit(_container(provision_id, harnessd_image))
    record = wait_terminal(provisioner, provision_id, 120)
    store.client.delete(f"test:crash:{provision_id}:wait_running")

    assert record.status is Status.FAILED
    assert record.failure_reason == "worker_lost"
    assert record.last_error == (
        f"container workspace {provision_id}: step wait_running started {MAX_STEP_STARTS} times "
        "and its worker was lost each time"
    )
    assert record.destroyed_at is not None
    assert containers_of(docker_client, provision_id) == []


def test_cancel_while_workers_down_sticks(provisioner: Provisioner, store: Store, harnessd_image, docker_client, start_worker) -> None:
    first = start_worker()
    provision_id = unique_id("cancel-down")
    provisioner.submit(_container(provision_id, harnessd_image), secrets={"HARNESSD_MODE": "never"})
    wait_until(lambda: provisioner.get(provision_id).attempts >= 2, 20, message="probing to start")
    first.kill()

    cancelled = provisioner.cancel(provision_id)
    start_worker()
    record = provisioner.wait_destroyed(provision_id, 30)
    time.sleep(2)  # late probe copies arrive now and must do nothing

    assert cancelled.status is Status.CANCELLED
    assert record.destroyed_at is not None
    assert provisioner.get(provision_id).status is Status.CANCELLED
    assert containers_of(docker_client, provision_id) == []
    names = event_names(store, provision_id)
    assert names.count(events.DESTROYED) == 1
    assert names.count(events.PROVISION_FAILED) == 0


def test_worker_refuses_short_visibility_timeout(services_env: dict[str, str]) -> None:
    env = services_env | {"PROVISIONER_VISIBILITY_TIMEOUT": "10"}

    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers", "worker", "--without-mingle", "--without-gossip"],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )

    assert result.returncode != 0
    assert (
        "broker_transport_options['visibility_timeout'] is 10s (PROVISIONER_VISIBILITY_TIMEOUT); it must exceed "
        "the longest countdown (60s) plus the longest step (120s), so set it above 180s"
    ) in result.stderr


def test_redis_restart_with_append_only_loses_nothing(services_env: dict[str, str], harnessd_image, docker_client, start_worker, tmp_path: Path) -> None:
    persistent = RedisServer(tmp_path / "redis-aof", appendonly=True).start()
    env = services_env | {"REDIS_URL": persistent.url}
    aof_store = Store.from_url(persistent.url)
    start_worker(env=env)
    provision_ids = [unique_id("aof") for _ in range(5)]

    for provision_id in provision_ids:
        submitted = subprocess.run(
            ["provisioner", "submit", "--type", "container", "--id", provision_id, "--image", harnessd_image, "--env", "HARNESSD_BOOT_DELAY=6"],
            env=env, capture_output=True, text=True, check=False,
        )
        assert submitted.returncode == 0, submitted.stderr
    wait_until(lambda: all(aof_store.get(p).attempts >= 1 for p in provision_ids), 30, message="probing to start")
    persistent.stop()
    down = subprocess.run(["provisioner", "status", provision_ids[0]], env=env, capture_output=True, text=True, check=False)
    restarted = RedisServer(persistent.directory, appendonly=True, port=persistent.port).start()
    try:
        records = [wait_terminal(Provisioner(aof_store), provision_id, 60) for provision_id in provision_ids]
        env_keys = [json.loads(aof_store.client.hget(aof_store.record_key(p), "env_keys")) for p in provision_ids]
    finally:
        restarted.stop()

    assert down.returncode == 4
    assert down.stderr.startswith(f"provisioner: Redis at {persistent.url} is unreachable")
    assert [record.status for record in records] == [Status.READY] * 5
    assert env_keys == [["HARNESSD_BOOT_DELAY"]] * 5
    containers = [containers_of(docker_client, provision_id) for provision_id in provision_ids]
    for container in (item for found in containers for item in found):
        container.remove(force=True)  # made for another store, so the session's cleanup would miss it
    assert [len(found) for found in containers] == [1] * 5


def test_destroy_outlasts_unreachable_docker(provisioner: Provisioner, store: Store, harnessd_image, docker_client, start_worker) -> None:
    healthy = start_worker()
    provision_id = unique_id("destroy-retry")
    provisioner.submit(_container(provision_id, harnessd_image))
    wait_terminal(provisioner, provision_id, 30)
    healthy.stop()
    blind = start_worker(env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})

    provisioner.destroy(provision_id)
    wait_until(lambda: events.STEP_RETRYING in event_names(store, provision_id), 20, message="a failed destroy attempt")
    blind.stop()
    start_worker()
    record = provisioner.wait_destroyed(provision_id, 60)

    assert record.destroyed_at is not None
    assert containers_of(docker_client, provision_id) == []
    assert events.DESTROY_FAILED not in event_names(store, provision_id)
