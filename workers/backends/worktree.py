"""
Worktree workspaces: `git worktree add` of a new branch in a given repository.

The worktree lives under PROVISIONER_WORKTREE_ROOT, in a folder per repository,
on a branch `provision/<safe name>` made from the repository's HEAD. Destroy
removes the worktree, uncommitted changes included, and deletes the branch
unless it contains commits that the repository's HEAD lacks: those are kept, so a
run's committed work is never lost. There is no inner harnessd.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping
from pathlib import Path

from workers.backends.base import Inspection, RunState, WithoutHarnessd, Workspace
from workers.backends.local import contained_path
from workers.backends.names import id_digest, safe_name
from workflows.errors import BackendError
from workflows.model import ProvisionRecord, WorkspaceType

logger = logging.getLogger(__name__)

BRANCH_PREFIX = "provision/"
GIT_TIMEOUT_S = 60


class WorktreeBackend(WithoutHarnessd):
    workspace_type = WorkspaceType.WORKTREE

    def __init__(self, root: Path, harness_url: str = "") -> None:
        self.root = root
        self.harness_url = harness_url

    def create(self, record: ProvisionRecord, secrets: Mapping[str, str]) -> Workspace:
        repo = repository_root(record.repo)
        path = self._path(repo, record)
        branch = BRANCH_PREFIX + safe_name(record.id)

        if not _is_worktree_of(repo, path):
            path.parent.mkdir(parents=True, exist_ok=True)
            _git(repo, "worktree", "prune")
            if _branch_exists(repo, branch):
                _git(repo, "worktree", "add", str(path), branch)
            else:
                _git(repo, "worktree", "add", "-b", branch, str(path), "HEAD")
        return Workspace(handle=str(path), harness_url=self.harness_url, workspace_path=str(path))

    def inspect(self, record: ProvisionRecord) -> Inspection:
        path = Path(record.workspace_path) if record.workspace_path else None
        return Inspection(RunState.RUNNING if path and path.is_dir() else RunState.GONE)

    def destroy(self, record: ProvisionRecord) -> bool:
        repo = repository_root(record.repo)
        path = self._path(repo, record)
        if _is_worktree_of(repo, path):
            _git(repo, "worktree", "remove", "--force", str(path))
        _git(repo, "worktree", "prune")

        branch = BRANCH_PREFIX + safe_name(record.id)
        if _branch_exists(repo, branch):
            _delete_merged_branch(repo, branch)
        return True

    def _path(self, repo: Path, record: ProvisionRecord) -> Path:
        repo_folder = f"{safe_name(repo.name, 40)}-{id_digest(str(repo))[:8]}"
        return contained_path(self.root / repo_folder, safe_name(record.id))


def repository_root(repo: str) -> Path:
    """Return the top folder of the git repository at `repo`; raise BackendError if `repo` is not in one."""
    path = Path(repo).expanduser()
    if not path.is_dir():
        raise BackendError(f"repository {repo} is not a directory")
    try:
        top = _git(path, "rev-parse", "--show-toplevel").strip()
    except BackendError:
        raise BackendError(f"{repo} is not a git repository") from None
    try:
        _git(Path(top), "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    except BackendError:
        raise BackendError(f"repository {top} has no commit yet; a worktree needs a HEAD commit") from None
    return Path(top)


def _delete_merged_branch(repo: Path, branch: str) -> None:
    """Delete `branch` unless it contains commits that its repository's HEAD lacks, which are kept."""
    try:
        _git(repo, "branch", "-d", branch)
    except BackendError as exc:
        logger.warning("Kept branch %s in %s because it has commits not merged into HEAD: %s", branch, repo, exc)


def _is_worktree_of(repo: Path, path: Path) -> bool:
    listing = _git(repo, "worktree", "list", "--porcelain")
    return f"worktree {path}" in listing.splitlines()


def _branch_exists(repo: Path, branch: str) -> bool:
    completed = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
        capture_output=True,
        timeout=GIT_TIMEOUT_S,
        check=False,
    )
    return completed.returncode == 0


def _git(repo: Path, *arguments: str) -> str:
    command = ["git", "-C", str(repo), *arguments]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendError(f"git {arguments[0]} in {repo} failed: {exc}") from exc
    if completed.returncode != 0:
        message = (completed.stderr or completed.stdout).strip().splitlines()
        raise BackendError(f"git {' '.join(arguments[:2])} in {repo} failed: {message[-1] if message else completed.returncode}")
    return completed.stdout
