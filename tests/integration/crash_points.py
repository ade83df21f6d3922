"""
A worker plugin for tests: kill the worker right after a step's handler ran, before its commit.

Loaded into a worker with `--include`. A test arms a crash by setting the Redis
key `test:crash:{provision_id}:{step}` to `child` (SIGKILL the pool process
only) or `group` (SIGKILL the main process and every pool process). The first
run of that step for that provision deletes the key and dies, so the backend
call has happened and the record does not know it yet. With `child-always`
the key stays, so every run of the step dies: a poison step.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import redis

from workers import handlers
from workers.app import settings
from workflows.model import Step

_client = redis.Redis.from_url(settings.redis_url, decode_responses=True)


def _crash_after(step: Step, handler: Callable[[handlers.StepInput], handlers.Outcome]) -> Callable[[handlers.StepInput], handlers.Outcome]:
    def run(step_input: handlers.StepInput) -> handlers.Outcome:
        outcome = handler(step_input)
        key = f"test:crash:{step_input.record.id}:{step.value}"
        mode = _client.get(key)
        if mode in ("child", "group"):
            _client.delete(key)
        if mode == "group":
            os.killpg(os.getpgid(0), signal.SIGKILL)
        if mode in ("child", "child-always"):
            os.kill(os.getpid(), signal.SIGKILL)
        return outcome

    return run


for _step, _handler in list(handlers.HANDLERS.items()):
    handlers.HANDLERS[_step] = _crash_after(_step, _handler)
