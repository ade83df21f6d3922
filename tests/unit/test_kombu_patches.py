"""The workaround that keeps a worker alive when an acknowledgement races a Redis reconnect."""

from __future__ import annotations

import types

import pytest
import redis
from kombu.transport import redis as kombu_redis

from workers import kombu_patches


def test_closed_connection_raises_connection_error() -> None:
    kombu_patches.apply()
    channel = types.SimpleNamespace(connection=types.SimpleNamespace(client=None))

    with pytest.raises(redis.ConnectionError) as raised:
        kombu_redis.Channel._connparams(channel)

    assert str(raised.value) == "the broker connection is being re-established"


def test_apply_twice_wraps_once() -> None:
    kombu_patches.apply()
    patched = kombu_redis.Channel._connparams

    kombu_patches.apply()

    assert kombu_redis.Channel._connparams is patched
