"""
The provisioner's errors, in one tree.

    ProvisionError
    ├── InvalidRequest          bad input from the runner or an operator; nothing was recorded
    ├── ProvisionNotFound       no record for that provision id
    ├── InvalidTransition       the command does not apply to the provision's current status
    ├── StoreUnavailable        Redis cannot be reached
    └── BackendError            a backend (Docker, git, file system, Hetzner) failed
        ├── BackendUnavailable  the backend's service cannot be reached or is busy; transient
        ├── RateLimited         the backend's request budget is used up; wait, then go on
        └── WorkspaceExited     the workspace died while it was starting or being probed

`is_transient` decides which backend errors a step retries; every other error
ends the provision. Each class takes positional, JSON-safe arguments only, and
keeps `self.args` equal to them, so an error survives Celery's JSON round trip.
"""

from __future__ import annotations


class ProvisionError(Exception):
    """Base class of every error the provisioner raises on purpose."""


class InvalidRequest(ProvisionError):
    """The request is invalid; the message names the field and the fix."""


class ProvisionNotFound(ProvisionError):
    """No provision with the given id is recorded."""

    def __init__(self, provision_id: str, store_empty: bool = False) -> None:
        super().__init__(provision_id, store_empty)
        self.provision_id = provision_id
        self.store_empty = store_empty

    def __str__(self) -> str:
        message = f"provision {self.provision_id!r} not found"
        if self.store_empty:
            message += (
                "; this Redis holds no provision at all, so if it restarted without persistence "
                "every record was lost (run it with appendonly yes)"
            )
        return message


class InvalidTransition(ProvisionError):
    """The command does not apply to the provision in its current status."""


class StoreUnavailable(ProvisionError):
    """Redis, where records and events live, cannot be reached."""


class BackendError(ProvisionError):
    """A backend failed. The message names what it tried and what the service returned."""


class BackendUnavailable(BackendError):
    """The backend's service (Docker engine, Hetzner API) cannot be reached right now."""


class RateLimited(BackendError):
    """The backend's API request budget is used up until `retry_after_s` seconds from now."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message, retry_after_s)
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        return str(self.args[0])


class WorkspaceExited(BackendError):
    """The workspace stopped while it was starting or being probed."""

    def __init__(self, message: str, exit_code: int, log_tail: str) -> None:
        super().__init__(message, exit_code, log_tail)
        self.exit_code = exit_code
        self.log_tail = log_tail

    def __str__(self) -> str:
        return str(self.args[0])


def is_transient(error: BaseException) -> bool:
    """Return True if a step should retry after `error` instead of failing the provision."""
    return isinstance(error, (BackendUnavailable, RateLimited))
