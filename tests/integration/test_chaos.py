"""
Chaos: 50 mixed provisions while a driver SIGKILLs a random worker every few seconds.

The run submits local, container and VM provisions over its first half minute.
Some containers boot slowly, some never serve, some VMs never start harnessd
(the simulator's `broken_bootstrap` fault), and a few provisions are cancelled
while in flight. All have short readiness deadlines. Meanwhile the driver keeps
three workers up, kills a random one (its whole process group, as the OOM
killer or a lost host would) every 3 to 6 seconds and starts a replacement.
After the chaos it keeps the workers up until every provision has settled.

The checks read only Redis (records, event streams, the hand-off recorder's
lists), the Docker engine and the simulator's stats, never a log. The driver
(`run_chaos`) and the checks (`find_violations`) are plain functions, so
`bench.recovery` runs the same chaos and reports its counts.

Set CHAOS_SEED to replay a run's plan and kill order. The test prints the
seed at its start, and pytest shows that output when the test fails. Timing
still differs between runs, so a replay is not exact.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

import docker
import docker.errors
import pytest

from tests.hcloud_sim.support import RunningSimulator
from tests.integration.conftest import handoffs
from tests.integration.handoff_recorder import record_hand_off
from workers.backends.container import LABEL_PROVISION_ID
from workers.backends.vm import LABEL_PROVISION, provision_label
from workers.runner import Provisioner
from workflows import events
from workflows.errors import InvalidTransition
from workflows.model import FailureReason, ProvisionRecord, ProvisionRequest, Status, Step, WorkspaceType
from workflows.store import Store

CHAOS_SEED_ENV = "CHAOS_SEED"
TERMINAL_EVENTS = (events.PROVISIONED, events.PROVISION_FAILED, events.CANCELLED)
# Seconds the run waits, after every provision settled, for the hand-off recorder to run.
HANDOFF_WAIT_S = 15.0
# Seconds between two counts of the containers and servers each provision owns.
SAMPLE_INTERVAL_S = 0.5


@dataclasses.dataclass(frozen=True)
class ChaosPlan:
    """The size and pace of a chaos run: provisions, their submission window, the kill period and its pace."""

    provision_count: int = 50
    # Provisions are submitted at random moments in the first `submit_window_s` seconds.
    submit_window_s: float = 30.0
    # Workers are killed until this many seconds after the first submission.
    chaos_s: float = 60.0
    worker_count: int = 3
    # Seconds from one kill to the next, drawn uniformly; a kill waits for the previous replacement to be ready.
    kill_interval_s: tuple[float, float] = (3.0, 6.0)
    # Seconds after the chaos within which every provision must settle.
    settle_timeout_s: float = 90.0


@dataclasses.dataclass(frozen=True)
class Kind:
    """One kind of provision in the mix, with the ranges its parameters are drawn from."""

    name: str
    workspace_type: WorkspaceType
    # How many of every 50 provisions are of this kind.
    share: int
    ready_timeout_s: tuple[float, float] = (15.0, 20.0)
    # Containers only: HARNESSD_MODE and HARNESSD_BOOT_DELAY of the harnessd stand-in.
    harnessd_mode: str = "serve"
    boot_delay_s: tuple[float, float] = (0.0, 0.0)
    # VMs only: the simulator never runs the server's user_data, so harnessd never starts.
    broken_bootstrap: bool = False
    # Seconds after its submission when the provision is cancelled, drawn uniformly; None for no cancel.
    cancel_after_s: tuple[float, float] | None = None

    @property
    def can_become_ready(self) -> bool:
        return self.harnessd_mode == "serve" and not self.broken_bootstrap and self.cancel_after_s is None


KINDS = (
    Kind("local", WorkspaceType.LOCAL, share=10),
    Kind("container-quick", WorkspaceType.CONTAINER, share=8, boot_delay_s=(0.0, 2.0)),
    Kind("container-slow", WorkspaceType.CONTAINER, share=6, ready_timeout_s=(12.0, 20.0), boot_delay_s=(3.0, 6.0)),
    Kind("container-never", WorkspaceType.CONTAINER, share=6, ready_timeout_s=(8.0, 12.0), harnessd_mode="never"),
    Kind("vm", WorkspaceType.VM, share=10),
    Kind("vm-broken", WorkspaceType.VM, share=5, ready_timeout_s=(8.0, 12.0), broken_bootstrap=True),
    Kind("container-cancelled", WorkspaceType.CONTAINER, share=3, ready_timeout_s=(20.0, 20.0), harnessd_mode="never", cancel_after_s=(2.0, 8.0)),
    Kind("vm-cancelled", WorkspaceType.VM, share=2, ready_timeout_s=(20.0, 20.0), broken_bootstrap=True, cancel_after_s=(2.0, 8.0)),
)


@dataclasses.dataclass(frozen=True)
class PlannedProvision:
    """One provision of the run: what is submitted, when, and whether it is cancelled."""

    kind: Kind
    request: ProvisionRequest
    secrets: dict[str, str]
    submit_at_s: float
    cancel_at_s: float | None

    @property
    def id(self) -> str:
        return self.request.id


class ChaosWorker(Protocol):
    """A worker the driver can kill: SIGKILL to its whole process group."""

    def kill(self) -> None: ...


@dataclasses.dataclass
class ChaosRun:
    """What a chaos run did and left behind, read from Redis, Docker and the simulator."""

    seed: int
    planned: list[PlannedProvision]
    # Seconds after the first submission at which a worker was killed.
    kill_times_s: list[float]
    # Provision ids whose cancel was accepted (a cancel that came after the end is rejected).
    cancelled_ids: set[str]
    records: dict[str, ProvisionRecord]
    event_names: dict[str, list[str]]
    handoff_counts: dict[str, int]
    # The maximum count of containers and of servers each provision owned at one sample, and the counts at the end.
    max_containers: collections.Counter[str]
    max_servers: collections.Counter[str]
    final_containers: collections.Counter[str]
    final_servers: collections.Counter[str]
    servers_created: int

    @property
    def vm_count(self) -> int:
        return sum(1 for planned in self.planned if planned.kind.workspace_type is WorkspaceType.VM)


@dataclasses.dataclass(frozen=True)
class Violations:
    """Ids of the provisions that break each rule of a chaos run; every list is empty in a correct run."""

    unsettled: list[str]
    not_one_terminal_event: list[str]
    status_disagrees_with_event: list[str]
    ready_without_hand_off: list[str]
    duplicated_hand_off: list[str]
    several_containers: list[str]
    several_servers: list[str]
    ready_without_workspace: list[str]
    not_destroyed: list[str]
    leaked_containers: list[str]
    leaked_servers: list[str]
    failed_before_deadline: list[str]
    unexpected_failure_reason: list[str]
    worker_lost: list[str]
    ready_but_never_serving: list[str]
    local_not_ready: list[str]
    cancelled_without_request: list[str]


def chaos_seed() -> int:
    """Return CHAOS_SEED from the environment, or a fresh random seed."""
    text = os.environ.get(CHAOS_SEED_ENV)
    return int(text) if text else random.SystemRandom().randrange(2**32)


def plan_provisions(rng: random.Random, plan: ChaosPlan, image: str) -> list[PlannedProvision]:
    """Draw the provisions of a run: kinds in proportion to their shares, in random order and at random times."""
    pool = [kind for kind in KINDS for _ in range(kind.share)]
    kinds = [pool[index * len(pool) // plan.provision_count] for index in range(plan.provision_count)]
    rng.shuffle(kinds)
    # Lowercase letters, digits and '-', so that a VM's server name is its provision id.
    run_tag = uuid.UUID(int=rng.getrandbits(128)).hex[:6]

    planned = []
    for index, kind in enumerate(kinds):
        request = ProvisionRequest(
            id=f"chaos-{run_tag}-{index:02d}-{kind.name}",
            type=kind.workspace_type,
            image=image if kind.workspace_type is WorkspaceType.CONTAINER else "",
            ready_timeout_s=round(rng.uniform(*kind.ready_timeout_s), 1),
            continuation=dict(record_hand_off.s()),
        )
        secrets = {}
        if kind.workspace_type is WorkspaceType.CONTAINER:
            secrets = {"HARNESSD_MODE": kind.harnessd_mode, "HARNESSD_BOOT_DELAY": f"{rng.uniform(*kind.boot_delay_s):.1f}"}
        submit_at_s = rng.uniform(0.0, plan.submit_window_s)
        cancel_at_s = submit_at_s + rng.uniform(*kind.cancel_after_s) if kind.cancel_after_s else None
        planned.append(PlannedProvision(kind, request, secrets, submit_at_s, cancel_at_s))
    return planned


class OwnershipSampler:
    """Counts the containers and servers each provision of the run owns, and keeps each provision's maximum."""

    def __init__(self, docker_client: docker.DockerClient, sim: RunningSimulator, provision_ids: Iterable[str]) -> None:
        self.docker_client = docker_client
        self.sim = sim
        self.provision_ids = set(provision_ids)
        self.ids_by_server_label = {provision_label(provision_id): provision_id for provision_id in self.provision_ids}
        self.max_containers: collections.Counter[str] = collections.Counter()
        self.max_servers: collections.Counter[str] = collections.Counter()

    def sample(self) -> tuple[collections.Counter[str], collections.Counter[str]]:
        """Count what each provision owns now, update the maxima, and return the counts (containers, servers)."""
        # The low-level list carries the labels, so one request covers every container.
        listed = self.docker_client.api.containers(all=True, filters={"label": LABEL_PROVISION_ID})
        containers = collections.Counter(
            owner for item in listed if (owner := (item.get("Labels") or {}).get(LABEL_PROVISION_ID)) in self.provision_ids
        )
        servers = collections.Counter(
            self.ids_by_server_label[label]
            for server in self.sim.stats()["alive_servers"]
            if (label := server["labels"].get(LABEL_PROVISION)) in self.ids_by_server_label
        )
        self.max_containers |= containers
        self.max_servers |= servers
        return containers, servers


