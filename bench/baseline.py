"""
The approach the provisioning chain replaces, as Celery tasks for the benchmark.

The old provisioner did all its work in one task. A container task created the
container and then polled `GET /healthz` every 2 seconds in a loop
(`while not ready: time.sleep(2)`), holding its worker slot for the whole
boot. A VM task did the same after it had polled the server's status every
2 seconds until Hetzner reported it running. A local task created the
directory and returned at once.

These tasks use the same backends (`workers.backends`) and the same one-attempt
probe (`workers.probe.probe_healthz`) as the chain, so only the waiting differs.
Workers load them with `celery -A workers worker --include bench.baseline`.
Each task stores its timestamps (Unix seconds) in the hash `result_key(run_id)`
and then pushes to the list `done_key(run_id)`, which `wait_result` pops.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TypeVar

import redis

from workers.app import app
from workers.backends import backend_for
from workers.backends.base import RunState
from workers.probe import probe_healthz
from workers.tasks import get_store
from workflows.errors import BackendError, RateLimited
from workflows.model import ProvisionRecord, Status, Step, WorkspaceType

# The old loop's fixed polling interval.
POLL_INTERVAL_S = 2.0
# Seconds this baseline polls before it gives up: the chain's default readiness deadline.
READY_TIMEOUT_S = 120.0
KEY_PREFIX = "bench:baseline"

T = TypeVar("T")


def result_key(run_id: str) -> str:
    return f"{KEY_PREFIX}:result:{run_id}"


def done_key(run_id: str) -> str:
    return f"{KEY_PREFIX}:done:{run_id}"


@app.task(name="bench.baseline.provision_local")
def provision_local(run_id: str) -> None:
    """Create a local workspace directory in one task and report it ready at once."""
    record = _record(run_id, WorkspaceType.LOCAL)
    backend_for(WorkspaceType.LOCAL).create(record, {})
    _report(run_id, {"returned_at": time.time()})


@app.task(name="bench.baseline.provision_container")
def provision_container(run_id: str, image: str, boot_delay_s: float) -> None:
    """Create a container, then probe its harnessd every POLL_INTERVAL_S seconds until the probe reports it ready."""
    record = _record(run_id, WorkspaceType.CONTAINER, image)
    workspace = backend_for(WorkspaceType.CONTAINER).create(record, {"HARNESSD_BOOT_DELAY": f"{boot_delay_s:.3f}"})
    _poll_healthz(run_id, workspace.harness_url, time.monotonic() + READY_TIMEOUT_S)


@app.task(name="bench.baseline.provision_vm")
def provision_vm(run_id: str) -> None:
    """Create a server, poll its status every POLL_INTERVAL_S seconds until it runs, then probe harnessd as often."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    backend = backend_for(WorkspaceType.VM)
    # A first start of the chain's create step skips the lookup for an earlier server; so does this.
    record = _record(run_id, WorkspaceType.VM)
    record.step_starts = 1
    try:
        workspace = _call_within_budget(lambda: backend.create(record, {}))
        record.handle = workspace.handle
        while _call_within_budget(lambda: backend.inspect(record)).state is not RunState.RUNNING:
            if time.monotonic() > deadline:
                _report(run_id, {"error": f"server {workspace.handle} not running after {READY_TIMEOUT_S:g}s"})
                return
            time.sleep(POLL_INTERVAL_S)
    except BackendError as exc:
        _report(run_id, {"error": f"{type(exc).__name__}: {exc}"})
        return

    _poll_healthz(run_id, workspace.harness_url, deadline)


def wait_result(client: redis.Redis, run_id: str, timeout_s: float) -> dict[str, str] | None:
    """Block until the baseline task of `run_id` reported; return its fields, or None after `timeout_s`."""
    if client.blpop([done_key(run_id)], timeout=timeout_s) is None:
        return None
    return {str(name): str(value) for name, value in client.hgetall(result_key(run_id)).items()}


def _poll_healthz(run_id: str, harness_url: str, deadline: float) -> None:
    """Probe `harness_url` every POLL_INTERVAL_S seconds and report the outcome; `deadline` is on the monotonic clock."""
    attempts = 0
    while True:
        result = probe_healthz(harness_url)
        attempts += 1
        if result.ready:
            # Stamped after the successful GET, as the chain stamps ready_at.
            fields: dict[str, float | str] = {"ready_at": time.time(), "returned_at": time.time(), "attempts": attempts, "harness_url": harness_url}
            _report(run_id, fields)
            return
        if time.monotonic() > deadline:
            _report(run_id, {"error": f"harnessd at {harness_url} not ready after {READY_TIMEOUT_S:g}s: {result.error}"})
            return
        time.sleep(POLL_INTERVAL_S)


def _call_within_budget(call: Callable[[], T]) -> T:
    """Run one backend call, sleeping and trying again while the shared Hetzner request budget is used up."""
    while True:
        try:
            return call()
        except RateLimited as exc:
            time.sleep(exc.retry_after_s)


def _record(run_id: str, workspace_type: WorkspaceType, image: str = "") -> ProvisionRecord:
    return ProvisionRecord(id=run_id, type=workspace_type, status=Status.PROVISIONING, step=Step.CREATE, image=image)


def _report(run_id: str, fields: Mapping[str, float | str]) -> None:
    with get_store().client.pipeline() as pipeline:
        for name, value in fields.items():
            pipeline.hset(result_key(run_id), name, value)
        pipeline.rpush(done_key(run_id), "1")
        pipeline.execute()
