"""
Benchmark of recovery after SIGKILL: the provisioning chain against plain Celery.

    python -m bench.recovery            # full run; writes its part of docs/benchmarks.md
    python -m bench.recovery --quick    # smoke run; prints only

Everything runs on this machine over services the run starts and stops itself:
a redis-server on a free loopback port, hcloud-sim, `celery worker`
subprocesses and harnessd stand-in containers on the host network. Three phases:

1. Recovery: one worker at a time. While a provision is in a given step, the
   whole worker group is SIGKILLed (from outside while probing, or from inside
   through the tests' crash points right after create's or hand_off's backend
   call), and a replacement is spawned at once. The figure is the time from the
   replacement's spawn to the provision's next commit, seen as its fencing
   token moving on.
2. Chaos: `tests.integration.test_chaos.run_chaos`, the same run the chaos
   test makes, with its counts.
3. Plain Celery: a late-acknowledged task (`bench.plain_celery`) whose worker
   is SIGKILLed mid-task, with the time until a replacement runs it again.

Workers use the product's defaults (reconciler sweep every 2 s, lease 6 s,
resume after 3 s overdue). The containers, processes and files of the run are
removed at the end, also after an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import docker
import docker.errors
import redis

from bench import plain_celery
from bench.local_runs import RunFailed, count_resumed_steps
from bench.report import load_average, machine_facts, percentile, replace_part
from bench.services import EXPECTED_FAILURES, REPO_ROOT, CeleryWorker, RedisServer, ServiceError, progress, report_failure, wait_for
from bench.session import IMAGE_TAG
from simulators.harnessd_image import build_image
from tests.hcloud_sim.support import TOKEN as HCLOUD_TOKEN
from tests.hcloud_sim.support import RunningSimulator, start_simulator
from tests.integration import test_chaos
from tests.integration.conftest import WORKER_PLUGINS, handoffs
from tests.integration.handoff_recorder import record_hand_off
from workers.app import app
from workers.runner import Provisioner
from workflows.model import ProvisionRequest, Status, Step, WorkspaceType
from workflows.store import Store

DEFAULT_OUTPUT = REPO_ROOT / "docs" / "benchmarks.md"
PAGE_TITLE = "Benchmarks: recovery after SIGKILL"

EXIT_OK = 0

# Pool processes of each provisioning worker, as in the integration tests.
WORKER_CONCURRENCY = 2
# Seconds a provision of the recovery phase may take to reach its step, to move on, and to end.
STEP_TIMEOUT_S = 60.0
# Probe kills wait for this many probe attempts, so the probe step is in its countdown loop.
PROBE_ATTEMPTS_BEFORE_KILL = 2
# Seconds the plain task keeps its worker busy; the worker is killed PLAIN_KILL_AFTER_S after the task starts.
PLAIN_HOLD_S = 5.0
PLAIN_KILL_AFTER_S = 1.0
TARGET_P95_S = 10.0

# The cause of the two recovery speeds, as workers/reconciler.py and workflows/policy.py set them.
RECOVERY_NOTE = (
    "A kill from outside while probing usually lands between two probe attempts, when no worker holds the provision's lease. "
    "The reconciler re-sends the step once it is 3 s overdue, at its next sweep (every 2 s). A crash point kills the "
    "worker inside the step, while it holds the lease, so the reconciler also waits for the lease to expire, 6 s "
    "after its last renewal."
)


@dataclasses.dataclass(frozen=True)
class Scenario:
    """The step a recovery kill lands in, for one workspace type, reached by timing or by a crash point."""

    name: str
    step: Step
    workspace_type: WorkspaceType
    # True: the tests' crash point kills the group right after the step's backend call.
    crash_point: bool
    # Containers only: harnessd starts serving this long after the container starts.
    boot_delay_s: float = 0.0


PROBE = Scenario("probe_healthz, container, killed from outside", Step.PROBE_HEALTHZ, WorkspaceType.CONTAINER, False, boot_delay_s=8.0)
CREATE_CONTAINER = Scenario("create, container, crash point", Step.CREATE, WorkspaceType.CONTAINER, True, boot_delay_s=1.0)
CREATE_LOCAL = Scenario("create, local, crash point", Step.CREATE, WorkspaceType.LOCAL, True)
HAND_OFF_CONTAINER = Scenario("hand_off, container, crash point", Step.HAND_OFF, WorkspaceType.CONTAINER, True, boot_delay_s=1.0)
HAND_OFF_LOCAL = Scenario("hand_off, local, crash point", Step.HAND_OFF, WorkspaceType.LOCAL, True)


@dataclasses.dataclass(frozen=True)
class PlainVariant:
    """One configuration of the plain Celery worker."""

    name: str
    env: dict[str, str]


PLAIN_VARIANTS = (
    PlainVariant("acks_late, visibility timeout 3600 s (kombu default)", {}),
    PlainVariant("acks_late, visibility timeout 10 s", {"PLAIN_VISIBILITY_TIMEOUT": "10"}),
    PlainVariant(
        "acks_late, visibility timeout 10 s, unacked_restore_throttle 1",
        {"PLAIN_VISIBILITY_TIMEOUT": "10", "PLAIN_RESTORE_THROTTLE": "1"},
    ),
)


@dataclasses.dataclass(frozen=True)
class Plan:
    """How many kills of each scenario, how much chaos, and how long plain Celery gets to run a task again."""

    kills: tuple[tuple[Scenario, int], ...]
    chaos: test_chaos.ChaosPlan
    plain_wait_s: float


FULL_PLAN = Plan(
    kills=((PROBE, 20), (CREATE_CONTAINER, 3), (CREATE_LOCAL, 2), (HAND_OFF_CONTAINER, 3), (HAND_OFF_LOCAL, 2)),
    chaos=test_chaos.ChaosPlan(),
    plain_wait_s=120.0,
)
QUICK_PLAN = Plan(
    kills=((PROBE, 2), (CREATE_CONTAINER, 1), (CREATE_LOCAL, 1), (HAND_OFF_CONTAINER, 1), (HAND_OFF_LOCAL, 1)),
    chaos=test_chaos.ChaosPlan(provision_count=20, submit_window_s=10.0, chaos_s=25.0, settle_timeout_s=60.0),
    plain_wait_s=30.0,
)


@dataclasses.dataclass(frozen=True)
class RecoverySample:
    """One kill: seconds from the replacement's spawn to its readiness and to the provision's next commit."""

    scenario: Scenario
    spawn_to_ready_s: float
    spawn_to_progress_s: float
    # Steps the reconciler sent again after the kill (`workspace.step_resumed` events).
    resumed_steps: int


@dataclasses.dataclass(frozen=True)
class PlainSample:
    """One plain Celery kill: seconds from the replacement's spawn until the task started again, or None."""

    variant: PlainVariant
    spawn_to_rerun_s: float | None