class Submitter(threading.Thread):
    """Submits and cancels the planned provisions at their times, in a thread of its own."""

    def __init__(self, provisioner: Provisioner, sim: RunningSimulator, planned: Sequence[PlannedProvision], started_at: float) -> None:
        super().__init__(name="chaos-submitter", daemon=True)
        self.provisioner = provisioner
        self.sim = sim
        self.started_at = started_at
        self.actions = sorted(
            [(item.submit_at_s, "submit", item) for item in planned]
            + [(item.cancel_at_s, "cancel", item) for item in planned if item.cancel_at_s is not None],
            key=lambda action: action[0],
        )
        self.submitted: set[str] = set()
        self.cancelled: set[str] = set()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for at_s, action, item in self.actions:
                time.sleep(max(0.0, self.started_at + at_s - time.monotonic()))
                if action == "submit":
                    self._submit(item)
                else:
                    self._cancel(item)
        except BaseException as exc:  # re-raised by the driver after join()
            self.error = exc

    def _submit(self, item: PlannedProvision) -> None:
        if item.kind.broken_bootstrap:
            self.sim.add_fault(kind="broken_bootstrap", name=item.id)
        self.provisioner.submit(item.request, secrets=item.secrets)
        self.submitted.add(item.id)

    def _cancel(self, item: PlannedProvision) -> None:
        try:
            self.provisioner.cancel(item.id)
        except InvalidTransition:
            return  # it ended before the cancel came; the checks accept its end state
        self.cancelled.add(item.id)


