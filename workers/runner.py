"""
The runner's API: submit a provision, wait for it, and release the workspace after the run.

**Usage**

    from workers.runner import Provisioner
    from workflows.model import ProvisionRequest, WorkspaceType

    provisioner = Provisioner.from_settings()
    provision_id = provisioner.submit(
        ProvisionRequest(id="ws-42", type=WorkspaceType.CONTAINER, image="harnessd:latest"),
        secrets={"API_TOKEN": "..."},
        continuation=start_run.s(),  # called with the workspace descriptor
    )
    record = provisioner.wait(provision_id, timeout_s=300)
    ...
    provisioner.destroy(provision_id)

Operators reach the same calls through the `provisioner` CLI (`workers.cli`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from celery.canvas import Signature

from workflows import events
from workflows.errors import InvalidTransition, StoreUnavailable
from workflows.model import ProvisionRecord, ProvisionRequest, Status, Step, utc_now
from workflows.policy import validate_request
from workflows.store import Store

# Optimistic updates of a record retry this often if a step commits in between.
_COMMAND_ATTEMPTS = 5


class Provisioner:
    """
    Submits provisions and changes them from outside the workers.

    **Parameters**

    * store - where records and events live.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    @classmethod
    def from_settings(cls) -> Provisioner:
        from workers.tasks import get_store

        return cls(get_store())

    def submit(
        self,
        request: ProvisionRequest,
        secrets: Mapping[str, str] | None = None,
        continuation: Signature | None = None,
    ) -> str:
        """
        Record a provision and send its first step; return its id.

        `secrets` become the workspace's environment; only their names are
        recorded. `continuation` is a Celery signature that hand_off calls with
        the workspace descriptor (a dict) as its first argument.
        """
        secrets = dict(secrets or {})
        request = dataclasses.replace(
            request,
            env_keys=tuple(sorted(set(request.env_keys) | set(secrets))),
            continuation=dict(continuation) if continuation is not None else request.continuation,
        )
        validate_request(request)

        event = {
            "event": events.PROVISION_REQUESTED,
            "at": utc_now(),
            "provision_id": request.id,
            "type": request.type,
            "step": Step.CREATE,
            "ready_timeout_s": request.ready_timeout_s,
            "env_keys": ",".join(request.env_keys),
        }
        self.store.create(request, secrets, event)
        self._send(Step.CREATE, request.id, 0)
        return request.id

    def get(self, provision_id: str) -> ProvisionRecord:
        return self.store.get(provision_id)

    def list(self, status: Status | None = None) -> list[ProvisionRecord]:
        """Return the records of all provisions, oldest first, optionally only those in `status`."""
        records = []
        for provision_id in self.store.list_ids():
            record = self.store.find(provision_id)
            if record is not None and (status is None or record.status is status):
                records.append(record)
        return records

    def owns_workspace(self, record: ProvisionRecord) -> bool:
        """Return True while a provision may still use its workspace, so garbage collection must spare it."""
        if record.step is not Step.DONE:
            return True
        if record.destroyed_at is not None:
            return False
        return record.status is Status.READY or record.keep_on_failure

    def wait(self, provision_id: str, timeout_s: float | None = None) -> ProvisionRecord:
        """
        Block until the provision is ready, failed or cancelled; return its record.

        Returns the record as it is when `timeout_s` runs out, terminal or not.
        """
        started = time.monotonic()
        last_event = "0-0"
        while True:
            record = self.store.get(provision_id)
            if record.is_terminal:
                return record
            remaining = None if timeout_s is None else timeout_s - (time.monotonic() - started)
            if remaining is not None and remaining <= 0:
                return record
            block_s = 1.0 if remaining is None else max(0.01, min(1.0, remaining))
            for entry_id, _fields in self.store.wait_events(provision_id, last_event, block_s):
                last_event = entry_id

    def cancel(self, provision_id: str) -> ProvisionRecord:
        """Stop a provision in flight; its workspace is destroyed by a destroy step."""

        def change(record: ProvisionRecord) -> dict[str, Any]:
            if record.is_terminal:
                raise InvalidTransition(
                    f"provision {provision_id!r} is already {record.status.value}; "
                    + ("use destroy to release its workspace" if record.status is Status.READY else "nothing to cancel")
                )
            return {"status": Status.CANCELLED, "cancelled_at": utc_now(), "step": Step.DESTROY, "due_at": utc_now()}

        return self._command(provision_id, change, events.CANCELLED, Step.DESTROY)

    def destroy(self, provision_id: str) -> ProvisionRecord:
        """Release the workspace of a provision that is ready, failed or cancelled."""
        record = self.store.get(provision_id)
        if record.destroyed_at is not None or record.step is Step.DESTROY:
            return record

        def change(current: ProvisionRecord) -> dict[str, Any]:
            if not current.is_terminal:
                raise InvalidTransition(
                    f"provision {provision_id!r} is still {current.status.value}; cancel it instead"
                )
            return {"step": Step.DESTROY, "due_at": utc_now()}

        destroyed = self._command(provision_id, change, None, Step.DESTROY)
        # An operator's destroy ends the provision for good, so its secrets go too (a retry would need them).
        self.store.delete_secrets(provision_id)
        return destroyed

    def retry(self, provision_id: str) -> ProvisionRecord:
        """
        Resume a failed provision with a fresh deadline.

        It resumes from the failed step if the workspace was kept, and from
        create if the workspace was destroyed.
        """

        def change(record: ProvisionRecord) -> dict[str, Any]:
            if record.status is not Status.FAILED:
                raise InvalidTransition(f"provision {provision_id!r} is {record.status.value}; only failed provisions can be retried")
            if record.step is Step.DESTROY:
                raise InvalidTransition(f"provision {provision_id!r} is still releasing its workspace; retry in a few seconds")
            changes = _retry_changes(record)
            if changes["step"] is Step.CREATE and set(record.env_keys) - set(self.store.get_secrets(provision_id)):
                raise InvalidTransition(
                    f"provision {provision_id!r} cannot be made again: the values of its environment "
                    f"({', '.join(record.env_keys)}) were deleted or expired; submit it again under a new id"
                )
            return changes

        return self._command(provision_id, change, events.RETRY_REQUESTED, None)

    def wait_destroyed(self, provision_id: str, timeout_s: float) -> ProvisionRecord:
        """Block until the destroy step of a provision finished; return its record."""
        deadline = time.monotonic() + timeout_s
        record = self.store.get(provision_id)
        while record.step is Step.DESTROY and time.monotonic() < deadline:
            self.store.wait_events(provision_id, "$", min(1.0, max(0.01, deadline - time.monotonic())))
            record = self.store.get(provision_id)
        return record

    def _command(
        self,
        provision_id: str,
        change: Callable[[ProvisionRecord], dict[str, Any]],
        event_name: str | None,
        step: Step | None,
    ) -> ProvisionRecord:
        """Apply `change` to the record with an optimistic fenced commit, then send the step it leads to."""
        for _ in range(_COMMAND_ATTEMPTS):
            record = self.store.get(provision_id)
            changes = change(record)
            event = None
            if event_name:
                event = {"event": event_name, "at": utc_now(), "provision_id": provision_id, "type": record.type, "step": record.step}
                if event_name == events.RETRY_REQUESTED:
                    event["from_step"] = changes["step"]
            new_fence = self.store.commit(provision_id, record.fence, changes, event)
            if new_fence is not None:
                self._send(step or changes["step"], provision_id, new_fence)
                return self.store.get(provision_id)
        raise InvalidTransition(f"provision {provision_id!r} kept changing; try again")

    def _send(self, step: Step, provision_id: str, fence: int) -> None:
        from kombu.exceptions import OperationalError

        from workers.tasks import enqueue_step

        try:
            enqueue_step(step, provision_id, fence)
        except OperationalError as exc:
            raise StoreUnavailable(
                f"provision {provision_id!r} is recorded, but its {step.value} step could not be sent ({exc}); "
                "a worker will start it once the broker answers"
            ) from exc


def _retry_changes(record: ProvisionRecord) -> dict[str, Any]:
    now = utc_now()
    kept = record.destroyed_at is None and bool(record.handle)
    resumable = (Step.WAIT_RUNNING.value, Step.PROBE_HEALTHZ.value, Step.HAND_OFF.value)
    from_step = Step(record.failed_step) if kept and record.failed_step in resumable else Step.CREATE

    changes: dict[str, Any] = {
        "status": Status.PROVISIONING,
        "step": from_step,
        "failed_at": "",
        "failure_reason": "",
        "failed_step": "",
        "attempts": 0,
        "transient_errors": 0,
        "port_retries": 0,
        "step_starts": 0,
        "due_at": now,
        "deadline": "",
    }
    if from_step is Step.PROBE_HEALTHZ:
        changes["deadline"] = now + timedelta(seconds=record.ready_timeout_s)
    if from_step is Step.CREATE:
        changes |= {"handle": "", "harness_url": "", "workspace_path": "", "destroyed_at": "", "running_at": "", "ready_at": ""}
    return changes

