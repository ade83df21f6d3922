"""The `provisioner` CLI as an operator runs it: real subprocesses, exact errors and exit codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import RedisServer, unique_id
from workflows.model import ProvisionRequest, WorkspaceType
from workflows.store import Store

EXIT_PROVISION_FAILED, EXIT_INVALID, EXIT_NOT_FOUND, EXIT_UNAVAILABLE, EXIT_CONFLICT = 1, 2, 3, 4, 5


def run_cli(env: dict[str, str], *arguments: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["provisioner", *arguments], env=env, capture_output=True, text=True, timeout=timeout_s, check=False)


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, message: str) -> None:
    assert result.returncode == code, result.stderr
    assert result.stderr == f"provisioner: {message}\n"
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("submit", "--type", "vmware", "--id", "a"), "Invalid value for '--type': 'vmware' is not one of 'local', 'worktree', 'container', 'vm'."),
        (("submit", "--type", "local", "--id", ""), "provision id must not be empty"),
        (("submit", "--type", "container", "--id", "a"), "container workspaces need an image: give --image IMAGE"),
        (("submit", "--type", "worktree", "--id", "a"), "worktree workspaces need a repository: give --repo PATH"),
        (("submit", "--type", "local", "--id", "a", "--ready-timeout", "-5"), "ready timeout must be a positive number of seconds, got -5.0"),
        (("submit", "--type", "local", "--id", "a", "--ready-timeout", "0"), "ready timeout must be a positive number of seconds, got 0.0"),
        (("submit", "--type", "local", "--id", "a", "--ready-timeout", "1e9"), "ready timeout of 1e+09s is longer than the maximum of 86400s; give it in seconds"),
        (("submit", "--type", "local", "--id", "a", "--ready-timeout", "soon"), "Invalid value for '--ready-timeout': 'soon' is not a valid float."),
        (("submit", "--type", "local", "--id", "a", "--env", "UNSET_TOKEN_X"), "--env UNSET_TOKEN_X has no value and UNSET_TOKEN_X is not set in the environment; use UNSET_TOKEN_X=VALUE"),
        (("submit", "--type", "local", "--id", "a", "--env", "=value"), "--env expects KEY=VALUE or KEY with a non-empty KEY"),
        (("submit", "--type", "local", "--id", "a", "--env", "A=1", "--env", "A=2"), "--env A is given twice"),
        (("submit", "--type", "local", "--id", "a", "--image", "x:1"), "--image applies to container and vm workspaces only"),
        (("submit", "--type", "container", "--id", "a", "--image", "x:1", "--repo", "."), "--repo applies to worktree workspaces only"),
        (("submit", "--type", "local", "--id", "a", "--server-type", "cx22"), "--server-type and --location apply to vm workspaces only"),
        (("submit", "--type", "local", "--id", "a", "--ready-timeout", "inf"), "ready timeout must be a finite number of seconds, got inf"),
        (("submit", "--type", "local", "--id", "x" * 513), "provision id is 513 characters long; the maximum is 512"),
        (("submit", "--type", "local", "--id", "a", "--wait-timeout", "-1"), "--wait-timeout must be a positive number of seconds, got -1.0"),
        (("status",), "Missing argument 'PROVISION_ID'."),
        (("status", ""), "provision id must not be empty"),
    ],
)
def test_invalid_input_is_one_line(services_env: dict[str, str], arguments: tuple[str, ...], message: str) -> None:
    assert_one_line_error(run_cli(services_env, *arguments), EXIT_INVALID, message)


@pytest.mark.parametrize("command", ["status", "events", "retry", "cancel", "destroy"])
def test_unknown_id_is_not_found(services_env: dict[str, str], store: Store, command: str) -> None:
    store.create(ProvisionRequest(id=unique_id("known"), type=WorkspaceType.LOCAL), {}, {"event": "workspace.provision_requested"})
    provision_id = unique_id("missing")

    assert_one_line_error(run_cli(services_env, command, provision_id), EXIT_NOT_FOUND, f"provision {provision_id!r} not found")


def test_unknown_id_in_empty_redis_hints_data_loss(services_env: dict[str, str], tmp_path: Path) -> None:
    empty = RedisServer(tmp_path / "empty-redis").start()
    try:
        result = run_cli(services_env | {"REDIS_URL": empty.url}, "status", "ws-1")
    finally:
        empty.stop()

    assert_one_line_error(
        result,
        EXIT_NOT_FOUND,
        "provision 'ws-1' not found; this Redis holds no provision at all, so if it restarted without persistence "
        "every record was lost (run it with appendonly yes)",
    )


def test_unreachable_redis_names_url(services_env: dict[str, str]) -> None:
    env = services_env | {"REDIS_URL": "redis://:hunter2@127.0.0.1:1/0"}

    result = run_cli(env, "status", "ws-1")

    assert result.returncode == EXIT_UNAVAILABLE
    assert result.stderr.startswith("provisioner: Redis at redis://:***@127.0.0.1:1/0 is unreachable (")
    assert result.stderr.endswith("); start Redis or set REDIS_URL to one that runs\n")
    assert "hunter2" not in result.stderr


def test_unreachable_docker_names_url(services_env: dict[str, str], tmp_path: Path) -> None:
    env = services_env | {"DOCKER_HOST": f"unix://{tmp_path}/docker.sock"}

    result = run_cli(env, "submit", "--type", "container", "--id", unique_id(), "--image", "x:1")

    assert result.returncode == EXIT_UNAVAILABLE
    assert result.stderr.startswith(f"provisioner: Docker engine at unix://{tmp_path}/docker.sock is unreachable (")
    assert result.stderr.endswith("); start dockerd or set DOCKER_HOST\n")


def test_missing_image_is_named(services_env: dict[str, str], docker_client) -> None:
    result = run_cli(services_env, "submit", "--type", "container", "--id", unique_id(), "--image", "no-such-image:1")

    assert_one_line_error(
        result, EXIT_INVALID, "image 'no-such-image:1' not found on the Docker engine at unix:///var/run/docker.sock; build or pull it first"
    )


def test_repo_that_is_no_repository(services_env: dict[str, str], tmp_path: Path) -> None:
    result = run_cli(services_env, "submit", "--type", "worktree", "--id", unique_id(), "--repo", str(tmp_path))

    assert_one_line_error(result, EXIT_INVALID, f"{tmp_path} is not a git repository")


def test_submit_wait_json_ready(services_env: dict[str, str], store: Store, worker) -> None:
    provision_id = unique_id("cli")
    env = services_env | {"FROM_ENV": "kept-off-argv"}

    result = run_cli(env, "submit", "--type", "local", "--id", provision_id, "--env", "TOKEN=hunter2", "--env", "FROM_ENV", "--wait", "--json")

    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["id"] == provision_id
    assert record["status"] == "ready"
    assert record["env_keys"] == ["FROM_ENV", "TOKEN"]
    assert "hunter2" not in result.stdout + result.stderr
    assert store.get_secrets(provision_id) == {"TOKEN": "hunter2", "FROM_ENV": "kept-off-argv"}


def test_submit_twice_is_rejected(services_env: dict[str, str], worker) -> None:
    provision_id = unique_id("cli")
    assert run_cli(services_env, "submit", "--type", "local", "--id", provision_id, "--wait").returncode == 0

    result = run_cli(services_env, "submit", "--type", "local", "--id", provision_id)

    assert_one_line_error(
        result, EXIT_INVALID, f"provision {provision_id!r} already exists (status ready); choose another id, or destroy it and use a new one"
    )


def test_ready_provision_commands(services_env: dict[str, str], worker) -> None:
    provision_id = unique_id("cli")
    run_cli(services_env, "submit", "--type", "local", "--id", provision_id, "--wait")

    retried = run_cli(services_env, "retry", provision_id)
    cancelled = run_cli(services_env, "cancel", provision_id)
    events = run_cli(services_env, "events", provision_id, "--json")
    listed = run_cli(services_env, "list", "--status", "ready")
    destroyed = run_cli(services_env, "destroy", provision_id)

    assert_one_line_error(retried, EXIT_CONFLICT, f"provision {provision_id!r} is ready; only failed provisions can be retried")
    assert_one_line_error(cancelled, EXIT_CONFLICT, f"provision {provision_id!r} is already ready; use destroy to release its workspace")
    assert [json.loads(line)["event"] for line in events.stdout.splitlines()] == [
        "workspace.provision_requested",
        "workspace.created",
        "workspace.provisioned",
    ]
    assert provision_id in listed.stdout
    assert destroyed.returncode == 0
    assert destroyed.stdout == f"provision {provision_id}: destroyed; workspace released\n"
    listed_after = run_cli(services_env, "list")
    assert f"{provision_id}\tlocal\tready (destroyed)\tdone\t-" in listed_after.stdout.splitlines()


def test_control_characters_stay_escaped(services_env: dict[str, str], worker) -> None:
    provision_id = f"two\nlines\x01{unique_id()}"
    submitted = run_cli(services_env, "submit", "--type", "local", "--id", provision_id, "--wait")

    listed = run_cli(services_env, "list")

    assert submitted.returncode == 0, submitted.stderr
    escaped = provision_id.replace("\n", "\\n").replace("\x01", "\\x01")
    assert any(line.startswith(f"{escaped}\tlocal\tready") for line in listed.stdout.splitlines())


def test_submit_wait_failed_exits_one(services_env: dict[str, str], tmp_path: Path, worker) -> None:
    provision_id = unique_id("cli")
    not_a_repo = tmp_path / "plain"
    not_a_repo.mkdir()

    result = run_cli(services_env, "submit", "--type", "worktree", "--id", provision_id, "--repo", str(not_a_repo), "--no-preflight", "--wait", "--json")

    assert result.returncode == EXIT_PROVISION_FAILED
    record = json.loads(result.stdout)
    assert record["status"] == "failed"
    assert record["last_error"] == f"worktree workspace {provision_id}: {not_a_repo} is not a git repository"


def test_events_follow_ends_with_provision(services_env: dict[str, str], harnessd_image, worker) -> None:
    provision_id = unique_id("follow")
    submitted = run_cli(services_env, "submit", "--type", "container", "--id", provision_id, "--image", harnessd_image, "--env", "HARNESSD_BOOT_DELAY=2")
    assert submitted.returncode == 0, submitted.stderr

    followed = run_cli(services_env, "events", provision_id, "--follow", "--json", timeout_s=60)

    assert followed.returncode == 0, followed.stderr
    names = [json.loads(line)["event"] for line in followed.stdout.splitlines()]
    assert names[0] == "workspace.provision_requested"
    assert "workspace.probing" in names
    assert names[-1] == "workspace.provisioned"
