"""
Container provisions against a real Docker engine, with the busybox harnessd stand-in.

The stand-in's behaviour comes from its environment: HARNESSD_BOOT_DELAY (seconds
before it binds), HARNESSD_MODE (serve, never, exit) and HARNESSD_EXIT_CODE.
Containers use host networking and bind 127.0.0.1 ports only.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time

from tests.integration.conftest import containers_of, event_names, handoffs, store_label, unique_id, wait_terminal, wait_until
from tests.integration.handoff_recorder import record_hand_off
from workers.runner import Provisioner
from workflows import events
from workflows.model import ProvisionRequest, Status, WorkspaceType
from workflows.store import Store

TIMEOUT_MESSAGE = re.compile(
    r"^container workspace (?P<id>\S+): harnessd at http://127\.0\.0\.1:\d+ never became ready within "
    r"(?P<timeout>[\d.]+)s \((?P<attempts>\d+) attempts; last error: connection refused\)$"
)


def _request(provision_id: str, image: str, ready_timeout_s: float = 30.0) -> ProvisionRequest:
    return ProvisionRequest(id=provision_id, type=WorkspaceType.CONTAINER, image=image, ready_timeout_s=ready_timeout_s)


def test_container_never_ready_times_out(provisioner: Provisioner, store: Store, harnessd_image, docker_client, worker) -> None:
    provision_id = unique_id("never")
    request = _request(provision_id, harnessd_image, ready_timeout_s=3)

    started = time.monotonic()
    provisioner.submit(request, secrets={"HARNESSD_MODE": "never"})
    record = provisioner.wait(provision_id, timeout_s=30)
    elapsed = time.monotonic() - started

    assert record.status is Status.FAILED
    assert record.failure_reason == "ready_timeout"
    assert elapsed < 3 + 5
    match = TIMEOUT_MESSAGE.match(record.last_error)
    assert match, record.last_error
    assert match["id"] == provision_id
    assert match["timeout"] == "3"
    assert int(match["attempts"]) == record.attempts > 3
    settled = wait_terminal(provisioner, provision_id, 20)
    assert settled.destroyed_at is not None
    assert containers_of(docker_client, provision_id) == []
    names = event_names(store, provision_id)
    assert names.count(events.PROVISION_FAILED) == 1
    assert names[-1] == events.DESTROYED


def test_container_slow_boot_becomes_ready(provisioner: Provisioner, store: Store, harnessd_image, docker_client, worker) -> None:
    provision_id = unique_id("slow")

    provisioner.submit(
        _request(provision_id, harnessd_image),
        secrets={"HARNESSD_BOOT_DELAY": "3", "API_TOKEN": "s3cret-value"},
        continuation=record_hand_off.s(),
    )
    record = wait_terminal(provisioner, provision_id, 40)

    assert record.status is Status.READY
    assert record.ready_at is not None and record.running_at is not None
    assert (record.ready_at - record.running_at).total_seconds() >= 2.5
    probing = [fields for _entry, fields in store.events(provision_id) if fields["event"] == events.PROBING]
    assert probing and all(fields["error"] == "connection refused" for fields in probing)
    assert [json.loads(item)["harness_url"] for item in handoffs(store, provision_id)] == [record.harness_url]
    assert len(containers_of(docker_client, provision_id)) == 1


def test_secret_values_stay_out_of_record_and_events(provisioner: Provisioner, store: Store, harnessd_image, worker) -> None:
    provision_id = unique_id("secret")

    provisioner.submit(_request(provision_id, harnessd_image), secrets={"API_TOKEN": "s3cret-value"})
    wait_terminal(provisioner, provision_id, 40)

    raw_record = store.client.hgetall(store.record_key(provision_id))
    raw_events = store.client.xrange(store.events_key(provision_id))
    assert "s3cret-value" not in json.dumps(raw_record)
    assert "s3cret-value" not in json.dumps(raw_events)
    assert json.loads(raw_record["env_keys"]) == ["API_TOKEN"]


def test_container_exit_fails_fast(provisioner: Provisioner, store: Store, harnessd_image, docker_client, worker) -> None:
    provision_id = unique_id("exit")

    started = time.monotonic()
    provisioner.submit(_request(provision_id, harnessd_image, ready_timeout_s=60), secrets={"HARNESSD_MODE": "exit", "HARNESSD_EXIT_CODE": "3", "HARNESSD_BOOT_DELAY": "1"})
    record = provisioner.wait(provision_id, timeout_s=60)

    assert record.status is Status.FAILED
    assert time.monotonic() - started < 20
    assert record.failure_reason == "workspace_exited"
    assert f"container workspace {provision_id}: exited with code 3" in record.last_error
    failed = [fields for _entry, fields in store.events(provision_id) if fields["event"] == events.PROVISION_FAILED]
    assert [fields["exit_code"] for fields in failed] == ["3"]
    wait_terminal(provisioner, provision_id, 20)
    assert containers_of(docker_client, provision_id) == []


def test_keep_on_failure_keeps_container(provisioner: Provisioner, harnessd_image, docker_client, worker) -> None:
    provision_id = unique_id("keep")
    request = ProvisionRequest(id=provision_id, type=WorkspaceType.CONTAINER, image=harnessd_image, ready_timeout_s=1, keep_on_failure=True)

    provisioner.submit(request, secrets={"HARNESSD_MODE": "never"})
    record = wait_terminal(provisioner, provision_id, 30)

    assert record.status is Status.FAILED
    assert len(containers_of(docker_client, provision_id)) == 1
    provisioner.destroy(provision_id)
    assert provisioner.wait_destroyed(provision_id, 20).destroyed_at is not None
    assert containers_of(docker_client, provision_id) == []


def test_duplicated_messages_make_one_container(provisioner: Provisioner, store: Store, harnessd_image, docker_client, start_worker) -> None:
    start_worker(concurrency=4, includes=("tests.integration.duplicate_messages",))
    provision_id = unique_id("dup")

    provisioner.submit(_request(provision_id, harnessd_image), secrets={"HARNESSD_BOOT_DELAY": "2"}, continuation=record_hand_off.s())
    record = wait_terminal(provisioner, provision_id, 40)
    time.sleep(1)  # let the late copies of the last messages arrive and be dropped

    assert record.status is Status.READY
    assert len(containers_of(docker_client, provision_id)) == 1
    assert len(handoffs(store, provision_id)) == 1
    names = event_names(store, provision_id)
    for name in (events.CREATED, events.RUNNING, events.READY, events.PROVISIONED):
        assert names.count(name) == 1, name


def test_retry_after_timeout_recreates_container(provisioner: Provisioner, store: Store, harnessd_image, docker_client, worker) -> None:
    provision_id = unique_id("retry")
    provisioner.submit(_request(provision_id, harnessd_image, ready_timeout_s=1), secrets={"HARNESSD_MODE": "never"})
    wait_terminal(provisioner, provision_id, 30)

    record = provisioner.retry(provision_id)

    assert record.status is Status.PROVISIONING
    assert record.step.value == "create"
    failed_again = wait_terminal(provisioner, provision_id, 30)
    assert failed_again.status is Status.FAILED
    assert event_names(store, provision_id).count(events.CREATED) == 2


def test_cancel_destroys_container(provisioner: Provisioner, store: Store, harnessd_image, docker_client, worker) -> None:
    provision_id = unique_id("cancel")
    provisioner.submit(_request(provision_id, harnessd_image, ready_timeout_s=60), secrets={"HARNESSD_MODE": "never"})
    wait_until(lambda: provisioner.get(provision_id).attempts >= 2, 20, message="probing to start")

    provisioner.cancel(provision_id)
    record = provisioner.wait_destroyed(provision_id, 20)

    assert record.status is Status.CANCELLED
    assert record.destroyed_at is not None
    assert containers_of(docker_client, provision_id) == []
    time.sleep(1.5)
    assert provisioner.get(provision_id).status is Status.CANCELLED
    assert event_names(store, provision_id).count(events.DESTROYED) == 1


def test_gc_removes_leaked_container(services_env: dict[str, str], harnessd_image, docker_client) -> None:
    from workers.backends.container import LABEL_PROVISION, LABEL_STORE
    from workers.backends.names import id_digest

    leaked = docker_client.containers.run(
        harnessd_image,
        detach=True,
        network_mode="host",
        environment={"HARNESSD_MODE": "never", "HARNESS_ADDR": "127.0.0.1:1"},
        labels={LABEL_PROVISION: id_digest(unique_id("forgotten")), LABEL_STORE: store_label(services_env)},
    )

    listed = subprocess.run(["provisioner", "gc", "--type", "container"], env=services_env, capture_output=True, text=True, check=False)
    deleted = subprocess.run(["provisioner", "gc", "--type", "container", "--delete"], env=services_env, capture_output=True, text=True, check=False)

    assert listed.returncode == 0, listed.stderr
    assert f"{leaked.short_id}\t{leaked.name}\t" in listed.stdout
    assert deleted.returncode == 0
    assert deleted.stderr == "deleted 1 leaked container(s)\n"
    assert docker_client.containers.list(all=True, filters={"id": leaked.id}) == []



def test_taken_host_port_recreates_container(provisioner: Provisioner, store: Store, harnessd_image, docker_client, worker) -> None:
    provision_id = unique_id("port")
    provisioner.submit(_request(provision_id, harnessd_image), secrets={"HARNESSD_BOOT_DELAY": "2"})
    first_url = wait_until(lambda: provisioner.get(provision_id).harness_url, 10, message="a harness URL")
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", int(first_url.rsplit(":", 1)[1])))
    squatter.listen()

    try:
        record = wait_terminal(provisioner, provision_id, 40)
    finally:
        squatter.close()

    assert record.status is Status.READY
    assert record.harness_url != first_url
    assert record.port_retries == 1
    assert event_names(store, provision_id).count(events.RECREATED) == 1
    assert len(containers_of(docker_client, provision_id)) == 1