@dataclasses.dataclass(frozen=True)
class Results:
    recovery: list[RecoverySample]
    chaos: test_chaos.ChaosRun
    plain: list[PlainSample]


class Services:
    """The private Redis, simulator, Docker image and workers of one run, all under `scratch`."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.redis_server = RedisServer(scratch / "redis")
        self.sim: RunningSimulator | None = None
        self.docker: docker.DockerClient | None = None
        self.workers: list[CeleryWorker] = []
        self.provision_ids: list[str] = []

    def start(self) -> None:
        self.docker = docker.from_env(timeout=30)
        self.docker.ping()
        progress(f"building {IMAGE_TAG}")
        build_image(self.docker, IMAGE_TAG)
        self.redis_server.start()
        progress(f"redis-server {self.redis_server.version()} on {self.redis_server.url}")
        # The app in this process sends the runner's messages; it must use our Redis, not REDIS_URL's.
        app.conf.broker_url = self.redis_server.url
        # Servers get addresses from a random 127.N.0.0/16, apart from those of a simulator running at the same time.
        first_address = f"127.{random.randint(1, 250)}.0.2"
        arguments = ("--boot-delay", "1", "--bootstrap-delay", "0.5", "--first-address", first_address)
        self.sim = start_simulator(self.scratch / "hcloud-sim", *arguments, module=True)
        progress(f"hcloud-sim on {self.sim.endpoint}")

    @property
    def store(self) -> Store:
        return Store.from_url(self.redis_server.url)

    def new_worker(self) -> CeleryWorker:
        """Return a provisioning worker that is not started yet, with a log of its own."""
        log_path = self.scratch / f"worker-{len(self.workers)}.log"
        worker = CeleryWorker(self._worker_env(), log_path, WORKER_CONCURRENCY, WORKER_PLUGINS)
        self.workers.append(worker)
        return worker

    def start_worker(self) -> CeleryWorker:
        return self.new_worker().start()

    def new_plain_worker(self, variant: PlainVariant, broker_url: str) -> CeleryWorker:
        log_path = self.scratch / f"plain-worker-{len(self.workers)}.log"
        env = self._worker_env() | variant.env | {"PLAIN_BROKER_URL": broker_url}
        worker = CeleryWorker(env, log_path, 1, app="bench.plain_celery")
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        if self.docker is not None:
            test_chaos.remove_containers(self.docker, self.provision_ids)
        if self.sim is not None:
            self.sim.stop()
        self.redis_server.stop()

    def _worker_env(self) -> dict[str, str]:
        env = {name: value for name, value in os.environ.items() if not name.upper().endswith("_PROXY")}
        env = {name: value for name, value in env.items() if not name.startswith(("PROVISIONER_", "PLAIN_"))}
        assert self.sim is not None
        env |= {
            "REDIS_URL": self.redis_server.url,
            "PROVISIONER_HOME": str(self.scratch / "home"),
            "PROVISIONER_CONTAINER_NETWORK": "host",
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]),
            "HCLOUD_ENDPOINT": self.sim.endpoint,
            "HCLOUD_TOKEN": HCLOUD_TOKEN,
        }
        return env


def measure_recovery(services: Services, plan: Plan) -> list[RecoverySample]:
    """Kill the worker once per planned kill, each time with a new provision in the scenario's step."""
    samples = []
    worker = services.start_worker()
    for scenario, count in plan.kills:
        progress(f"recovery: {count} kills in {scenario.name}")
        for index in range(count):
            provision_id = f"recovery-{len(samples):02d}-{index}-{os.urandom(3).hex()}"
            services.provision_ids.append(provision_id)
            sample, worker = _kill_and_replace(services, worker, scenario, provision_id)
            samples.append(sample)
    worker.stop()
    return samples


