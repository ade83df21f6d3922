"""
A worker plugin for tests: publishes every step message twice.

Loaded into a worker with `--include`, it hooks Celery's after_task_publish
signal so each provision.* message (first sends, next steps and countdown
retries alike) is followed by an identical copy. The provisioner must then
still make one workspace and one hand-off.
"""

from __future__ import annotations

from typing import Any

from celery import signals

from workers.app import app

_COPY_HEADER = "test-duplicate"


@signals.after_task_publish.connect
def publish_again(sender: str | None = None, headers: dict[str, Any] | None = None, body: Any = None, **_kwargs: Any) -> None:
    if not sender or not sender.startswith("provision.") or not headers or headers.get(_COPY_HEADER):
        return
    args, kwargs, _embed = body
    countdown = None
    if headers.get("eta"):
        from datetime import datetime, timezone

        countdown = max(0.0, (datetime.fromisoformat(headers["eta"]) - datetime.now(timezone.utc)).total_seconds())
    app.send_task(sender, args=args, kwargs=kwargs, countdown=countdown, headers={_COPY_HEADER: True}, queue=None)
