"""
Timing policy of a provision: deadlines, probe backoff and request validation.

Probe backoff: attempt n (counting from 0) is followed by a countdown of
`min(PROBE_CAP_S, PROBE_BASE_S * 2**n)` seconds, multiplied by a jitter factor in
[0.5, 1.0] so that many provisions started together do not probe in lockstep.
With the defaults the countdowns are about 0.1, 0.2, 0.4 and then 0.5 s at most:
harnessd is noticed within about half a second of serving, and an unready
workspace costs about two probes a second. The last countdown before the
deadline is shortened so that one attempt runs at the deadline itself.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from workflows.errors import InvalidRequest
from workflows.model import ProvisionRequest, WorkspaceType

DEFAULT_READY_TIMEOUT_S = 120.0
# Longer readiness deadlines are almost certainly a unit mistake (minutes or ms).
MAX_READY_TIMEOUT_S = 24 * 3600.0
# Wall-clock budget of one probe attempt: connect, send, headers and body together.
PROBE_ATTEMPT_BUDGET_S = 3.0
# Bytes of a healthz body read at most; the rest is never downloaded.
PROBE_MAX_BODY_BYTES = 4096
PROBE_BASE_S = 0.1
PROBE_CAP_S = 0.5

# A step's lease: how long a silent worker keeps other copies of its step out.
# The lease is renewed every third of this while the step runs.
LEASE_TTL_S = 6.0
# No step message waits longer than this; a longer wait (a rate limit) re-checks then.
MAX_COUNTDOWN_S = 60.0
# Maximum run time of one step, such as a Docker create or a git worktree add of a large repository.
MAX_STEP_S = 120.0
# A step that started this many times without finishing is killing its worker.
MAX_STEP_STARTS = 5
# Retries of a step after a transient backend error (Docker engine restarting, say).
MAX_TRANSIENT_RETRIES = 5

MAX_ID_LENGTH = 512

Jitter = Callable[[], float]


def default_jitter() -> float:
    return random.uniform(0.5, 1.0)


def backoff_s(attempt: int, base_s: float, cap_s: float, jitter: Jitter = default_jitter) -> float:
    """Return the countdown before the next attempt, for attempt number `attempt` (0-based)."""
    exponent = min(attempt, 32)
    return min(cap_s, base_s * 2**exponent) * jitter()


def probe_countdown_s(attempt: int, remaining_s: float, jitter: Jitter = default_jitter) -> float:
    """Return the countdown before the next probe, never past the deadline."""
    return max(0.0, min(backoff_s(attempt, PROBE_BASE_S, PROBE_CAP_S, jitter), remaining_s))


def has_harnessd(workspace_type: WorkspaceType) -> bool:
    """Return True for workspace types whose harnessd must be probed before the hand-off."""
    return workspace_type in (WorkspaceType.CONTAINER, WorkspaceType.VM)


def validate_ready_timeout(value: float) -> float:
    """Return `value` if it is a usable readiness deadline in seconds, else raise InvalidRequest."""
    if math.isnan(value) or value <= 0:
        raise InvalidRequest(f"ready timeout must be a positive number of seconds, got {value}")
    if math.isinf(value):
        raise InvalidRequest("ready timeout must be a finite number of seconds, got inf")
    if value > MAX_READY_TIMEOUT_S:
        raise InvalidRequest(
            f"ready timeout of {value:g}s is longer than the maximum of {MAX_READY_TIMEOUT_S:g}s; "
            "give it in seconds"
        )
    return value


def validate_request(request: ProvisionRequest) -> None:
    """Raise InvalidRequest, naming the field, unless the request can be provisioned."""
    if not request.id:
        raise InvalidRequest("provision id must not be empty")
    if len(request.id) > MAX_ID_LENGTH:
        raise InvalidRequest(f"provision id is {len(request.id)} characters long; the maximum is {MAX_ID_LENGTH}")
    validate_ready_timeout(request.ready_timeout_s)

    if request.type is WorkspaceType.WORKTREE and not request.repo:
        raise InvalidRequest("worktree workspaces need a repository: give --repo PATH")
    if request.type is WorkspaceType.CONTAINER and not request.image:
        raise InvalidRequest("container workspaces need an image: give --image IMAGE")

    for key in request.env_keys:
        if not key or "=" in key or "\0" in key:
            raise InvalidRequest(f"invalid environment variable name {key!r}: use KEY=VALUE")