def run_chaos(
    plan: ChaosPlan,
    seed: int,
    planned: list[PlannedProvision],
    provisioner: Provisioner,
    start_worker: Callable[[], ChaosWorker],
    docker_client: docker.DockerClient,
    sim: RunningSimulator,
) -> ChaosRun:
    """
    Submit `planned` under the chaos of `plan` and return what the run left.

    `seed` also draws the kill order. `start_worker` starts one worker and
    returns once it is ready; the caller stops the workers left running. The
    simulator is reset first, so its server counts cover only this run.
    """
    rng = random.Random(f"{seed}-kills")
    assert sim.admin("POST", "/reset").status_code == 200
    sampler = OwnershipSampler(docker_client, sim, (item.id for item in planned))
    workers = [start_worker() for _ in range(plan.worker_count)]

    started_at = time.monotonic()
    submitter = Submitter(provisioner, sim, planned, started_at)
    submitter.start()
    kill_times_s = _kill_workers(plan, rng, workers, start_worker, sampler, started_at)
    submitter.join()
    if submitter.error is not None:
        raise submitter.error

    _wait_settled(provisioner.store, [item.id for item in planned], plan.settle_timeout_s, sampler)
    _wait_handed_off(provisioner.store, [item.id for item in planned])
    return _collect(seed, planned, kill_times_s, submitter.cancelled, provisioner.store, sampler)