def _kill_and_replace(services: Services, worker: CeleryWorker, scenario: Scenario, provision_id: str) -> tuple[RecoverySample, CeleryWorker]:
    store = services.store
    provisioner = Provisioner(store)
    _submit(services, provisioner, scenario, provision_id)
    _kill_in_step(store, worker, scenario, provision_id)
    fence = store.get(provision_id).fence

    replacement = services.new_worker()
    spawned_at = time.monotonic()
    replacement.spawn()
    ready_at: list[float] = []
    waiter = threading.Thread(target=lambda: (replacement.wait_ready(), ready_at.append(time.monotonic())), daemon=True)
    waiter.start()
    wait_for(lambda: store.get(provision_id).fence != fence, STEP_TIMEOUT_S, f"provision {provision_id} to move on after the kill")
    progressed_at = time.monotonic()
    waiter.join(timeout=STEP_TIMEOUT_S)
    if not ready_at:
        raise ServiceError(f"the replacement worker never became ready (log {replacement.log_path})")

    record = provisioner.wait(provision_id, timeout_s=STEP_TIMEOUT_S)
    if record.status is not Status.READY:
        raise RunFailed(f"provision {provision_id} is {record.status.value} after its kill in {scenario.step.value}: {record.last_error}")
    if len(handoffs(store, provision_id)) > 1:
        raise RunFailed(f"provision {provision_id} was handed off {len(handoffs(store, provision_id))} times")
    sample = RecoverySample(scenario, ready_at[0] - spawned_at, progressed_at - spawned_at, count_resumed_steps(store, provision_id))
    return sample, replacement


