"""
Container workspaces: a Docker container that runs harnessd.

The container gets `HARNESS_ADDR` (host:port harnessd must serve on) in its
environment, beside the request's secrets. Two network modes:

* bridge (default): harnessd serves on 0.0.0.0:PROVISIONER_CONTAINER_PORT inside
  the container. The engine publishes that port on a free 127.0.0.1 port and the
  backend reads the host port back, so no port is picked by us and none races.
* host: the backend picks a free 127.0.0.1 port that no other container of ours
  was given, and harnessd binds it directly. Another process may take the port
  before harnessd binds it. The container then exits, `inspect` reports a port
  conflict, and the probe step makes the container again on a new port.

NOTE: in host mode, a process outside our containers that binds the port first
and returns 200 from /healthz is taken for harnessd, because the probe cannot
tell which process responds. Bridge mode has no such window.

Every container carries the label `workspace-provisioner.provision` (the SHA-256
of the provision id), so a create delivered twice adopts the container the
first delivery made instead of starting a second one, and the label
`workspace-provisioner.store`, which `provisioner gc` uses to find only the
containers of its own deployment.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Mapping
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container

from workers.backends.base import Inspection, RunState, Workspace
from workers.backends.names import id_digest, safe_name
from workflows.errors import BackendError, BackendUnavailable, InvalidRequest
from workflows.model import ProvisionRecord, WorkspaceType

LABEL_PROVISION = "workspace-provisioner.provision"
LABEL_PROVISION_ID = "workspace-provisioner.provision-id"
LABEL_STORE = "workspace-provisioner.store"
LABEL_PORT = "workspace-provisioner.harness-port"
NAME_PREFIX = "wp-"
LOG_TAIL_LINES = 20
DOCKER_TIMEOUT_S = 30
_PORT_CONFLICT_WORDS = ("address already in use", "address in use", "eaddrinuse")


class ContainerBackend:
    workspace_type = WorkspaceType.CONTAINER
    running_timeout_s = 60.0
    running_poll_base_s = 0.1
    running_poll_cap_s = 2.0

    def __init__(self, docker_host: str, store_label: str, network: str = "bridge", container_port: int = 8080) -> None:
        self.docker_host = docker_host
        self.store_label = store_label
        self.network = network
        self.container_port = container_port
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = docker.DockerClient(base_url=self.docker_host, timeout=DOCKER_TIMEOUT_S)
            except docker.errors.DockerException as exc:
                raise self._unreachable(exc) from exc
        return self._client

    def ping(self) -> None:
        """Raise BackendUnavailable, naming the engine URL, unless the Docker engine responds."""
        with self._mapped_errors("ping"):
            self.client.ping()

    def require_image(self, image: str) -> None:
        """Raise InvalidRequest unless `image` exists on the engine."""
        with self._mapped_errors("look up image"):
            try:
                self.client.images.get(image)
            except docker.errors.ImageNotFound:
                raise InvalidRequest(
                    f"image {image!r} not found on the Docker engine at {self.docker_host}; build or pull it first"
                ) from None

    def create(self, record: ProvisionRecord, secrets: Mapping[str, str]) -> Workspace:
        with self._mapped_errors("create container"):
            container = self._find(record)
            if container is None:
                container = self._run(record, secrets)
            elif container.status == "created":
                container.start()
            return self._workspace(container)

    def recreate(self, record: ProvisionRecord, secrets: Mapping[str, str]) -> Workspace:
        """Remove the container of `record` and start a new one (on a new port in host mode)."""
        self.destroy(record)
        return self.create(record, secrets)

    def inspect(self, record: ProvisionRecord) -> Inspection:
        with self._mapped_errors("inspect container"):
            container = self._find(record)
            if container is None:
                return Inspection(RunState.GONE)
            state = container.attrs.get("State", {})
            if state.get("Running"):
                return Inspection(RunState.RUNNING)
            if state.get("Status") in ("created", "restarting"):
                return Inspection(RunState.STARTING)
            return self._exited(container, state)

    def inspect_while_probing(self, record: ProvisionRecord) -> Inspection:
        return self.inspect(record)

    def destroy(self, record: ProvisionRecord) -> bool:
        with self._mapped_errors("remove container"):
            for container in self._labelled(record):
                try:
                    container.remove(force=True)
                except docker.errors.NotFound:
                    pass
        return True

    def leaked_containers(self, is_live: Callable[[str], bool]) -> list[Container]:
        """Return this deployment's containers whose provision label `is_live` rejects."""
        with self._mapped_errors("list containers"):
            containers = self.client.containers.list(all=True, filters={"label": f"{LABEL_STORE}={self.store_label}"})
        return [container for container in containers if not is_live(container.labels.get(LABEL_PROVISION, ""))]

    def remove_container(self, container: Container) -> None:
        with self._mapped_errors("remove container"):
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass

    def _run(self, record: ProvisionRecord, secrets: Mapping[str, str]) -> Container:
        image = record.image
        labels = {
            LABEL_PROVISION: id_digest(record.id),
            LABEL_PROVISION_ID: record.id[:1000],
            LABEL_STORE: self.store_label,
        }
        options: dict[str, Any] = {"detach": True, "name": NAME_PREFIX + safe_name(record.id), "labels": labels}

        if self.network == "host":
            port = free_loopback_port(exclude=self._ports_in_use())
            labels[LABEL_PORT] = str(port)
            options["network_mode"] = "host"
            harness_addr = f"127.0.0.1:{port}"
        else:
            options["ports"] = {f"{self.container_port}/tcp": ("127.0.0.1", None)}
            harness_addr = f"0.0.0.0:{self.container_port}"
        options["environment"] = {**secrets, "HARNESS_ADDR": harness_addr}

        try:
            return self.client.containers.run(image, **options)
        except docker.errors.ImageNotFound:
            raise BackendError(f"image {image!r} not found on the Docker engine at {self.docker_host}") from None
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                raise BackendError(
                    f"container name {options['name']} is taken by a container of another provision; remove it"
                ) from None
            raise

    def _ports_in_use(self) -> set[int]:
        """Return the host ports given to our containers, bound yet or not, so none is given twice."""
        containers = self.client.containers.list(all=True, filters={"label": LABEL_PORT})
        return {int(port) for container in containers if (port := container.labels.get(LABEL_PORT, "")).isdigit()}

    def _workspace(self, container: Container) -> Workspace:
        if self.network == "host":
            port = container.labels.get(LABEL_PORT, "")
        else:
            port = self._published_port(container)
        return Workspace(handle=container.id, harness_url=f"http://127.0.0.1:{port}")

    def _published_port(self, container: Container) -> str:
        container.reload()
        bindings = (container.ports or {}).get(f"{self.container_port}/tcp") or []
        for binding in bindings:
            if binding.get("HostIp") in ("127.0.0.1", "0.0.0.0", ""):
                return str(binding["HostPort"])
        raise BackendError(
            f"the Docker engine at {self.docker_host} published no host port for container {container.short_id}; "
            "its bridge network may be disabled (use PROVISIONER_CONTAINER_NETWORK=host)"
        )

    def _exited(self, container: Container, state: Mapping[str, Any]) -> Inspection:
        exit_code = int(state.get("ExitCode") or 0)
        try:
            logs = container.logs(tail=LOG_TAIL_LINES).decode("utf-8", "replace").strip()
        except docker.errors.APIError:
            logs = ""
        conflict = self.network == "host" and _looks_like_port_conflict(container, logs)
        return Inspection(RunState.EXITED, exit_code=exit_code, log_tail=logs, port_conflict=conflict)

    def _find(self, record: ProvisionRecord) -> Container | None:
        containers = self._labelled(record)
        return containers[0] if containers else None

    def _labelled(self, record: ProvisionRecord) -> list[Container]:
        selector = f"{LABEL_PROVISION}={id_digest(record.id)}"
        return list(self.client.containers.list(all=True, filters={"label": selector}))

    def _mapped_errors(self, action: str) -> _DockerErrors:
        return _DockerErrors(self, action)

    def _unreachable(self, exc: Exception) -> BackendUnavailable:
        return BackendUnavailable(
            f"Docker engine at {self.docker_host} is unreachable ({_short(exc)}); start dockerd or set DOCKER_HOST"
        )


