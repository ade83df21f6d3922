"""
What a provision is: its workspace types, statuses, steps, request and record.

A *provision* turns a request ("a container workspace called ws-42 from image X")
into a workspace whose harnessd responds, then hands it off to the run. The record
is the single source of truth about a provision; it lives in Redis (see
`workflows.store`) and every field is stored as a string there.
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime, timezone
from typing import Any


class WorkspaceType(str, enum.Enum):
    """The kinds of workspace a backend can provision."""

    # A plain directory on the worker's file system; no inner harnessd.
    LOCAL = "local"
    # A `git worktree` of a new branch in a given repository; no inner harnessd.
    WORKTREE = "worktree"
    # A Docker container that runs harnessd.
    CONTAINER = "container"
    # A Hetzner Cloud server that runs harnessd.
    VM = "vm"


class Status(str, enum.Enum):
    """The state of a provision, as the runner and operators see it."""

    # Recorded, no step has run yet.
    PENDING = "pending"
    # A step is running or scheduled.
    PROVISIONING = "provisioning"
    # Harnessd served and the hand-off is done. Terminal.
    READY = "ready"
    # Ended with an error; `provisioner retry` may resume it. Terminal.
    FAILED = "failed"
    # Stopped by `provisioner cancel`. Terminal.
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (Status.READY, Status.FAILED, Status.CANCELLED)


class Step(str, enum.Enum):
    """One unit of work of the provisioning chain; each is one Celery task."""

    CREATE = "create"
    WAIT_RUNNING = "wait_running"
    PROBE_HEALTHZ = "probe_healthz"
    HAND_OFF = "hand_off"
    # Release the workspace: after a failure, a cancel or `provisioner destroy`.
    DESTROY = "destroy"
    # Nothing left to run.
    DONE = "done"


class FailureReason(str, enum.Enum):
    """The reason a provision failed, in a word an operator can filter on."""

    READY_TIMEOUT = "ready_timeout"
    RUNNING_TIMEOUT = "running_timeout"
    WORKSPACE_EXITED = "workspace_exited"
    BACKEND_ERROR = "backend_error"
    WORKER_LOST = "worker_lost"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def to_iso(moment: datetime | None) -> str:
    return moment.isoformat(timespec="milliseconds") if moment else ""


def from_iso(text: str) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@dataclasses.dataclass(frozen=True)
class ProvisionRequest:
    """
    A provision request from the runner or an operator.

    `env_keys` lists only the names of the environment variables given to the
    workspace: their values are secrets and are kept out of the request, the
    record, task arguments, events and logs (see `workflows.store.Store.put_secrets`).
    """

    id: str
    type: WorkspaceType
    repo: str = ""
    image: str = ""
    env_keys: tuple[str, ...] = ()
    ready_timeout_s: float = 120.0
    keep_on_failure: bool = False
    # A Celery signature as a dict, called by hand_off with the workspace descriptor.
    continuation: dict[str, Any] | None = None
    # Backend options that are not secret, such as a VM's server type.
    options: dict[str, str] = dataclasses.field(default_factory=dict)


# Record fields that hold timestamps, in the order a provision passes them.
TIMESTAMP_FIELDS = (
    "created_at",
    "running_at",
    "ready_at",
    "handed_off_at",
    "failed_at",
    "cancelled_at",
    "destroyed_at",
)


@dataclasses.dataclass
class ProvisionRecord:
    """
    The stored state of one provision.

    `fence` is the fencing token: every step message carries the value it was sent
    with, and a step whose token no longer matches the record exits without any
    side effect. `deadline` and `due_at` are absolute UTC times.
    """

    id: str
    type: WorkspaceType
    status: Status
    step: Step
    fence: int = 0
    attempts: int = 0
    deadline: datetime | None = None
    due_at: datetime | None = None
    ready_timeout_s: float = 120.0
    keep_on_failure: bool = False
    last_error: str = ""
    failure_reason: str = ""
    failed_step: str = ""
    harness_url: str = ""
    workspace_path: str = ""
    handle: str = ""
    repo: str = ""
    image: str = ""
    env_keys: tuple[str, ...] = ()
    options: dict[str, str] = dataclasses.field(default_factory=dict)
    continuation: dict[str, Any] | None = None
    # Times the current step started without finishing; a step that keeps killing its worker fails.
    step_starts: int = 0
    # Transient backend errors in a row (Docker engine restarting, say).
    transient_errors: int = 0
    # Times a host-network container was made again because its port was taken.
    port_retries: int = 0
    created_at: datetime | None = None
    running_at: datetime | None = None
    ready_at: datetime | None = None
    handed_off_at: datetime | None = None
    failed_at: datetime | None = None
    cancelled_at: datetime | None = None
    destroyed_at: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    def descriptor(self) -> dict[str, str]:
        """Return the workspace descriptor that hand_off gives the run."""
        return {
            "provision_id": self.id,
            "type": self.type.value,
            "harness_url": self.harness_url,
            "workspace_path": self.workspace_path,
            "handle": self.handle,
        }

    def to_json(self) -> dict[str, Any]:
        """Return the record as plain JSON types, for the CLI and the runner."""
        data: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, enum.Enum):
                value = value.value
            elif isinstance(value, datetime):
                value = to_iso(value)
            elif isinstance(value, tuple):
                value = list(value)
            data[field.name] = value
        return data