def _submit(services: Services, provisioner: Provisioner, scenario: Scenario, provision_id: str) -> None:
    if scenario.crash_point:
        # The crash point deletes the key and kills its whole worker group once the step's backend call returned.
        services.store.client.set(f"test:crash:{provision_id}:{scenario.step.value}", "group")
    secrets = {}
    image = ""
    if scenario.workspace_type is WorkspaceType.CONTAINER:
        secrets = {"HARNESSD_BOOT_DELAY": f"{scenario.boot_delay_s:g}"}
        image = IMAGE_TAG
    request = ProvisionRequest(id=provision_id, type=scenario.workspace_type, image=image, ready_timeout_s=STEP_TIMEOUT_S)
    provisioner.submit(request, secrets=secrets, continuation=record_hand_off.s())


def _kill_in_step(store: Store, worker: CeleryWorker, scenario: Scenario, provision_id: str) -> None:
    """Return once the worker is dead with the provision in the scenario's step."""
    assert worker.process is not None
    if scenario.crash_point:
        wait_for(lambda: worker.process is not None and worker.process.poll() is not None, STEP_TIMEOUT_S, f"the crash point in {scenario.step.value} of {provision_id}")
    else:
        def probing() -> bool:
            record = store.get(provision_id)
            return record.step is scenario.step and record.attempts >= PROBE_ATTEMPTS_BEFORE_KILL

        wait_for(probing, STEP_TIMEOUT_S, f"provision {provision_id} to probe")
        worker.kill()

    step = store.get(provision_id).step
    if step is not scenario.step:
        raise RunFailed(f"provision {provision_id} was in {step.value} when its worker died, not in {scenario.step.value}")


def measure_chaos(services: Services, plan: Plan) -> test_chaos.ChaosRun:
    """Run the chaos test's driver against this run's services."""
    assert services.docker is not None and services.sim is not None
    seed = test_chaos.chaos_seed()
    progress(f"chaos: {plan.chaos.provision_count} provisions, {plan.chaos.chaos_s:g} s of kills, seed {seed}")
    planned = test_chaos.plan_provisions(random.Random(seed), plan.chaos, IMAGE_TAG)
    services.provision_ids.extend(item.id for item in planned)

    run = test_chaos.run_chaos(plan.chaos, seed, planned, Provisioner(services.store), services.start_worker, services.docker, services.sim)
    for worker in services.workers:
        worker.stop()
    progress(f"chaos: {test_chaos.describe_run(run)}")
    return run


def measure_plain(services: Services, plan: Plan) -> list[PlainSample]:
    """Kill a plain Celery worker mid-task once per variant, and wait for a replacement to run the task again."""
    # A database of its own, so that no provisioning worker's restore sweep touches the plain messages.
    broker_url = services.redis_server.url.removesuffix("/0") + "/1"
    plain_celery.app.conf.broker_url = broker_url
    client = redis.Redis.from_url(broker_url)

    samples = []
    for index, variant in enumerate(PLAIN_VARIANTS):
        progress(f"plain Celery: {variant.name}; waiting up to {plan.plain_wait_s:g} s for the task to run again")
        run_id = f"plain-{index}-{os.urandom(3).hex()}"
        worker = services.new_plain_worker(variant, broker_url).start()
        plain_celery.hold.apply_async(args=(run_id, PLAIN_HOLD_S))
        wait_for(lambda: client.llen(plain_celery.starts_key(run_id)) >= 1, STEP_TIMEOUT_S, f"plain task {run_id} to start")
        time.sleep(PLAIN_KILL_AFTER_S)
        worker.kill()

        replacement = services.new_plain_worker(variant, broker_url)
        spawned_at = time.monotonic()
        replacement.spawn()
        rerun_s = _wait_rerun(client, run_id, spawned_at, plan.plain_wait_s)
        replacement.stop()
        samples.append(PlainSample(variant, rerun_s))
    return samples


