"""
Helpers that run hcloud-sim as a real subprocess and drive it with the hcloud SDK.

`start_simulator` starts the simulator on `--port 0` and reads the port from
its "listening on" line. `RunningSimulator.stop` sends SIGTERM and checks
that no VM process group the simulator reported is still alive.
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hcloud import Client
from hcloud.images import Image
from hcloud.server_types import ServerType
from hcloud.servers import BoundServer

from simulators.hcloud.vm import group_is_alive

TOKEN = "test-token"
LISTENING_RE = re.compile(r"^hcloud-sim listening on (?P<endpoint>http://\S+/v1)$")

#: Seconds to wait for the simulator to print its listening line or to exit.
STARTUP_TIMEOUT = 10.0

#: Delays the test simulators boot with, in seconds; short so the suite stays fast.
# Servers of the module simulators start here, apart from other simulators on the machine.
FIRST_ADDRESS = f"127.{random.randint(1, 250)}.0.2"
FAST_DELAYS = ("--boot-delay", "0.2", "--bootstrap-delay", "0.05")

#: user_data that starts the harnessd stand-in on port 8080 of the server's address.
HARNESSD_USER_DATA = "#!/bin/sh\nHARNESS_ADDR=:8080 harnessd &\n"


@dataclass
class RunningSimulator:
    """A simulator subprocess and the URLs it serves."""

    process: subprocess.Popen[str]
    endpoint: str
    log_path: Path

    @property
    def base_url(self) -> str:
        """URL without the /v1 suffix, for the admin API."""
        return self.endpoint.removesuffix("/v1")

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        """Send one request to the admin API below /_sim."""
        return httpx.request(method, f"{self.base_url}/_sim{path}", json=body, trust_env=False, timeout=30)

    def stats(self) -> dict[str, Any]:
        """Return GET /_sim/stats."""
        response = self.admin("GET", "/stats")
        response.raise_for_status()
        return response.json()

    def add_fault(self, **body: Any) -> dict[str, Any]:
        """Set a fault and return it."""
        response = self.admin("POST", "/faults", body)
        assert response.status_code == 201, response.text
        return response.json()["fault"]

    def api(self, method: str, path: str, token: str | None = TOKEN, **kwargs: Any) -> httpx.Response:
        """Send one raw request below /v1, without the SDK's retries."""
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.request(method, self.endpoint + path, headers=headers, trust_env=False, timeout=30, **kwargs)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send `sig`, check that every VM process group is gone, and return the exit status."""
        if self.process.poll() is not None:
            return self.process.returncode

        pgids = [server["pgid"] for server in self.stats()["alive_servers"] if server["pgid"]]
        self.process.send_signal(sig)
        try:
            returncode = self.process.wait(timeout=STARTUP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

        alive = [pgid for pgid in pgids if group_is_alive(pgid)]
        assert alive == [], f"VM process groups still alive after the simulator stopped: {alive}"
        return returncode


def start_simulator(tmp_dir: Path, *args: str, module: bool = False) -> RunningSimulator:
    """Start hcloud-sim with `args` and wait for its listening line."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    log_path = tmp_dir / "hcloud-sim.log"
    command = [sys.executable, "-m", "simulators.hcloud"] if module else ["hcloud-sim"]
    process = subprocess.Popen(
        [*command, "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=log_path.open("w"),
        stdin=subprocess.DEVNULL,
        text=True,
    )

    assert process.stdout is not None
    line = process.stdout.readline().strip()
    match = LISTENING_RE.match(line)
    if match is None:
        process.kill()
        process.wait()
        pytest.fail(f"hcloud-sim printed {line!r} instead of its listening line; log: {log_path.read_text()}")
    return RunningSimulator(process, match["endpoint"], log_path)


def create_server(client: Client, name: str, **kwargs: Any) -> BoundServer:
    """Create a cx22 debian-12 server and return it without waiting."""
    response = client.servers.create(
        name=name, server_type=ServerType(name="cx22"), image=Image(name="debian-12"), **kwargs
    )
    return response.server


def create_running_server(client: Client, name: str, **kwargs: Any) -> BoundServer:
    """Create a server, wait for its create and start actions, and return it reloaded."""
    response = client.servers.create(
        name=name, server_type=ServerType(name="cx22"), image=Image(name="debian-12"), **kwargs
    )
    response.action.wait_until_finished()
    for action in response.next_actions:
        action.wait_until_finished()
    return client.servers.get_by_id(response.server.id)


def healthz_status(ip: str, port: int = 8080) -> int | None:
    """Return the status of GET /healthz on ip:port, or None if nothing listens."""
    try:
        return httpx.get(f"http://{ip}:{port}/healthz", trust_env=False, timeout=2).status_code
    except httpx.ConnectError:
        return None


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll `condition` every 50 ms until it is true; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def find_alive(sim: RunningSimulator, name: str) -> dict[str, Any] | None:
    """Return the stats entry of the live server called `name`, or None."""
    for server in sim.stats()["alive_servers"]:
        if server["name"] == name:
            return server
    return None


def process_is_alive(pid: int) -> bool:
    """Return True if `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in ("Z", "X")



def public_ip(server: BoundServer) -> str:
    """Return the server's public IPv4 address, which the simulator makes a loopback address."""
    assert server.public_net is not None and server.public_net.ipv4 is not None
    return server.public_net.ipv4.ip
