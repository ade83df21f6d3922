"""
A continuation task for tests: records every hand-off it receives in Redis.

Workers started by the integration tests load this module with `--include`, and
tests pass `record_hand_off.s()` as a provision's continuation. The list
`test:handoffs:{provision_id}` then contains one JSON descriptor per call.
"""

from __future__ import annotations

import json

import redis

from workers.app import app, settings


@app.task(name="tests.record_hand_off")
def record_hand_off(descriptor: dict[str, str]) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    client.rpush(f"test:handoffs:{descriptor['provision_id']}", json.dumps(descriptor))
