"""
Private services for a benchmark run: a redis-server, a `celery worker` and hcloud-sim, all started here.

A run never uses a Redis or a worker it did not start, so it shares no queue
with tests or demos elsewhere on the machine. Each subprocess runs in its own
session (process group): Ctrl-C in the terminal reaches only the benchmark,
which then stops its subprocesses by their process group ids.
"""

from __future__ import annotations

import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker.errors
import httpx
import redis

from simulators.harnessd_image import HarnessdImageError

REPO_ROOT = Path(__file__).resolve().parents[1]

# Seconds a subprocess gets to exit after SIGTERM before it gets SIGKILL.
STOP_GRACE_S = 15.0
# Seconds redis-server, hcloud-sim and the worker get to become ready.
START_TIMEOUT_S = 30.0


class BenchError(RuntimeError):
    """A benchmark run cannot go on. The message gives the reason in one line."""


class ServiceError(BenchError):
    """A private service failed to start; the message names its log file."""


def progress(message: str) -> None:
    """Print one progress line to stderr, so that stdout carries only the results."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout_s: float, description: str) -> None:
    """Poll `condition()` every 50 ms; raise ServiceError naming `description` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise ServiceError(f"timed out after {timeout_s:g}s waiting for {description}")
        time.sleep(0.05)


def stop_process_group(process: subprocess.Popen[Any]) -> None:
    """Send SIGTERM to the process group of `process`, and SIGKILL if it outlives STOP_GRACE_S."""
    if process.poll() is not None:
        return

    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_GRACE_S)


class RedisServer:
    """
    A redis-server on a free 127.0.0.1 port that keeps nothing on disk.

    **Parameters**

    * directory - working directory; the server's log goes to `redis.log` there.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def start(self) -> RedisServer:
        executable = shutil.which("redis-server")
        if executable is None:
            raise ServiceError("redis-server not found on PATH; install it (apt-get install redis-server)")

        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            executable, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory),
            "--save", "", "--appendonly", "no", "--logfile", str(self.log_path),
        ]
        self.process = subprocess.Popen(command, start_new_session=True)

        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        wait_for(lambda: _responds(client), START_TIMEOUT_S, f"redis-server on port {self.port} (log {self.log_path})")
        return self

    def version(self) -> str:
        client = redis.Redis(port=self.port, decode_responses=True)
        return str(client.info("server")["redis_version"])

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)


def _responds(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class CeleryWorker:
    """
    One `celery -A workers worker` subprocess (prefork pool), logging to a file.

    **Parameters**

    * env - its whole environment.
    * log_path - file that receives its stdout and stderr.
    * concurrency - pool processes (`-c`).
    * includes - extra task modules (`--include`).
    * app - the Celery app module (`-A`).
    """

    def __init__(self, env: dict[str, str], log_path: Path, concurrency: int, includes: tuple[str, ...] = (), app: str = "workers") -> None:
        self.env = env
        self.log_path = log_path
        self.concurrency = concurrency
        self.includes = includes
        self.app = app
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def command(self) -> list[str]:
        name = f"bench-{uuid.uuid4().hex[:8]}@%h"
        command = [
            sys.executable, "-m", "celery", "-A", self.app, "worker", "-l", "info", "-n", name,
            "-c", str(self.concurrency), "--without-mingle", "--without-gossip",
        ]
        if self.includes:
            command += ["--include", ",".join(self.includes)]
        return command

    def start(self) -> CeleryWorker:
        self.spawn()
        self.wait_ready()
        return self

    def spawn(self) -> None:
        """Start the subprocess and return at once, before the worker is ready."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command, env=self.env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self) -> None:
        """Block until the worker logs that it is ready; raise ServiceError if it exits or takes too long."""
        wait_for(self._ready, START_TIMEOUT_S, f"celery worker to be ready (log {self.log_path})")

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise ServiceError(f"celery worker exited with code {self.process.returncode}; log {self.log_path}:\n{tail}")
        return " ready." in self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)

    def kill(self) -> None:
        """SIGKILL the main process and every pool process at once, as the OOM killer or a lost host would."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_GRACE_S)


class HcloudSimulator:
    """
    One hcloud-sim subprocess (`python -m simulators.hcloud`) on a free loopback port.

    Its servers get addresses from a random 127.N.0.0/16, so that they differ
    from those of test or demo simulators running at the same time, because
    `bench.serving` identifies each VM's harnessd by its address.

    NOTE: N is one of 250 values, so a simulator started elsewhere may pick
    the same range by chance.

    **Parameters**

    * directory - working directory; the simulator's log goes to `hcloud-sim.log` there.
    * boot_delay_s, bootstrap_delay_s - the defaults for servers without a delay fault.
    """

    # Any non-empty token is accepted by the simulator.
    token = "bench-token"

    def __init__(self, directory: Path, boot_delay_s: float = 1.0, bootstrap_delay_s: float = 0.5) -> None:
        self.directory = directory
        self.boot_delay_s = boot_delay_s
        self.bootstrap_delay_s = bootstrap_delay_s
        self.first_address = f"127.{random.randint(1, 250)}.0.2"
        self.endpoint = ""
        self.process: subprocess.Popen[str] | None = None

    @property
    def log_path(self) -> Path:
        return self.directory / "hcloud-sim.log"

    @property
    def admin_url(self) -> str:
        return self.endpoint.removesuffix("/v1") + "/_sim"

    def start(self) -> HcloudSimulator:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "simulators.hcloud", "--port", "0", "--first-address", self.first_address,
            "--boot-delay", f"{self.boot_delay_s:g}", "--bootstrap-delay", f"{self.bootstrap_delay_s:g}",
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                text=True, start_new_session=True,
            )

        # The simulator prints "hcloud-sim listening on http://HOST:PORT/v1" once it accepts requests.
        assert self.process.stdout is not None
        readable, _, _ = select.select([self.process.stdout], [], [], START_TIMEOUT_S)
        line = self.process.stdout.readline().strip() if readable else ""
        prefix = "hcloud-sim listening on "
        if not line.startswith(prefix):
            self.stop()
            raise ServiceError(f"hcloud-sim printed {line!r} instead of its listening line; log {self.log_path}")
        self.endpoint = line.removeprefix(prefix)
        return self

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Send one request to the admin API below /_sim and return its JSON body."""
        response = httpx.request(method, self.admin_url + path, json=body, trust_env=False, timeout=30)
        if response.is_error:
            raise ServiceError(f"hcloud-sim admin request {method} /_sim{path} failed with {response.status_code}: {response.text}")
        return response.json()

    def stop(self) -> None:
        """Stop the simulator, which kills the process groups of all its servers."""
        if self.process is not None:
            stop_process_group(self.process)


# Errors a benchmark run reports in one line before it exits.
EXPECTED_FAILURES: tuple[type[BaseException], ...] = (BenchError, HarnessdImageError, docker.errors.DockerException)
EXIT_FAILED = 1
# The shell's code for a run stopped by SIGINT.
EXIT_INTERRUPTED = 130


def report_failure(exc: BaseException) -> int:
    """Print one line on stderr about why a benchmark run stopped; return its exit code."""
    if isinstance(exc, KeyboardInterrupt):
        print("bench: interrupted; cleaning up", file=sys.stderr)
        return EXIT_INTERRUPTED
    if isinstance(exc, docker.errors.DockerException):
        print(f"bench: error: Docker engine request failed ({exc}); start dockerd or set DOCKER_HOST", file=sys.stderr)
        return EXIT_FAILED
    print(f"bench: error: {exc}", file=sys.stderr)
    return EXIT_FAILED
