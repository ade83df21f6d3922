"""
Names of the events in a provision's history.

Each provision has a Redis stream of events (see `workflows.store`); every entry
carries `event`, `at` (UTC, ISO 8601), `provision_id`, `type`, `step` and the
fields below it names. No entry ever carries an environment variable's value.
"""

from __future__ import annotations

# The request was recorded. Fields: ready_timeout_s, env_keys.
PROVISION_REQUESTED = "workspace.provision_requested"
# The backend made the workspace (or adopted the one a lost worker made). Fields: handle, harness_url, workspace_path.
CREATED = "workspace.created"
# The backend reports the workspace running (Docker State.Running, Hetzner status=running).
RUNNING = "workspace.running"
# Progress while probing, at attempts 1, 2, 4, 8, ... and when the error changes. Fields: attempt, error.
PROBING = "workspace.probing"
# GET {harness_url}/healthz returned 200. Fields: attempt.
READY = "workspace.ready"
# The hand-off to the run is done; the provision is `ready`. Fields: harness_url, workspace_path.
PROVISIONED = "workspace.provisioned"
# Terminal failure. Fields: reason, error, attempt.
PROVISION_FAILED = "workspace.provision_failed"
# `provisioner cancel` stopped the provision.
CANCELLED = "workspace.cancelled"
# An operator asked to resume a failed provision. Fields: from_step.
RETRY_REQUESTED = "workspace.retry_requested"
# A step failed on a transient backend error and will run again. Fields: error, countdown_s, attempt.
STEP_RETRYING = "workspace.step_retrying"
# A step was sent again because its worker went silent. Fields: overdue_s.
STEP_RESUMED = "workspace.step_resumed"
# The workspace was released. Fields: handle.
DESTROYED = "workspace.destroyed"
# Releasing the workspace failed; it may still exist. Fields: error.
DESTROY_FAILED = "workspace.destroy_failed"
# A host-network container lost its port to another process and was made again. Fields: harness_url.
RECREATED = "workspace.recreated"
