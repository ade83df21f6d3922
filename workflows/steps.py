"""
The order of steps in a provision, per workspace type.

Workspaces with an inner harnessd run create -> wait_running -> probe_healthz ->
hand_off. Local and worktree workspaces have nothing to wait for or probe, so
they go from create straight to hand_off and pay no readiness cost at all.
"""

from __future__ import annotations

from workflows.model import Step, WorkspaceType
from workflows.policy import has_harnessd

_WITH_HARNESSD = (Step.CREATE, Step.WAIT_RUNNING, Step.PROBE_HEALTHZ, Step.HAND_OFF)
_WITHOUT_HARNESSD = (Step.CREATE, Step.HAND_OFF)


def steps_for(workspace_type: WorkspaceType) -> tuple[Step, ...]:
    """Return the provisioning steps of a workspace type, in order."""
    return _WITH_HARNESSD if has_harnessd(workspace_type) else _WITHOUT_HARNESSD


def next_step(workspace_type: WorkspaceType, step: Step) -> Step:
    """Return the step after `step`, or Step.DONE after hand_off."""
    steps = steps_for(workspace_type)
    position = steps.index(step)
    return steps[position + 1] if position + 1 < len(steps) else Step.DONE
