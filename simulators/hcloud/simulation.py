"""
The simulator's state: servers, actions, faults, the rate-limit bucket and counters.

All state sits behind one lock. A ticker thread advances every server every
TICK_SECONDS. Killing a server's processes can take a moment, so delete runs
it in a background thread. The delete_server action ends, and the server's
address is released, only once the process group is gone.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import shutil
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ApiError, not_found
from .faults import HTTP_ERROR_CODES, Fault, FaultBook, FaultKind
from .labels import LabelSelector
from .lifecycle import Lifecycle, SimConfig
from .models import Action, BootPlan, CreateRequest, Server, StopPlan, format_time
from .ratelimit import RateLimitState, TokenBucket
from .vm import IpPool, VmProcess, write_harnessd_command

logger = logging.getLogger(__name__)

#: Seconds between two passes of the ticker over all servers.
TICK_SECONDS = 0.05

#: Action command of each power endpoint.
POWER_COMMANDS = {
    "poweron": "start_server",
    "poweroff": "stop_server",
    "shutdown": "shutdown_server",
    "reboot": "reboot_server",
    "reset": "reset_server",
}


@dataclass
class RequestCounters:
    """Counts of /v1 requests and of server changes since start or the last reset."""

    requests: int = 0
    rate_limited: int = 0
    first_rate_limited_at: float | None = None
    last_rate_limited_at: float | None = None
    servers_created: int = 0
    servers_deleted: int = 0
    servers_vanished: int = 0


class Simulation:
    """The simulated resources and the API operations on them."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.faults = FaultBook()
        self._lock = threading.RLock()
        self._servers: dict[int, Server] = {}
        self._actions: dict[int, Action] = {}
        self._next_server_id = 1
        self._next_action_id = 1
        self._next_primary_ip_id = 1
        self._ips = IpPool(reserved={config.host}, first=config.first_address)
        self._counters = RequestCounters()
        self._statuses: Counter[int] = Counter()
        self._bucket = self._default_bucket()
        self._teardowns: list[threading.Thread] = []

        self._state_dir = Path(tempfile.mkdtemp(prefix="hcloud-sim-"))
        bin_dir = self._state_dir / "bin"
        write_harnessd_command(bin_dir)
        self.lifecycle = Lifecycle(config, self.faults, self._state_dir, bin_dir)

        self._stopping = threading.Event()
        self._ticker = threading.Thread(target=self._run_ticker, name="hcloud-sim-ticker", daemon=True)

    # -- start and stop ----------------------------------------------------

    def start(self) -> None:
        """Start advancing servers in the background."""
        self._ticker.start()

    def close(self) -> None:
        """Stop the ticker, kill every VM process group and remove the state directory."""
        self._stopping.set()
        if self._ticker.is_alive():
            self._ticker.join()

        with self._lock:
            servers = list(self._servers.values())
            self._servers.clear()
        for server in servers:
            self._kill_vm(server)
        self._join_teardowns()

        shutil.rmtree(self._state_dir, ignore_errors=True)
        logger.info("Stopped; killed the processes of %d servers.", len(servers))

    def _run_ticker(self) -> None:
        while not self._stopping.wait(TICK_SECONDS):
            try:
                self.tick(time.time())
            except Exception:
                # A bug in one transition must not stop every server from advancing.
                logger.exception("Tick failed; servers keep advancing on the next tick.")

    def tick(self, now: float) -> None:
        """Apply every transition that is due at `now`, vanishing servers first."""
        with self._lock:
            for server in list(self._servers.values()):
                if self.lifecycle.vanish_due(server, now):
                    self._remove_in_background(server, None, vanished=True)
                    continue
                self.lifecycle.advance(server, now)

    # -- request accounting ------------------------------------------------

    def admit_request(self) -> RateLimitState:
        """Count one /v1 request and spend a rate-limit token for it."""
        with self._lock:
            self._counters.requests += 1
            bucket = self._bucket
        return bucket.take()

    def record_response(self, status: int) -> None:
        """Count the status of a /v1 response."""
        with self._lock:
            self._statuses[status] += 1
            if status != 429:
                return

            now = time.time()
            self._counters.rate_limited += 1
            self._counters.last_rate_limited_at = now
            if self._counters.first_rate_limited_at is None:
                self._counters.first_rate_limited_at = now

    def rate_limit_message(self) -> str:
        """Return the message of a 429 response for the bucket in use."""
        with self._lock:
            bucket = self._bucket
        return f"limit of {bucket.description} reached"

    def check_token(self, authorization: str | None) -> None:
        """Raise 401 unless the header carries an accepted bearer token."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError("unauthorized", "unable to authenticate", None)

        expected = self.config.token
        if expected is not None and not hmac.compare_digest(token.encode(), expected.encode()):
            raise ApiError("unauthorized", "unable to authenticate", None)

    def raise_global_http_error(self) -> None:
        """Raise the injected 5xx error if a global `http_error` burst is active."""
        fault = self.faults.take_http_error(None, {})
        if fault is not None:
            raise _injected_http_error(fault)

    # -- servers -----------------------------------------------------------

    def create_server(self, request: CreateRequest) -> dict[str, Any]:
        """Create a server and return the 201 response body."""
        burst = self.faults.take_http_error(request.name, request.labels)
        if burst is not None:
            raise _injected_http_error(burst)

        with self._lock:
            self._check_name_is_free(request.name, request.labels, None)
            server = self._new_server(request)
            now = server.created

            create_action = self._new_action("create_server", server, now)
            start_action = None
            if request.start_after_create:
                start_action = self._new_action("start_server", server, now)
            server.boot = BootPlan(now, create_action, start_action)

            self._servers[server.id] = server
            self._counters.servers_created += 1
            logger.info("Server %d (%s): created with address %s.", server.id, server.name, server.ipv4)

            return {
                "server": self._server_json(server, now),
                "action": create_action.to_json(),
                "next_actions": [start_action.to_json()] if start_action else [],
                "root_password": secrets.token_urlsafe(12) if request.with_root_password else None,
            }

    def _new_server(self, request: CreateRequest) -> Server:
        ipv4 = None
        if request.enable_ipv4:
            ipv4 = self._ips.allocate()
            if ipv4 is None:
                raise ApiError("resource_limit_exceeded", "no free loopback address left", None)

        server = Server(
            id=self._next_server_id,
            name=request.name,
            labels=dict(request.labels),
            created=time.time(),
            server_type=request.server_type,
            image=request.image,
            location=request.location,
            user_data=request.user_data,
            ipv4=ipv4,
            ipv4_id=self._take_primary_ip_id() if ipv4 else None,
            ipv6_id=self._take_primary_ip_id() if request.enable_ipv6 else None,
        )
        self._next_server_id += 1
        return server

    def _take_primary_ip_id(self) -> int:
        primary_ip_id = self._next_primary_ip_id
        self._next_primary_ip_id += 1
        return primary_ip_id

    def _new_action(self, command: str, server: Server, now: float) -> Action:
        action = Action(self._next_action_id, command, server.id, now)
        self._next_action_id += 1
        self._actions[action.id] = action
        server.action_ids.append(action.id)
        return action

    def _check_name_is_free(self, name: str, labels: dict[str, str], server_id: int | None) -> None:
        injected = self.faults.find(FaultKind.UNIQUENESS_ERROR, name, labels)
        name_in_use = any(s.name == name and s.id != server_id for s in self._servers.values())
        if injected is None and not name_in_use:
            return

        details = {"fields": [{"name": "name"}]}
        raise ApiError("uniqueness_error", "server name is already used", details)

    def list_servers(
        self, name: str | None, selector: LabelSelector | None, statuses: list[str]
    ) -> list[dict[str, Any]]:
        """Return the JSON of every server that passes the filters, by id ascending."""
        now = time.time()
        with self._lock:
            servers = sorted(self._servers.values(), key=lambda s: s.id)
            return [
                self._server_json(server, now)
                for server in servers
                if (name is None or server.name == name)
                and (selector is None or selector.matches(server.labels))
                and (not statuses or server.status in statuses)
            ]

    def get_server(self, server_id: int) -> dict[str, Any]:
        """Return the JSON of one server."""
        with self._lock:
            server = self._find_server(server_id, changes=False)
            return self._server_json(server, time.time())

    def update_server(self, server_id: int, name: str | None, labels: dict[str, str] | None) -> dict[str, Any]:
        """Rename a server and/or replace its labels; return its JSON."""
        with self._lock:
            server = self._find_server(server_id, changes=True)
            if name is not None and name != server.name:
                self._check_name_is_free(name, labels if labels is not None else server.labels, server.id)
                server.name = name
            if labels is not None:
                server.labels = dict(labels)
            return self._server_json(server, time.time())

    def delete_server(self, server_id: int) -> dict[str, Any]:
        """Delete a server at once and return its running delete_server action.

        The action succeeds when the server's process group is gone.
        """
        with self._lock:
            server = self._find_server(server_id, changes=True)
            action = self._new_action("delete_server", server, time.time())
            self._remove_in_background(server, action, vanished=False)
            return action.to_json()

    def power_action(self, server_id: int, endpoint: str) -> dict[str, Any]:
        """Start the power action of `endpoint` (poweron, poweroff, ...) and return it."""
        with self._lock:
            server = self._find_server(server_id, changes=True)
            self._check_no_running_action(server)
            now = time.time()
            action = self._new_action(POWER_COMMANDS[endpoint], server, now)
            vm = self._apply_power_action(server, endpoint, action, now)
            action_json = action.to_json()

        if vm is not None:
            vm.kill()
        return action_json

    def _apply_power_action(self, server: Server, endpoint: str, action: Action, now: float) -> VmProcess | None:
        """Change the server's plans for a power action; return the VM to kill, if any."""
        is_on = server.status != "off"
        if endpoint == "poweron" and is_on or endpoint in ("poweroff", "shutdown") and not is_on:
            action.succeed(now)
            return None

        vm, server.vm = server.vm, None
        server.running_since = None
        if endpoint in ("poweroff", "shutdown"):
            server.status = "stopping"
            server.stop = StopPlan(now, action)
        elif endpoint == "poweron":
            server.status = "starting"
            server.boot = BootPlan(now, None, action)
        else:
            # reboot and reset leave the status as it is while the server boots again.
            server.boot = BootPlan(now, None, action)

        logger.info("Server %d (%s): %s.", server.id, server.name, action.command)
        return vm

    def _check_no_running_action(self, server: Server) -> None:
        for action_id in server.action_ids:
            action = self._actions[action_id]
            if action.status == "running":
                message = f"server {server.id} is locked by running action {action.command} ({action.id})"
                raise ApiError("locked", message, None)

    def _find_server(self, server_id: int, changes: bool) -> Server:
        """Return the server, applying per-server faults; `changes` marks a mutating request."""
        server = self._servers.get(server_id)
        if server is None:
            raise not_found("server", server_id)

        burst = self.faults.take_http_error(server.name, server.labels)
        if burst is not None:
            raise _injected_http_error(burst)

        lock_end = self.lifecycle.lock_expires_at(server)
        if changes and lock_end is not None and time.time() < lock_end:
            raise ApiError("locked", f"server {server.id} is locked", None)
        return server

    def _server_json(self, server: Server, now: float) -> dict[str, Any]:
        lock_end = self.lifecycle.lock_expires_at(server)
        locked = lock_end is not None and now < lock_end
        return server.to_json(locked)

    # -- actions -----------------------------------------------------------

    def get_action(self, action_id: int) -> dict[str, Any]:
        """Return the JSON of one action."""
        with self._lock:
            action = self._actions.get(action_id)
            if action is None:
                raise not_found("action", action_id)
            return action.to_json()

    def list_server_actions(self, server_id: int) -> list[dict[str, Any]]:
        """Return the JSON of every action of one server, by id ascending."""
        with self._lock:
            server = self._find_server(server_id, changes=False)
            return [self._actions[action_id].to_json() for action_id in server.action_ids]

    # -- removal -----------------------------------------------------------

    def vanish(self, server_id: int) -> dict[str, Any]:
        """Delete a server without an API request and wait until its processes are gone."""
        with self._lock:
            server = self._servers.get(server_id)
            if server is None:
                raise not_found("server", server_id)
            teardown = self._remove_in_background(server, None, vanished=True)
            summary = self._server_summary(server)

        teardown.join()
        return summary

    def _remove_in_background(self, server: Server, action: Action | None, vanished: bool) -> threading.Thread:
        """Remove the server from the API now and kill its VM in a thread; return the thread."""
        del self._servers[server.id]
        self._fail_running_actions(server, except_action=action)
        if vanished:
            self._counters.servers_vanished += 1
            logger.info("Server %d (%s): vanished without a delete request.", server.id, server.name)
        else:
            self._counters.servers_deleted += 1
            logger.info("Server %d (%s): deleted.", server.id, server.name)

        thread = threading.Thread(
            target=self._finish_removal, args=(server, action), name=f"teardown-{server.id}", daemon=True
        )
        self._teardowns.append(thread)
        thread.start()
        return thread

    def _fail_running_actions(self, server: Server, except_action: Action | None) -> None:
        """End the server's unfinished actions, so that clients polling them stop.

        NOTE: the API documents no outcome for an action whose server is
        deleted; `action_failed` is this simulator's choice.
        """
        now = time.time()
        for action_id in server.action_ids:
            action = self._actions.get(action_id)
            if action is not None and action is not except_action and action.status == "running":
                action.fail(now, "action_failed", f"server {server.id} was deleted")

    def _finish_removal(self, server: Server, action: Action | None) -> None:
        self._kill_vm(server)

        with self._lock:
            if server.ipv4 is not None:
                self._ips.release(server.ipv4)
            if action is not None:
                action.succeed(time.time())
        logger.debug("Server %d (%s): processes gone, address %s released.", server.id, server.name, server.ipv4)

    def _kill_vm(self, server: Server) -> None:
        with self._lock:
            vm, server.vm = server.vm, None
        if vm is not None:
            vm.kill()

    def _join_teardowns(self) -> None:
        with self._lock:
            threads, self._teardowns = self._teardowns, []
        for thread in threads:
            thread.join()

    # -- admin -------------------------------------------------------------

    def add_fault(self, body: dict[str, Any]) -> Fault:
        """Store a fault; a rate_limit fault also replaces the bucket with a full one."""
        fault = self.faults.add(body)
        if fault.kind is FaultKind.RATE_LIMIT and fault.per_minute is not None:
            with self._lock:
                self._bucket = TokenBucket.per_minute(fault.per_minute)
        logger.info("Fault %d set: %s.", fault.id, fault.to_json())
        return fault

    def remove_fault(self, fault_id: int) -> None:
        """Remove one fault; removing the rate_limit fault restores the previous bucket."""
        if not self.faults.remove(fault_id):
            raise not_found("fault", fault_id)
        self._restore_bucket()

    def clear_faults(self) -> int:
        """Remove every fault and restore the command-line rate limit; return the count."""
        count = self.faults.clear()
        self._restore_bucket()
        return count

    def _restore_bucket(self) -> None:
        fault = self.faults.find_global(FaultKind.RATE_LIMIT)
        with self._lock:
            if fault is not None and fault.per_minute is not None:
                if self._bucket.capacity != fault.per_minute:
                    self._bucket = TokenBucket.per_minute(fault.per_minute)
            else:
                self._bucket = self._default_bucket()

    def _default_bucket(self) -> TokenBucket:
        if self.config.rate_limit_per_minute is not None:
            return TokenBucket.per_minute(self.config.rate_limit_per_minute)
        return TokenBucket.like_hetzner()

    def reset(self) -> None:
        """Remove every server, action and fault, and zero the counters; ids keep counting."""
        with self._lock:
            servers = list(self._servers.values())
            threads = [self._remove_in_background(server, None, vanished=True) for server in servers]
        for thread in threads:
            thread.join()

        self.faults.clear()
        with self._lock:
            self._actions.clear()
            self._counters = RequestCounters()
            self._statuses.clear()
            self._bucket = self._default_bucket()
        logger.info("Reset: removed %d servers.", len(servers))

    def stats(self) -> dict[str, Any]:
        """Return the counters, the rate-limit state and the live servers."""
        with self._lock:
            counters = self._counters
            servers = sorted(self._servers.values(), key=lambda s: s.id)
            bucket = self._bucket
            return {
                "requests": {
                    "total": counters.requests,
                    "by_status": {str(status): count for status, count in sorted(self._statuses.items())},
                    "rate_limited": counters.rate_limited,
                    "rate_limited_after_first": max(0, counters.rate_limited - 1),
                    "first_rate_limited_at": format_time(counters.first_rate_limited_at),
                    "last_rate_limited_at": format_time(counters.last_rate_limited_at),
                },
                "rate_limit": self._rate_limit_summary(bucket),
                "servers": {
                    "created": counters.servers_created,
                    "deleted": counters.servers_deleted,
                    "vanished": counters.servers_vanished,
                    "alive": len(servers),
                },
                "alive_servers": [self._server_summary(server) for server in servers],
                "state_dir": str(self._state_dir),
            }

    def _rate_limit_summary(self, bucket: TokenBucket) -> dict[str, Any]:
        state = bucket.peek()
        return {
            "limit": state.limit,
            "remaining": state.remaining,
            "reset": state.reset,
            "description": bucket.description,
        }

    def _server_summary(self, server: Server) -> dict[str, Any]:
        return {
            "id": server.id,
            "name": server.name,
            "labels": dict(server.labels),
            "ip": server.ipv4,
            "status": server.status,
            "bootstrap": server.bootstrap.value,
            "pgid": server.vm.pgid if server.vm else None,
            "vm_dir": str(self.lifecycle.vm_dir(server)),
        }


def _injected_http_error(fault: Fault) -> ApiError:
    assert fault.status is not None
    code = HTTP_ERROR_CODES[fault.status]
    return ApiError(code, f"injected {code} (fault {fault.id})", None)
