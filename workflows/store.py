"""
Provision records, event histories, leases and secrets in Redis.

Keys, under a prefix (default "wp"):

    {prefix}:provision:{id}  hash    the record (`workflows.model.ProvisionRecord`)
    {prefix}:events:{id}     stream  the event history, oldest first
    {prefix}:secrets:{id}    hash    environment variable values, read only by the create step
    {prefix}:lease:{id}      string  the token of the worker running a step, with a TTL
    {prefix}:provisions      zset    every provision id, scored by creation time
    {prefix}:active          set     ids whose next step has not run yet (step != done)

Every change to a record goes through `commit`, a Lua script that checks the
fencing token (and the caller's lease, if it holds one), applies the change,
bumps the token and appends the event in one atomic operation. A stale copy of
a step therefore cannot move a provision backwards or add an event.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis

from workflows.errors import InvalidRequest, ProvisionNotFound, StoreUnavailable
from workflows.model import (
    ProvisionRecord,
    ProvisionRequest,
    Status,
    Step,
    WorkspaceType,
    from_iso,
    to_iso,
    utc_now,
)

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# Secrets outlive any sane provision, but expire even if the provision is never destroyed.
SECRETS_TTL_S = 7 * 24 * 3600
EVENTS_MAX_LENGTH = 10_000

# commit() results below zero, from the Lua script.
_MISSING, _STALE, _NOT_LEASE_HOLDER = -3, -1, -2

_CREATE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local n = tonumber(ARGV[1])
local i = 2
redis.call('HSET', KEYS[1], unpack(ARGV, i, i + 2 * n - 1))
i = i + 2 * n
n = tonumber(ARGV[i])
if n > 0 then
  redis.call('HSET', KEYS[3], unpack(ARGV, i + 1, i + 2 * n))
  redis.call('EXPIRE', KEYS[3], ARGV[i + 2 * n + 1])
end
i = i + 2 * n + 2
redis.call('ZADD', KEYS[4], ARGV[i], ARGV[i + 1])
redis.call('SADD', KEYS[5], ARGV[i + 1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[i + 2], '*', unpack(ARGV, i + 3))
return 1
"""

_COMMIT_SCRIPT = """
local fence = redis.call('HGET', KEYS[1], 'fence')
if not fence then return -3 end
if fence ~= ARGV[1] then return -1 end
if ARGV[2] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[2] then return -2 end
local n = tonumber(ARGV[5])
local i = 6
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, i, i + 2 * n - 1)) end
i = i + 2 * n
if ARGV[3] == '1' then fence = redis.call('HINCRBY', KEYS[1], 'fence', 1) end
if redis.call('HGET', KEYS[1], 'step') == 'done' then
  redis.call('SREM', KEYS[4], ARGV[6 + 2 * n])
else
  redis.call('SADD', KEYS[4], ARGV[6 + 2 * n])
end
i = i + 1
if #ARGV >= i then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[i], '*', unpack(ARGV, i + 1))
end
if ARGV[4] == '1' and ARGV[2] ~= '' then redis.call('DEL', KEYS[3]) end
return tonumber(fence)
"""

_BEGIN_STEP_SCRIPT = """
local record = redis.call('HMGET', KEYS[1], 'fence', 'step')
if not record[1] then return {'missing', '0'} end
if record[1] ~= ARGV[1] or record[2] ~= ARGV[4] then return {'stale', '0'} end
if not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then
  return {'leased', tostring(redis.call('PTTL', KEYS[2]))}
end
return {'ok', tostring(redis.call('HINCRBY', KEYS[1], 'step_starts', 1))}
"""

_RENEW_LEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_RELEASE_LEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

P = ParamSpec("P")
R = TypeVar("R")


def redact_url(url: str) -> str:
    """Return `url` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.username:
        netloc = f"{parts.username}:***@{netloc}"
    else:
        netloc = f":***@{netloc}"
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _wrap_redis_errors(method: Callable[P, R]) -> Callable[P, R]:
    """Turn a lost Redis connection into StoreUnavailable, naming the URL."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            store = args[0]
            assert isinstance(store, Store)
            raise StoreUnavailable(
                f"Redis at {redact_url(store.url)} is unreachable ({exc}); "
                "start Redis or set REDIS_URL to one that runs"
            ) from exc
        except redis.ResponseError as exc:
            if "LOADING" in str(exc) or "MISCONF" in str(exc) or "READONLY" in str(exc):
                store = args[0]
                assert isinstance(store, Store)
                raise StoreUnavailable(f"Redis at {redact_url(store.url)} cannot serve now: {exc}") from exc
            raise

    return wrapper


@dataclasses.dataclass(frozen=True)
class BeginResult:
    """The result of `Store.begin_step`: `outcome` is ok, stale, leased or missing."""

    outcome: str
    # Milliseconds the current lease has left when `outcome` is leased; start count when ok.
    value: int


def _encode(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, datetime):
        return to_iso(value)
    if value is None:
        return ""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def encode_fields(fields: Mapping[str, Any]) -> dict[str, str]:
    """Encode record or event fields as the strings Redis stores."""
    return {name: _encode(value) for name, value in fields.items()}


