"""
A request budget for the Hetzner Cloud API, shared by every worker through Redis.

Hetzner counts every request of a project against one bucket and reports how
full it is in each response: `RateLimit-Limit` (bucket size), `RateLimit-Remaining`
and `RateLimit-Reset` (Unix time when the bucket is full again). The hcloud SDK
ignores these headers, so the VM backend feeds them to this gate and consults it
before each request:

* after a 429 no worker sends anything until the reset time the headers give;
* otherwise the gate estimates the tokens left: the last reported remaining
  count, plus the refill since then, minus the requests sent since. The refill
  rate follows from the headers, because the missing tokens are back by the
  reset time. When fewer than `RESERVE` tokens would be left, the caller waits
  until the refill brings them.

Waiting means rescheduling the step with a countdown, never sleeping. The
estimate is conservative (a response never raises it above what was counted),
so many workers together stay under the budget once they have seen it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import redis

# Tokens left untouched, for requests already on their way from other workers.
RESERVE = 2

# The hash holds: limit, tokens (estimated at updated_at), rate (tokens per second, if known),
# updated_at, blocked_until. Times are Unix seconds.
_TAKE_SCRIPT = """
local state = redis.call('HMGET', KEYS[1], 'limit', 'tokens', 'rate', 'updated_at', 'blocked_until')
local now = tonumber(ARGV[1])
local reserve = tonumber(ARGV[2])
local blocked_until = tonumber(state[5] or '0') or 0
if now < blocked_until then return tostring(blocked_until - now) end
if not state[1] then return '0' end
local limit, tokens = tonumber(state[1]), tonumber(state[2])
local rate, updated_at = tonumber(state[3] or '0') or 0, tonumber(state[4])
if rate > 0 then tokens = math.min(limit, tokens + (now - updated_at) * rate) end
if tokens < reserve + 1 then
  if rate > 0 then return tostring((reserve + 1 - tokens) / rate) end
  return '1'
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - 1), 'updated_at', ARGV[1])
return '0'
"""

_OBSERVE_SCRIPT = """
local now = tonumber(ARGV[1])
local limit, remaining, reset_at = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'limit', 'tokens', 'rate', 'updated_at')
local rate = tonumber(state[3] or '0') or 0
if remaining < limit and reset_at > now then rate = (limit - remaining) / (reset_at - now) end
local tokens = remaining
if state[1] and tonumber(state[1]) == limit and rate > 0 then
  local estimate = math.min(limit, tonumber(state[2]) + (now - tonumber(state[4])) * rate)
  tokens = math.min(remaining, estimate)
end
redis.call('HSET', KEYS[1], 'limit', tostring(limit), 'tokens', tostring(tokens), 'rate', tostring(rate), 'updated_at', ARGV[1])
if ARGV[5] == '1' then redis.call('HSET', KEYS[1], 'blocked_until', ARGV[4]) end
redis.call('EXPIRE', KEYS[1], 7200)
return 1
"""


class RateGate:
    """
    The shared request budget of one Hetzner project (one API token).

    **Parameters**

    * client - Redis, shared by all workers.
    * key - the Redis hash of the budget, one per token.
    """

    def __init__(self, client: redis.Redis, key: str) -> None:
        self.key = key
        self._take = client.register_script(_TAKE_SCRIPT)
        self._observe = client.register_script(_OBSERVE_SCRIPT)

    def wait_s(self, now: float | None = None) -> float:
        """Take one request from the budget and return 0, or return the seconds to wait first."""
        current = time.time() if now is None else now
        return float(self._take(keys=[self.key], args=[repr(current), RESERVE]))

    def observe(self, headers: Mapping[str, str], rate_limited: bool, now: float | None = None) -> None:
        """Update the budget from a response's RateLimit-* headers; block everyone until reset after a 429."""
        try:
            limit = int(headers["RateLimit-Limit"])
            remaining = int(headers["RateLimit-Remaining"])
            reset_at = float(headers["RateLimit-Reset"])
        except (KeyError, ValueError):
            return
        current = time.time() if now is None else now
        arguments = [repr(current), limit, 0 if rate_limited else remaining, repr(reset_at), "1" if rate_limited else "0"]
        self._observe(keys=[self.key], args=arguments)