def _wait_rerun(client: redis.Redis, run_id: str, spawned_at: float, wait_s: float) -> float | None:
    while time.monotonic() - spawned_at < wait_s:
        if client.llen(plain_celery.starts_key(run_id)) >= 2:
            return time.monotonic() - spawned_at
        time.sleep(0.05)
    return None


def recovery_rows(samples: Sequence[RecoverySample]) -> list[list[str]]:
    """Return one table row per scenario and one for all kills: spawn to ready, and spawn to progress."""
    groups: dict[str, list[RecoverySample]] = {}
    for sample in samples:
        groups.setdefault(sample.scenario.name, []).append(sample)
    groups["all kills"] = list(samples)

    rows = []
    for name, group in groups.items():
        ready = [sample.spawn_to_ready_s for sample in group]
        progress_s = [sample.spawn_to_progress_s for sample in group]
        rows.append([
            name, str(len(group)), _seconds(percentile(ready, 0.5)),
            _seconds(percentile(progress_s, 0.5)), _seconds(percentile(progress_s, 0.95)), _seconds(max(progress_s)),
        ])
    verdict = "met" if percentile([sample.spawn_to_progress_s for sample in samples], 0.95) <= TARGET_P95_S else "missed"
    rows[-1].append(f"p95 ≤ {TARGET_P95_S:g} s: {verdict}")
    for row in rows[:-1]:
        row.append("-")
    return rows


def chaos_rows(run: test_chaos.ChaosRun) -> list[list[str]]:
    """Return the chaos run's counts; the rows marked 0 must be zero in a correct run."""
    violations = test_chaos.find_violations(run)
    statuses = [record.status for record in run.records.values()]
    reasons = [record.failure_reason for record in run.records.values() if record.status is Status.FAILED]
    rows = [
        ["Provisions (local, container, VM)", _count_types(run), "-"],
        ["Workers killed (SIGKILL of the whole group)", str(len(run.kill_times_s)), "-"],
        ["Ready", str(statuses.count(Status.READY)), "-"],
        ["Failed: ready_timeout", str(reasons.count("ready_timeout")), "-"],
        ["Failed: any other reason", str(len(reasons) - reasons.count("ready_timeout")), "0"],
        ["Cancelled", str(statuses.count(Status.CANCELLED)), "-"],
        ["Lost: never settled, or not exactly one terminal event", str(len(set(violations.unsettled) | set(violations.not_one_terminal_event))), "0"],
        ["Ready without a hand-off", str(len(violations.ready_without_hand_off)), "0"],
        ["Duplicated hand-offs", str(len(violations.duplicated_hand_off)), "0"],
        ["Leaked containers (failed or cancelled, container left)", str(len(violations.leaked_containers)), "0"],
        ["Leaked servers (failed or cancelled, server left)", str(len(violations.leaked_servers)), "0"],
        ["Provisions that owned two containers or servers at once", str(len(set(violations.several_containers) | set(violations.several_servers))), "0"],
        ["Failed before the deadline", str(len(violations.failed_before_deadline)), "0"],
    ]
    return rows


