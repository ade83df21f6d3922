"""
`provisioner`: the operator's command line over the runner's API.

    provisioner submit --type container --id ws-42 --image harnessd:latest --wait
    provisioner status ws-42
    provisioner events ws-42 --follow
    provisioner list --status failed
    provisioner retry ws-42
    provisioner cancel ws-42
    provisioner destroy ws-42

Every error is one line on stderr and a non-zero exit code (see EXIT_* below),
never a traceback. Values given with --env are never printed.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn, ParamSpec, TypeVar

import click

from workflows.errors import (
    BackendError,
    BackendUnavailable,
    InvalidRequest,
    InvalidTransition,
    ProvisionError,
    ProvisionNotFound,
    RateLimited,
    StoreUnavailable,
)
from workflows.model import ProvisionRecord, ProvisionRequest, Status, Step, WorkspaceType
from workflows.policy import DEFAULT_READY_TIMEOUT_S, validate_ready_timeout, validate_request

# The command did what was asked; with --wait, the provision is ready.
EXIT_OK = 0
# With --wait: the provision ended failed or cancelled.
EXIT_PROVISION_FAILED = 1
# Invalid input: a bad option value, an empty id, a missing image.
EXIT_INVALID = 2
# No provision with that id.
EXIT_NOT_FOUND = 3
# Redis or the Docker engine cannot be reached.
EXIT_UNAVAILABLE = 4
# The command does not apply to the provision's status (retrying a ready one, say).
EXIT_CONFLICT = 5
# --wait ran out of time before the provision ended.
EXIT_WAIT_TIMEOUT = 6

# Seconds after which `submit --wait` warns that no worker took the provision.
NO_WORKER_WARNING_S = 10.0
DESTROY_WAIT_S = 60.0

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"provisioner: {message}", err=True)
    sys.exit(code)


def _one_line_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn our errors into one line on stderr and the matching exit code."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ProvisionNotFound as exc:
            fail(str(exc), EXIT_NOT_FOUND)
        except (StoreUnavailable, BackendUnavailable, RateLimited) as exc:
            fail(str(exc), EXIT_UNAVAILABLE)
        except (InvalidRequest, BackendError) as exc:
            fail(str(exc), EXIT_INVALID)
        except InvalidTransition as exc:
            fail(str(exc), EXIT_CONFLICT)
        except ProvisionError as exc:
            fail(str(exc), EXIT_INVALID)

    return wrapper


def _provisioner() -> Any:
    from workers.runner import Provisioner

    provisioner = Provisioner.from_settings()
    provisioner.store.ping()
    return provisioner


def _existing_id(provision_id: str) -> str:
    if not provision_id:
        fail("provision id must not be empty", EXIT_INVALID)
    return provision_id


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Provision workspaces and follow them. Redis is found through REDIS_URL."""


def main() -> None:
    """Run the CLI; a usage error is one line on stderr with exit code 2, like every other error."""
    try:
        cli.main(prog_name="provisioner", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.format_message(), err=True)
        sys.exit(EXIT_INVALID)
    except click.ClickException as exc:
        fail(exc.format_message(), EXIT_INVALID)
    except click.exceptions.Abort:
        fail("aborted", 130)


