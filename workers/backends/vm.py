"""
VM workspaces: a Hetzner Cloud server that runs harnessd on port 8080, through the hcloud SDK.

Settings (environment of the worker):

    HCLOUD_TOKEN                    API token; never in task arguments, records, events or logs
    HCLOUD_ENDPOINT                 API endpoint (default https://api.hetzner.cloud/v1; tests point
                                    it at the loopback simulator, `hcloud-sim`)
    PROVISIONER_VM_IMAGE            image name (default debian-12)
    PROVISIONER_VM_SERVER_TYPE      server type (default cx22)
    PROVISIONER_VM_LOCATION         location (default fsn1)
    PROVISIONER_VM_INSTALL_COMMAND  shell command that installs harnessd on a fresh server (default: none,
                                    the image is expected to have it)

A server is named after the provision id (`names.hostname_label`) and carries
the label `workspace-provisioner/provision` with a digest of the id, so a create
delivered twice, or redelivered after its worker died between Hetzner's response
and the record write, finds and adopts the server instead of making a second
one. The label `workspace-provisioner/store` names the deployment, so
`provisioner gc` looks only at its own servers. Cloud-init runs the `user_data` script, which exports the request's
environment and starts harnessd with HARNESS_ADDR=:8080.

Every request first asks the shared `RateGate`; each backend call makes at most
two requests and never sleeps. The SDK's own retry loop, which sleeps in the
calling thread, is turned off, and Hetzner errors are mapped by kind:

* rate_limit_exceeded -> RateLimited (the step waits until the reset time; never fails by itself)
* locked, conflict, server_error and other 5xx, unreachable API -> BackendUnavailable (bounded retries)
* anything else (invalid_input, resource_unavailable, forbidden, unauthorized, ...) -> BackendError
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import requests
from hcloud import APIException, Client
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.server_types import ServerType
from hcloud.servers import BoundServer

from workers.backends.base import Inspection, RunState, Workspace
from workers.backends.names import hostname_label, id_digest
from workers.backends.rate_gate import RateGate
from workflows.errors import BackendError, BackendUnavailable, RateLimited
from workflows.model import ProvisionRecord, WorkspaceType

DEFAULT_ENDPOINT = "https://api.hetzner.cloud/v1"
LABEL_PROVISION = "workspace-provisioner/provision"
LABEL_STORE = "workspace-provisioner/store"
HARNESS_PORT = 8080
# Label values may hold 63 characters; 40 hex digits of SHA-256 keep collisions out of reach.
_DIGEST_LENGTH = 40
_TRANSIENT_CODES = frozenset({"locked", "conflict", "server_error", "unavailable", "timeout", "bad_gateway", "maintenance"})
# While probing, the server's status is read at most this often: each read costs API budget.
PROBE_INSPECT_INTERVAL_S = 10.0

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class VmSettings:
    token: str
    endpoint: str
    image: str
    server_type: str
    location: str
    install_command: str


def load_vm_settings() -> VmSettings:
    return VmSettings(
        token=os.environ.get("HCLOUD_TOKEN", ""),
        endpoint=(os.environ.get("HCLOUD_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/"),
        image=os.environ.get("PROVISIONER_VM_IMAGE") or "debian-12",
        server_type=os.environ.get("PROVISIONER_VM_SERVER_TYPE") or "cx22",
        location=os.environ.get("PROVISIONER_VM_LOCATION") or "fsn1",
        install_command=os.environ.get("PROVISIONER_VM_INSTALL_COMMAND", ""),
    )


def provision_label(provision_id: str) -> str:
    return id_digest(provision_id)[:_DIGEST_LENGTH]


def server_name(provision_id: str) -> str:
    return hostname_label(provision_id)


def user_data(secrets: Mapping[str, str], install_command: str) -> str:
    """Return the cloud-init script that starts harnessd; it carries the secrets, so it is never logged."""
    lines = ["#!/bin/sh", "# Written by workspace-provisioner: start harnessd on port 8080.", "set -e"]
    if install_command:
        lines.append(install_command)
    lines += [f"export {key}={shlex.quote(value)}" for key, value in sorted(secrets.items())]
    lines.append(f"HARNESS_ADDR=:{HARNESS_PORT} harnessd &")
    return "\n".join(lines) + "\n"


class VmBackend:
    workspace_type = WorkspaceType.VM
    running_timeout_s = 300.0
    running_poll_base_s = 0.5
    running_poll_cap_s = 3.0

    def __init__(self, settings: VmSettings, store_label: str, gate: RateGate | None) -> None:
        self.settings = settings
        self.store_label = store_label
        self.gate = gate
        self._client: Client | None = None
        self._last_probe_inspection: dict[str, float] = {}

    @property
    def client(self) -> Client:
        if not self.settings.token:
            raise BackendError("HCLOUD_TOKEN is not set; VM workspaces need a Hetzner Cloud API token in the environment of the workers and of `provisioner gc`")
        if self._client is None:
            self._client = _sdk_client(self.settings, self._observe)
        return self._client

    def create(self, record: ProvisionRecord, secrets: Mapping[str, str]) -> Workspace:
        # The first start of the create step cannot have made a server yet, so it skips the
        # lookup and saves API budget. Any later start is a redelivery after a crash, so it looks.
        server = self._find(record) if record.step_starts != 1 else None
        if server is None:
            server = self._create_or_adopt(record, secrets)
        return self._workspace(server)

    def inspect(self, record: ProvisionRecord) -> Inspection:
        server = self._get(record)
        if server is None:
            return Inspection(RunState.GONE)
        if server.status == "running":
            return Inspection(RunState.RUNNING)
        if server.status in ("initializing", "starting"):
            return Inspection(RunState.STARTING)

        # Any other status means the boot stopped, and a failed action gives the reason.
        failed = self._call("list server actions", lambda: self.client.servers.get_actions_list(server, status=["error"]))
        reasons = [f"action {action.command} failed: {(action.error or {}).get('message', '?')}" for action in failed.actions]
        return Inspection(RunState.EXITED, log_tail="; ".join(reasons) or f"server status is {server.status}")

    def inspect_while_probing(self, record: ProvisionRecord) -> Inspection:
        """Report whether the server still exists, reading it at most every PROBE_INSPECT_INTERVAL_S."""
        last = self._last_probe_inspection.get(record.id, 0.0)
        if time.monotonic() - last < PROBE_INSPECT_INTERVAL_S:
            return Inspection(RunState.RUNNING)
        self._last_probe_inspection[record.id] = time.monotonic()
        server = self._get(record)
        if server is None:
            return Inspection(RunState.GONE)
        if server.status != "running":
            return Inspection(RunState.EXITED, log_tail=f"server status is {server.status}")
        return Inspection(RunState.RUNNING)

    def destroy(self, record: ProvisionRecord) -> bool:
        servers = self._labelled(record)
        for server in servers:
            if server.status != "deleting":
                self._call("delete server", server.delete)
        return not servers

    def leaked_servers(self, is_live: Callable[[str], bool]) -> list[BoundServer]:
        """Return this deployment's servers whose provision label `is_live` rejects."""
        selector = f"{LABEL_PROVISION},{LABEL_STORE}={self.store_label}"
        servers = self._call("list servers", lambda: self.client.servers.get_all(label_selector=selector))
        return [server for server in servers if not is_live(server.labels.get(LABEL_PROVISION, ""))]

    def delete_server(self, server: BoundServer) -> None:
        self._call("delete server", server.delete)

    def _create_or_adopt(self, record: ProvisionRecord, secrets: Mapping[str, str]) -> BoundServer:
        name = server_name(record.id)
        options = record.options
        try:
            response = self._call(
                "create server",
                lambda: self.client.servers.create(
                    name=name,
                    server_type=ServerType(name=options.get("server_type") or self.settings.server_type),
                    image=Image(name=options.get("image") or record.image or self.settings.image),
                    location=Location(name=options.get("location") or self.settings.location),
                    user_data=user_data(secrets, self.settings.install_command),
                    labels={LABEL_PROVISION: provision_label(record.id), LABEL_STORE: self.store_label},
                ),
            )
        except _NameTaken:
            return self._adopt_by_name(record, name)
        return response.server

    def _adopt_by_name(self, record: ProvisionRecord, name: str) -> BoundServer:
        server = self._call("find server by name", lambda: self.client.servers.get_by_name(name))
        if server is not None and server.labels.get(LABEL_PROVISION) == provision_label(record.id):
            return server
        raise BackendError(f"server name {name} is used by a server that is not this provision's; delete it or use another id")

    def _workspace(self, server: BoundServer) -> Workspace:
        ipv4 = server.public_net.ipv4.ip if server.public_net and server.public_net.ipv4 else ""
        harness_url = f"http://{ipv4}:{HARNESS_PORT}" if ipv4 else ""
        return Workspace(handle=str(server.id), harness_url=harness_url)

    def _find(self, record: ProvisionRecord) -> BoundServer | None:
        servers = self._labelled(record)
        return servers[0] if servers else None

    def _labelled(self, record: ProvisionRecord) -> list[BoundServer]:
        selector = f"{LABEL_PROVISION}={provision_label(record.id)}"
        return list(self._call("list servers", lambda: self.client.servers.get_all(label_selector=selector)))

    def _get(self, record: ProvisionRecord) -> BoundServer | None:
        if not record.handle:
            return self._find(record)
        try:
            return self._call("get server", lambda: self.client.servers.get_by_id(int(record.handle)))
        except _NotFound:
            return None

    def _call(self, action: str, request: Callable[[], T]) -> T:
        """Run one SDK call after the rate gate allows it, mapping its errors by kind."""
        if self.gate is not None:
            wait = self.gate.wait_s()
            if wait > 0:
                raise RateLimited(f"Hetzner API request budget used up; waiting {wait:.1f}s before {action}", wait)
        try:
            return request()
        except APIException as exc:
            raise _mapped(action, exc) from exc
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise BackendUnavailable(f"Hetzner API at {self.settings.endpoint} is unreachable ({type(exc).__name__}); {action} will be retried") from exc

    def _observe(self, response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
        if self.gate is not None:
            self.gate.observe(response.headers, rate_limited=response.status_code == 429)


class _NameTaken(BackendError):
    """Hetzner returned uniqueness_error: a server with that name exists."""


class _NotFound(BackendError):
    """Hetzner returned not_found."""


def _mapped(action: str, exc: APIException) -> BackendError:
    code = str(exc.code)
    message = f"Hetzner API failed to {action}: {exc}"
    if code == "uniqueness_error":
        return _NameTaken(message)
    if code == "not_found":
        return _NotFound(message)
    if code == "rate_limit_exceeded" or code == "429":
        return RateLimited(message, 1.0)
    if code in _TRANSIENT_CODES or (code.isdigit() and int(code) >= 500):
        return BackendUnavailable(message)
    return BackendError(message)


def _sdk_client(settings: VmSettings, observe: Callable[..., None]) -> Client:
    client = Client(
        token=settings.token,
        api_endpoint=settings.endpoint,
        application_name="workspace-provisioner",
        timeout=(5.0, 30.0),
    )
    # NOTE: hcloud 2.x has no public switch for these. Its retry loop sleeps in the
    # calling thread (up to ~31 s on a 429), which would hold a worker slot, and it
    # drops the RateLimit-* headers that the shared rate gate needs.
    client._client._retry_max_retries = 0
    client._client._session.hooks["response"].append(observe)
    return client
