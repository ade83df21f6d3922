"""
Tests of `workers.probe.probe_healthz` against real servers on 127.0.0.1 that misbehave on purpose.

Durations are measured around the call, not taken from the probe's own
`elapsed_s`, so a probe that misreports its time still fails. The margin above
the budget covers event loop start-up and teardown on a loaded machine.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable

import httpx
import pytest

from tests import hostile_servers
from tests.hostile_servers import (
    catch_all_server,
    dripping_server,
    endless_chunked_server,
    hanging_server,
    healthy_server,
    huge_body_server,
    lying_server,
    redirect_server,
    resetting_server,
    send_response,
    serve,
    unavailable_server,
)
from workers.probe import ProbeErrorKind, ProbeResult, probe_healthz

BUDGET_S = 1.0
MARGIN_S = 0.5
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")

ServerFactory = Callable[[], contextlib.AbstractContextManager[str]]


def timed_probe(url: str, budget_s: float = BUDGET_S) -> tuple[ProbeResult, float]:
    started = time.monotonic()
    result = probe_healthz(url, budget_s=budget_s)
    return result, time.monotonic() - started


def test_healthy_server_is_ready() -> None:
    with healthy_server() as url:
        result, _ = timed_probe(url)

    assert result.ready, result.error
    assert result.kind is None
    assert result.status_code == 200
    assert result.error == ""


def test_probe_requests_healthz_path() -> None:
    received: list[str] = []
    with healthy_server(received) as url:
        probe_healthz(url + "/", budget_s=BUDGET_S)

    assert received == ["GET /healthz HTTP/1.1"]


def test_refused_connection_is_classified(free_port: int) -> None:
    url = f"http://127.0.0.1:{free_port}"

    result, elapsed_s = timed_probe(url)

    assert not result.ready
    assert result.kind is ProbeErrorKind.CONNECTION_REFUSED
    assert result.error == "connection refused"
    assert result.status_code is None
    assert elapsed_s < BUDGET_S


def test_hanging_server_times_out() -> None:
    with hanging_server() as url:
        result, elapsed_s = timed_probe(url)

    assert not result.ready
    assert result.kind is ProbeErrorKind.TIMEOUT
    assert elapsed_s < BUDGET_S + MARGIN_S


def test_dripping_server_times_out() -> None:
    # Bytes arrive every 0.2 s, well inside any per-read timeout, so only the
    # probe's overall budget can stop the attempt.
    with dripping_server(interval_s=0.2) as url:
        result, elapsed_s = timed_probe(url)

    assert not result.ready
    assert result.kind is ProbeErrorKind.TIMEOUT
    assert elapsed_s >= BUDGET_S - 0.05
    assert elapsed_s < BUDGET_S + MARGIN_S


@pytest.mark.parametrize(
    "factory",
    [
        hanging_server,
        dripping_server,
        huge_body_server,
        endless_chunked_server,
        lying_server,
        unavailable_server,
        resetting_server,
        healthy_server,
    ],
    ids=lambda factory: factory.__name__,
)
def test_probe_returns_within_budget(factory: ServerFactory) -> None:
    with factory() as url:
        _, elapsed_s = timed_probe(url)

    assert elapsed_s < BUDGET_S + MARGIN_S


@pytest.mark.parametrize("factory", [huge_body_server, endless_chunked_server], ids=lambda factory: factory.__name__)
def test_huge_body_is_not_read(factory: ServerFactory) -> None:
    # A first probe builds the cached TLS context and imports lazily loaded
    # modules (about 3 MiB together), which must not count against the body.
    with healthy_server() as url:
        probe_healthz(url, budget_s=BUDGET_S)

    with factory() as url:
        tracemalloc.start()
        try:
            result, elapsed_s = timed_probe(url)
            _, peak_bytes = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

    # The server would send 100 MiB, or bytes without end. The probe should keep
    # at most 4 KiB of body, one network read buffer (64 KiB) and httpx's objects.
    assert peak_bytes < 2 * 2**20
    assert result.status_code == 200
    assert result.kind is not ProbeErrorKind.TIMEOUT
    assert elapsed_s < BUDGET_S


def test_redirect_is_not_followed() -> None:
    target_received: list[str] = []
    with healthy_server(target_received) as target, redirect_server(target + "/healthz") as url:
        result, _ = timed_probe(url)

    assert not result.ready
    assert result.kind is ProbeErrorKind.REDIRECT
    assert result.status_code == 302
    assert target + "/healthz" in result.error
    assert target_received == []


def test_proxy_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    proxy_received: list[str] = []
    with catch_all_server(200, received=proxy_received) as proxy, unavailable_server() as target:
        for name in PROXY_VARIABLES:
            monkeypatch.setenv(name, proxy)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        # Control: a client that trusts the environment does go through the proxy,
        # so an empty proxy log below means the probe ignored the variables.
        assert httpx.get(target + "/control", timeout=BUDGET_S).status_code == 200
        control_requests = list(proxy_received)

        result, _ = timed_probe(target)

    assert control_requests == [f"GET {target}/control HTTP/1.1"]
    assert proxy_received == control_requests
    assert not result.ready
    assert result.kind is ProbeErrorKind.HTTP_STATUS
    assert result.status_code == 503


def test_lying_healthz_is_not_ready() -> None:
    with lying_server() as url:
        result, _ = timed_probe(url)

    assert not result.ready
    assert result.kind is ProbeErrorKind.UNHEALTHY_BODY
    assert result.status_code == 200
    assert "starting" in result.error


def test_gzip_lying_healthz_is_not_ready() -> None:
    body = gzip.compress(hostile_servers.STARTING_BODY)

    def behaviour(connection, server) -> None:  # type: ignore[no-untyped-def]
        hostile_servers.read_request_head(connection, server)
        send_response(connection, 200, body, {"Content-Encoding": "gzip"})

    with serve(behaviour) as url:
        result, _ = timed_probe(url)

    assert not result.ready
    assert result.kind is ProbeErrorKind.UNHEALTHY_BODY


def test_long_lying_healthz_is_not_ready() -> None:
    body = json.dumps({"status": "starting", "detail": "x" * 10_000}).encode()

    with catch_all_server(200, body) as url:
        result, _ = timed_probe(url)

    assert not result.ready
    assert result.kind is ProbeErrorKind.UNHEALTHY_BODY


def test_unavailable_server_is_http_status() -> None:
    with unavailable_server() as url:
        result, _ = timed_probe(url)

    assert not result.ready
    assert result.kind is ProbeErrorKind.HTTP_STATUS
    assert result.status_code == 503
    assert result.error == "HTTP 503"


def test_reset_connection_is_protocol_error() -> None:
    with resetting_server() as url:
        result, elapsed_s = timed_probe(url)

    assert not result.ready
    assert result.kind is ProbeErrorKind.PROTOCOL_ERROR
    assert result.status_code is None
    assert elapsed_s < BUDGET_S


@pytest.mark.parametrize(
    "factory",
    [hanging_server, dripping_server, huge_body_server, endless_chunked_server],
    ids=lambda factory: factory.__name__,
)
def test_servers_stop_with_client_attached(factory: Callable[..., contextlib.AbstractContextManager[str]]) -> None:
    threads_before = threading.active_count()
    received: list[str] = []

    # The client sends a request and then reads nothing, so the server's
    # thread is blocked in a read, a wait or a full send buffer when the
    # context exits.
    with factory(received=received) as url:
        port = int(url.rsplit(":", 1)[1])
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        wait_for_request(received)
        stop_started = time.monotonic()
    stopped_after_s = time.monotonic() - stop_started
    client.close()

    assert stopped_after_s < 2.0
    assert threading.active_count() == threads_before


def wait_for_request(received: list[str]) -> None:
    deadline = time.monotonic() + 5.0
    while not received:
        if time.monotonic() > deadline:
            pytest.fail("the server did not read the request within 5 s")
        time.sleep(0.01)
