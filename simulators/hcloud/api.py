"""
The `/v1` endpoints: request parsing, validation, routing and pagination.

Each handler takes the path match, the query and the raw body, calls the
Simulation and returns (HTTP status, JSON body). Invalid input raises
ApiError, which the HTTP layer renders in the API's error envelope.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from . import catalogue
from .errors import ApiError, invalid_field
from .labels import is_valid_hostname, label_problems, parse_selector
from .models import ACTION_STATUSES, SERVER_STATUSES, CreateRequest
from .simulation import Simulation

#: Largest user_data the API accepts, in bytes.
MAX_USER_DATA_BYTES = 32 * 1024

#: Page size when the request gives none, and the largest page size served.
DEFAULT_PER_PAGE = 25
MAX_PER_PAGE = 50

#: Create fields that refer to resources the simulator never holds, so any id is unknown.
UNSUPPORTED_REFERENCES = {
    "volumes": "volume",
    "networks": "network",
    "firewalls": "firewall",
    "placement_group": "placement_group",
}

Query = dict[str, list[str]]
Response = tuple[int, dict[str, Any]]
Handler = Callable[[Simulation, "re.Match[str]", Query, bytes], Response]


# -- request parsing ---------------------------------------------------------


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object; 400 json_error otherwise."""
    try:
        body = json.loads(raw or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError("json_error", f"request body is not valid JSON: {exc}", None) from None

    if not isinstance(body, dict):
        raise ApiError("json_error", "request body must be a JSON object", None)
    return body


def parse_create_request(body: dict[str, Any]) -> CreateRequest:
    """Validate a POST /servers body, raising 422 invalid_input on the first bad field."""
    name = _parse_name(body.get("name"), required=True)
    assert name is not None
    server_type = _parse_reference(body, "server_type", catalogue.SERVER_TYPES)
    image = _parse_reference(body, "image", catalogue.IMAGES)
    location = catalogue.DEFAULT_LOCATION
    if body.get("location") is not None:
        location = _parse_reference(body, "location", catalogue.LOCATIONS)

    labels = _parse_labels(body.get("labels", {}))
    user_data = _parse_user_data(body.get("user_data"))
    start_after_create = _parse_bool(body, "start_after_create", default=True)
    _parse_bool(body, "automount", default=False)
    ssh_keys = body.get("ssh_keys") or []
    if not isinstance(ssh_keys, list):
        raise invalid_field("ssh_keys", "ssh_keys must be a list of SSH key ids or names.")
    _reject_unknown_references(body)
    enable_ipv4, enable_ipv6 = _parse_public_net(body.get("public_net"))

    return CreateRequest(
        name=name,
        server_type=server_type,
        image=image,
        location=location,
        labels=labels,
        user_data=user_data,
        start_after_create=start_after_create,
        enable_ipv4=enable_ipv4,
        enable_ipv6=enable_ipv6,
        with_root_password=not ssh_keys,
    )


def _parse_name(name: object, required: bool) -> str | None:
    if name is None and not required:
        return None
    if name is None:
        raise invalid_field("name", "Missing data for required field.")
    if not isinstance(name, str) or not is_valid_hostname(name):
        raise invalid_field("name", "Name must be a valid hostname.")
    return name


def _parse_reference(body: dict[str, Any], field: str, table: dict[str, dict[str, Any]]) -> str:
    reference = body.get(field)
    if reference is None:
        raise invalid_field(field, "Missing data for required field.")

    entry = catalogue.find_entry(table, reference)
    if entry is None:
        raise ApiError("invalid_input", f"{field} not found", {})
    return entry


def _parse_labels(labels: object) -> dict[str, str]:
    problems = label_problems(labels)
    if problems:
        raise invalid_field("labels", *problems)
    assert isinstance(labels, dict)
    return labels


def _parse_user_data(user_data: object) -> str | None:
    if user_data is None:
        return None
    if not isinstance(user_data, str):
        raise invalid_field("user_data", "user_data must be a string.")
    if len(user_data.encode()) > MAX_USER_DATA_BYTES:
        raise invalid_field("user_data", f"user_data must be at most {MAX_USER_DATA_BYTES} bytes.")
    return user_data


def _parse_bool(body: dict[str, Any], field: str, default: bool) -> bool:
    value = body.get(field, default)
    if not isinstance(value, bool):
        raise invalid_field(field, f"{field} must be a boolean.")
    return value


def _reject_unknown_references(body: dict[str, Any]) -> None:
    for field, resource in UNSUPPORTED_REFERENCES.items():
        if body.get(field):
            raise ApiError("invalid_input", f"{resource} not found", {})


def _parse_public_net(public_net: object) -> tuple[bool, bool]:
    if public_net is None:
        return True, True
    if not isinstance(public_net, dict):
        raise invalid_field("public_net", "public_net must be an object.")

    for family in ("ipv4", "ipv6"):
        if public_net.get(family) is not None:
            raise ApiError("invalid_input", "primary_ip not found", {})

    enable_ipv4 = _parse_bool(public_net, "enable_ipv4", default=True)
    enable_ipv6 = _parse_bool(public_net, "enable_ipv6", default=True)
    return enable_ipv4, enable_ipv6


def _parse_int(query: Query, field: str, default: int) -> int:
    values = query.get(field)
    if not values:
        return default

    text = values[-1]
    if not text.isdigit() or int(text) < 1:
        raise invalid_field(field, f"{field} must be an integer >= 1.")
    return int(text)


def _parse_enum_list(query: Query, field: str, allowed: tuple[str, ...]) -> list[str]:
    values = query.get(field, [])
    for value in values:
        if value not in allowed:
            raise invalid_field(field, f"{value!r} is not one of: {', '.join(allowed)}.")
    return values


def _parse_sort(query: Query, fields: tuple[str, ...]) -> list[tuple[str, bool]]:
    """Return (field, descending) pairs, in priority order."""
    keys = []
    for value in query.get("sort", []):
        field, _, direction = value.partition(":")
        if field not in fields or direction not in ("", "asc", "desc"):
            raise invalid_field("sort", f"{value!r} is not a valid sort; use field[:asc|:desc] with field in {fields}.")
        keys.append((field, direction == "desc"))
    return keys


def _single(query: Query, field: str) -> str | None:
    values = query.get(field)
    return values[-1] if values else None


# -- sorting and pagination --------------------------------------------------


def sort_items(items: list[dict[str, Any]], keys: list[tuple[str, bool]]) -> list[dict[str, Any]]:
    """Sort by several keys; the first key counts most, and null sorts before any value."""
    result = list(items)
    for field, descending in reversed(keys):
        result.sort(key=lambda item: (item[field] is not None, item[field] or 0), reverse=descending)
    return result


def paginate(items: list[dict[str, Any]], query: Query) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Return one page of `items` and the `meta` object; per_page is capped at MAX_PER_PAGE."""
    page = _parse_int(query, "page", 1)
    per_page = min(_parse_int(query, "per_page", DEFAULT_PER_PAGE), MAX_PER_PAGE)
    total = len(items)
    last_page = max(1, -(-total // per_page))

    start = (page - 1) * per_page
    pagination = {
        "page": page,
        "per_page": per_page,
        "previous_page": page - 1 if page > 1 else None,
        "next_page": page + 1 if page < last_page else None,
        "last_page": last_page,
        "total_entries": total,
    }
    return items[start:start + per_page], {"pagination": pagination}


# -- handlers ----------------------------------------------------------------


def list_servers(sim: Simulation, match: re.Match[str], query: Query, raw: bytes) -> Response:
    selector_text = _single(query, "label_selector")
    selector = parse_selector(selector_text) if selector_text else None
    statuses = _parse_enum_list(query, "status", SERVER_STATUSES)
    sort_keys = _parse_sort(query, ("id", "name", "created"))

    servers = sim.list_servers(_single(query, "name"), selector, statuses)
    page, meta = paginate(sort_items(servers, sort_keys), query)
    return 200, {"servers": page, "meta": meta}


def create_server(sim: Simulation, match: re.Match[str], query: Query, raw: bytes) -> Response:
    request = parse_create_request(parse_json_object(raw))
    return 201, sim.create_server(request)


def get_server(sim: Simulation, match: re.Match[str], query: Query, raw: bytes) -> Response:
    return 200, {"server": sim.get_server(int(match["id"]))}


def update_server(sim: Simulation, match: re.Match[str], query: Query, raw: bytes) -> Response:
    body = parse_json_object(raw)
    name = _parse_name(body.get("name"), required=False)
    labels = _parse_labels(body["labels"]) if body.get("labels") is not None else None
    return 200, {"server": sim.update_server(int(match["id"]), name, labels)}


def delete_server(sim: Simulation, match: re.Match[str], query: Query, raw: bytes) -> Response:
    return 200, {"action": sim.delete_server(int(match["id"]))}


def power_action(sim: Simulation, match: re.Match[str], query: Query, raw: bytes) -> Response:
    if raw.strip():
        parse_json_object(raw)
    return 201, {"action": sim.power_action(int(match["id"]), match["endpoint"])}


def list_server_actions(sim: Simulation, match: re.Match[str], query: Query, raw: bytes) -> Response:
    statuses = _parse_enum_list(query, "status", ACTION_STATUSES)
    sort_keys = _parse_sort(query, ("id", "command", "status", "started", "finished", "progress"))

    actions = sim.list_server_actions(int(match["id"]))
    actions = [action for action in actions if not statuses or action["status"] in statuses]
    page, meta = paginate(sort_items(actions, sort_keys), query)
    return 200, {"actions": page, "meta": meta}


def get_action(sim: Simulation, match: re.Match[str], query: Query, raw: bytes) -> Response:
    return 200, {"action": sim.get_action(int(match["id"]))}


ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    ("GET", re.compile(r"^/servers$"), list_servers),
    ("POST", re.compile(r"^/servers$"), create_server),
    # Every simulated action belongs to a server, so both action paths share a handler.
    ("GET", re.compile(r"^/servers/actions/(?P<id>\d+)$"), get_action),
    ("GET", re.compile(r"^/servers/(?P<id>\d+)$"), get_server),
    ("PUT", re.compile(r"^/servers/(?P<id>\d+)$"), update_server),
    ("DELETE", re.compile(r"^/servers/(?P<id>\d+)$"), delete_server),
    ("GET", re.compile(r"^/servers/(?P<id>\d+)/actions$"), list_server_actions),
    (
        "POST",
        re.compile(r"^/servers/(?P<id>\d+)/actions/(?P<endpoint>poweron|poweroff|reboot|reset|shutdown)$"),
        power_action,
    ),
    ("GET", re.compile(r"^/actions/(?P<id>\d+)$"), get_action),
]


def dispatch(sim: Simulation, method: str, path: str, query: Query, raw: bytes) -> Response:
    """Route a request below /v1 (`path` excludes the prefix) to its handler."""
    path_known = False
    for route_method, pattern, handler in ROUTES:
        match = pattern.match(path)
        if match is None:
            continue
        path_known = True
        if route_method == method:
            return handler(sim, match, query, raw)

    if path_known:
        raise ApiError("method_not_allowed", f"method {method} is not allowed on {path}", None)
    raise ApiError("not_found", f"no endpoint {path} in hcloud-sim", None)