def plain_rows(samples: Sequence[PlainSample], recovery: Sequence[RecoverySample], wait_s: float) -> list[list[str]]:
    rows = []
    for sample in samples:
        rerun = f"not within {wait_s:g} s" if sample.spawn_to_rerun_s is None else _seconds(sample.spawn_to_rerun_s)
        rows.append([f"Plain Celery: {sample.variant.name}", rerun])
    probe = [sample.spawn_to_progress_s for sample in recovery if sample.scenario is PROBE]
    if probe:
        rows.append(["Provisioning chain, probe_healthz kills (p50 / max)", f"{_seconds(percentile(probe, 0.5))} / {_seconds(max(probe))}"])
    return rows


def _count_types(run: test_chaos.ChaosRun) -> str:
    types = [item.kind.workspace_type for item in run.planned]
    counts = [types.count(workspace_type) for workspace_type in (WorkspaceType.LOCAL, WorkspaceType.CONTAINER, WorkspaceType.VM)]
    return f"{len(types)} ({', '.join(map(str, counts))})"


def _seconds(value: float) -> str:
    return f"{value:.1f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * len(header)) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render_tables(results: Results, plan: Plan) -> str:
    recovery = markdown_table(
        ["Killed in (times in s)", "Kills", "Spawn to ready p50", "Spawn to progress p50", "p95", "max", "Target"],
        recovery_rows(results.recovery),
    )
    chaos = markdown_table(["Chaos run", "Count", "Required"], chaos_rows(results.chaos))
    plain = markdown_table(["Worker SIGKILLed mid-task, replacement spawned at once", "Spawn to the task's next start (s)"], plain_rows(results.plain, results.recovery, plan.plain_wait_s))
    return "\n\n".join([
        "**Recovery of one provision after its worker's SIGKILL**", recovery,
        "**Chaos run**", chaos,
        "**Plain Celery beside the chain**", plain,
    ])


def collect_facts(services: Services, argv: Sequence[str] | None) -> dict[str, str]:
    assert services.docker is not None
    docker_version = services.docker.version().get("Version", "?")
    return machine_facts("python -m bench.recovery", argv, services.redis_server.version(), docker_version) | {
        "Workers": f"`celery -A workers worker -c {WORKER_CONCURRENCY}` (prefork), product defaults: reconciler sweep every 2 s, lease 6 s, resume after 3 s overdue",
        "Load average before (1, 5, 15 min)": load_average(),
    }


def describe_method(plan: Plan, results: Results) -> str:
    kills = "\n".join(f"  - {count} in {scenario.name}" for scenario, count in plan.kills)
    chaos = plan.chaos
    return f"""
- **Recovery**: one worker at a time, with these kills:
{kills}

  A probe kill waits until the container (harnessd boot delay
  {PROBE.boot_delay_s:g} s) had {PROBE_ATTEMPTS_BEFORE_KILL} probe attempts, then SIGKILLs the worker's process group.
  A crash point (`tests/integration/crash_points.py`) SIGKILLs the group from inside, after the step's backend call
  and before its commit. The replacement is spawned right after the death. *Spawn to progress* runs from its spawn
  to the moment the provision's fencing token moves on, which happens only on a step's commit. *Spawn to ready*
  is until the worker logs `ready.`. Every provision then had to end ready with at most one hand-off.
- **Chaos**: `run_chaos` from `tests/integration/test_chaos.py`, seed {results.chaos.seed}: {chaos.provision_count}
  provisions submitted over {chaos.submit_window_s:g} s, {chaos.worker_count} workers, one killed every
  {chaos.kill_interval_s[0]:g} to {chaos.kill_interval_s[1]:g} s for {chaos.chaos_s:g} s and replaced.
  The counts come from Redis, the Docker engine and hcloud-sim's stats, as in the test.
- **Plain Celery**: `bench/plain_celery.py`, a task with `acks_late=True` and no reconciler on its own worker
  (`-c 1`). The worker group is SIGKILLed {PLAIN_KILL_AFTER_S:g} s into the task, and a replacement is spawned
  at once. The figure runs from that spawn until the task starts again, waiting at most {plan.plain_wait_s:g} s.
  kombu's Redis transport puts an unacknowledged message back only when a restore sweep finds it older than the
  visibility timeout. In kombu 5.7.0 (`kombu/transport/redis.py`) a worker sweeps when it starts, then every
  `unacked_restore_interval` (10 s) times `unacked_restore_throttle` (10) seconds.
- Percentiles are nearest-rank: p95 of 30 values is the second-largest.
"""


