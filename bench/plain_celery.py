"""
A plain Celery app for the recovery benchmark: one late-acknowledged task and no reconciler.

It stands for what Celery alone does when a worker dies mid-task. The task is
acknowledged only after it returns (`task_acks_late`), so the Redis transport
keeps it in its unacknowledged set while it runs. After a SIGKILL nothing acks
or rejects it: kombu puts it back in the queue only when a restore sweep finds
it older than the visibility timeout.

This module imports nothing of the provisioner, so its worker runs no
reconciler and none of the provisioner's patches. Settings come from the
environment of the worker:

    PLAIN_BROKER_URL             the Redis broker (required)
    PLAIN_VISIBILITY_TIMEOUT     seconds; unset keeps kombu's default of 3600
    PLAIN_RESTORE_THROTTLE       kombu's unacked_restore_throttle; unset keeps its default of 10

Start a worker with `celery -A bench.plain_celery worker`.
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

KEY_PREFIX = "bench:plain"

app = Celery("plain_recovery")
_transport_options: dict[str, float] = {}
if os.environ.get("PLAIN_VISIBILITY_TIMEOUT"):
    _transport_options["visibility_timeout"] = float(os.environ["PLAIN_VISIBILITY_TIMEOUT"])
if os.environ.get("PLAIN_RESTORE_THROTTLE"):
    _transport_options["unacked_restore_throttle"] = int(os.environ["PLAIN_RESTORE_THROTTLE"])
app.conf.update(
    broker_url=os.environ.get("PLAIN_BROKER_URL", ""),
    broker_connection_retry_on_startup=True,
    broker_transport_options=_transport_options,
    task_acks_late=True,
    task_ignore_result=True,
    worker_prefetch_multiplier=1,
)


def starts_key(run_id: str) -> str:
    """Return the Redis list that gets one Unix time per start of the task of `run_id`."""
    return f"{KEY_PREFIX}:starts:{run_id}"


@app.task(name="bench.plain.hold")
def hold(run_id: str, hold_s: float) -> None:
    """Record this start of the task, then keep the worker busy for `hold_s` seconds."""
    client = redis.Redis.from_url(app.conf.broker_url)
    client.rpush(starts_key(run_id), time.time())
    time.sleep(hold_s)
