"""
The admin endpoints under `/_sim`: faults, vanishing servers, stats and reset.

They need no token and do not count against the rate limit or the request
stats. README.md documents the request and response bodies.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from .api import Query, Response, parse_json_object
from .errors import ApiError
from .simulation import Simulation

AdminHandler = Callable[[Simulation, "re.Match[str]", bytes], Response]


def list_faults(sim: Simulation, match: re.Match[str], raw: bytes) -> Response:
    return 200, {"faults": [fault.to_json() for fault in sim.faults.all()]}


def add_fault(sim: Simulation, match: re.Match[str], raw: bytes) -> Response:
    fault = sim.add_fault(parse_json_object(raw))
    return 201, {"fault": fault.to_json()}


def clear_faults(sim: Simulation, match: re.Match[str], raw: bytes) -> Response:
    return 200, {"removed": sim.clear_faults()}


def remove_fault(sim: Simulation, match: re.Match[str], raw: bytes) -> Response:
    sim.remove_fault(int(match["id"]))
    return 200, {"removed": 1}


def vanish_server(sim: Simulation, match: re.Match[str], raw: bytes) -> Response:
    return 200, {"server": sim.vanish(int(match["id"]))}


def get_stats(sim: Simulation, match: re.Match[str], raw: bytes) -> Response:
    return 200, sim.stats()


def reset(sim: Simulation, match: re.Match[str], raw: bytes) -> Response:
    sim.reset()
    return 200, {"reset": True}


ADMIN_ROUTES: list[tuple[str, re.Pattern[str], AdminHandler]] = [
    ("GET", re.compile(r"^/faults$"), list_faults),
    ("POST", re.compile(r"^/faults$"), add_fault),
    ("DELETE", re.compile(r"^/faults$"), clear_faults),
    ("DELETE", re.compile(r"^/faults/(?P<id>\d+)$"), remove_fault),
    ("POST", re.compile(r"^/servers/(?P<id>\d+)/vanish$"), vanish_server),
    ("GET", re.compile(r"^/stats$"), get_stats),
    ("POST", re.compile(r"^/reset$"), reset),
]


def dispatch_admin(sim: Simulation, method: str, path: str, query: Query, raw: bytes) -> Response:
    """Route a request below /_sim (`path` excludes the prefix) to its handler."""
    path_known = False
    for route_method, pattern, handler in ADMIN_ROUTES:
        match = pattern.match(path)
        if match is None:
            continue
        path_known = True
        if route_method == method:
            return handler(sim, match, raw)

    if path_known:
        raise ApiError("method_not_allowed", f"method {method} is not allowed on /_sim{path}", None)
    raise ApiError("not_found", f"no admin endpoint /_sim{path}", None)

