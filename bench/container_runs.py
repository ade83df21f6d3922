"""
Container workspaces: how long after harnessd starts serving each approach notices it.

Each container is the harnessd stand-in (`simulators.harnessd_image`) with a
boot delay; the delays are spread evenly over a range. Runs go in batches that
start together, and each batch takes every n-th delay, so all batches span the
whole range. For each run, in Unix seconds:

* serving_at: when the container's port first listened (`bench.serving`);
* ready_at: for the chain, the record's ready_at, which the probe step stamps
  right after its successful GET; for the baseline, the time stamped right
  after its successful GET;
* handed_off_at: for the chain, the record's handed_off_at; for the
  baseline, the time its task returned.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from docker.models.containers import Container

from bench import baseline
from bench.local_runs import RunFailed, count_resumed_steps
from bench.serving import ListenWatcher, serving_log_time
from bench.services import progress
from bench.session import Session
from workers.backends.container import LABEL_PORT, LABEL_PROVISION
from workers.backends.names import id_digest
from workflows.model import ProvisionRequest, Status, WorkspaceType

# Seconds one container provision may take before the benchmark gives up on it.
RUN_TIMEOUT_S = 120.0

# A boot delay, or any value that describes one run's delays.
DelayT = TypeVar("DelayT")


@dataclasses.dataclass(frozen=True)
class Readiness:
    """The readiness one approach reported for one run: times in Unix seconds, probe attempts and re-sent steps."""

    ready_at: float
    handed_off_at: float
    probe_attempts: int
    # Steps the reconciler sent again (`workspace.step_resumed` events); always 0 for the baseline.
    resumed_steps: int = 0


@dataclasses.dataclass(frozen=True)
class ContainerRun:
    """The timings of one container run, in Unix seconds."""

    run_id: str
    boot_delay_s: float
    serving_at: float
    log_line_at: float | None
    readiness: Readiness

    @property
    def detection_ms(self) -> float:
        return (self.readiness.ready_at - self.serving_at) * 1000

    @property
    def hand_off_ms(self) -> float:
        return (self.readiness.handed_off_at - self.serving_at) * 1000

    @property
    def log_line_lead_ms(self) -> float | None:
        """How long the "serving on" log line came before the port listened."""
        return None if self.log_line_at is None else (self.serving_at - self.log_line_at) * 1000


# Starts a batch of (run id, boot delay) runs at once, waits for all, and returns their readiness by run id.
RunBatch = Callable[[Session, Sequence[tuple[str, float]]], dict[str, Readiness]]


def boot_delays(count: int, low_s: float, high_s: float) -> list[float]:
    """Return `count` delays spread evenly from `low_s` to `high_s` inclusive."""
    if count == 1:
        return [low_s]
    return [low_s + (high_s - low_s) * index / (count - 1) for index in range(count)]


def split_batches(delays: Sequence[DelayT], batch_size: int) -> list[list[DelayT]]:
    """Split `delays` into batches of at most `batch_size`, each taking every n-th delay."""
    count = math.ceil(len(delays) / batch_size)
    return [list(delays[index::count]) for index in range(count)]


def measure_containers(session: Session, name: str, run_batch: RunBatch, delays: Sequence[float], batch_size: int) -> list[ContainerRun]:
    """Run one container per delay through `run_batch`, in batches, and time each against its serving moment."""
    runs: list[ContainerRun] = []
    with ListenWatcher() as watcher:
        for batch_index, batch_delays in enumerate(split_batches(delays, batch_size)):
            progress(f"{name}: batch {batch_index + 1}, {len(batch_delays)} containers at once")
            started_at = time.time()
            batch = [(session.run_id(name, batch_index, index), delay) for index, delay in enumerate(batch_delays)]

            readiness = run_batch(session, batch)

            for run_id, delay in batch:
                runs.append(_container_run(session, watcher, run_id, delay, started_at, readiness[run_id]))
            session.remove_containers()
    return runs


def run_chain_batch(session: Session, batch: Sequence[tuple[str, float]]) -> dict[str, Readiness]:
    for run_id, delay in batch:
        request = ProvisionRequest(id=run_id, type=WorkspaceType.CONTAINER, image=session.image)
        # Secrets are the container's environment; the boot delay is not secret, but it travels the same way.
        session.provisioner.submit(request, secrets={"HARNESSD_BOOT_DELAY": f"{delay:.3f}"})

    readiness = {}
    for run_id, _delay in batch:
        record = session.provisioner.wait(run_id, timeout_s=RUN_TIMEOUT_S)
        if record.status is not Status.READY or record.ready_at is None or record.handed_off_at is None:
            raise RunFailed(f"container provision {run_id} is {record.status.value}: {record.last_error or 'no error recorded'}")
        resumed = count_resumed_steps(session.store, run_id)
        readiness[run_id] = Readiness(record.ready_at.timestamp(), record.handed_off_at.timestamp(), record.attempts, resumed)
    return readiness


def run_baseline_batch(session: Session, batch: Sequence[tuple[str, float]]) -> dict[str, Readiness]:
    for run_id, delay in batch:
        baseline.provision_container.apply_async(args=(run_id, session.image, delay))

    readiness = {}
    for run_id, _delay in batch:
        result = baseline.wait_result(session.blocking_client, run_id, RUN_TIMEOUT_S)
        if result is None or "ready_at" not in result:
            raise RunFailed(f"baseline container task {run_id} did not report ready within {RUN_TIMEOUT_S:g}s: {result}")
        readiness[run_id] = Readiness(float(result["ready_at"]), float(result["returned_at"]), int(result["attempts"]))
    return readiness


def _container_run(session: Session, watcher: ListenWatcher, run_id: str, delay: float, started_at: float, readiness: Readiness) -> ContainerRun:
    container = _container_of(session, run_id)
    port = int(container.labels[LABEL_PORT])
    serving_at = watcher.first_listen(port, after=started_at)
    if serving_at is None:
        raise RunFailed(f"port {port} of container {container.short_id} ({run_id}) was never seen listening")
    return ContainerRun(run_id, delay, serving_at, serving_log_time(container), readiness)


def _container_of(session: Session, run_id: str) -> Container:
    assert session.docker is not None
    containers = session.docker.containers.list(all=True, filters={"label": f"{LABEL_PROVISION}={id_digest(run_id)}"})
    if not containers:
        raise RunFailed(f"no container found for {run_id}")
    return containers[0]