def _kill_workers(
    plan: ChaosPlan,
    rng: random.Random,
    workers: list[ChaosWorker],
    start_worker: Callable[[], ChaosWorker],
    sampler: OwnershipSampler,
    started_at: float,
) -> list[float]:
    """Kill a random worker and start a replacement at random intervals until the chaos period ends."""
    kill_times_s = []
    next_kill_at = started_at + rng.uniform(*plan.kill_interval_s)
    while time.monotonic() - started_at < plan.chaos_s:
        sampler.sample()
        if time.monotonic() >= next_kill_at:
            victim = workers.pop(rng.randrange(len(workers)))
            killed_at = time.monotonic()
            victim.kill()
            kill_times_s.append(round(killed_at - started_at, 1))
            workers.append(start_worker())
            next_kill_at = killed_at + rng.uniform(*plan.kill_interval_s)
        time.sleep(SAMPLE_INTERVAL_S)
    return kill_times_s


def is_settled(record: ProvisionRecord | None) -> bool:
    """Return True once a provision is terminal and has no step left, its destroy step included."""
    return record is not None and record.is_terminal and record.step is Step.DONE


def _wait_settled(store: Store, provision_ids: Sequence[str], timeout_s: float, sampler: OwnershipSampler) -> None:
    """Wait until every provision settled or `timeout_s` passed; the checks report any that did not."""
    deadline = time.monotonic() + timeout_s
    pending = list(provision_ids)
    while pending and time.monotonic() < deadline:
        sampler.sample()
        pending = [provision_id for provision_id in pending if not is_settled(store.find(provision_id))]
        time.sleep(SAMPLE_INTERVAL_S)


def _wait_handed_off(store: Store, provision_ids: Sequence[str]) -> None:
    """Wait up to HANDOFF_WAIT_S until every ready provision's hand-off reached the recorder."""
    deadline = time.monotonic() + HANDOFF_WAIT_S
    while time.monotonic() < deadline:
        ready = [provision_id for provision_id in provision_ids if store.get(provision_id).status is Status.READY]
        if all(handoffs(store, provision_id) for provision_id in ready):
            return
        time.sleep(SAMPLE_INTERVAL_S)


