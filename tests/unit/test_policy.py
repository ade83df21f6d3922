"""Probe backoff and request validation."""

from __future__ import annotations

import math

import pytest

from workflows.errors import InvalidRequest
from workflows.model import ProvisionRequest, WorkspaceType
from workflows.policy import backoff_s, probe_countdown_s, validate_ready_timeout, validate_request
from workflows.steps import next_step, steps_for
from workflows.model import Step


@pytest.mark.parametrize(
    ("attempt", "expected_s"),
    [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.5), (10, 0.5), (10_000, 0.5)],
)
def test_probe_countdown_table(attempt: int, expected_s: float) -> None:
    assert probe_countdown_s(attempt, remaining_s=100, jitter=lambda: 1.0) == pytest.approx(expected_s)


def test_probe_countdown_stops_at_deadline() -> None:
    assert probe_countdown_s(5, remaining_s=0.05, jitter=lambda: 1.0) == pytest.approx(0.05)
    assert probe_countdown_s(5, remaining_s=-1, jitter=lambda: 1.0) == 0.0


def test_backoff_jitter_scales_down() -> None:
    assert backoff_s(3, 1.0, 16.0, jitter=lambda: 0.5) == pytest.approx(4.0)


@pytest.mark.parametrize("value", [0, -1, math.nan, math.inf, 10**9])
def test_ready_timeout_rejects_absurd_values(value: float) -> None:
    with pytest.raises(InvalidRequest):
        validate_ready_timeout(value)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (ProvisionRequest(id="", type=WorkspaceType.LOCAL), "provision id must not be empty"),
        (ProvisionRequest(id="a", type=WorkspaceType.CONTAINER), "container workspaces need an image: give --image IMAGE"),
        (ProvisionRequest(id="a", type=WorkspaceType.WORKTREE), "worktree workspaces need a repository: give --repo PATH"),
        (ProvisionRequest(id="x" * 513, type=WorkspaceType.LOCAL), "provision id is 513 characters long; the maximum is 512"),
    ],
)
def test_validate_request_messages(request_: ProvisionRequest, message: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        validate_request(request_)

    assert str(raised.value) == message


def test_local_steps_skip_probe() -> None:
    assert steps_for(WorkspaceType.LOCAL) == (Step.CREATE, Step.HAND_OFF)
    assert steps_for(WorkspaceType.WORKTREE) == (Step.CREATE, Step.HAND_OFF)
    assert next_step(WorkspaceType.LOCAL, Step.CREATE) is Step.HAND_OFF


def test_container_steps_probe_before_hand_off() -> None:
    assert steps_for(WorkspaceType.CONTAINER) == (Step.CREATE, Step.WAIT_RUNNING, Step.PROBE_HEALTHZ, Step.HAND_OFF)
    assert next_step(WorkspaceType.CONTAINER, Step.HAND_OFF) is Step.DONE