class _DockerErrors:
    """Map Docker SDK and transport errors to our error tree, naming the action and the engine."""

    def __init__(self, backend: ContainerBackend, action: str) -> None:
        self.backend = backend
        self.action = action

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _traceback: Any) -> bool:
        if exc is None or isinstance(exc, (BackendError, InvalidRequest)):
            return False
        if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            raise self.backend._unreachable(exc) from exc
        if isinstance(exc, docker.errors.APIError) and (exc.status_code or 0) >= 500:
            raise BackendUnavailable(f"Docker engine failed to {self.action}: {_short(exc)}") from exc
        if isinstance(exc, docker.errors.DockerException):
            raise BackendError(f"Docker engine failed to {self.action}: {_short(exc)}") from exc
        return False


def free_loopback_port(exclude: set[int] | None = None) -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now and that is not in `exclude`."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe_socket:
            probe_socket.bind(("127.0.0.1", 0))
            port = int(probe_socket.getsockname()[1])
        if port not in (exclude or set()):
            return port
    raise BackendError("no free 127.0.0.1 port outside those of existing containers after 100 tries")


def _looks_like_port_conflict(container: Container, logs: str) -> bool:
    if any(word in logs.lower() for word in _PORT_CONFLICT_WORDS):
        return True
    port = container.labels.get(LABEL_PORT)
    return bool(port) and _port_taken(int(port))


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe_socket:
        # SO_REUSEADDR lets connections in TIME_WAIT pass: only a listener makes the port taken.
        probe_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe_socket.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def _short(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).strip().splitlines()[0][:300]
