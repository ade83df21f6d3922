"""
The Celery side of the provisioner: the app, the step tasks, the backends and the operator CLI.

`celery -A workers worker` finds the app here.
"""

from workers.app import app

__all__ = ["app"]
