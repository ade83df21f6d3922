"""
Local workspaces: submit-to-hand-off latency, one provision at a time.

Each figure comes in two forms, both in milliseconds:

* record: for the chain, `handed_off_at - created_at` of the provision record,
  stored to the millisecond. `Provisioner.submit()` stamps created_at and the
  hand_off step stamps handed_off_at. For the baseline, the figure is the
  task's own end time minus the time stamped just before its message was sent;
* wall clock: from just before `Provisioner.submit()` until
  `Provisioner.wait()` returns the ready record. For the baseline, from just
  before `apply_async` until a BLPOP receives the task's report.

Runs go one after another, so no run waits behind another in a queue.
A chain run whose step the reconciler had to send again (a
`workspace.step_resumed` event) is counted, because it explains a slow run.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from bench import baseline
from bench.services import BenchError, progress
from bench.session import Session
from workflows import events
from workflows.model import ProvisionRequest, Status, WorkspaceType
from workflows.store import Store

# Seconds one local provision may take before the benchmark gives up on it.
RUN_TIMEOUT_S = 60.0


class RunFailed(BenchError):
    """A provision of the benchmark failed or timed out; the message names it."""


@dataclasses.dataclass(frozen=True)
class LocalRun:
    """The latencies of one local run in milliseconds, and the steps the reconciler sent again."""

    record_ms: float
    wall_ms: float
    resumed_steps: int = 0


@dataclasses.dataclass
class LocalTimings:
    """Latencies in milliseconds, one value per timed run."""

    record_ms: list[float] = dataclasses.field(default_factory=list)
    wall_ms: list[float] = dataclasses.field(default_factory=list)
    # Timed runs with at least one step sent again by the reconciler.
    resumed_runs: int = 0


# Makes one local provision with run id `run_id` and times it.
TimeOne = Callable[[Session, str], LocalRun]


def count_resumed_steps(store: Store, provision_id: str) -> int:
    """Return how many times the reconciler sent a step of `provision_id` again."""
    return sum(1 for _entry, fields in store.events(provision_id) if fields.get("event") == events.STEP_RESUMED)


def measure_local(session: Session, name: str, time_one: TimeOne, runs: int, warmup_runs: int) -> LocalTimings:
    """Make `warmup_runs` untimed then `runs` timed local provisions through `time_one`."""
    progress(f"{name}: {warmup_runs} warm-up runs, then {runs} timed runs")
    for index in range(warmup_runs):
        time_one(session, session.run_id(name, "warmup", index))

    timings = LocalTimings()
    for index in range(runs):
        run = time_one(session, session.run_id(name, index))
        timings.record_ms.append(run.record_ms)
        timings.wall_ms.append(run.wall_ms)
        if run.resumed_steps:
            timings.resumed_runs += 1
    return timings


def time_chain(session: Session, run_id: str) -> LocalRun:
    started = time.perf_counter()
    session.provisioner.submit(ProvisionRequest(id=run_id, type=WorkspaceType.LOCAL))
    record = session.provisioner.wait(run_id, timeout_s=RUN_TIMEOUT_S)
    wall_ms = (time.perf_counter() - started) * 1000

    if record.status is not Status.READY or record.created_at is None or record.handed_off_at is None:
        raise RunFailed(f"local provision {run_id} is {record.status.value} after {RUN_TIMEOUT_S:g}s: {record.last_error or 'no error recorded'}")
    record_ms = (record.handed_off_at - record.created_at).total_seconds() * 1000
    return LocalRun(record_ms, wall_ms, count_resumed_steps(session.store, run_id))


def time_baseline(session: Session, run_id: str) -> LocalRun:
    client = session.blocking_client
    submitted_at = time.time()
    started = time.perf_counter()
    baseline.provision_local.apply_async(args=(run_id,))
    result = baseline.wait_result(client, run_id, RUN_TIMEOUT_S)
    wall_ms = (time.perf_counter() - started) * 1000

    if result is None or "returned_at" not in result:
        raise RunFailed(f"baseline local task {run_id} did not report within {RUN_TIMEOUT_S:g}s: {result}")
    record_ms = (float(result["returned_at"]) - submitted_at) * 1000
    return LocalRun(record_ms, wall_ms)
