"""
Running one step message: fencing, the lease, the handler, then the commit.

Every step message carries `(provision_id, fence)`. A step runs only if the
record still has that fence and names that step, and only while its worker
holds the provision's lease (renewed in the background, so a killed worker
loses it within `LEASE_TTL_S`). A copy that finds the fence moved on exits
without side effects. A copy that finds the lease taken tries again when the
lease would expire. The handler's outcome is committed with the fence and the
lease in one Redis script, and only then is the next message sent. If the
worker dies between the commit and the send, the reconciler
(`workers.reconciler`) sends the message again once its due time has passed.

Retry policy, in one place:

* probe_healthz: not ready -> again after 0.1, 0.2, 0.4, then at most 0.5 s
  (jittered), until the readiness deadline; see `workflows.policy`.
* wait_running: starting -> again after a countdown doubling from the
  backend's `running_poll_base_s` to its `running_poll_cap_s` (containers 0.1 to
  2 s, VMs 0.5 to 3 s), for at most its `running_timeout_s` (60 s, 300 s).
* BackendUnavailable (Docker engine or Hetzner API unreachable, locked, 5xx) ->
  the same step again after 1, 2, 4, 8, 16 s; the sixth error in a row fails the
  provision, and so does any error once the probe's deadline has passed. A
  destroy step never gives up: it goes on retrying every 60 s at most.
* RateLimited (Hetzner's request budget used up) -> the same step again when
  the budget allows; this never fails a provision by itself.
* a step that started `MAX_STEP_STARTS` times without finishing killed its
  worker each time: the provision fails with reason worker_lost.
* any other error fails the provision at once.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from celery.utils.log import get_task_logger

from workers import handlers
from workers.backends import backend_for
from workers.handlers import Advance, Fail, Outcome, Reschedule, StepInput
from workflows import events
from workflows.errors import BackendError, ProvisionNotFound, RateLimited, is_transient
from workflows.model import FailureReason, ProvisionRecord, Status, Step, utc_now
from workflows.policy import LEASE_TTL_S, MAX_COUNTDOWN_S, MAX_STEP_STARTS, MAX_TRANSIENT_RETRIES, backoff_s
from workflows.store import Store

logger = get_task_logger(__name__)

# Countdown between two checks that a workspace being deleted (a Hetzner server) is gone.
DESTROY_POLL_S = 1.0

# Sends the message of `step` for a provision: (step, provision_id, fence, countdown_s).
Enqueue = Callable[[Step, str, int, float], None]


@dataclasses.dataclass(frozen=True)
class StepMessage:
    """The arguments of one step message."""

    step: Step
    provision_id: str
    fence: int


@dataclasses.dataclass(frozen=True)
class Finished:
    """run_step's result when the message is done with (ran, or was stale)."""

    committed: bool


@dataclasses.dataclass(frozen=True)
class TryLater:
    """run_step's result when another worker holds the lease: deliver this message again later."""

    countdown_s: float


class LeaseKeeper:
    """Renews a step's lease in a background thread until the step ends."""

    def __init__(self, store: Store, provision_id: str, token: str) -> None:
        self.store = store
        self.provision_id = provision_id
        self.token = token
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{provision_id[:20]}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stopped.set()
        self._thread.join(timeout=LEASE_TTL_S)

    def _renew(self) -> None:
        while not self._stopped.wait(LEASE_TTL_S / 3):
            try:
                self.store.renew_lease(self.provision_id, self.token, LEASE_TTL_S)
            except Exception:  # a lost renewal only shortens the lease; the commit checks it
                logger.warning("Provision %s: cannot renew lease", self.provision_id, exc_info=True)


def run_step(store: Store, message: StepMessage, enqueue: Enqueue, send_continuation: Callable[[ProvisionRecord], None]) -> Finished | TryLater:
    """Run one step message to its commit; see the module docstring for the rules."""
    token = uuid.uuid4().hex
    begin = store.begin_step(message.provision_id, message.step, message.fence, token, LEASE_TTL_S)
    if begin.outcome in ("missing", "stale"):
        logger.debug("Provision %s: %s message with fence %d is %s; dropped", message.provision_id, message.step.value, message.fence, begin.outcome)
        return Finished(committed=False)
    if begin.outcome == "leased":
        return TryLater(max(0.2, begin.value / 1000))

    try:
        with LeaseKeeper(store, message.provision_id, token):
            record = store.get(message.provision_id)
            if begin.value > MAX_STEP_STARTS:
                outcome: Outcome = _worker_lost(record, begin.value)
            else:
                outcome = _outcome(store, record, message.step, send_continuation)
            return Finished(_apply(store, record, message, token, outcome, enqueue))
    finally:
        store.release_lease(message.provision_id, token)