@cli.command()
@click.option("--type", "workspace_type", required=True, type=click.Choice([t.value for t in WorkspaceType]), help="Kind of workspace.")
@click.option("--id", "provision_id", required=True, help="Provision id, chosen by you; any text but empty.")
@click.option("--repo", default="", help="Git repository to branch a worktree from (worktree only).")
@click.option("--image", default="", help="Docker image that runs harnessd (container), or Hetzner image name (vm; default PROVISIONER_VM_IMAGE).")
@click.option("--server-type", default="", help="Hetzner server type, e.g. cx22 (vm only; default PROVISIONER_VM_SERVER_TYPE).")
@click.option("--location", default="", help="Hetzner location, e.g. fsn1 (vm only; default PROVISIONER_VM_LOCATION).")
@click.option("--env", "env_pairs", multiple=True, metavar="KEY[=VALUE]", help="Environment variable for the workspace; repeatable. A bare KEY takes its value from your environment, keeping it off the command line. Values are secret: never recorded or printed.")
@click.option("--ready-timeout", type=float, default=DEFAULT_READY_TIMEOUT_S, show_default=True, help="Seconds harnessd may take to return 200 from /healthz once the workspace runs.")
@click.option("--keep-on-failure", is_flag=True, help="Keep the workspace when the provision fails, for debugging.")
@click.option("--wait", is_flag=True, help="Wait until the provision is ready, failed or cancelled; exit 0 only if ready.")
@click.option("--wait-timeout", type=float, default=None, help="Seconds --wait waits at most [default: ready timeout + 300].")
@click.option("--no-preflight", is_flag=True, help="Skip the local checks of Docker, the image and the repository.")
@click.option("--json", "as_json", is_flag=True, help="Print the record as one JSON object.")
@_one_line_errors
def submit(
    workspace_type: str,
    provision_id: str,
    repo: str,
    image: str,
    server_type: str,
    location: str,
    env_pairs: tuple[str, ...],
    ready_timeout: float,
    keep_on_failure: bool,
    wait: bool,
    wait_timeout: float | None,
    no_preflight: bool,
    as_json: bool,
) -> None:
    """Submit a provision and print its id (or, with --json, its record)."""
    kind = WorkspaceType(workspace_type)
    _check_options_apply(kind, repo, image)
    secrets = _parse_env(env_pairs)
    validate_ready_timeout(ready_timeout)
    if wait_timeout is not None and wait_timeout <= 0:
        raise InvalidRequest(f"--wait-timeout must be a positive number of seconds, got {wait_timeout}")
    if kind is WorkspaceType.WORKTREE and repo:
        repo = str(Path(repo).expanduser().resolve())

    request = ProvisionRequest(
        id=provision_id,
        type=kind,
        repo=repo,
        image=image,
        env_keys=tuple(sorted(secrets)),
        ready_timeout_s=ready_timeout,
        keep_on_failure=keep_on_failure,
        options=_vm_options(kind, server_type, location),
    )
    validate_request(request)
    if not no_preflight:
        _preflight(request)

    provisioner = _provisioner()
    provisioner.submit(request, secrets=secrets)
    if not wait:
        _print_record(provisioner.get(provision_id), as_json, short=True)
        return

    if not as_json:
        click.echo(printable(provision_id))
    record = _wait_with_progress(provisioner, provision_id, wait_timeout or ready_timeout + 300, show_events=not as_json)
    _print_record(record, as_json, short=False)
    _exit_for(record)


@cli.command()
@click.argument("provision_id")
@click.option("--json", "as_json", is_flag=True, help="Print the record as one JSON object.")
@_one_line_errors
def status(provision_id: str, as_json: bool) -> None:
    """Show the record of a provision."""
    record = _provisioner().get(_existing_id(provision_id))
    _print_record(record, as_json, short=False)


@cli.command(name="events")
@click.argument("provision_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until the provision is over.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per line.")
@_one_line_errors
def show_events(provision_id: str, follow: bool, as_json: bool) -> None:
    """Show the event history of a provision."""
    provisioner = _provisioner()
    record = provisioner.get(_existing_id(provision_id))
    store = provisioner.store
    if not follow:
        _print_events(store.events(record.id), as_json)
        return
    for entry in store.follow(record.id, stop=lambda: _is_over(provisioner.get(record.id))):
        _print_events([entry], as_json)


@cli.command(name="list")
@click.option("--status", "status_filter", type=click.Choice([s.value for s in Status]), default=None, help="Only provisions in this status.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per line.")
@_one_line_errors
def list_provisions(status_filter: str | None, as_json: bool) -> None:
    """List provisions, oldest first."""
    records = _provisioner().list(Status(status_filter) if status_filter else None)
    for record in records:
        if as_json:
            click.echo(json.dumps(record.to_json()))
        else:
            status_text = record.status.value + (" (destroyed)" if record.destroyed_at else "")
            click.echo(f"{printable(record.id)}\t{record.type.value}\t{status_text}\t{record.step.value}\t{record.harness_url or '-'}")


@cli.command()
@click.argument("provision_id")
@_one_line_errors
def retry(provision_id: str) -> None:
    """Resume a failed provision from its failed step, with a fresh deadline."""
    record = _provisioner().retry(_existing_id(provision_id))
    click.echo(f"provision {record.id}: resumed from {record.step.value}")


