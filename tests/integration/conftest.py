"""
Fixtures that start real components: a private redis-server, Celery workers, hcloud-sim.

Every test session gets its own `redis-server` on a free loopback port, so the
tests share no queue with a worker or demo running elsewhere on the machine.
Workers are real `celery worker` subprocesses; tests stop them with SIGTERM or
kill them with SIGKILL. Each worker loads the loopback-only network guard and
the crash points (`crash_points`), and points HCLOUD_ENDPOINT at the session's
Hetzner simulator. The Docker fixtures live in the root conftest.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.hcloud_sim.support import TOKEN as HCLOUD_TOKEN
from tests.hcloud_sim.support import RunningSimulator, start_simulator
from workers.app import app
from workers.runner import Provisioner
from workflows.model import ProvisionRecord
from workflows.store import Store

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTAINER_LABEL = "workspace-provisioner.provision"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition, timeout_s: float, interval_s: float = 0.05, message: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll `condition()` until it returns a true value; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {message}")
        time.sleep(interval_s)


class RedisServer:
    """A redis-server process of the tests' own, on a free loopback port."""

    def __init__(self, directory: Path, appendonly: bool = False, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            shutil.which("redis-server") or "redis-server",
            "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory),
            "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always",
            "--logfile", str(self.directory / "redis.log"),
        ]
        self.process = subprocess.Popen(command)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        wait_until(lambda: _answers(client), 10, message=f"redis-server on port {self.port}")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=10)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


WORKER_PLUGINS = ("tests.network_guard", "tests.integration.handoff_recorder", "tests.integration.crash_points")


class Worker:
    """A `celery worker` subprocess in its own process group, with its log in a file."""

    def __init__(self, env: dict[str, str], log_path: Path, concurrency: int = 2, includes: tuple[str, ...] = ()) -> None:
        self.env = env
        self.log_path = log_path
        self.concurrency = concurrency
        self.includes = includes
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        name = f"test-{uuid.uuid4().hex[:8]}@%h"
        command = [
            sys.executable, "-m", "celery", "-A", "workers", "worker", "-l", "info", "-n", name,
            "-c", str(self.concurrency), "--without-mingle", "--without-gossip",
            "--include", ",".join((*WORKER_PLUGINS, *self.includes)),
        ]
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, env=self.env, cwd=REPO_ROOT, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self._ready, 30, 0.1, message=f"worker ready (log {self.log_path})")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"worker exited with {self.process.returncode}; log:\n{self.log_path.read_text()[-3000:]}")
        return "ready." in self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the main process and every pool process at once."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.log.close()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def hcloud_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSimulator]:
    """
    One Hetzner simulator for the session; servers boot in 1 s and start harnessd 0.5 s later.

    Its servers get addresses from a random 127.N.0.0/16, apart from those of a
    demo or benchmark simulator running at the same time.
    """
    first_address = f"127.{random.randint(1, 250)}.0.2"
    arguments = ("--boot-delay", "1", "--bootstrap-delay", "0.5", "--first-address", first_address)
    running = start_simulator(tmp_path_factory.mktemp("hcloud-sim"), *arguments)
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="session")
def services_env(redis_server: RedisServer, hcloud_sim: RunningSimulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment for workers and CLI calls of this session; also points this process's app at it."""
    home = tmp_path_factory.mktemp("provisioner-home")
    env = {
        key: value for key, value in os.environ.items() if not key.upper().endswith("_PROXY")
    }
    env |= {
        "REDIS_URL": redis_server.url,
        "PROVISIONER_HOME": str(home),
        "PROVISIONER_CONTAINER_NETWORK": "host",
        "PROVISIONER_RECONCILE_INTERVAL": "1",
        "PYTHONPATH": str(REPO_ROOT),
        "HCLOUD_ENDPOINT": hcloud_sim.endpoint,
        "HCLOUD_TOKEN": HCLOUD_TOKEN,
    }
    app.conf.broker_url = redis_server.url
    yield env
    _remove_session_containers(env)


def _remove_session_containers(env: dict[str, str]) -> None:
    """Remove the containers this session's provisions left (ready ones are never destroyed by the tests)."""
    import docker
    import docker.errors
    import requests.exceptions

    from workers.backends.container import LABEL_STORE

    try:
        client = docker.from_env(timeout=10)
        for container in client.containers.list(all=True, filters={"label": f"{LABEL_STORE}={store_label(env)}"}):
            container.remove(force=True)
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        pass  # no engine, so no container of ours either


@pytest.fixture
def store(services_env: dict[str, str]) -> Store:
    return Store.from_url(services_env["REDIS_URL"])


@pytest.fixture
def provisioner(store: Store) -> Provisioner:
    return Provisioner(store)


@pytest.fixture
def start_worker(services_env: dict[str, str], tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    """Return a function that starts a worker; every worker started is stopped after the test."""
    workers: list[Worker] = []

    def start(concurrency: int = 2, includes: tuple[str, ...] = (), env: dict[str, str] | None = None) -> Worker:
        worker_env = services_env | (env or {})
        worker = Worker(worker_env, tmp_path / f"worker-{len(workers)}.log", concurrency, includes).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def worker(start_worker) -> Worker:  # type: ignore[no-untyped-def]
    return start_worker()


def containers_of(docker_client, provision_id: str) -> list:  # type: ignore[no-untyped-def]
    from workers.backends.names import id_digest

    return docker_client.containers.list(all=True, filters={"label": f"{CONTAINER_LABEL}={id_digest(provision_id)}"})


def store_label(env: dict[str, str]) -> str:
    """Return the store label that workers started with `env` put on their containers and servers."""
    from unittest import mock

    from workers.config import load_settings

    with mock.patch.dict(os.environ, env):
        return load_settings().store_label


def unique_id(prefix: str = "ws") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def handoffs(store: Store, provision_id: str) -> list[str]:
    return list(store.client.lrange(f"test:handoffs:{provision_id}", 0, -1))


def event_names(store: Store, provision_id: str) -> list[str]:
    return [fields["event"] for _entry, fields in store.events(provision_id)]


def wait_terminal(provisioner: Provisioner, provision_id: str, timeout_s: float) -> ProvisionRecord:
    """Wait until the provision is terminal and its destroy step, if any, has run."""
    from workflows.model import Step

    def settled() -> ProvisionRecord | None:
        record = provisioner.get(provision_id)
        return record if record.is_terminal and record.step is Step.DONE else None

    return wait_until(settled, timeout_s, 0.1, message=f"provision {provision_id} to settle")
