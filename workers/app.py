"""
The Celery app: broker settings, queues and the reconciler's start.

Broker and store are the same Redis (REDIS_URL). Settings chosen for durability:

* acks_late with reject_on_worker_lost: a message is acknowledged only after its
  step finished, and a pool process that dies puts its message back at once;
* prefetch multiplier 1: a worker holds one waiting message per pool process, so
  messages do not pile up behind one busy worker;
* probes run on their own queue, `probe`, so slow creates cannot delay them;
* no result backend: the provision record in Redis is the result.

Start a worker with `celery -A workers worker`; it consumes both queues.
"""

from __future__ import annotations

import logging
import threading

from celery import Celery, signals
from kombu import Queue

from workers.config import load_settings

PROVISION_QUEUE = "provision"
PROBE_QUEUE = "probe"
# Longest countdown (transient-error backoff, 16 s) plus the longest step, with a wide margin.
VISIBILITY_TIMEOUT_S = 3600

settings = load_settings()

app = Celery("workspace_provisioner", include=["workers.tasks"])
app.conf.update(
    broker_url=settings.redis_url,
    broker_connection_retry_on_startup=True,
    broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S},
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_default_queue=PROVISION_QUEUE,
    task_queues=(Queue(PROVISION_QUEUE), Queue(PROBE_QUEUE)),
    task_routes={"provision.probe_healthz": {"queue": PROBE_QUEUE}},
    worker_send_task_events=True,
    task_send_sent_event=True,
    enable_utc=True,
)

logger = logging.getLogger(__name__)


@signals.worker_ready.connect
def start_reconciler(**_kwargs: object) -> None:
    """Start the reconciler thread in the worker's main process."""
    from workers.reconciler import run_forever

    thread = threading.Thread(target=run_forever, args=(settings.reconcile_interval_s,), name="reconciler", daemon=True)
    thread.start()
    logger.info("Reconciler started; sweeping every %.1fs", settings.reconcile_interval_s)
