"""
The demo: provision one workspace of every type through real workers, showing each step as it happens.

Run it through `scripts/demo.sh`, which starts Redis, dockerd, a Celery worker
and the Hetzner simulator first. It submits, all at once:

* a local directory and a git worktree (no harnessd, so no probe);
* a container whose harnessd stand-in takes 3 s to bind its port;
* a VM on the loopback Hetzner simulator, whose harnessd starts after the boot;
* a container whose harnessd never starts, with a 5 s deadline: the race this
  project exists to catch, ending in a ProvisionFailed error.

It prints every event as it arrives, a timing table at the end, and then
destroys every workspace it made.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from workers.runner import Provisioner
from workflows import events
from workflows.model import ProvisionRecord, ProvisionRequest, Status, Step, WorkspaceType

# Events whose time the final table shows, and their column titles.
TIMED_EVENTS = {
    events.CREATED: "created",
    events.RUNNING: "running",
    events.READY: "ready",
    events.PROVISIONED: "handed off",
    events.PROVISION_FAILED: "failed",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--image", required=True, help="Docker image of the harnessd stand-in.")
    parser.add_argument("--work-dir", type=Path, required=True, help="Folder for the demo's git repository.")
    arguments = parser.parse_args()

    provisioner = Provisioner.from_settings()
    provisioner.store.ping()
    requests = _requests(arguments.image, _git_repository(arguments.work_dir / "repo"))

    started = time.monotonic()
    for request, secrets in requests:
        provisioner.submit(request, secrets=secrets)
        print(f"submitted {request.type.value:<9} {request.id}")
    print()

    records = _follow(provisioner, [request.id for request, _ in requests], started)
    _print_timings(provisioner, records)
    _print_failures(records)
    _destroy_all(provisioner, records)
    return 0


def _requests(image: str, repo: Path) -> list[tuple[ProvisionRequest, dict[str, str]]]:
    stamp = datetime.now().strftime("%H%M%S")
    return [
        (ProvisionRequest(id=f"demo-{stamp}-local", type=WorkspaceType.LOCAL), {}),
        (ProvisionRequest(id=f"demo-{stamp}-worktree", type=WorkspaceType.WORKTREE, repo=str(repo)), {}),
        (
            ProvisionRequest(id=f"demo-{stamp}-container", type=WorkspaceType.CONTAINER, image=image, ready_timeout_s=30),
            {"HARNESSD_BOOT_DELAY": "3", "DEMO_SECRET": "never-printed"},
        ),
        (ProvisionRequest(id=f"demo-{stamp}-vm", type=WorkspaceType.VM, ready_timeout_s=60), {"DEMO_SECRET": "never-printed"}),
        (
            ProvisionRequest(id=f"demo-{stamp}-never-ready", type=WorkspaceType.CONTAINER, image=image, ready_timeout_s=5),
            {"HARNESSD_MODE": "never"},
        ),
    ]


def _git_repository(path: Path) -> Path:
    if (path / ".git").is_dir():
        return path
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    (path / "README").write_text("A repository for the workspace-provisioner demo.\n")
    subprocess.run(["git", "-C", str(path), "add", "README"], check=True)
    identity = ["-c", "user.name=demo", "-c", "user.email=demo@example.invalid"]
    subprocess.run(["git", "-C", str(path), *identity, "commit", "-qm", "Start the demo repository"], check=True)
    return path


def _follow(provisioner: Provisioner, provision_ids: list[str], started: float) -> dict[str, ProvisionRecord]:
    """Print every event of the provisions as it arrives, until all of them have settled."""
    store = provisioner.store
    positions = {store.events_key(provision_id): "0-0" for provision_id in provision_ids}
    while True:
        for stream, entries in store.client.xread(positions, block=500) or []:
            for entry_id, fields in entries:
                positions[stream] = entry_id
                _print_event(fields, time.monotonic() - started)
        records = {provision_id: provisioner.get(provision_id) for provision_id in provision_ids}
        if all(record.is_terminal and record.step is Step.DONE for record in records.values()):
            return records


def _print_event(fields: dict[str, str], elapsed_s: float) -> None:
    details = [f"{name}={fields[name]}" for name in ("harness_url", "attempt", "error", "reason") if fields.get(name)]
    line = f"{elapsed_s:6.2f}s  {fields['provision_id']:<26} {fields['event']:<31} {' '.join(details)}"
    print(line.splitlines()[0][:160], flush=True)


def _print_timings(provisioner: Provisioner, records: dict[str, ProvisionRecord]) -> None:
    print("\nSeconds from submit to each event:\n")
    print(f"{'provision':<26} {'type':<9} {'status':<7} " + " ".join(f"{name:>10}" for name in TIMED_EVENTS.values()))
    for record in records.values():
        moments = {fields["event"]: fields["at"] for _entry, fields in provisioner.store.events(record.id)}
        cells = [_since(record, moments.get(event, "")) for event in TIMED_EVENTS]
        print(f"{record.id:<26} {record.type.value:<9} {record.status.value:<7} " + " ".join(f"{cell:>10}" for cell in cells))


def _since(record: ProvisionRecord, moment: str) -> str:
    if not moment or record.created_at is None:
        return "-"
    return f"{(datetime.fromisoformat(moment) - record.created_at).total_seconds():.3f}"


def _print_failures(records: dict[str, ProvisionRecord]) -> None:
    for record in records.values():
        if record.status is Status.FAILED:
            print(f"\nProvisionFailed ({record.failure_reason}): {record.last_error}")


def _destroy_all(provisioner: Provisioner, records: dict[str, ProvisionRecord]) -> None:
    print("\nDestroying the demo's workspaces...")
    for provision_id in records:
        provisioner.destroy(provision_id)
    for provision_id in records:
        record = provisioner.wait_destroyed(provision_id, 60)
        print(f"  {provision_id}: {'released' if record.destroyed_at else 'still releasing: ' + record.last_error}")


if __name__ == "__main__":
    sys.exit(main())