@cli.command()
@click.argument("provision_id")
@_one_line_errors
def cancel(provision_id: str) -> None:
    """Stop a provision in flight and destroy what it made."""
    provisioner = _provisioner()
    provisioner.cancel(_existing_id(provision_id))
    record = provisioner.wait_destroyed(provision_id, DESTROY_WAIT_S)
    _report_destroy(record, "cancelled")


@cli.command()
@click.argument("provision_id")
@_one_line_errors
def destroy(provision_id: str) -> None:
    """Release the workspace of a provision after its run."""
    provisioner = _provisioner()
    provisioner.destroy(_existing_id(provision_id))
    record = provisioner.wait_destroyed(provision_id, DESTROY_WAIT_S)
    _report_destroy(record, "destroyed")


@cli.command()
@click.option("--type", "workspace_type", type=click.Choice(["vm", "container"]), default="vm", show_default=True, help="Which workspaces to look for.")
@click.option("--delete", "delete_leaked", is_flag=True, help="Delete what leaked instead of only listing it.")
@_one_line_errors
def gc(workspace_type: str, delete_leaked: bool) -> None:
    """
    List servers or containers with our label whose provision is over or unknown; --delete removes them.

    A crash, an operator, or a Redis that lost its data can leave them behind,
    and leaked servers cost money. Workspaces of provisions that are running,
    ready, or failed with --keep-on-failure are never touched.
    """
    provisioner = _provisioner()
    live_ids = [record.id for record in provisioner.list() if provisioner.owns_workspace(record)]
    if workspace_type == "vm":
        leaked = _leaked_servers(live_ids, delete_leaked)
    else:
        leaked = _leaked_containers(live_ids, delete_leaked)
    noun = "server(s)" if workspace_type == "vm" else "container(s)"
    verb = "deleted" if delete_leaked else "found"
    hint = "; run with --delete to remove them" if leaked and not delete_leaked else ""
    click.echo(f"{verb} {leaked} leaked {noun}{hint}", err=True)


def _leaked_servers(live_ids: list[str], delete_leaked: bool) -> int:
    from workers.backends import backend_for
    from workers.backends.vm import VmBackend, provision_label

    live = {provision_label(provision_id) for provision_id in live_ids}
    backend = backend_for(WorkspaceType.VM)
    assert isinstance(backend, VmBackend)
    leaked = _waiting_out_rate_limit(lambda: backend.leaked_servers(lambda label: label in live))
    for server in leaked:
        click.echo(f"{server.id}\t{server.name}\t{server.status}\t{server.created.isoformat() if server.created else '-'}")
        if delete_leaked:
            _waiting_out_rate_limit(lambda: backend.delete_server(server))
    return len(leaked)


def _waiting_out_rate_limit(call: Callable[[], R]) -> R:
    """Run `call`, sleeping out Hetzner rate limits: a CLI may block, a worker may not."""
    while True:
        try:
            return call()
        except RateLimited as exc:
            click.echo(f"provisioner: {exc}", err=True)
            time.sleep(exc.retry_after_s)


def _leaked_containers(live_ids: list[str], delete_leaked: bool) -> int:
    from workers.backends import backend_for
    from workers.backends.container import ContainerBackend
    from workers.backends.names import id_digest

    live = {id_digest(provision_id) for provision_id in live_ids}
    backend = backend_for(WorkspaceType.CONTAINER)
    assert isinstance(backend, ContainerBackend)
    leaked = backend.leaked_containers(lambda label: label in live)
    for container in leaked:
        click.echo(f"{container.short_id}\t{container.name}\t{container.status}")
        if delete_leaked:
            backend.remove_container(container)
    return len(leaked)


def _check_options_apply(kind: WorkspaceType, repo: str, image: str) -> None:
    if repo and kind is not WorkspaceType.WORKTREE:
        raise InvalidRequest("--repo applies to worktree workspaces only")
    if image and kind not in (WorkspaceType.CONTAINER, WorkspaceType.VM):
        raise InvalidRequest("--image applies to container and vm workspaces only")


def _vm_options(kind: WorkspaceType, server_type: str, location: str) -> dict[str, str]:
    if kind is not WorkspaceType.VM:
        if server_type or location:
            raise InvalidRequest("--server-type and --location apply to vm workspaces only")
        return {}
    return {name: value for name, value in (("server_type", server_type), ("location", location)) if value}


