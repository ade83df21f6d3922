"""Rate limiting: the token bucket, the RateLimit-* headers, 429 responses and their stats."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
from hcloud import APIException, Client

from simulators.hcloud.ratelimit import TokenBucket

from .support import RunningSimulator


class FakeClock:
    """A clock that moves only when a test advances it."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_spends_and_refills() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2, 0.5, "2 requests per 4 seconds", clock=clock)

    states = [bucket.take() for _ in range(3)]
    clock.now += 2.0
    refilled = bucket.take()

    assert [state.allowed for state in states] == [True, True, False]
    assert [state.remaining for state in states] == [1, 0, 0]
    assert states[2].reset == 1_000_004
    assert refilled.allowed


def test_bucket_never_exceeds_capacity() -> None:
    clock = FakeClock()
    bucket = TokenBucket(3, 3 / 60, "3 requests per minute", clock=clock)
    bucket.take()

    clock.now += 3600
    state = bucket.peek()

    assert state.remaining == 3
    assert state.limit == 3


def test_default_headers_match_hetzner(sim: RunningSimulator) -> None:
    response = sim.api("GET", "/servers")

    assert response.headers["RateLimit-Limit"] == "3600"
    assert int(response.headers["RateLimit-Remaining"]) <= 3599
    assert int(response.headers["RateLimit-Reset"]) >= int(time.time())


def test_every_response_carries_headers(sim: RunningSimulator) -> None:
    sim.add_fault(kind="rate_limit", per_minute=20)

    responses = [
        sim.api("GET", "/servers"),
        sim.api("GET", "/servers/999"),
        sim.api("GET", "/servers", token=None),
        sim.api("POST", "/servers", content=b"{"),
    ]

    assert [response.status_code for response in responses] == [200, 404, 401, 400]
    for response in responses:
        assert response.headers["RateLimit-Limit"] == "20"
    assert [int(response.headers["RateLimit-Remaining"]) for response in responses] == [19, 18, 17, 16]


def test_exhausted_bucket_gets_429(sim: RunningSimulator) -> None:
    sim.add_fault(kind="rate_limit", per_minute=3)

    statuses = [sim.api("GET", "/servers").status_code for _ in range(3)]
    limited = sim.api("GET", "/servers")

    assert statuses == [200, 200, 200]
    assert limited.status_code == 429
    assert limited.json() == {
        "error": {"code": "rate_limit_exceeded", "message": "limit of 3 requests per minute reached", "details": None}
    }
    assert limited.headers["RateLimit-Remaining"] == "0"
    assert int(limited.headers["RateLimit-Reset"]) > time.time()


def test_unauthenticated_requests_count(sim: RunningSimulator) -> None:
    sim.add_fault(kind="rate_limit", per_minute=1)

    first = sim.api("GET", "/servers", token=None)
    second = sim.api("GET", "/servers", token=None)

    assert first.status_code == 401
    assert second.status_code == 429


def test_stats_count_rate_limited_requests(sim: RunningSimulator) -> None:
    sim.add_fault(kind="rate_limit", per_minute=2)
    before = time.time()

    for _ in range(5):
        sim.api("GET", "/servers")
    requests = sim.stats()["requests"]

    assert requests["total"] == 5
    assert requests["rate_limited"] == 3
    assert requests["rate_limited_after_first"] == 2
    assert requests["by_status"] == {"200": 2, "429": 3}
    first = datetime.fromisoformat(requests["first_rate_limited_at"]).timestamp()
    assert before - 1 <= first <= time.time()


def test_sdk_retries_then_raises(client: Client, sim: RunningSimulator) -> None:
    sim.add_fault(kind="rate_limit", per_minute=1)
    sim.api("GET", "/servers")

    with pytest.raises(APIException) as caught:
        client.servers.get_all()
    requests = sim.stats()["requests"]

    assert caught.value.code == "rate_limit_exceeded"
    assert requests["rate_limited"] == 6
    assert requests["rate_limited_after_first"] == 5


def test_admin_requests_are_not_limited(sim: RunningSimulator) -> None:
    sim.add_fault(kind="rate_limit", per_minute=1)
    sim.api("GET", "/servers")

    stats_responses = [sim.admin("GET", "/stats") for _ in range(3)]

    assert [response.status_code for response in stats_responses] == [200, 200, 200]
    assert "RateLimit-Limit" not in stats_responses[0].headers
    assert stats_responses[-1].json()["requests"]["total"] == 1


def test_clearing_faults_restores_default(sim: RunningSimulator) -> None:
    sim.add_fault(kind="rate_limit", per_minute=1)
    sim.api("GET", "/servers")

    sim.admin("DELETE", "/faults")
    response = sim.api("GET", "/servers")

    assert response.status_code == 200
    assert response.headers["RateLimit-Limit"] == "3600"