def decode_record(raw: Mapping[str, str]) -> ProvisionRecord:
    """Build a record from the strings of its Redis hash."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(ProvisionRecord):
        text = raw.get(field.name, "")
        values[field.name] = _decode_field(field.name, text, field.default)
    return ProvisionRecord(**values)


def _decode_field(name: str, text: str, default: Any) -> Any:
    if name == "type":
        return WorkspaceType(text)
    if name == "status":
        return Status(text)
    if name == "step":
        return Step(text)
    if name.endswith("_at") or name in ("deadline", "due_at"):
        return from_iso(text)
    if name in ("fence", "attempts", "step_starts", "transient_errors", "port_retries"):
        return int(text or 0)
    if name == "ready_timeout_s":
        return float(text or 0)
    if name == "keep_on_failure":
        return text == "1"
    if name == "env_keys":
        return tuple(json.loads(text)) if text else ()
    if name == "options":
        return json.loads(text) if text else {}
    if name == "continuation":
        return json.loads(text) if text else None
    return text if text or default is dataclasses.MISSING else default


def _flatten(fields: Mapping[str, str]) -> list[str]:
    flat: list[str] = []
    for name, value in fields.items():
        flat.extend((name, value))
    return flat


class Store:
    """
    Records, events, leases and secrets of provisions in one Redis database.

    **Usage**

        store = Store.from_url("redis://127.0.0.1:6379/0")
        record = store.get("ws-42")

    **Parameters**

    * client - a `redis.Redis` with `decode_responses=True`.
    * url - the URL the client was made from, shown (without password) in errors.
    * prefix - the first part of every key.
    """

    def __init__(self, client: redis.Redis, url: str, prefix: str = "wp") -> None:
        self.client = client
        self.url = url
        self.prefix = prefix
        self._create = client.register_script(_CREATE_SCRIPT)
        self._commit = client.register_script(_COMMIT_SCRIPT)
        self._begin_step = client.register_script(_BEGIN_STEP_SCRIPT)
        self._renew_lease = client.register_script(_RENEW_LEASE_SCRIPT)
        self._release_lease = client.register_script(_RELEASE_LEASE_SCRIPT)

    @classmethod
    def from_url(cls, url: str = DEFAULT_REDIS_URL, prefix: str = "wp") -> Store:
        """Connect lazily to the Redis at `url`; raise InvalidRequest if the URL is malformed."""
        try:
            client = redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_connect_timeout=3,
                socket_timeout=10,
                health_check_interval=15,
            )
        except ValueError as exc:
            raise InvalidRequest(f"REDIS_URL {redact_url(url)!r} is invalid: {exc}") from None
        return cls(client, url, prefix)

    # Keys.

    def record_key(self, provision_id: str) -> str:
        return f"{self.prefix}:provision:{provision_id}"

    def events_key(self, provision_id: str) -> str:
        return f"{self.prefix}:events:{provision_id}"

    def secrets_key(self, provision_id: str) -> str:
        return f"{self.prefix}:secrets:{provision_id}"

    def lease_key(self, provision_id: str) -> str:
        return f"{self.prefix}:lease:{provision_id}"

    @property
    def index_key(self) -> str:
        return f"{self.prefix}:provisions"

    @property
    def active_key(self) -> str:
        return f"{self.prefix}:active"

    # Records.

    @_wrap_redis_errors
    def ping(self) -> None:
        self.client.ping()

    @_wrap_redis_errors
    def create(self, request: ProvisionRequest, secrets: Mapping[str, str], event: Mapping[str, Any]) -> ProvisionRecord:
        """Record a new provision, its secrets and its first event; raise InvalidRequest if the id is taken."""
        now = utc_now()
        record = ProvisionRecord(
            id=request.id,
            type=request.type,
            status=Status.PENDING,
            step=Step.CREATE,
            ready_timeout_s=request.ready_timeout_s,
            keep_on_failure=request.keep_on_failure,
            repo=request.repo,
            image=request.image,
            env_keys=request.env_keys,
            options=dict(request.options),
            continuation=request.continuation,
            created_at=now,
        )
        fields = encode_fields(dataclasses.asdict(record) | {"env_keys": list(request.env_keys)})
        fields = {name: value for name, value in fields.items() if value != ""}
        arguments: list[Any] = [len(fields), *_flatten(fields)]
        arguments += [len(secrets), *_flatten(dict(secrets)), SECRETS_TTL_S]
        arguments += [now.timestamp(), request.id, EVENTS_MAX_LENGTH, *_flatten(encode_fields(event))]

        keys = [
            self.record_key(request.id),
            self.events_key(request.id),
            self.secrets_key(request.id),
            self.index_key,
            self.active_key,
        ]
        if not self._create(keys=keys, args=arguments):
            existing = self.get(request.id)
            raise InvalidRequest(
                f"provision {request.id!r} already exists (status {existing.status.value}); "
                "choose another id, or destroy it and use a new one"
            )
        return record

    @_wrap_redis_errors
    def find(self, provision_id: str) -> ProvisionRecord | None:
        raw = self.client.hgetall(self.record_key(provision_id))
        return decode_record(raw) if raw else None

    def get(self, provision_id: str) -> ProvisionRecord:
        """Return the record of `provision_id`; raise ProvisionNotFound if there is none."""
        record = self.find(provision_id)
        if record is None:
            raise ProvisionNotFound(provision_id, self._holds_no_provision())
        return record

    @_wrap_redis_errors
    def _holds_no_provision(self) -> bool:
        return self.client.zcard(self.index_key) == 0

    @_wrap_redis_errors
    def list_ids(self) -> list[str]:
        """Return every provision id, oldest first."""
        return list(self.client.zrange(self.index_key, 0, -1))

    @_wrap_redis_errors
    def active_ids(self) -> list[str]:
        """Return the ids of provisions that still have a step to run."""
        return sorted(self.client.smembers(self.active_key))

    @_wrap_redis_errors
    def commit(
        self,
        provision_id: str,
        fence: int,
        changes: Mapping[str, Any],
        event: Mapping[str, Any] | None = None,
        lease_token: str = "",
        bump: bool = True,
        release: bool = False,
    ) -> int | None:
        """
        Apply `changes` and append `event` if the record's fence still equals `fence`.

        With `lease_token`, the caller must also still hold the provision's lease.
        Returns the new fence, or None if the record moved on (a stale step or a
        lost lease); raises ProvisionNotFound if the record is gone.
        """
        encoded = encode_fields(changes)
        arguments: list[Any] = [fence, lease_token, "1" if bump else "0", "1" if release else "0"]
        arguments += [len(encoded), *_flatten(encoded), provision_id]
        if event:
            arguments += [EVENTS_MAX_LENGTH, *_flatten(encode_fields(event))]
        keys = [
            self.record_key(provision_id),
            self.events_key(provision_id),
            self.lease_key(provision_id),
            self.active_key,
        ]

        result = int(self._commit(keys=keys, args=arguments))
        if result == _MISSING:
            raise ProvisionNotFound(provision_id)
        if result in (_STALE, _NOT_LEASE_HOLDER):
            return None
        return result

    # Leases.

    @_wrap_redis_errors
    def begin_step(self, provision_id: str, step: Step, fence: int, token: str, ttl_s: float) -> BeginResult:
        """Take the provision's lease for `step` if `fence` is current and no other worker holds it."""
        keys = [self.record_key(provision_id), self.lease_key(provision_id)]
        outcome, value = self._begin_step(keys=keys, args=[fence, token, int(ttl_s * 1000), step.value])
        return BeginResult(outcome, int(value))

    @_wrap_redis_errors
    def renew_lease(self, provision_id: str, token: str, ttl_s: float) -> bool:
        return bool(self._renew_lease(keys=[self.lease_key(provision_id)], args=[token, int(ttl_s * 1000)]))

    @_wrap_redis_errors
    def release_lease(self, provision_id: str, token: str) -> None:
        self._release_lease(keys=[self.lease_key(provision_id)], args=[token])

    @_wrap_redis_errors
    def lease_holder(self, provision_id: str) -> str | None:
        return self.client.get(self.lease_key(provision_id))

    # Secrets.

    @_wrap_redis_errors
    def get_secrets(self, provision_id: str) -> dict[str, str]:
        return dict(self.client.hgetall(self.secrets_key(provision_id)))

    @_wrap_redis_errors
    def delete_secrets(self, provision_id: str) -> None:
        self.client.delete(self.secrets_key(provision_id))

    # Events.

    @_wrap_redis_errors
    def events(self, provision_id: str, after: str = "-", count: int | None = None) -> list[tuple[str, dict[str, str]]]:
        """Return the events of a provision after entry id `after` (exclusive unless "-"), oldest first."""
        start = after if after == "-" else f"({after}"
        return [(entry_id, dict(fields)) for entry_id, fields in self.client.xrange(self.events_key(provision_id), start, "+", count)]

    @_wrap_redis_errors
    def wait_events(self, provision_id: str, after: str, block_s: float) -> list[tuple[str, dict[str, str]]]:
        """Block up to `block_s` for events after entry id `after`; return them, oldest first."""
        reply = self.client.xread({self.events_key(provision_id): after}, block=int(block_s * 1000))
        entries: list[tuple[str, dict[str, str]]] = []
        for _stream, stream_entries in reply or []:
            entries.extend((entry_id, dict(fields)) for entry_id, fields in stream_entries)
        return entries

    def follow(self, provision_id: str, stop: Callable[[], bool], poll_s: float = 1.0) -> Iterator[tuple[str, dict[str, str]]]:
        """Yield every event of a provision, then new ones as they arrive, until `stop()` returns True."""
        last = "0-0"
        for entry_id, fields in self.events(provision_id):
            last = entry_id
            yield entry_id, fields
        while not stop():
            for entry_id, fields in self.wait_events(provision_id, last, poll_s):
                last = entry_id
                yield entry_id, fields


def deadline_after(seconds: float) -> datetime:
    return utc_now() + timedelta(seconds=seconds)


def monotonic_s() -> float:
    return time.monotonic()