def describe_notes(results: Results) -> list[str]:
    notes = []
    resumed = sum(1 for sample in results.recovery if sample.resumed_steps)
    notes.append(f"Recovery: the reconciler re-sent the step in {resumed} of {len(results.recovery)} kills (`workspace.step_resumed` events).")
    ready_p50 = percentile([sample.spawn_to_ready_s for sample in results.recovery], 0.5)
    notes.append(f"{RECOVERY_NOTE} The replacement worker was ready {_seconds(ready_p50)} s (p50) after its spawn, long before that.")
    notes.append(f"Chaos: {test_chaos.describe_run(results.chaos)}.")
    return notes


def render_part(facts: dict[str, str], tables: str, method: str, notes: Sequence[str]) -> str:
    parts = [
        f"# {PAGE_TITLE}",
        "",
        "How soon a provision moves again after its worker is SIGKILLed, what a minute of random kills leaves "
        "behind, and what plain Celery does in the same case. `python -m bench.recovery` measured these figures "
        "on real Celery workers, a real redis-server, hcloud-sim and a real Docker engine, and wrote this part of "
        "the page. Running it again replaces this part.",
        "",
        "## Machine and run",
        "",
        *(f"- {name}: {value}" for name, value in facts.items()),
        "",
        "## Results",
        "",
        tables,
        "",
        "## What is measured",
        "",
        method.strip(),
        "",
        "## Notes from this run",
        "",
        *(f"- {note}" for note in notes),
    ]
    return "\n".join(parts) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.recovery", description=__doc__.strip().splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true",
        help=f"smoke run: {sum(count for _scenario, count in QUICK_PLAN.kills)} kills, {QUICK_PLAN.chaos.provision_count} chaos provisions, "
        f"plain Celery waits {QUICK_PLAN.plain_wait_s:g} s; prints the tables but writes no page unless --output is given",
    )
    parser.add_argument("--output", type=Path, help=f"Markdown page to write its part into (default for a full run: {DEFAULT_OUTPUT.relative_to(REPO_ROOT)})")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    plan = QUICK_PLAN if options.quick else FULL_PLAN
    output = options.output or (None if options.quick else DEFAULT_OUTPUT)
    signal.signal(signal.SIGTERM, _interrupt)

    with tempfile.TemporaryDirectory(prefix="wp-recovery-") as scratch:
        services = Services(Path(scratch))
        try:
            services.start()
            facts = collect_facts(services, argv)
            results = Results(measure_recovery(services, plan), measure_chaos(services, plan), measure_plain(services, plan))
        except (*EXPECTED_FAILURES, KeyboardInterrupt) as exc:
            return report_failure(exc)
        finally:
            services.close()

    facts["Load average after (1, 5, 15 min)"] = load_average()
    publish(results, plan, facts, output)
    return EXIT_OK


def _interrupt(_signal_number: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def publish(results: Results, plan: Plan, facts: dict[str, str], output: Path | None) -> None:
    tables = render_tables(results, plan)
    notes = describe_notes(results)
    print(tables)
    print()
    print("\n".join(f"- {note}" for note in notes))

    if output is not None:
        existing = output.read_text() if output.exists() else ""
        output.write_text(replace_part(existing, PAGE_TITLE, render_part(facts, tables, describe_method(plan, results), notes)))
        progress(f"wrote {output}")


if __name__ == "__main__":
    sys.exit(main())