def _collect(
    seed: int,
    planned: list[PlannedProvision],
    kill_times_s: list[float],
    cancelled_ids: set[str],
    store: Store,
    sampler: OwnershipSampler,
) -> ChaosRun:
    final_containers, final_servers = sampler.sample()
    provision_ids = [item.id for item in planned]
    return ChaosRun(
        seed=seed,
        planned=planned,
        kill_times_s=kill_times_s,
        cancelled_ids=cancelled_ids,
        records={provision_id: store.get(provision_id) for provision_id in provision_ids},
        event_names={provision_id: [fields["event"] for _entry, fields in store.events(provision_id)] for provision_id in provision_ids},
        handoff_counts={provision_id: len(handoffs(store, provision_id)) for provision_id in provision_ids},
        max_containers=sampler.max_containers,
        max_servers=sampler.max_servers,
        final_containers=final_containers,
        final_servers=final_servers,
        servers_created=int(sampler.sim.stats()["servers"]["created"]),
    )


def find_violations(run: ChaosRun) -> Violations:
    """Return, for each rule of a chaos run, the ids of the provisions that break it."""
    records = run.records
    planned = {item.id: item for item in run.planned}

    def ids(condition: Callable[[str, ProvisionRecord], bool]) -> list[str]:
        return sorted(provision_id for provision_id, record in records.items() if condition(provision_id, record))

    def terminal_events(provision_id: str) -> list[str]:
        return [name for name in run.event_names[provision_id] if name in TERMINAL_EVENTS]

    def owns_workspace(provision_id: str) -> bool:
        workspace_type = planned[provision_id].kind.workspace_type
        if workspace_type is WorkspaceType.CONTAINER:
            return run.final_containers[provision_id] == 1
        if workspace_type is WorkspaceType.VM:
            return run.final_servers[provision_id] == 1
        return True

    ended = {Status.FAILED, Status.CANCELLED}
    return Violations(
        unsettled=ids(lambda _id, record: not is_settled(record)),
        not_one_terminal_event=ids(lambda provision_id, _record: len(terminal_events(provision_id)) != 1),
        status_disagrees_with_event=ids(lambda provision_id, record: _event_status(terminal_events(provision_id)) is not record.status),
        ready_without_hand_off=ids(lambda provision_id, record: record.status is Status.READY and run.handoff_counts[provision_id] == 0),
        duplicated_hand_off=ids(lambda provision_id, _record: run.handoff_counts[provision_id] > 1),
        several_containers=ids(lambda provision_id, _record: run.max_containers[provision_id] > 1),
        several_servers=ids(lambda provision_id, _record: run.max_servers[provision_id] > 1),
        ready_without_workspace=ids(lambda provision_id, record: record.status is Status.READY and not owns_workspace(provision_id)),
        not_destroyed=ids(lambda provision_id, record: record.status in ended and events.DESTROYED not in run.event_names[provision_id]),
        leaked_containers=ids(lambda provision_id, record: record.status in ended and run.final_containers[provision_id] > 0),
        leaked_servers=ids(lambda provision_id, record: record.status in ended and run.final_servers[provision_id] > 0),
        failed_before_deadline=ids(lambda _id, record: record.failure_reason == FailureReason.READY_TIMEOUT.value and not _failed_after_deadline(record)),
        unexpected_failure_reason=ids(lambda provision_id, record: record.status is Status.FAILED and not _reason_expected(planned[provision_id], record)),
        worker_lost=ids(lambda _id, record: record.failure_reason == FailureReason.WORKER_LOST.value),
        ready_but_never_serving=ids(lambda provision_id, record: record.status is Status.READY and not planned[provision_id].kind.can_become_ready),
        local_not_ready=ids(lambda provision_id, record: planned[provision_id].kind.workspace_type is WorkspaceType.LOCAL and record.status is not Status.READY),
        cancelled_without_request=ids(lambda provision_id, record: record.status is Status.CANCELLED and provision_id not in run.cancelled_ids),
    )


def _event_status(terminal_events: list[str]) -> Status | None:
    statuses = {events.PROVISIONED: Status.READY, events.PROVISION_FAILED: Status.FAILED, events.CANCELLED: Status.CANCELLED}
    return statuses[terminal_events[0]] if len(terminal_events) == 1 else None


