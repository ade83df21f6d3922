"""
What each provisioning step does, as plain functions of the record and a backend.

A handler makes at most one backend call or probe attempt and returns an
`Outcome`; `workers.execution` turns the outcome into a fenced commit and the
next Celery message. Handlers never touch Redis or Celery, so they are tested
without either.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from workers.backends.base import Backend, Inspection, RunState
from workers.probe import ProbeResult, probe_healthz
from workflows import events
from workflows.model import FailureReason, ProvisionRecord, Status, Step, utc_now
from workflows.policy import PROBE_ATTEMPT_BUDGET_S, backoff_s, probe_countdown_s
from workflows.steps import next_step

# Times a host-network container is made again after losing its port.
MAX_PORT_RETRIES = 3


@dataclasses.dataclass(frozen=True)
class Advance:
    """The step is done: store `changes`, append `event`, and run `step` next."""

    step: Step
    changes: Mapping[str, Any]
    event: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Reschedule:
    """Run the same step again after `countdown_s` seconds."""

    countdown_s: float
    changes: Mapping[str, Any]
    event: Mapping[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class Fail:
    """End the provision as failed."""

    reason: FailureReason
    error: str
    event_fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    changes: Mapping[str, Any] = dataclasses.field(default_factory=dict)


Outcome = Advance | Reschedule | Fail


@dataclasses.dataclass(frozen=True)
class StepInput:
    """The input of a handler: the record, its backend, secrets, and the current time."""

    record: ProvisionRecord
    backend: Backend
    now: datetime
    secrets: Mapping[str, str] = dataclasses.field(default_factory=dict)
    probe: Callable[[str], ProbeResult] = lambda url: probe_healthz(url, PROBE_ATTEMPT_BUDGET_S)
    # Reads the time after slow calls, such as the moment a probe succeeded.
    clock: Callable[[], datetime] = utc_now


def subject(record: ProvisionRecord) -> str:
    """Return "container workspace ws-42", the start of every message about a provision."""
    return f"{record.type.value} workspace {record.id}"


def create(step_input: StepInput) -> Outcome:
    record = step_input.record
    workspace = step_input.backend.create(record, step_input.secrets)

    changes = {
        "status": Status.PROVISIONING,
        "handle": workspace.handle,
        "harness_url": workspace.harness_url,
        "workspace_path": workspace.workspace_path,
        "attempts": 0,
    }
    after = next_step(record.type, Step.CREATE)
    event = {"event": events.CREATED, **{name: changes[name] for name in ("handle", "harness_url", "workspace_path")}}
    return Advance(after, changes, event)


def wait_running(step_input: StepInput) -> Outcome:
    record = step_input.record
    inspection = step_input.backend.inspect(record)

    if inspection.state is RunState.RUNNING:
        changes = {
            "running_at": step_input.now,
            "deadline": step_input.now + timedelta(seconds=record.ready_timeout_s),
            "attempts": 0,
        }
        return Advance(Step.PROBE_HEALTHZ, changes, {"event": events.RUNNING})
    if inspection.state is not RunState.STARTING:
        return _workspace_stopped(record, inspection, "while starting")

    backend = step_input.backend
    waited_s = (step_input.now - record.created_at).total_seconds() if record.created_at else 0.0
    if waited_s > backend.running_timeout_s:
        error = f"{subject(record)}: not running after {backend.running_timeout_s:g}s (the backend still reports it starting)"
        return Fail(FailureReason.RUNNING_TIMEOUT, error)
    countdown = backoff_s(record.attempts, backend.running_poll_base_s, backend.running_poll_cap_s)
    return Reschedule(countdown, {"attempts": record.attempts + 1})


def probe(step_input: StepInput) -> Outcome:
    record = step_input.record
    deadline = record.deadline or step_input.now + timedelta(seconds=record.ready_timeout_s)

    inspection = step_input.backend.inspect_while_probing(record)
    if inspection.port_conflict and record.port_retries < MAX_PORT_RETRIES:
        return _recreate(step_input, deadline)
    if inspection.state in (RunState.EXITED, RunState.GONE):
        return _workspace_stopped(record, inspection, f"while harnessd at {record.harness_url} was being probed")

    result = step_input.probe(record.harness_url)
    attempt = record.attempts + 1
    if result.ready:
        changes = {"ready_at": step_input.clock(), "attempts": attempt, "last_error": ""}
        return Advance(Step.HAND_OFF, changes, {"event": events.READY, "attempt": attempt})

    remaining_s = (deadline - step_input.now).total_seconds() - result.elapsed_s
    if remaining_s <= 0:
        error = timeout_message(record, attempt, result.error)
        return Fail(FailureReason.READY_TIMEOUT, error, {"attempt": attempt}, {"attempts": attempt, "deadline": deadline})

    changes = {"attempts": attempt, "last_error": result.error, "deadline": deadline}
    event = None
    if _is_milestone(attempt) or result.error != record.last_error:
        event = {"event": events.PROBING, "attempt": attempt, "error": result.error}
    return Reschedule(probe_countdown_s(attempt - 1, remaining_s), changes, event)


def hand_off(step_input: StepInput) -> Outcome:
    changes = {"status": Status.READY, "handed_off_at": step_input.now}
    event = {
        "event": events.PROVISIONED,
        "harness_url": step_input.record.harness_url,
        "workspace_path": step_input.record.workspace_path,
    }
    return Advance(Step.DONE, changes, event)


def _recreate(step_input: StepInput, deadline: datetime) -> Outcome:
    record = step_input.record
    recreate = getattr(step_input.backend, "recreate")
    workspace = recreate(record, step_input.secrets)
    changes = {
        "handle": workspace.handle,
        "harness_url": workspace.harness_url,
        "port_retries": record.port_retries + 1,
        "deadline": deadline,
    }
    event = {"event": events.RECREATED, "harness_url": workspace.harness_url, "handle": workspace.handle}
    return Reschedule(0.0, changes, event)


def _workspace_stopped(record: ProvisionRecord, inspection: Inspection, when: str) -> Fail:
    if inspection.state is RunState.GONE:
        return Fail(FailureReason.WORKSPACE_EXITED, f"{subject(record)}: the workspace disappeared {when}")
    if inspection.exit_code is None:
        return Fail(FailureReason.WORKSPACE_EXITED, f"{subject(record)}: stopped {when}: {inspection.log_tail}")

    error = f"{subject(record)}: exited with code {inspection.exit_code} {when}"
    if inspection.log_tail:
        error += "; last log lines:\n" + inspection.log_tail
    return Fail(FailureReason.WORKSPACE_EXITED, error, {"exit_code": inspection.exit_code})


def timeout_message(record: ProvisionRecord, attempts: int, last_error: str) -> str:
    return (
        f"{subject(record)}: harnessd at {record.harness_url} never became ready within "
        f"{record.ready_timeout_s:g}s ({attempts} attempts; last error: {last_error})"
    )


def _is_milestone(attempt: int) -> bool:
    return attempt & (attempt - 1) == 0


HANDLERS: dict[Step, Callable[[StepInput], Outcome]] = {
    Step.CREATE: create,
    Step.WAIT_RUNNING: wait_running,
    Step.PROBE_HEALTHZ: probe,
    Step.HAND_OFF: hand_off,
}
