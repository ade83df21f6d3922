"""
The reconciler: re-sends the step of a provision that no worker is working on.

A step message can be lost: its worker died between committing a step and
sending the next message, or died holding a countdown message in memory (the
Redis transport gives such a message back only after its visibility timeout, an
hour by default). Every worker runs this sweep in a thread of its main process;
a Redis lock lets one worker at a time sweep. A provision is resumed when its
step is due for longer than `RESUME_GRACE_S` and no worker holds its lease. The
re-sent message carries the current fence, so if the original turns up after
all, whichever copy runs second finds the fence moved on and does nothing.
"""

from __future__ import annotations

import logging
import time
import uuid

import redis
from collections.abc import Callable
from datetime import datetime, timedelta

from workflows import events
from workflows.errors import ProvisionError
from workflows.model import Step, utc_now
from workflows.store import Store

logger = logging.getLogger(__name__)

RESUME_GRACE_S = 3.0


def reconcile_once(store: Store, enqueue: Callable[[Step, str, int, float], None], now: datetime | None = None) -> list[str]:
    """Re-send the due step of every provision that no worker works on; return their ids."""
    now = now or utc_now()
    resumed = []
    for provision_id in store.active_ids():
        record = store.find(provision_id)
        if record is None or record.step is Step.DONE:
            store.client.srem(store.active_key, provision_id)
            continue
        due = record.due_at or record.created_at or now
        if (now - due).total_seconds() < RESUME_GRACE_S or store.lease_holder(provision_id):
            continue

        event = {"event": events.STEP_RESUMED, "at": now, "provision_id": provision_id, "type": record.type, "step": record.step, "overdue_s": round((now - due).total_seconds(), 1)}
        changes = {"due_at": now + timedelta(seconds=RESUME_GRACE_S)}
        if store.commit(provision_id, record.fence, changes, event, bump=False) is None:
            continue
        logger.warning("Provision %s: step %s overdue by %.1fs with no worker on it; sent again", provision_id, record.step.value, (now - due).total_seconds())
        enqueue(record.step, provision_id, record.fence, 0.0)
        resumed.append(provision_id)
    return resumed


def run_forever(interval_s: float) -> None:
    """Sweep every `interval_s` seconds while another worker does not; never returns."""
    from workers.tasks import enqueue_step, get_store

    store = get_store()
    token = uuid.uuid4().hex
    lock_key = f"{store.prefix}:reconciler"
    failures = 0
    while True:
        try:
            if store.client.set(lock_key, token, nx=True, px=int(interval_s * 900)):
                reconcile_once(store, enqueue_step)
        except (ProvisionError, redis.RedisError, OSError) as exc:
            failures += 1
            # Redis being down fails every sweep: log the first failure and then one in 30.
            if failures % 30 == 1:
                logger.warning("Reconciler sweep failed (%d in a row): %s", failures, exc)
        except Exception:
            failures += 1
            logger.exception("Reconciler sweep failed unexpectedly")
        else:
            if failures:
                logger.info("Reconciler sweeps again after %d failed ones", failures)
            failures = 0
        time.sleep(interval_s)
