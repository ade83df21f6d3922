"""
Local workspaces: a directory under a base directory on the worker's machine.

There is no inner harnessd. The harness URL handed off is the one configured
(PROVISIONER_LOCAL_HARNESS_URL), typically a harnessd that runs beside the worker.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from workers.backends.base import Inspection, RunState, WithoutHarnessd, Workspace
from workers.backends.names import safe_name
from workflows.errors import BackendError
from workflows.model import ProvisionRecord, WorkspaceType


def contained_path(root: Path, name: str) -> Path:
    """Return root/name, raising BackendError if it would resolve outside `root`."""
    resolved_root = root.resolve()
    path = (resolved_root / name).resolve()
    if path.parent != resolved_root:
        raise BackendError(f"workspace name {name!r} would leave {resolved_root}; refusing to use it")
    return path


class LocalBackend(WithoutHarnessd):
    workspace_type = WorkspaceType.LOCAL

    def __init__(self, root: Path, harness_url: str = "") -> None:
        self.root = root
        self.harness_url = harness_url

    def path_of(self, record: ProvisionRecord) -> Path:
        return contained_path(self.root, safe_name(record.id))

    def create(self, record: ProvisionRecord, secrets: Mapping[str, str]) -> Workspace:
        path = self.path_of(record)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(f"cannot create directory {path}: {exc.strerror}") from exc
        return Workspace(handle=str(path), harness_url=self.harness_url, workspace_path=str(path))

    def inspect(self, record: ProvisionRecord) -> Inspection:
        return Inspection(RunState.RUNNING if self.path_of(record).is_dir() else RunState.GONE)

    def destroy(self, record: ProvisionRecord) -> bool:
        path = self.path_of(record)
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise BackendError(f"cannot remove directory {path}: {exc.strerror}") from exc
        return True
