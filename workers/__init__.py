"""
The Celery side of the provisioner: the app, the step tasks, the backends and the operator CLI.

`celery -A workers worker` finds the app here. It is loaded on first access, so
that the CLI can report invalid settings as one line instead of failing at import.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        from workers.app import app

        return app
    raise AttributeError(f"module 'workers' has no attribute {name!r}")
