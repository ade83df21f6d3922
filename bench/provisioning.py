"""
Benchmark of provisioning latency: the durable chain against a 2-second polling loop.

    python -m bench.provisioning            # full run; writes its part of docs/benchmarks.md
    python -m bench.provisioning --quick    # smoke run; prints only

Everything runs on this machine over real services that the run starts and
stops itself. These are a redis-server on a free loopback port, hcloud-sim
(the Hetzner API simulator, with its default request budget), one
`celery worker` (prefork) that also loads `bench.baseline`, and harnessd
stand-in containers on the Docker engine's host network. Six phases, in this
order:

1. local workspaces through the chain (create -> hand_off), one at a time;
2. local workspaces through the baseline task, one at a time;
3. container workspaces through the chain, in batches that start together;
4. container workspaces through the baseline task, with the same boot delays;
5. VM workspaces on hcloud-sim through the chain, in batches that start together;
6. VM workspaces through the baseline task, with the same boot and bootstrap delays.

`bench.local_runs`, `bench.container_runs` and `bench.vm_runs` define each
figure. The containers, servers, processes and files of the run are removed at
the end, also after an error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import hcloud

from bench import container_runs, local_runs, vm_runs
from bench.container_runs import ContainerRun
from bench.local_runs import LocalTimings
from bench.report import (
    PAGE_TITLE,
    Row,
    Table,
    Target,
    describe_spread,
    format_ms,
    load_average,
    machine_facts,
    render_page,
    render_table,
    replace_part,
)
from bench.services import EXPECTED_FAILURES, REPO_ROOT, progress, report_failure
from bench.session import Session
from bench.vm_runs import VmPhase

DEFAULT_OUTPUT = REPO_ROOT / "docs" / "benchmarks.md"

# Exit code of a complete run; the failure codes are in bench.services.
EXIT_OK = 0

# Added to the notes when the reconciler had to send a step again.
LEASE_NOTE = (
    "A step is sent again by the reconciler when it is overdue by more than 3 s and no worker holds its lease, "
    "which happens when its message was lost or waited behind busy pool processes. The worker log "
    "(`--keep-logs DIR`) shows each case as `sent again`."
)

LOCAL_TARGET = Target(p50_ms=20)
DETECTION_TARGET = Target(p50_ms=300, tail_ms=1200)


@dataclasses.dataclass(frozen=True)
class Plan:
    """How many runs each phase makes, and with which worker concurrency."""

    local_run_count: int
    # Untimed runs first, so that every pool process has loaded its backend and connections.
    local_warmup_count: int
    container_run_count: int
    # Containers started together. The worker needs as many pool processes for the baseline,
    # because each baseline task occupies a pool process until its harnessd is ready.
    container_batch_size: int
    boot_delay_low_s: float
    boot_delay_high_s: float
    vm_run_count: int
    # Servers started together; as for containers, each baseline task occupies a pool process.
    vm_batch_size: int
    vm_boot_range_s: tuple[float, float]
    vm_bootstrap_range_s: tuple[float, float]
    worker_concurrency: int


FULL_PLAN = Plan(
    local_run_count=200, local_warmup_count=20, container_run_count=30, container_batch_size=10,
    boot_delay_low_s=1.0, boot_delay_high_s=10.0,
    vm_run_count=30, vm_batch_size=10, vm_boot_range_s=(1.0, 3.0), vm_bootstrap_range_s=(1.0, 10.0),
    worker_concurrency=10,
)
QUICK_PLAN = Plan(
    local_run_count=20, local_warmup_count=10, container_run_count=6, container_batch_size=6,
    boot_delay_low_s=1.0, boot_delay_high_s=3.0,
    vm_run_count=6, vm_batch_size=6, vm_boot_range_s=(1.0, 2.0), vm_bootstrap_range_s=(1.0, 3.0),
    worker_concurrency=10,
)


@dataclasses.dataclass(frozen=True)
class Results:
    """Everything one run measured."""

    local_chain: LocalTimings
    local_baseline: LocalTimings
    container_chain: list[ContainerRun]
    container_baseline: list[ContainerRun]
    vm_chain: VmPhase
    vm_baseline: VmPhase


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.provisioning", description=__doc__.strip().splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true",
        help=f"smoke run: {QUICK_PLAN.local_run_count} local, {QUICK_PLAN.container_run_count} container "
        f"and {QUICK_PLAN.vm_run_count} VM runs per approach, "
        f"boot delays of {QUICK_PLAN.boot_delay_low_s:g} to {QUICK_PLAN.boot_delay_high_s:g} s; "
        "prints the tables but writes no page unless --output is given",
    )
    parser.add_argument("--output", type=Path, help=f"Markdown page to write (default for a full run: {DEFAULT_OUTPUT.relative_to(REPO_ROOT)})")
    parser.add_argument("--keep-logs", type=Path, metavar="DIR", help="copy the worker, redis-server and hcloud-sim logs into DIR at the end, to explain slow runs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    plan = QUICK_PLAN if options.quick else FULL_PLAN
    output = options.output or (None if options.quick else DEFAULT_OUTPUT)
    signal.signal(signal.SIGTERM, _interrupt)

    with tempfile.TemporaryDirectory(prefix="wp-bench-") as scratch:
        session = Session(Path(scratch), plan.worker_concurrency)
        try:
            session.start()
            facts = collect_facts(session, plan, argv)
            results = measure(session, plan)
        except (*EXPECTED_FAILURES, KeyboardInterrupt) as exc:
            return report_failure(exc)
        finally:
            session.close()
            if options.keep_logs is not None:
                session.copy_logs(options.keep_logs)

    facts["Load average after (1, 5, 15 min)"] = load_average()
    publish(results, plan, facts, output)
    return EXIT_OK


def _interrupt(_signal_number: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def measure(session: Session, plan: Plan) -> Results:
    local_chain = local_runs.measure_local(session, "local-chain", local_runs.time_chain, plan.local_run_count, plan.local_warmup_count)
    local_baseline = local_runs.measure_local(session, "local-baseline", local_runs.time_baseline, plan.local_run_count, plan.local_warmup_count)

    delays = container_runs.boot_delays(plan.container_run_count, plan.boot_delay_low_s, plan.boot_delay_high_s)
    container_chain = container_runs.measure_containers(
        session, "container-chain", container_runs.run_chain_batch, delays, plan.container_batch_size
    )
    container_baseline = container_runs.measure_containers(
        session, "container-baseline", container_runs.run_baseline_batch, delays, plan.container_batch_size
    )

    pairs = vm_runs.vm_delays(plan.vm_run_count, plan.vm_boot_range_s, plan.vm_bootstrap_range_s)
    vm_chain = vm_runs.measure_vms(session, "vm-chain", vm_runs.run_chain_batch, pairs, plan.vm_batch_size)
    vm_baseline = vm_runs.measure_vms(session, "vm-baseline", vm_runs.run_baseline_batch, pairs, plan.vm_batch_size)
    return Results(local_chain, local_baseline, container_chain, container_baseline, vm_chain, vm_baseline)


def build_tables(results: Results) -> list[Table]:
    local_rows = [
        Row("Submit to hand-off, from the record", results.local_chain.record_ms, results.local_baseline.record_ms, LOCAL_TARGET),
        Row("Submit to runner seeing ready, wall clock", results.local_chain.wall_ms, results.local_baseline.wall_ms),
    ]
    chain, base = results.container_chain, results.container_baseline
    container_rows = [
        Row("Serving to ready_at (detection)", [run.detection_ms for run in chain], [run.detection_ms for run in base], DETECTION_TARGET),
        Row("Serving to hand-off", [run.hand_off_ms for run in chain], [run.hand_off_ms for run in base]),
    ]
    vm_chain, vm_base = results.vm_chain.runs, results.vm_baseline.runs
    vm_rows = [
        Row("Serving to ready_at (detection)", [run.detection_ms for run in vm_chain], [run.detection_ms for run in vm_base], DETECTION_TARGET),
        Row("Serving to hand-off", [run.hand_off_ms for run in vm_chain], [run.hand_off_ms for run in vm_base]),
    ]
    return [
        Table("Local workspaces", 0.99, local_rows),
        Table("Container workspaces", 0.95, container_rows),
        Table("VM workspaces (hcloud-sim)", 0.95, vm_rows),
    ]


def collect_facts(session: Session, plan: Plan, argv: Sequence[str] | None) -> dict[str, str]:
    assert session.docker is not None
    docker_version = session.docker.version().get("Version", "?")
    return machine_facts("python -m bench.provisioning", argv, session.redis_server.version(), docker_version) | {
        "Hetzner API": f"hcloud-sim (`python -m simulators.hcloud`, loopback, default rate limit of 3600 requests "
        f"refilled at 1 per second), hcloud SDK {hcloud.__version__}",
        "Worker": f"one `celery -A workers worker -c {plan.worker_concurrency}` (prefork), log level info",
        "Load average before (1, 5, 15 min)": load_average(),
    }


def describe_method(plan: Plan) -> str:
    return f"""
