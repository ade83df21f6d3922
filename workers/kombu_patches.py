"""
A workaround for a kombu bug that kills a worker when Redis restarts.

With kombu 5.7.0's Redis transport, a late acknowledgement that runs while the
consumer is reconnecting finds `connection.client` set to None, and
`Channel._connparams` raises AttributeError. `Message.ack_log_error` catches
only connection errors, so the AttributeError ends the worker with
"Unrecoverable error" instead of letting it reconnect. `apply()` makes that
case raise redis's ConnectionError, which the acknowledgement path logs and
survives. The unacknowledged message comes back after the visibility timeout,
where its stale fence makes it a no-op.
"""

from __future__ import annotations

import functools
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

_applied = False


def apply() -> None:
    """Patch `kombu.transport.redis.Channel._connparams` once per process."""
    global _applied
    if _applied:
        return
    original = kombu_redis.Channel._connparams

    @functools.wraps(original)
    def connparams(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.connection.client is None:
            raise redis.ConnectionError("the broker connection is being re-established")
        return original(self, *args, **kwargs)

    # TODO: remove once kombu's Redis channel handles a closed connection in _connparams.
    kombu_redis.Channel._connparams = connparams
    _applied = True
