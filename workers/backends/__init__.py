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

        return ContainerBackend(settings.docker_host, settings.container_network, settings.container_port)
    raise InvalidRequest(f"workspace type {workspace_type.value!r} has no backend on this worker")


def backend_for(workspace_type: WorkspaceType, settings: Settings | None = None) -> Backend:
    """Return the backend that provisions `workspace_type`."""
    return _cached_backend(workspace_type, settings or load_settings())
