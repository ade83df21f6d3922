"""
The Celery tasks of the provisioning chain, one per step, each a thin shell.

    provision.create -> provision.wait_running -> provision.probe_healthz -> provision.hand_off
    provision.destroy   (after a failure, a cancel or `provisioner destroy`)

Local and worktree provisions go from create straight to hand_off. Each task
takes `(provision_id, fence)` and nothing else, so no secret ever appears in a
message, in Flower or in a log. A task that must run again (a probe that found
harnessd not ready yet, a step whose lease another worker holds) reschedules
itself with `Task.retry(countdown=...)`, so no worker sleeps while it waits. The
rules live in `workers.execution` and `workers.handlers`.
"""

from __future__ import annotations

import functools

from celery import Task, signature

from workers.app import app, settings
from workers.execution import Enqueue, StepMessage, TryLater, run_step
from workflows.model import ProvisionRecord, Step
from workflows.store import Store


@functools.cache
def get_store() -> Store:
    return Store.from_url(settings.redis_url, settings.key_prefix)


def enqueue_step(step: Step, provision_id: str, fence: int, countdown_s: float = 0.0) -> None:
    """Send the message of `step` for a provision, to run after `countdown_s` seconds."""
    task = STEP_TASKS[step]
    task.apply_async(args=(provision_id, fence), countdown=countdown_s or None)


def send_continuation(record: ProvisionRecord) -> None:
    """Call the runner's continuation with the workspace descriptor as its first argument."""
    if record.continuation:
        signature(record.continuation, app=app).apply_async(args=(record.descriptor(),))


def _run(task: Task, step: Step, provision_id: str, fence: int) -> None:
    def enqueue(next_step: Step, target_id: str, next_fence: int, countdown_s: float) -> None:
        if next_step is step and target_id == provision_id:
            raise task.retry(args=(provision_id, next_fence), countdown=countdown_s, max_retries=None)
        enqueue_step(next_step, target_id, next_fence, countdown_s)

    result = run_step(get_store(), StepMessage(step, provision_id, fence), enqueue, send_continuation)
    if isinstance(result, TryLater):
        raise task.retry(countdown=result.countdown_s, max_retries=None)




@app.task(bind=True, name="provision.create", max_retries=None)
def create(self: Task, provision_id: str, fence: int) -> None:
    _run(self, Step.CREATE, provision_id, fence)


@app.task(bind=True, name="provision.wait_running", max_retries=None)
def wait_running(self: Task, provision_id: str, fence: int) -> None:
    _run(self, Step.WAIT_RUNNING, provision_id, fence)


@app.task(bind=True, name="provision.probe_healthz", max_retries=None)
def probe_healthz(self: Task, provision_id: str, fence: int) -> None:
    _run(self, Step.PROBE_HEALTHZ, provision_id, fence)


@app.task(bind=True, name="provision.hand_off", max_retries=None)
def hand_off(self: Task, provision_id: str, fence: int) -> None:
    _run(self, Step.HAND_OFF, provision_id, fence)


@app.task(bind=True, name="provision.destroy", max_retries=None)
def destroy(self: Task, provision_id: str, fence: int) -> None:
    _run(self, Step.DESTROY, provision_id, fence)


STEP_TASKS: dict[Step, Task] = {
    Step.CREATE: create,
    Step.WAIT_RUNNING: wait_running,
    Step.PROBE_HEALTHZ: probe_healthz,
    Step.HAND_OFF: hand_off,
    Step.DESTROY: destroy,
}
