"""
The Celery app: broker settings, queues and the reconciler's start.

Broker and store are the same Redis (REDIS_URL). Settings chosen for durability:

* acks_late with reject_on_worker_lost: a message is acknowledged only after its
  step finished, and a pool process that dies puts its message back at once;
* prefetch multiplier 1: a worker reserves one waiting message per pool process, so
  messages do not pile up behind one busy worker;
* probes run on their own queue, `{prefix}.probe`, so slow creates cannot
  delay them; the other steps run on `{prefix}.provision`;
* no result backend: the provision record in Redis is the result;
* the broker's visibility timeout (PROVISIONER_VISIBILITY_TIMEOUT, default 600 s)
  must exceed the longest countdown plus the longest step, or a waiting message
  would be delivered twice. A worker with a shorter one exits at start. A message
  whose worker died comes back only after this timeout, which is why
  `workers.reconciler` resumes such provisions much sooner;
* the transport's restore lock expires after 30 s instead of 5 minutes, so a
  worker killed while restoring messages does not block the restore for long.

Start a worker with `celery -A workers worker`; it consumes both queues of its
PROVISIONER_KEY_PREFIX.
"""

from __future__ import annotations

import logging
import sys
import threading

from celery import Celery, bootsteps, signals
from celery.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

from workers import kombu_patches
from workers.config import load_settings
from workflows.policy import MAX_COUNTDOWN_S, MAX_STEP_S

settings = load_settings()
kombu_patches.apply()

# Queue names carry the key prefix, so deployments that share a Redis database keep apart.
PROVISION_QUEUE = f"{settings.key_prefix}.provision"
PROBE_QUEUE = f"{settings.key_prefix}.probe"

app = Celery("workspace_provisioner", include=["workers.tasks"])
app.conf.update(
    broker_url=settings.redis_url,
    broker_connection_retry_on_startup=True,
    broker_transport_options={
        "visibility_timeout": settings.visibility_timeout_s,
        "unacked_mutex_expire": 30,
    },
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_default_queue=PROVISION_QUEUE,
    task_queues=tuple(Queue(name, Exchange(name, type="direct"), routing_key=name) for name in (PROVISION_QUEUE, PROBE_QUEUE)),
    task_routes={"provision.probe_healthz": {"queue": PROBE_QUEUE}},
    worker_send_task_events=True,
    task_send_sent_event=True,
    enable_utc=True,
)

logger = logging.getLogger(__name__)


def check_visibility_timeout() -> None:
    """Refuse to start a worker whose broker could deliver a waiting message twice."""
    visibility_timeout = float(app.conf.broker_transport_options.get("visibility_timeout", 3600))
    needed = MAX_COUNTDOWN_S + MAX_STEP_S
    if visibility_timeout <= needed:
        raise ImproperlyConfigured(
            f"broker_transport_options['visibility_timeout'] is {visibility_timeout:g}s "
            f"(PROVISIONER_VISIBILITY_TIMEOUT); it must exceed the longest countdown ({MAX_COUNTDOWN_S:g}s) "
            f"plus the longest step ({MAX_STEP_S:g}s), so set it above {needed:g}s"
        )


class BrokerSettingsCheck(bootsteps.Step):
    """A worker boot step that runs `check_visibility_timeout` and stops the worker with one line if it fails."""

    def __init__(self, worker: object, **kwargs: object) -> None:
        super().__init__(worker, **kwargs)
        try:
            check_visibility_timeout()
        except ImproperlyConfigured as exc:
            print(f"worker: {exc}", file=sys.stderr)
            raise SystemExit(2) from None


app.steps["worker"].add(BrokerSettingsCheck)


@signals.worker_ready.connect
def start_reconciler(**_kwargs: object) -> None:
    """Start the reconciler thread in the worker's main process."""
    from workers.reconciler import run_forever

    thread = threading.Thread(target=run_forever, args=(settings.reconcile_interval_s,), name="reconciler", daemon=True)
    thread.start()
    logger.info("Reconciler started; sweeping every %.1fs", settings.reconcile_interval_s)