def _failed_after_deadline(record: ProvisionRecord) -> bool:
    return record.deadline is not None and record.failed_at is not None and record.failed_at >= record.deadline


def _reason_expected(item: PlannedProvision, record: ProvisionRecord) -> bool:
    """Return True if the failure is one the plan allows: a missed readiness deadline, for a workspace with harnessd."""
    return item.kind.workspace_type is not WorkspaceType.LOCAL and record.failure_reason == FailureReason.READY_TIMEOUT.value


def describe_run(run: ChaosRun) -> str:
    """Return one line that sums up a run: its seed, kills and end states."""
    statuses = collections.Counter(record.status.value for record in run.records.values())
    reasons = collections.Counter(record.failure_reason for record in run.records.values() if record.failure_reason)
    kill_times = ", ".join(f"{kill_time_s:g}" for kill_time_s in run.kill_times_s)
    return (
        f"seed {run.seed}, {len(run.planned)} provisions, {len(run.kill_times_s)} kills at {kill_times} s after the first submission. "
        f"End states: {_describe_counts(statuses)}. Failure reasons: {_describe_counts(reasons) or 'none'}"
    )


def _describe_counts(counts: collections.Counter[str]) -> str:
    return ", ".join(f"{count} {name}" for name, count in counts.most_common())


def remove_containers(docker_client: docker.DockerClient, provision_ids: Iterable[str]) -> None:
    """Remove the containers of the given provisions, and no other."""
    removable = set(provision_ids)
    for item in docker_client.api.containers(all=True, filters={"label": LABEL_PROVISION_ID}):
        if (item.get("Labels") or {}).get(LABEL_PROVISION_ID) in removable:
            try:
                docker_client.api.remove_container(item["Id"], force=True)
            except docker.errors.NotFound:
                continue


@pytest.fixture
def chaos_cleanup(docker_client: docker.DockerClient) -> Iterator[list[str]]:
    """
    Collect the ids of a chaos run and remove their containers after the test.

    A test requests it before `start_worker`, so that its teardown runs after
    the workers stopped and no step can make a container behind it.
    """
    provision_ids: list[str] = []
    yield provision_ids
    remove_containers(docker_client, provision_ids)


def test_chaos_run_ends_every_provision_once(
    chaos_cleanup: list[str],
    provisioner: Provisioner,
    harnessd_image: str,
    docker_client: docker.DockerClient,
    hcloud_sim: RunningSimulator,
    start_worker: Callable[[], ChaosWorker],
) -> None:
    seed = chaos_seed()
    print(f"chaos seed: {seed} (replay the plan with {CHAOS_SEED_ENV}={seed})")
    plan = ChaosPlan()
    planned = plan_provisions(random.Random(seed), plan, harnessd_image)
    chaos_cleanup.extend(item.id for item in planned)

    run = run_chaos(plan, seed, planned, provisioner, start_worker, docker_client, hcloud_sim)
    print(f"chaos run: {describe_run(run)}")
    violations = find_violations(run)

    assert len(run.kill_times_s) >= 5
    assert violations.unsettled == []
    assert violations.not_one_terminal_event == []
    assert violations.status_disagrees_with_event == []
    assert violations.ready_without_hand_off == []
    assert violations.duplicated_hand_off == []
    assert violations.several_containers == []
    assert violations.several_servers == []
    assert run.servers_created <= run.vm_count
    assert violations.ready_without_workspace == []
    assert violations.not_destroyed == []
    assert violations.leaked_containers == []
    assert violations.leaked_servers == []
    assert violations.failed_before_deadline == []
    assert violations.unexpected_failure_reason == []
    assert violations.worker_lost == []
    assert violations.ready_but_never_serving == []
    assert violations.local_not_ready == []
    assert violations.cancelled_without_request == []
