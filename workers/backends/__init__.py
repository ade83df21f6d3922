"""
Workspace backends, one per workspace type, behind the interface in `base`.

`backend_for` builds the backend of a type from the settings; backends are
cached per process because the Docker and Hetzner clients keep connections.
"""

from __future__ import annotations

import functools

from workers.backends.base import Backend
from workers.config import Settings, load_settings
from workflows.errors import InvalidRequest
from workflows.model import WorkspaceType


@functools.cache
def _cached_backend(workspace_type: WorkspaceType, settings: Settings) -> Backend:
    if workspace_type is WorkspaceType.LOCAL:
        from workers.backends.local import LocalBackend

        return LocalBackend(settings.local_root, settings.local_harness_url)
    if workspace_type is WorkspaceType.WORKTREE:
        from workers.backends.worktree import WorktreeBackend

        return WorktreeBackend(settings.worktree_root, settings.local_harness_url)
    if workspace_type is WorkspaceType.CONTAINER:
        from workers.backends.container import ContainerBackend

        return ContainerBackend(settings.docker_host, settings.store_label, settings.container_network, settings.container_port)
    if workspace_type is WorkspaceType.VM:
        return _vm_backend(settings)
    raise InvalidRequest(f"workspace type {workspace_type.value!r} has no backend on this worker")


def _vm_backend(settings: Settings) -> Backend:
    import redis

    from workers.backends.names import id_digest
    from workers.backends.rate_gate import RateGate
    from workers.backends.vm import VmBackend, load_vm_settings

    vm_settings = load_vm_settings()
    # One budget per token, keyed by a digest so the token itself never reaches Redis.
    key = f"{settings.key_prefix}:hcloud-budget:{id_digest(vm_settings.endpoint + vm_settings.token)[:16]}"
    gate = RateGate(redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3, socket_timeout=10), key)
    return VmBackend(vm_settings, settings.store_label, gate)


def backend_for(workspace_type: WorkspaceType, settings: Settings | None = None) -> Backend:
    """Return the backend that provisions `workspace_type`."""
    return _cached_backend(workspace_type, settings or load_settings())
