"""
One benchmark session: the private Redis, worker and hcloud-sim, the Docker client, and their cleanup.

`Session.close` stops the worker first, so that no step can create a container
or server after the sweep. Then it removes every container whose provision id
starts with the session's run prefix, and stops the simulator (which kills its
servers) and Redis. It runs even when a phase failed or the user pressed Ctrl-C.
"""

from __future__ import annotations

import functools
import os
import shutil
import uuid
from pathlib import Path

import docker
import docker.errors
import redis

from bench.services import REPO_ROOT, CeleryWorker, HcloudSimulator, RedisServer, progress
from simulators.harnessd_image import build_image
from workers.app import app
from workers.backends.container import LABEL_PROVISION_ID
from workers.runner import Provisioner
from workflows.store import Store

# Tag of the stand-in image this benchmark builds; a tag of its own, so it never rebuilds the tests' image.
IMAGE_TAG = "workspace-provisioner/harnessd-sim:bench"
DOCKER_TIMEOUT_S = 30


class Session:
    """
    The services of one benchmark run, all under `scratch`.

    **Parameters**

    * scratch - directory for the Redis files, the simulator's state, the logs and the workspaces.
    * worker_concurrency - pool processes of the one `celery worker`.
    """

    def __init__(self, scratch: Path, worker_concurrency: int) -> None:
        self.scratch = scratch
        self.worker_concurrency = worker_concurrency
        self.run_prefix = f"bench-{uuid.uuid4().hex[:8]}"
        self.redis_server = RedisServer(scratch / "redis")
        self.simulator = HcloudSimulator(scratch / "hcloud-sim")
        self.worker: CeleryWorker | None = None
        self.docker: docker.DockerClient | None = None
        self.image = IMAGE_TAG

    def start(self) -> None:
        self.docker = docker.from_env(timeout=DOCKER_TIMEOUT_S)
        self.docker.ping()
        progress(f"building {IMAGE_TAG}")
        build_image(self.docker, IMAGE_TAG)

        self.redis_server.start()
        progress(f"redis-server {self.redis_server.version()} on {self.redis_server.url}")
        # The app in this process sends the runner's messages; it must use our Redis, not REDIS_URL's.
        app.conf.broker_url = self.redis_server.url

        self.simulator.start()
        progress(f"hcloud-sim on {self.simulator.endpoint}, servers from {self.simulator.first_address}")

        self.worker = CeleryWorker(self._worker_env(), self.worker_log_path, self.worker_concurrency, ("bench.baseline",)).start()
        progress(f"celery worker ready (-c {self.worker_concurrency}, log {self.worker_log_path})")

    @property
    def worker_log_path(self) -> Path:
        return self.scratch / "worker.log"

    @functools.cached_property
    def store(self) -> Store:
        return Store.from_url(self.redis_server.url)

    @functools.cached_property
    def provisioner(self) -> Provisioner:
        return Provisioner(self.store)

    @functools.cached_property
    def blocking_client(self) -> redis.Redis:
        """A Redis client without a socket timeout, for BLPOP calls that block longer than Store's 10 s."""
        return redis.Redis.from_url(self.redis_server.url, decode_responses=True)

    def run_id(self, *parts: object) -> str:
        return "-".join([self.run_prefix, *map(str, parts)])

    def remove_containers(self) -> int:
        """Remove every container of this session's provisions; return how many were removed."""
        if self.docker is None:
            return 0
        removed = 0
        for container in self.docker.containers.list(all=True, filters={"label": LABEL_PROVISION_ID}):
            if container.labels.get(LABEL_PROVISION_ID, "").startswith(self.run_prefix + "-"):
                try:
                    container.remove(force=True)
                except docker.errors.NotFound:
                    continue
                removed += 1
        return removed

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        removed = self.remove_containers()
        if removed:
            progress(f"removed {removed} containers left by this run")
        self.simulator.stop()
        self.redis_server.stop()

    def copy_logs(self, directory: Path) -> None:
        """Copy the logs of the worker, redis-server and hcloud-sim into `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        for log_path in (self.worker_log_path, self.redis_server.log_path, self.simulator.log_path):
            if log_path.exists():
                shutil.copy(log_path, directory / log_path.name)
        progress(f"copied the logs to {directory}")

    def _worker_env(self) -> dict[str, str]:
        env = {name: value for name, value in os.environ.items() if not name.upper().endswith("_PROXY")}
        env = {name: value for name, value in env.items() if not name.startswith("PROVISIONER_")}
        python_path = [str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
        env |= {
            "REDIS_URL": self.redis_server.url,
            "PROVISIONER_HOME": str(self.scratch / "home"),
            "PROVISIONER_CONTAINER_NETWORK": "host",
            "HCLOUD_ENDPOINT": self.simulator.endpoint,
            "HCLOUD_TOKEN": self.simulator.token,
            "PYTHONPATH": os.pathsep.join(python_path),
        }
        return env

