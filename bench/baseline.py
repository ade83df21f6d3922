"""
The approach the provisioning chain replaces, as Celery tasks for the benchmark.

The old provisioner did all its work in one task. A container task created the
container and then polled `GET /healthz` every 2 seconds in a loop
(`while not ready: time.sleep(2)`), holding its worker slot for the whole
boot. A local task created the directory and returned at once.

These tasks use the same backends (`workers.backends`) and the same one-attempt
probe (`workers.probe.probe_healthz`) as the chain, so only the waiting differs.
Workers load them with `celery -A workers worker --include bench.baseline`.
Each task stores its timestamps (Unix seconds) in the hash `result_key(run_id)`
and then pushes to the list `done_key(run_id)`, which `wait_result` pops.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import redis

from workers.app import app
from workers.backends import backend_for
from workers.probe import probe_healthz
from workers.tasks import get_store
from workflows.model import ProvisionRecord, Status, Step, WorkspaceType

# The old loop's fixed polling interval.
POLL_INTERVAL_S = 2.0
# Seconds this baseline polls before it gives up: the chain's default readiness deadline.
READY_TIMEOUT_S = 120.0
KEY_PREFIX = "bench:baseline"


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

    deadline = time.monotonic() + READY_TIMEOUT_S
    attempts = 0
    while True:
        result = probe_healthz(workspace.harness_url)
        attempts += 1
        if result.ready:
            # Stamped after the successful GET, as the chain stamps ready_at.
            _report(run_id, {"ready_at": time.time(), "returned_at": time.time(), "attempts": attempts})
            return
        if time.monotonic() > deadline:
            _report(run_id, {"error": f"harnessd at {workspace.harness_url} not ready after {READY_TIMEOUT_S:g}s: {result.error}"})
            return
        time.sleep(POLL_INTERVAL_S)


def wait_result(client: redis.Redis, run_id: str, timeout_s: float) -> dict[str, str] | None:
    """Block until the baseline task of `run_id` reported; return its fields, or None after `timeout_s`."""
    if client.blpop([done_key(run_id)], timeout=timeout_s) is None:
        return None
    return {str(name): str(value) for name, value in client.hgetall(result_key(run_id)).items()}


def _record(run_id: str, workspace_type: WorkspaceType, image: str = "") -> ProvisionRecord:
    return ProvisionRecord(id=run_id, type=workspace_type, status=Status.PROVISIONING, step=Step.CREATE, image=image)


def _report(run_id: str, fields: Mapping[str, float | str]) -> None:
    with get_store().client.pipeline() as pipeline:
        for name, value in fields.items():
            pipeline.hset(result_key(run_id), name, value)
        pipeline.rpush(done_key(run_id), "1")
        pipeline.execute()