- **Local, from the record**: the chain's `handed_off_at - created_at`, both stored to the millisecond.
  The baseline is the old local path, one task (`bench.baseline.provision_local`) that creates the same directory
  through the same `LocalBackend` and returns; its figure is the task's end time minus the time stamped just
  before its message was sent.
- **Local, wall clock**: from just before `Provisioner.submit()` until `Provisioner.wait()` returns the ready record
  (for the baseline: from just before `apply_async` until a BLPOP receives the task's report).
- Local runs go one at a time: {plan.local_warmup_count} untimed warm-up runs, then {plan.local_run_count} timed runs per approach.
- **Container, serving**: the first moment the container's port is in LISTEN state, seen by polling the kernel's
  socket table (NETLINK_SOCK_DIAG) every millisecond; this is the earliest moment a probe can succeed.
- **Container, detection**: the chain's record `ready_at` minus serving. The probe step stamps `ready_at` right
  after its successful GET.
  The baseline (`bench.baseline.provision_container`) creates the container through the same `ContainerBackend`,
  then runs the same one-attempt probe in a loop with `time.sleep(2)` between attempts, and stamps its ready time
  right after the successful GET.
- **Container, hand-off**: the chain's `handed_off_at` minus serving; for the baseline, its task's return time minus serving.
- Container runs: {plan.container_run_count} per approach, boot delays spread evenly over {plan.boot_delay_low_s:g} to
  {plan.boot_delay_high_s:g} s (`HARNESSD_BOOT_DELAY`), in batches of {plan.container_batch_size} started together.
- **VM, serving**: the first moment port 8080 of the simulated server's own loopback address is in LISTEN state,
  seen the same way. On hcloud-sim, the server's user_data starts harnessd (a small Python HTTP server) after the
  boot delay (create to `running`) and the bootstrap delay (`running` to user_data).
- **VM, detection and hand-off**: as for containers. The chain's probe step also reads the server's status from the
  API, at most every 10 s. The baseline (`bench.baseline.provision_vm`) creates the server through the same
  `VmBackend`, reads its status every 2 s until it is `running`, then probes every 2 s.
- VM runs: {plan.vm_run_count} per approach, in batches of {plan.vm_batch_size} started together. Boot delays are spread
  evenly over {plan.vm_boot_range_s[0]:g} to {plan.vm_boot_range_s[1]:g} s and bootstrap delays over
  {plan.vm_bootstrap_range_s[0]:g} to {plan.vm_bootstrap_range_s[1]:g} s, set as per-server `boot_delay` and
  `bootstrap_delay` faults of hcloud-sim. The two kinds are paired in a fixed shuffled order.
- Percentiles are nearest-rank: p99 of 200 values is the second-largest, p95 of 30 is the second-largest.
"""


def describe_notes(results: Results) -> list[str]:
    notes = []
    local_runs_count = len(results.local_chain.record_ms)
    notes.append(f"Local chain: {results.local_chain.resumed_runs} of {local_runs_count} runs had a step sent again by the reconciler.")
    for name, runs in (("chain", results.container_chain), ("baseline", results.container_baseline)):
        leads = [lead for run in runs if (lead := run.log_line_lead_ms) is not None]
        if leads:
            notes.append(f"Container {name}: the port listened {describe_spread(leads)} ms after the Docker timestamp of the \"serving on\" log line.")
        negative = sum(1 for run in runs if run.detection_ms < 0)
        if negative:
            notes.append(f"Container {name}: {negative} of {len(runs)} runs had ready_at before the port was seen listening, so the listening detector was late for them.")
        attempts = statistics.median(run.readiness.probe_attempts for run in runs)
        notes.append(f"Container {name}: median {attempts:g} probe attempts per container.")
        resumed = [run for run in runs if run.readiness.resumed_steps]
        if resumed:
            slowest = max(resumed, key=lambda run: run.hand_off_ms)
            notes.append(
                f"Container {name}: {len(resumed)} of {len(runs)} runs had a step sent again by the reconciler, which "
                f"does so only for a step at least 3 s overdue (slowest of these runs: {format_ms(slowest.hand_off_ms)} ms "
                "from serving to hand-off)."
            )

    notes += describe_vm_notes(results)

    chain_readiness = [run.readiness for run in results.container_chain] + [run.readiness for run in results.vm_chain.runs]
    if results.local_chain.resumed_runs or any(readiness.resumed_steps for readiness in chain_readiness):
        notes.append(LEASE_NOTE)
    return notes


def describe_vm_notes(results: Results) -> list[str]:
    notes = []
    for name, phase in (("chain", results.vm_chain), ("baseline", results.vm_baseline)):
        runs = phase.runs
        negative = sum(1 for run in runs if run.detection_ms < 0)
        if negative:
            notes.append(f"VM {name}: {negative} of {len(runs)} runs had ready_at before the port was seen listening, so the listening detector was late for them.")
        attempts = statistics.median(run.readiness.probe_attempts for run in runs)
        notes.append(
            f"VM {name}: median {attempts:g} probe attempts per server; {phase.api_requests} Hetzner API requests "
            f"({phase.api_requests / len(runs):.1f} per server), {phase.rate_limited} of them rejected with 429."
        )
        resumed = [run for run in runs if run.readiness.resumed_steps]
        if resumed:
            notes.append(f"VM {name}: {len(resumed)} of {len(runs)} runs had a step sent again by the reconciler.")
    return notes


def publish(results: Results, plan: Plan, facts: dict[str, str], output: Path | None) -> None:
    tables = build_tables(results)
    notes = describe_notes(results)
    print("\n\n".join(render_table(table) for table in tables))
    print()
    print("\n".join(f"- {note}" for note in notes))

    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        existing = output.read_text() if output.exists() else ""
        output.write_text(replace_part(existing, PAGE_TITLE, render_page(facts, tables, describe_method(plan), notes)))
        progress(f"wrote {output}")


if __name__ == "__main__":
    sys.exit(main())
