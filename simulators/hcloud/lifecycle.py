"""
The time-driven life of one simulated server: boot, bootstrap and power off.

The simulation calls `Lifecycle.advance` for every server on each tick. A boot
takes the boot delay: create_server ends halfway (status `starting`), and the
start action ends with status `running`. With no start action the server ends
`off`. After `running` plus the bootstrap delay the server's user_data starts.
Delays and faults are looked up on every tick, so a fault set mid-boot still
changes that boot.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .faults import FaultBook, FaultKind
from .models import Bootstrap, Server
from .vm import VmProcess

logger = logging.getLogger(__name__)

#: Seconds a power off or shutdown takes from `stopping` to `off`.
STOP_SECONDS = 0.3


@dataclass(frozen=True)
class SimConfig:
    """Settings from the command line; faults can override the delays and the bootstrap."""

    host: str = "127.0.0.1"
    # Seconds from create or power on until `running`.
    boot_delay: float = 1.0
    # Seconds from `running` until user_data starts.
    bootstrap_delay: float = 0.5
    broken_bootstrap: bool = False
    # Requests per minute; None keeps the real API's 3600 per hour.
    rate_limit_per_minute: int | None = None
    # The only accepted bearer token; None accepts any non-empty token.
    token: str | None = None
    # The first loopback address handed to a server.
    first_address: str = "127.0.0.2"


class Lifecycle:
    """Advances servers through their power transitions and runs their user_data."""

    def __init__(self, config: SimConfig, faults: FaultBook, state_dir: Path, bin_dir: Path) -> None:
        self._config = config
        self._faults = faults
        self._state_dir = state_dir
        self._bin_dir = bin_dir

    def boot_delay(self, server: Server) -> float:
        """Return the boot delay in seconds that applies to `server` now."""
        fault = self._faults.find(FaultKind.BOOT_DELAY, server.name, server.labels)
        return fault.seconds if fault and fault.seconds is not None else self._config.boot_delay

    def bootstrap_delay(self, server: Server) -> float:
        """Return the bootstrap delay in seconds that applies to `server` now."""
        fault = self._faults.find(FaultKind.BOOTSTRAP_DELAY, server.name, server.labels)
        return fault.seconds if fault and fault.seconds is not None else self._config.bootstrap_delay

    def lock_expires_at(self, server: Server) -> float | None:
        """Return when a `locked` fault on `server` ends, or None without such a fault.

        The lock starts when the fault is set, or at creation for a server created later.
        """
        fault = self._faults.find(FaultKind.LOCKED, server.name, server.labels)
        if fault is None or fault.seconds is None:
            return None
        return max(fault.set_at, server.created) + fault.seconds

    def vanish_due(self, server: Server, now: float) -> bool:
        """Return True if a `vanish` fault makes the server due for removal at `now`."""
        fault = self._faults.find(FaultKind.VANISH, server.name, server.labels)
        if fault is None or fault.seconds is None:
            return False
        return now >= max(fault.set_at, server.created) + fault.seconds

    def advance(self, server: Server, now: float) -> None:
        """Apply every transition of `server` that is due at `now`."""
        self._advance_boot(server, now)
        self._advance_stop(server, now)
        self._advance_bootstrap(server, now)

    def _advance_boot(self, server: Server, now: float) -> None:
        plan = server.boot
        if plan is None:
            return

        delay = self.boot_delay(server)
        elapsed = now - plan.started_at
        for action in (plan.create_action, plan.start_action):
            if action is not None and action.status == "running":
                action.progress = min(99, int(100 * elapsed / delay)) if delay > 0 else 99

        create = plan.create_action
        if create is not None and create.status == "running":
            create_ends_after = delay / 2 if plan.start_action else delay
            if elapsed < create_ends_after:
                return
            if not self._finish_create(server, now):
                return

        if plan.start_action is None or elapsed < delay:
            return

        plan.start_action.succeed(now)
        server.status = "running"
        server.boot = None
        server.running_since = now
        server.bootstrap = Bootstrap.PENDING if server.user_data else Bootstrap.NONE
        logger.info("Server %d (%s): running at %s.", server.id, server.name, server.ipv4)

    def _finish_create(self, server: Server, now: float) -> bool:
        """End the create_server action; return False if the boot stops here."""
        plan = server.boot
        assert plan is not None and plan.create_action is not None

        fault = self._faults.find(FaultKind.CREATE_ACTION_ERROR, server.name, server.labels)
        if fault is not None:
            message = fault.message or "Action failed"
            plan.create_action.fail(now, "action_failed", message)
            if plan.start_action is not None:
                plan.start_action.fail(now, "action_failed", message)
            server.status = "off"
            server.boot = None
            logger.info("Server %d (%s): create_server failed (injected fault).", server.id, server.name)
            return False

        plan.create_action.succeed(now)
        if plan.start_action is None:
            server.status = "off"
            server.boot = None
            return False

        server.status = "starting"
        return True

    def _advance_stop(self, server: Server, now: float) -> None:
        plan = server.stop
        if plan is None or now - plan.started_at < STOP_SECONDS:
            return

        plan.action.succeed(now)
        server.status = "off"
        server.stop = None
        logger.info("Server %d (%s): off.", server.id, server.name)

    def _advance_bootstrap(self, server: Server, now: float) -> None:
        if server.bootstrap is not Bootstrap.PENDING or server.status != "running":
            return
        if server.boot is not None or server.running_since is None:
            return
        if now < server.running_since + self.bootstrap_delay(server):
            return

        if self._bootstrap_is_broken(server):
            server.bootstrap = Bootstrap.SKIPPED
            logger.info("Server %d (%s): user_data skipped (broken bootstrap).", server.id, server.name)
            return

        assert server.user_data is not None
        try:
            server.vm = VmProcess.start(self.vm_dir(server), server.user_data, self._user_data_env(server))
        except OSError as exc:
            server.bootstrap = Bootstrap.FAILED
            logger.error("Server %d (%s): cannot start user_data: %s", server.id, server.name, exc)
            return

        server.bootstrap = Bootstrap.STARTED
        logger.info("Server %d (%s): user_data started, process group %d.", server.id, server.name, server.vm.pgid)

    def vm_dir(self, server: Server) -> Path:
        """Return the working directory of the server's user_data."""
        return self._state_dir / f"server-{server.id}"

    def _bootstrap_is_broken(self, server: Server) -> bool:
        fault = self._faults.find(FaultKind.BROKEN_BOOTSTRAP, server.name, server.labels)
        return fault is not None or self._config.broken_bootstrap

    def _user_data_env(self, server: Server) -> dict[str, str]:
        env = dict(os.environ)
        env["SIM_PUBLIC_IPV4"] = server.ipv4 or ""
        env["SIM_SERVER_ID"] = str(server.id)
        env["SIM_SERVER_NAME"] = server.name
        env["PATH"] = f"{self._bin_dir}{os.pathsep}{env.get('PATH', os.defpath)}"

        crash = self._faults.find(FaultKind.HARNESSD_CRASH, server.name, server.labels)
        if crash is not None and crash.seconds is not None:
            env["SIM_HARNESSD_CRASH_AFTER"] = str(crash.seconds)
        else:
            env.pop("SIM_HARNESSD_CRASH_AFTER", None)
        return env
