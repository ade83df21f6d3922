"""
Settings of the workers and the CLI, read once from the environment.

    REDIS_URL                         broker and store (default redis://127.0.0.1:6379/0)
    PROVISIONER_KEY_PREFIX            first part of every Redis key of ours (default wp)
    PROVISIONER_HOME                  root of local directories and worktrees
                                      (default ~/.local/share/workspace-provisioner)
    PROVISIONER_LOCAL_ROOT            base directory of local workspaces (default $PROVISIONER_HOME/local)
    PROVISIONER_WORKTREE_ROOT         base directory of worktrees (default $PROVISIONER_HOME/worktrees)
    PROVISIONER_LOCAL_HARNESS_URL     harness URL handed off with local and worktree workspaces (default none)
    PROVISIONER_CONTAINER_NETWORK     bridge (default) or host
    PROVISIONER_CONTAINER_PORT        port harnessd serves on inside a bridge-mode container (default 8080)
    PROVISIONER_RECONCILE_INTERVAL    seconds between two sweeps for interrupted steps (default 2)
    PROVISIONER_VISIBILITY_TIMEOUT    seconds before the broker gives an unacknowledged message back (default 600)
    DOCKER_HOST                       the Docker engine (default unix:///var/run/docker.sock)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from workflows.errors import InvalidRequest
from workflows.store import DEFAULT_REDIS_URL

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
CONTAINER_NETWORKS = ("bridge", "host")

NumberT = TypeVar("NumberT", int, float)


@dataclasses.dataclass(frozen=True)
class Settings:
    redis_url: str
    key_prefix: str
    local_root: Path
    worktree_root: Path
    local_harness_url: str
    container_network: str
    container_port: int
    reconcile_interval_s: float
    visibility_timeout_s: float
    docker_host: str

    @property
    def store_label(self) -> str:
        """Return a short digest naming this deployment's store (Redis URL without password, key prefix).

        Containers and servers carry it, so `provisioner gc` of one deployment never
        touches the workspaces of another that shares the Docker engine or the Hetzner project.
        """
        from workers.backends.names import id_digest
        from workflows.store import redact_url

        return id_digest(f"{redact_url(self.redis_url)}|{self.key_prefix}")[:16]


def load_settings() -> Settings:
    """Read the settings from the environment; raise InvalidRequest naming a bad variable."""
    home = Path(os.environ.get("PROVISIONER_HOME") or Path.home() / ".local/share/workspace-provisioner")
    network = os.environ.get("PROVISIONER_CONTAINER_NETWORK", "bridge")
    if network not in CONTAINER_NETWORKS:
        raise InvalidRequest(f"PROVISIONER_CONTAINER_NETWORK must be bridge or host, got {network!r}")

    return Settings(
        redis_url=os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL,
        key_prefix=os.environ.get("PROVISIONER_KEY_PREFIX") or "wp",
        local_root=Path(os.environ.get("PROVISIONER_LOCAL_ROOT") or home / "local"),
        worktree_root=Path(os.environ.get("PROVISIONER_WORKTREE_ROOT") or home / "worktrees"),
        local_harness_url=os.environ.get("PROVISIONER_LOCAL_HARNESS_URL", ""),
        container_network=network,
        container_port=_read_number("PROVISIONER_CONTAINER_PORT", 8080, int),
        reconcile_interval_s=_read_number("PROVISIONER_RECONCILE_INTERVAL", 2.0, float),
        visibility_timeout_s=_read_number("PROVISIONER_VISIBILITY_TIMEOUT", 600.0, float),
        docker_host=os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST,
    )


def _read_number(name: str, default: NumberT, kind: Callable[[str], NumberT]) -> NumberT:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise InvalidRequest(f"{name} must be a number, got {text!r}") from None
    if value <= 0:
        raise InvalidRequest(f"{name} must be positive, got {text!r}")
    return value
