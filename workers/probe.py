"""
One bounded readiness probe: `GET {harness_url}/healthz`.

Harnessd counts as ready only when `/healthz` itself returns 200. The probe
protects the worker from whatever listens on the port:

* the whole attempt (connect, request, headers, body) has one wall-clock budget,
  enforced by cancelling it, so a server that hangs or drips a byte a second
  cannot hold the worker past the budget;
* at most `max_body_bytes` of the body are read, so a huge body costs nothing,
  and a gzip or deflate body is inflated to at most that size too;
* redirects are not followed, so a 3xx to some other place that returns 200 is
  not ready;
* proxy settings in the environment (HTTP_PROXY, ALL_PROXY, ...) are ignored, so
  the probe reaches the workspace itself and not a proxy that answers for it;
* a 200 whose JSON body reports a status other than ok ({"status": "starting"})
  is not ready, even when the body is cut at `max_body_bytes`.

The result's `error` is a short phrase ("connection refused", "HTTP 503",
"timed out after 3.0s") that goes into the record, the events and the final
error message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import functools
import json
import re
import ssl
import time
import zlib

import httpx

from workflows.policy import PROBE_ATTEMPT_BUDGET_S, PROBE_MAX_BODY_BYTES

# Values of a JSON "status" field that a healthy harnessd may report.
_HEALTHY_STATUSES = frozenset({"ok", "pass", "ready", "healthy", "up", "serving"})
# Finds the status field in a body too long to parse whole.
_STATUS_FIELD = re.compile(rb'"status"\s*:\s*"([^"]{0,100})"')
# zlib window bits that accept both gzip and zlib (deflate) headers.
_GZIP_OR_ZLIB = 47


class ProbeErrorKind(str, enum.Enum):
    """The reason a probe attempt did not find harnessd ready."""

    CONNECTION_REFUSED = "connection_refused"
    CONNECT_ERROR = "connect_error"
    TIMEOUT = "timeout"
    HTTP_STATUS = "http_status"
    REDIRECT = "redirect"
    PROTOCOL_ERROR = "protocol_error"
    UNHEALTHY_BODY = "unhealthy_body"


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """The outcome of one probe attempt."""

    ready: bool
    elapsed_s: float
    error: str = ""
    kind: ProbeErrorKind | None = None
    status_code: int | None = None


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """Return one shared TLS context: building one per attempt costs about 70 ms."""
    return ssl.create_default_context()


def healthz_url(harness_url: str) -> str:
    return harness_url.rstrip("/") + "/healthz"


def probe_healthz(
    harness_url: str,
    budget_s: float = PROBE_ATTEMPT_BUDGET_S,
    max_body_bytes: int = PROBE_MAX_BODY_BYTES,
) -> ProbeResult:
    """Make one attempt at `GET {harness_url}/healthz` within `budget_s` seconds of wall-clock time."""
    started = time.monotonic()
    try:
        result = asyncio.run(asyncio.wait_for(_attempt(healthz_url(harness_url), budget_s, max_body_bytes), budget_s))
    except (TimeoutError, asyncio.TimeoutError):
        result = _not_ready(ProbeErrorKind.TIMEOUT, f"timed out after {budget_s:g}s")
    return dataclasses.replace(result, elapsed_s=time.monotonic() - started)


async def _attempt(url: str, budget_s: float, max_body_bytes: int) -> ProbeResult:
    timeout = httpx.Timeout(budget_s)
    async with httpx.AsyncClient(
        trust_env=False, follow_redirects=False, timeout=timeout, verify=_tls_context()
    ) as client:
        try:
            headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
            async with client.stream("GET", url, headers=headers) as response:
                body = _inflate(response, await _read_capped(response, max_body_bytes), max_body_bytes)
                return _judge(response, body)
        except httpx.ConnectError as exc:
            return _connect_failure(exc)
        except httpx.TimeoutException:
            return _not_ready(ProbeErrorKind.TIMEOUT, f"timed out after {budget_s:g}s")
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.LocalProtocolError) as exc:
            return _not_ready(ProbeErrorKind.PROTOCOL_ERROR, f"protocol error: {_describe(exc)}")


async def _read_capped(response: httpx.Response, max_body_bytes: int) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_raw():
        body.extend(chunk[: max_body_bytes - len(body)])
        if len(body) >= max_body_bytes:
            break
    return bytes(body)


def _inflate(response: httpx.Response, body: bytes, max_body_bytes: int) -> bytes:
    """Return the body decoded from gzip or deflate, at most `max_body_bytes` of it; other bodies unchanged."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("gzip", "deflate", "x-gzip"):
        return body
    try:
        return zlib.decompressobj(_GZIP_OR_ZLIB).decompress(body, max_body_bytes)
    except zlib.error:
        return b""


def _judge(response: httpx.Response, body: bytes) -> ProbeResult:
    code = response.status_code
    if response.is_redirect:
        location = response.headers.get("location", "?")
        return _not_ready(ProbeErrorKind.REDIRECT, f"HTTP {code} redirect to {location[:200]} (redirects are not followed)", code)
    if code != 200:
        return _not_ready(ProbeErrorKind.HTTP_STATUS, f"HTTP {code}", code)

    reported = _reported_status(body)
    if reported is not None and reported.lower() not in _HEALTHY_STATUSES:
        return _not_ready(ProbeErrorKind.UNHEALTHY_BODY, f"HTTP 200 but status {reported[:50]!r}", code)
    return ProbeResult(ready=True, elapsed_s=0.0, status_code=code)


def _reported_status(body: bytes) -> str | None:
    """Return the "status" string of a JSON object body, or None if there is none."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        match = _STATUS_FIELD.search(body)
        return match.group(1).decode("utf-8", "replace") if match else None
    if isinstance(document, dict) and isinstance(document.get("status"), str):
        return document["status"]
    return None


def _connect_failure(exc: httpx.ConnectError) -> ProbeResult:
    root = _root_cause(exc)
    if isinstance(root, ConnectionRefusedError):
        return _not_ready(ProbeErrorKind.CONNECTION_REFUSED, "connection refused")
    return _not_ready(ProbeErrorKind.CONNECT_ERROR, f"cannot connect: {root or _describe(exc)}"[:200])


def _root_cause(exc: BaseException) -> BaseException:
    """Return the innermost exception of a chain; httpx hides ECONNREFUSED several levels down."""
    seen = {id(exc)}
    while True:
        inner = exc.__cause__ or exc.__context__
        if inner is None or id(inner) in seen:
            return exc
        seen.add(id(inner))
        exc = inner


def _describe(exc: Exception) -> str:
    cause = exc.__cause__ or exc.__context__
    text = str(exc) or (str(cause) if cause else "") or type(exc).__name__
    return text[:200]


def _not_ready(kind: ProbeErrorKind, error: str, status_code: int | None = None) -> ProbeResult:
    return ProbeResult(ready=False, elapsed_s=0.0, error=error, kind=kind, status_code=status_code)