def _outcome(store: Store, record: ProvisionRecord, step: Step, send_continuation: Callable[[ProvisionRecord], None]) -> Outcome:
    logger.debug("Provision %s: %s starts (attempt %d)", record.id, step.value, record.attempts + 1)
    try:
        if step is Step.DESTROY:
            return _destroy(store, record)
        secrets = store.get_secrets(record.id) if step is Step.CREATE or step is Step.PROBE_HEALTHZ else {}
        step_input = StepInput(record=record, backend=backend_for(record.type), now=utc_now(), secrets=secrets)
        outcome = handlers.HANDLERS[step](step_input)
        if step is Step.HAND_OFF and record.continuation:
            # NOTE: the continuation is sent before the commit. A worker killed between the
            # two sends it again on redelivery, so a run may, rarely, receive two hand-offs.
            send_continuation(record)
        return outcome
    except BackendError as exc:
        return _backend_failure(record, step, exc)
    except Exception as exc:
        logger.error("Provision %s: unexpected error in step %s", record.id, step.value, exc_info=True)
        return Fail(FailureReason.BACKEND_ERROR, f"{handlers.subject(record)}: unexpected error in step {step.value}: {exc!r}"[:2000])


def _backend_failure(record: ProvisionRecord, step: Step, exc: BackendError) -> Outcome:
    if step is Step.PROBE_HEALTHZ and record.deadline is not None and utc_now() >= record.deadline:
        error = handlers.timeout_message(record, record.attempts, str(exc))
        return Fail(FailureReason.READY_TIMEOUT, error, {"attempt": record.attempts})
    if isinstance(exc, RateLimited):
        logger.info("Provision %s: %s waits %.1fs for the API rate limit", record.id, step.value, exc.retry_after_s)
        return Reschedule(exc.retry_after_s, {"last_error": str(exc)})
    # A workspace that cannot be released yet costs money or disk, so destroy never gives up on a transient error.
    if is_transient(exc) and (record.transient_errors < MAX_TRANSIENT_RETRIES or step is Step.DESTROY):
        return _retry_transient(record, step, exc)
    return Fail(FailureReason.BACKEND_ERROR, f"{handlers.subject(record)}: {exc}")


def _retry_transient(record: ProvisionRecord, step: Step, exc: BackendError) -> Reschedule:
    countdown = backoff_s(record.transient_errors, 1.0, MAX_COUNTDOWN_S, jitter=lambda: 1.0)
    if step is not Step.DESTROY:
        countdown = min(countdown, 16.0)
    logger.warning("Provision %s: %s failed (%s); retrying in %.0fs", record.id, step.value, exc, countdown)
    event = {"event": events.STEP_RETRYING, "error": str(exc), "countdown_s": countdown, "attempt": record.transient_errors + 1}
    return Reschedule(countdown, {"transient_errors": record.transient_errors + 1, "last_error": str(exc)}, event)


def _destroy(store: Store, record: ProvisionRecord) -> Outcome:
    if not backend_for(record.type).destroy(record):
        return Reschedule(DESTROY_POLL_S, {})
    if record.status is not Status.FAILED:
        # A failed provision keeps its secrets so that `provisioner retry` can make the workspace again.
        store.delete_secrets(record.id)
    return Advance(Step.DONE, {"destroyed_at": utc_now()}, {"event": events.DESTROYED, "handle": record.handle})


def _worker_lost(record: ProvisionRecord, starts: int) -> Fail:
    error = (
        f"{handlers.subject(record)}: step {record.step.value} started {starts - 1} times "
        "and its worker was lost each time"
    )
    return Fail(FailureReason.WORKER_LOST, error)


