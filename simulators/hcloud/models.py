"""
Servers and actions as the simulator stores them, and their API JSON.

Times are Unix seconds (float) inside the simulator and RFC 3339 strings in
JSON. A server's `boot` and `stop` plans record which power transition is under
way, and the simulation advances them as time passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import TYPE_CHECKING, Any

from . import catalogue

if TYPE_CHECKING:
    from .vm import VmProcess

#: Every status the API defines for a server.
SERVER_STATUSES = (
    "running", "initializing", "starting", "stopping", "off",
    "deleting", "migrating", "rebuilding", "unknown",
)

#: Every status the API defines for an action.
ACTION_STATUSES = ("running", "success", "error")


class Bootstrap(str, Enum):
    """How far the server's user_data got during the current boot."""

    # The server has no user_data.
    NONE = "none"
    # user_data waits for `running` plus the bootstrap delay.
    PENDING = "pending"
    # The user_data script was started.
    STARTED = "started"
    # A broken_bootstrap fault stopped user_data from running during this boot.
    SKIPPED = "skipped"
    # /bin/sh could not be started; the simulator log has the error.
    FAILED = "failed"


def format_time(timestamp: float | None) -> str | None:
    """Return a Unix time as an RFC 3339 string in UTC, or None."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


@dataclass
class Action:
    """One asynchronous operation on a server, as `/actions/{id}` shows it."""

    id: int
    command: str
    server_id: int
    started: float
    status: str = "running"
    progress: int = 0
    finished: float | None = None
    error: dict[str, str] | None = None

    def succeed(self, now: float) -> None:
        """Mark the action finished with success."""
        self.status = "success"
        self.progress = 100
        self.finished = now

    def fail(self, now: float, code: str, message: str) -> None:
        """Mark the action finished with an error."""
        self.status = "error"
        self.progress = 100
        self.finished = now
        self.error = {"code": code, "message": message}

    def to_json(self) -> dict[str, Any]:
        """Return the action object of the API."""
        return {
            "id": self.id,
            "command": self.command,
            "status": self.status,
            "progress": self.progress,
            "started": format_time(self.started),
            "finished": format_time(self.finished),
            "resources": [{"id": self.server_id, "type": "server"}],
            "error": self.error,
        }


@dataclass
class BootPlan:
    """A boot under way: after create, power on, reboot or reset."""

    started_at: float
    # The create_server action; None when the boot is not the first one.
    create_action: Action | None
    # The action that ends when the server is `running`; None when it stays off.
    start_action: Action | None


@dataclass
class StopPlan:
    """A power off or shutdown under way; the server is `off` once it ends."""

    started_at: float
    action: Action


@dataclass
class Server:
    """One simulated server and the local "VM" behind it."""

    id: int
    name: str
    labels: dict[str, str]
    created: float
    server_type: str
    image: str
    location: str
    user_data: str | None
    # Loopback address that serves as the public IPv4; None if IPv4 was disabled.
    ipv4: str | None
    ipv4_id: int | None
    ipv6_id: int | None
    status: str = "initializing"
    boot: BootPlan | None = None
    stop: StopPlan | None = None
    # When the current boot reached `running`; None while not running.
    running_since: float | None = None
    bootstrap: Bootstrap = Bootstrap.NONE
    vm: VmProcess | None = None
    action_ids: list[int] = field(default_factory=list)

    @property
    def ipv6_network(self) -> str:
        """Documentation-prefix IPv6 network (RFC 3849), unique per server id."""
        return f"2001:db8:{self.id // 0x10000:x}:{self.id % 0x10000:x}::/64"

    def to_json(self, locked: bool) -> dict[str, Any]:
        """Return the server object of the API."""
        architecture = catalogue.SERVER_TYPES[self.server_type]["architecture"]
        disk = catalogue.SERVER_TYPES[self.server_type]["disk"]
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "created": format_time(self.created),
            "public_net": self._public_net_json(),
            "private_net": [],
            "server_type": catalogue.server_type_json(self.server_type),
            "location": catalogue.location_json(self.location),
            "image": catalogue.image_json(self.image, architecture),
            "iso": None,
            "rescue_enabled": False,
            "locked": locked,
            "backup_window": None,
            "outgoing_traffic": 0,
            "ingoing_traffic": 0,
            "included_traffic": 21990232555520,
            "protection": {"delete": False, "rebuild": False},
            "labels": dict(self.labels),
            "volumes": [],
            "load_balancers": [],
            "primary_disk_size": disk,
            "placement_group": None,
        }

    def _public_net_json(self) -> dict[str, Any]:
        ipv4 = None
        if self.ipv4 is not None:
            ipv4 = {"id": self.ipv4_id, "ip": self.ipv4, "blocked": False,
                    "dns_ptr": f"static.{self.ipv4}.clients.your-server.de"}

        ipv6 = None
        if self.ipv6_id is not None:
            ipv6 = {"id": self.ipv6_id, "ip": self.ipv6_network, "blocked": False, "dns_ptr": []}

        return {"ipv4": ipv4, "ipv6": ipv6, "floating_ips": [], "firewalls": []}


@dataclass(frozen=True)
class CreateRequest:
    """A validated POST /servers body."""

    name: str
    server_type: str
    image: str
    location: str
    labels: dict[str, str]
    user_data: str | None
    start_after_create: bool
    enable_ipv4: bool
    enable_ipv6: bool
    # The API generates a root password only when no SSH key is given.
    with_root_password: bool
