"""Local and worktree provisions through real Celery workers and real git: no probe, straight to hand-off."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.integration.conftest import event_names, handoffs, unique_id, wait_terminal
from tests.integration.handoff_recorder import record_hand_off
from workers.runner import Provisioner
from workflows import events
from workflows.model import ProvisionRequest, Status, Step, WorkspaceType
from workflows.store import Store


def test_local_handed_off_without_probe(provisioner: Provisioner, store: Store, worker) -> None:
    provision_id = unique_id("local")

    provisioner.submit(ProvisionRequest(id=provision_id, type=WorkspaceType.LOCAL), continuation=record_hand_off.s())
    record = wait_terminal(provisioner, provision_id, 15)

    assert record.status is Status.READY
    assert Path(record.workspace_path).is_dir()
    assert record.attempts == 0
    assert record.running_at is None
    assert record.handed_off_at is not None
    assert event_names(store, provision_id) == [events.PROVISION_REQUESTED, events.CREATED, events.PROVISIONED]
    recorded = [json.loads(item) for item in handoffs(store, provision_id)]
    assert recorded == [record.descriptor()]


def test_local_hostile_id_stays_under_root(provisioner: Provisioner, services_env, worker) -> None:
    provision_id = f"../../{unique_id('escape')}/.."
    root = Path(services_env["PROVISIONER_HOME"]) / "local"

    provisioner.submit(ProvisionRequest(id=provision_id, type=WorkspaceType.LOCAL))
    record = wait_terminal(provisioner, provision_id, 15)

    assert record.status is Status.READY
    assert Path(record.workspace_path).parent == root.resolve()


def test_local_destroy_removes_directory(provisioner: Provisioner, store: Store, worker) -> None:
    provision_id = unique_id("local")
    provisioner.submit(ProvisionRequest(id=provision_id, type=WorkspaceType.LOCAL))
    path = Path(wait_terminal(provisioner, provision_id, 15).workspace_path)

    provisioner.destroy(provision_id)
    record = provisioner.wait_destroyed(provision_id, 15)

    assert record.destroyed_at is not None
    assert record.step is Step.DONE
    assert not path.exists()
    assert event_names(store, provision_id)[-1] == events.DESTROYED


def _git_repo(path: Path) -> Path:
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    (path / "README").write_text("hello\n")
    subprocess.run(["git", "-C", str(path), "add", "README"], check=True)
    subprocess.run(
        ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "first"],
        check=True,
    )
    return path


def _branches(repo: Path) -> list[str]:
    listing = subprocess.run(["git", "-C", str(repo), "branch", "--format=%(refname:short)"], capture_output=True, text=True, check=True)
    return listing.stdout.split()


def test_worktree_made_and_destroyed(provisioner: Provisioner, store: Store, tmp_path: Path, worker) -> None:
    repo = _git_repo(tmp_path / "repo")
    provision_id = f"Feature/Login ws #{unique_id()}"

    provisioner.submit(ProvisionRequest(id=provision_id, type=WorkspaceType.WORKTREE, repo=str(repo)))
    record = wait_terminal(provisioner, provision_id, 20)

    assert record.status is Status.READY
    worktree = Path(record.workspace_path)
    assert (worktree / "README").read_text() == "hello\n"
    assert any(branch.startswith("provision/") for branch in _branches(repo))

    provisioner.destroy(provision_id)
    destroyed = provisioner.wait_destroyed(provision_id, 20)

    assert destroyed.destroyed_at is not None
    assert not worktree.exists()
    assert not any(branch.startswith("provision/") for branch in _branches(repo))


def test_worktree_of_non_repository_fails(provisioner: Provisioner, tmp_path: Path, worker) -> None:
    provision_id = unique_id("wt")

    provisioner.submit(ProvisionRequest(id=provision_id, type=WorkspaceType.WORKTREE, repo=str(tmp_path)))
    record = wait_terminal(provisioner, provision_id, 20)

    assert record.status is Status.FAILED
    assert record.failure_reason == "backend_error"
    assert f"worktree workspace {provision_id}: {tmp_path} is not a git repository" == record.last_error


def test_worktree_destroy_keeps_unmerged_branch(provisioner: Provisioner, tmp_path: Path, worker) -> None:
    repo = _git_repo(tmp_path / "repo")
    provision_id = unique_id("wt-work")
    provisioner.submit(ProvisionRequest(id=provision_id, type=WorkspaceType.WORKTREE, repo=str(repo)))
    worktree = Path(wait_terminal(provisioner, provision_id, 20).workspace_path)
    (worktree / "result.txt").write_text("the run's work\n")
    subprocess.run(["git", "-C", str(worktree), "add", "result.txt"], check=True)
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "-C", str(worktree), *identity, "commit", "-qm", "work"], check=True)

    provisioner.destroy(provision_id)
    destroyed = provisioner.wait_destroyed(provision_id, 20)

    assert destroyed.destroyed_at is not None
    assert not worktree.exists()
    assert [branch for branch in _branches(repo) if branch.startswith("provision/")] == [f"provision/{provision_id}"]
