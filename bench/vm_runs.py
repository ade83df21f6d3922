"""
VM workspaces on hcloud-sim: how long after harnessd starts serving each approach notices it.

Each simulated server gets a boot delay (create to `running`) and a bootstrap
delay (`running` to its user_data, which starts harnessd), both set as
per-server faults by server name before the provision is submitted. Runs go in
batches that start together, as for containers (`bench.container_runs`). For
each run, in Unix seconds:

* serving_at: when port 8080 of the server's own loopback address first
  listened (`bench.serving`);
* ready_at and handed_off_at: as for containers, from the chain's record or
  from the baseline task's report.

After each batch its servers are removed through the simulator's admin API
(vanish). That costs no API budget, and it returns once the server's processes
are gone, so the next batch may reuse the addresses.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from bench import baseline
from bench.container_runs import RUN_TIMEOUT_S, Readiness, boot_delays, split_batches
from bench.local_runs import RunFailed, count_resumed_steps
from bench.serving import ListenWatcher
from bench.services import HcloudSimulator, progress
from bench.session import Session
from workers.backends.vm import HARNESS_PORT, server_name
from workflows.model import ProvisionRequest, Status, WorkspaceType


@dataclasses.dataclass(frozen=True)
class VmDelays:
    """The simulated delays of one server, in seconds."""

    boot_s: float
    bootstrap_s: float


@dataclasses.dataclass(frozen=True)
class VmOutcome:
    """The report of one approach for one server: its harnessd URL and its readiness."""

    harness_url: str
    readiness: Readiness


@dataclasses.dataclass(frozen=True)
class VmRun:
    """The timings of one VM run, in Unix seconds."""

    run_id: str
    delays: VmDelays
    serving_at: float
    readiness: Readiness

    @property
    def detection_ms(self) -> float:
        return (self.readiness.ready_at - self.serving_at) * 1000

    @property
    def hand_off_ms(self) -> float:
        return (self.readiness.handed_off_at - self.serving_at) * 1000


@dataclasses.dataclass(frozen=True)
class VmPhase:
    """The runs of one approach and the Hetzner API requests they made (from `/_sim/stats`)."""

    runs: list[VmRun]
    api_requests: int
    rate_limited: int


# Starts a batch of runs at once, waits for all, and returns their outcomes by run id.
RunBatch = Callable[[Session, Sequence[str]], dict[str, VmOutcome]]


def vm_delays(count: int, boot_range_s: tuple[float, float], bootstrap_range_s: tuple[float, float]) -> list[VmDelays]:
    """
    Return `count` pairs of delays, each kind spread evenly over its range.

    The boot delays are paired with the bootstrap delays in a shuffled order
    (fixed seed, so every run of the benchmark uses the same pairs), so that
    neither kind of delay follows the other.
    """
    boots = boot_delays(count, *boot_range_s)
    random.Random(0).shuffle(boots)
    return [VmDelays(boot, bootstrap) for boot, bootstrap in zip(boots, boot_delays(count, *bootstrap_range_s))]


def measure_vms(session: Session, name: str, run_batch: RunBatch, delays: Sequence[VmDelays], batch_size: int) -> VmPhase:
    """Run one server per entry of `delays` through `run_batch`, in batches, and time each against its serving moment."""
    simulator = session.simulator
    requests_before = simulator.admin("GET", "/stats")["requests"]
    runs: list[VmRun] = []

    with ListenWatcher() as watcher:
        for batch_index, batch_delays in enumerate(split_batches(delays, batch_size)):
            progress(f"{name}: batch {batch_index + 1}, {len(batch_delays)} servers at once")
            batch = {session.run_id(name, batch_index, index): delay for index, delay in enumerate(batch_delays)}
            for run_id, delay in batch.items():
                _set_delays(simulator, run_id, delay)
            started_at = time.time()

            outcomes = run_batch(session, list(batch))

            for run_id, delay in batch.items():
                runs.append(_vm_run(watcher, run_id, delay, started_at, outcomes[run_id]))
            _remove_servers(simulator)

    requests_after = simulator.admin("GET", "/stats")["requests"]
    return VmPhase(
        runs,
        requests_after["total"] - requests_before["total"],
        requests_after["rate_limited"] - requests_before["rate_limited"],
    )


def run_chain_batch(session: Session, run_ids: Sequence[str]) -> dict[str, VmOutcome]:
    for run_id in run_ids:
        session.provisioner.submit(ProvisionRequest(id=run_id, type=WorkspaceType.VM))

    outcomes = {}
    for run_id in run_ids:
        record = session.provisioner.wait(run_id, timeout_s=RUN_TIMEOUT_S)
        if record.status is not Status.READY or record.ready_at is None or record.handed_off_at is None:
            raise RunFailed(f"VM provision {run_id} is {record.status.value}: {record.last_error or 'no error recorded'}")
        resumed = count_resumed_steps(session.store, run_id)
        readiness = Readiness(record.ready_at.timestamp(), record.handed_off_at.timestamp(), record.attempts, resumed)
        outcomes[run_id] = VmOutcome(record.harness_url, readiness)
    return outcomes


def run_baseline_batch(session: Session, run_ids: Sequence[str]) -> dict[str, VmOutcome]:
    for run_id in run_ids:
        baseline.provision_vm.apply_async(args=(run_id,))

    outcomes = {}
    for run_id in run_ids:
        result = baseline.wait_result(session.blocking_client, run_id, RUN_TIMEOUT_S)
        if result is None or "ready_at" not in result:
            raise RunFailed(f"baseline VM task {run_id} did not report ready within {RUN_TIMEOUT_S:g}s: {result}")
        readiness = Readiness(float(result["ready_at"]), float(result["returned_at"]), int(result["attempts"]))
        outcomes[run_id] = VmOutcome(result["harness_url"], readiness)
    return outcomes


def _set_delays(simulator: HcloudSimulator, run_id: str, delays: VmDelays) -> None:
    name = server_name(run_id)
    simulator.admin("POST", "/faults", {"kind": "boot_delay", "seconds": delays.boot_s, "name": name})
    simulator.admin("POST", "/faults", {"kind": "bootstrap_delay", "seconds": delays.bootstrap_s, "name": name})


def _vm_run(watcher: ListenWatcher, run_id: str, delays: VmDelays, started_at: float, outcome: VmOutcome) -> VmRun:
    address = urlsplit(outcome.harness_url).hostname
    if not address:
        raise RunFailed(f"VM provision {run_id} reported no harnessd address (harness URL {outcome.harness_url!r})")
    serving_at = watcher.first_listen(HARNESS_PORT, after=started_at, address=address)
    if serving_at is None:
        raise RunFailed(f"harnessd of {run_id} was never seen listening on {address}:{HARNESS_PORT}")
    return VmRun(run_id, delays, serving_at, outcome.readiness)


def _remove_servers(simulator: HcloudSimulator) -> None:
    """Remove every server of the simulator and its delay faults."""
    servers: list[dict[str, Any]] = simulator.admin("GET", "/stats")["alive_servers"]
    for server in servers:
        simulator.admin("POST", f"/servers/{server['id']}/vanish")
    simulator.admin("DELETE", "/faults")
