"""Run the simulator with `python -m simulators.hcloud`; the same as `hcloud-sim`."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
