"""
The interface every workspace backend implements.

A backend makes, inspects and releases one kind of workspace. Steps call it
with the provision's record; it never touches Redis. Every method is safe to
call twice for the same provision, because a step can be delivered twice:

* `create` adopts the workspace that a lost worker already made for this
  provision (found by its label, name or path) instead of making a second one;
* `destroy` of a workspace that is already gone does nothing and returns True.

Backends raise `workflows.errors.BackendError` (or a subclass) and nothing else
on purpose: SDK errors are mapped at this boundary. They never read or write
provision records.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Protocol

from workflows.model import ProvisionRecord, WorkspaceType


class RunState(str, enum.Enum):
    """The state of a workspace's kernel or process, as its backend reports it."""

    # Made, not running yet (Docker "created", Hetzner "initializing" or "starting").
    STARTING = "starting"
    # Docker State.Running, Hetzner status=running.
    RUNNING = "running"
    # Stopped for good; see `Inspection.exit_code` and `Inspection.log_tail`.
    EXITED = "exited"
    # Not there any more (removed behind our back).
    GONE = "gone"


@dataclasses.dataclass(frozen=True)
class Workspace:
    """A created workspace: the handle to find it again, and where the run reaches it."""

    handle: str
    harness_url: str = ""
    workspace_path: str = ""


@dataclasses.dataclass(frozen=True)
class Inspection:
    """The result of `Backend.inspect`."""

    state: RunState
    exit_code: int | None = None
    log_tail: str = ""
    # True when a host-network container exited because its port was taken.
    port_conflict: bool = False


class Backend(Protocol):
    """Makes, inspects and releases workspaces of one type."""

    workspace_type: WorkspaceType
    # How long wait_running waits for RUNNING, and its poll countdowns (doubling from base to cap).
    running_timeout_s: float
    running_poll_base_s: float
    running_poll_cap_s: float

    def create(self, record: ProvisionRecord, secrets: Mapping[str, str]) -> Workspace:
        """Make the workspace of `record`, or adopt the one already made for it."""
        ...

    def inspect(self, record: ProvisionRecord) -> Inspection:
        """Report whether the workspace of `record` is starting, running, exited or gone."""
        ...

    def inspect_while_probing(self, record: ProvisionRecord) -> Inspection:
        """Like `inspect`, but may return a recent reading to spare a rate-limited API."""
        ...

    def destroy(self, record: ProvisionRecord) -> bool:
        """Release the workspace of `record`; return True once it is gone, False while it is going."""
        ...


class WithoutHarnessd:
    """Shared parts of backends whose workspaces run no harnessd; `workflows.steps` gives them no wait or probe step."""

    running_timeout_s = 0.0
    running_poll_base_s = 0.0
    running_poll_cap_s = 0.0

    def inspect(self, record: ProvisionRecord) -> Inspection:
        raise NotImplementedError

    def inspect_while_probing(self, record: ProvisionRecord) -> Inspection:
        return self.inspect(record)