def _parse_env(pairs: Iterable[str]) -> dict[str, str]:
    """Return the --env values; a bare KEY takes its value from this process's environment, off the command line."""
    secrets: dict[str, str] = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        # Messages name only the key: the text after '=' may be a secret.
        if not key:
            raise InvalidRequest("--env expects KEY=VALUE or KEY with a non-empty KEY")
        if key in secrets:
            raise InvalidRequest(f"--env {key} is given twice")
        if not separator:
            if key not in os.environ:
                raise InvalidRequest(f"--env {key} has no value and {key} is not set in the environment; use {key}=VALUE")
            value = os.environ[key]
        secrets[key] = value
    return secrets


def _preflight(request: ProvisionRequest) -> None:
    """Check from here what the worker will need, so the operator hears of it now."""
    if request.type is WorkspaceType.WORKTREE:
        from workers.backends.worktree import repository_root

        repository_root(request.repo)
    if request.type is WorkspaceType.CONTAINER:
        from workers.backends import backend_for
        from workers.backends.container import ContainerBackend

        backend = backend_for(WorkspaceType.CONTAINER)
        assert isinstance(backend, ContainerBackend)
        backend.ping()
        backend.require_image(request.image)


def _wait_with_progress(provisioner: Any, provision_id: str, timeout_s: float, show_events: bool) -> ProvisionRecord:
    started = time.monotonic()
    warned = False
    last_event = "0-0"
    while True:
        record = provisioner.get(provision_id)
        if show_events:
            for entry_id, fields in provisioner.store.events(provision_id, last_event if last_event != "0-0" else "-"):
                last_event = entry_id
                _print_events([(entry_id, fields)], as_json=False, stream=sys.stderr)
        if _is_over(record):
            return record
        elapsed = time.monotonic() - started
        if elapsed > timeout_s:
            _print_record(record, as_json=False, short=False)
            fail(f"provision {provision_id} still {record.status.value} after waiting {timeout_s:g}s", EXIT_WAIT_TIMEOUT)
        if not warned and last_event_count(provisioner, provision_id) == 1 and elapsed > NO_WORKER_WARNING_S:
            click.echo(f"provisioner: no worker has started {provision_id} after {NO_WORKER_WARNING_S:g}s; is `celery -A workers worker` running?", err=True)
            warned = True
        provisioner.store.wait_events(provision_id, last_event if last_event != "0-0" else "$", 0.5)


def last_event_count(provisioner: Any, provision_id: str) -> int:
    return len(provisioner.store.events(provision_id, count=2))


def _is_over(record: ProvisionRecord) -> bool:
    return record.is_terminal and record.step is not Step.DESTROY


def _exit_for(record: ProvisionRecord) -> None:
    if record.status is not Status.READY:
        sys.exit(EXIT_PROVISION_FAILED)


def _report_destroy(record: ProvisionRecord, verb: str) -> None:
    if record.step is Step.DESTROY:
        fail(
            f"provision {record.id} {verb}, but its workspace is still being released after {DESTROY_WAIT_S:g}s; "
            f"see `provisioner events {record.id}`",
            EXIT_WAIT_TIMEOUT,
        )
    if record.destroyed_at is None:
        fail(f"provision {record.id} {verb}, but releasing its workspace failed: {record.last_error}", EXIT_PROVISION_FAILED)
    click.echo(f"provision {record.id}: {verb}; workspace released")


def printable(text: str) -> str:
    """Return `text` with control characters escaped (a newline as \\n), so one value stays on one line."""
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in text)


def _print_record(record: ProvisionRecord, as_json: bool, short: bool) -> None:
    if as_json:
        click.echo(json.dumps(record.to_json()))
        return
    if short:
        click.echo(printable(record.id))
        return
    data = record.to_json()
    data.pop("continuation", None)
    width = max(len(name) for name in data)
    for name, value in data.items():
        if value in ("", None, [], {}):
            continue
        click.echo(f"{name.ljust(width)}  {printable(str(value))}")


def _print_events(entries: Iterable[tuple[str, dict[str, str]]], as_json: bool, stream: Any = None) -> None:
    for entry_id, fields in entries:
        if as_json:
            click.echo(json.dumps({"id": entry_id, **fields}), file=stream)
            continue
        details = " ".join(f"{name}={printable(value)}" for name, value in fields.items() if name not in ("event", "at", "provision_id", "type") and value != "")
        click.echo(f"{fields.get('at', '')}  {printable(fields.get('provision_id', ''))}  {fields.get('event', '')}  {details}", file=stream)
