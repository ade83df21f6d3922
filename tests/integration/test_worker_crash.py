"""A worker killed with SIGKILL mid-provision is replaced, and the provision resumes with its original deadline."""

from __future__ import annotations

import time

from tests.integration.conftest import containers_of, event_names, handoffs, unique_id, wait_terminal, wait_until
from tests.integration.handoff_recorder import record_hand_off
from workers.runner import Provisioner
from workflows import events
from workflows.model import ProvisionRequest, Status, Step, WorkspaceType
from workflows.store import Store


def test_sigkill_while_probing_resumes(provisioner: Provisioner, store: Store, harnessd_image, docker_client, start_worker) -> None:
    first = start_worker()
    provision_id = unique_id("crash")
    request = ProvisionRequest(id=provision_id, type=WorkspaceType.CONTAINER, image=harnessd_image, ready_timeout_s=60)
    provisioner.submit(request, secrets={"HARNESSD_BOOT_DELAY": "6"}, continuation=record_hand_off.s())
    wait_until(lambda: provisioner.get(provision_id).attempts >= 2, 20, message="probing to start")
    deadline = provisioner.get(provision_id).deadline

    first.kill()
    assert provisioner.get(provision_id).step is Step.PROBE_HEALTHZ
    start_worker()
    record = wait_terminal(provisioner, provision_id, 40)

    assert record.status is Status.READY
    assert record.deadline == deadline
    assert len(containers_of(docker_client, provision_id)) == 1
    assert len(handoffs(store, provision_id)) == 1
    assert event_names(store, provision_id).count(events.PROVISIONED) == 1


def test_provisions_sent_while_workers_down_run_later(provisioner: Provisioner, store: Store, start_worker) -> None:
    provision_ids = [unique_id("queued") for _ in range(5)]
    first = start_worker()
    first.kill()

    for provision_id in provision_ids:
        provisioner.submit(ProvisionRequest(id=provision_id, type=WorkspaceType.LOCAL))
    time.sleep(0.5)
    start_worker()

    for provision_id in provision_ids:
        assert wait_terminal(provisioner, provision_id, 20).status is Status.READY