def _apply(store: Store, record: ProvisionRecord, message: StepMessage, token: str, outcome: Outcome, enqueue: Enqueue) -> bool:
    now = utc_now()
    base = {"step_starts": 0}
    if isinstance(outcome, Advance):
        changes = {**base, "transient_errors": 0, **outcome.changes, "step": outcome.step, "due_at": now}
        new_fence = _commit(store, record, message, token, changes, outcome.event)
        _log_advance(record, message.step, outcome, new_fence)
        if new_fence is not None and outcome.step is not Step.DONE:
            enqueue(outcome.step, record.id, new_fence, 0.0)
        return new_fence is not None

    if isinstance(outcome, Reschedule):
        outcome = dataclasses.replace(outcome, countdown_s=min(outcome.countdown_s, MAX_COUNTDOWN_S))
        due = now + timedelta(seconds=outcome.countdown_s)
        changes = {**base, **outcome.changes, "due_at": due}
        new_fence = _commit(store, record, message, token, changes, outcome.event)
        logger.debug("Provision %s: %s again in %.2fs (%s)", record.id, message.step.value, outcome.countdown_s, outcome.changes.get("last_error", ""))
        if new_fence is not None:
            enqueue(message.step, record.id, new_fence, outcome.countdown_s)
        return new_fence is not None

    return _apply_failure(store, record, message, token, outcome, enqueue)


def _apply_failure(store: Store, record: ProvisionRecord, message: StepMessage, token: str, outcome: Fail, enqueue: Enqueue) -> bool:
    if message.step is Step.DESTROY:
        logger.error("Provision %s: destroy failed: %s", record.id, outcome.error)
        changes: dict[str, Any] = {"step_starts": 0, "last_error": outcome.error, "step": Step.DONE}
        event = {"event": events.DESTROY_FAILED, "error": outcome.error}
        return _commit(store, record, message, token, changes, event) is not None

    keep = record.keep_on_failure
    after = Step.DONE if keep else Step.DESTROY
    changes = {
        **outcome.changes,
        "status": Status.FAILED,
        "step": after,
        "failed_step": message.step,
        "failure_reason": outcome.reason,
        "last_error": outcome.error,
        "failed_at": utc_now(),
        "due_at": utc_now(),
        "step_starts": 0,
    }
    event = {"event": events.PROVISION_FAILED, "reason": outcome.reason, "error": outcome.error, **outcome.event_fields}
    new_fence = _commit(store, record, message, token, changes, event)
    if new_fence is None:
        return False

    logger.warning("Provision %s: failed in %s: %s", record.id, message.step.value, outcome.error)
    if not keep:
        enqueue(Step.DESTROY, record.id, new_fence, 0.0)
    return True


def _commit(store: Store, record: ProvisionRecord, message: StepMessage, token: str, changes: Mapping[str, Any], event: Mapping[str, Any] | None) -> int | None:
    full_event = None
    if event:
        full_event = {"at": utc_now(), "provision_id": record.id, "type": record.type, "step": message.step, **event}
        full_event = {"event": full_event.pop("event"), **full_event}
    try:
        # The commit releases the lease too, so the next step never finds it still held.
        new_fence = store.commit(record.id, message.fence, changes, full_event, lease_token=token, release=True)
    except ProvisionNotFound:
        return None
    if new_fence is None:
        logger.info("Provision %s: %s result dropped; the provision moved on (cancelled or retried)", record.id, message.step.value)
        _clean_up_after_stale_create(store, record, message)
    return new_fence


def _clean_up_after_stale_create(store: Store, record: ProvisionRecord, message: StepMessage) -> None:
    """Destroy what a create made if the provision was cancelled and released while it ran."""
    if message.step is not Step.CREATE:
        return
    current = store.find(record.id)
    if current is not None and current.destroyed_at is not None:
        logger.info("Provision %s: destroying the workspace a cancelled create made", record.id)
        backend_for(record.type).destroy(current)


def _log_advance(record: ProvisionRecord, step: Step, outcome: Advance, new_fence: int | None) -> None:
    if new_fence is None:
        return
    logger.info("Provision %s: %s done (%s), next %s", record.id, step.value, outcome.event.get("event"), outcome.step.value)
