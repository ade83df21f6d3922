"""
Injected failures: what can go wrong, for which servers, and for how long.

A fault applies globally, or to the servers picked by `name` (exact) or by a
`label_selector`. A per-server fault wins over a global one of the same kind,
and among faults of equal scope the one set last wins. Each fault is looked up
at the moment it matters: delays, create errors and vanishing on every tick,
broken bootstrap and harnessd crashes when user_data starts, the others on
each request. So a fault reaches existing servers that have not passed that
point yet, and every server created later. `rate_limit` is global only.
`README.md` lists the JSON bodies.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .errors import ApiError, invalid_field
from .labels import LabelSelector, parse_selector


class FaultKind(str, Enum):
    """The failure a fault injects; the value is the `kind` of the admin JSON body."""

    # Seconds from create (or power on) until `running`.
    BOOT_DELAY = "boot_delay"
    # Seconds from `running` until user_data starts.
    BOOTSTRAP_DELAY = "bootstrap_delay"
    # user_data never runs, so harnessd never starts.
    BROKEN_BOOTSTRAP = "broken_bootstrap"
    # harnessd exits with status 1 this many seconds after it starts listening.
    HARNESSD_CRASH = "harnessd_crash"
    # The create_server action ends in `error`; the server stays, powered off.
    CREATE_ACTION_ERROR = "create_action_error"
    # Requests that change the server get 423 `locked` for some seconds.
    LOCKED = "locked"
    # Token bucket of N requests refilled at N per minute.
    RATE_LIMIT = "rate_limit"
    # The next `count` requests get a 5xx error.
    HTTP_ERROR = "http_error"
    # Creating or renaming a matching server gets 409 `uniqueness_error`.
    UNIQUENESS_ERROR = "uniqueness_error"
    # The server disappears without a delete request some seconds after creation.
    VANISH = "vanish"


#: Error code sent for each status an `http_error` fault may choose.
HTTP_ERROR_CODES = {500: "server_error", 502: "bad_gateway", 503: "unavailable", 504: "timeout"}

#: Faults whose parameter is a duration, mapped to the JSON field that holds it.
DURATION_FIELDS = {
    FaultKind.BOOT_DELAY: "seconds",
    FaultKind.BOOTSTRAP_DELAY: "seconds",
    FaultKind.LOCKED: "seconds",
    FaultKind.HARNESSD_CRASH: "after_seconds",
    FaultKind.VANISH: "after_seconds",
}


@dataclass
class Fault:
    """One injected failure and the servers it applies to."""

    id: int
    kind: FaultKind
    set_at: float
    name: str | None = None
    label_selector: str | None = None
    selector: LabelSelector | None = None
    # Duration in seconds, for the kinds in DURATION_FIELDS.
    seconds: float | None = None
    message: str | None = None
    status: int | None = None
    # Requests left in an `http_error` burst.
    remaining: int | None = None
    per_minute: int | None = None

    @property
    def is_global(self) -> bool:
        """True if the fault applies to every server."""
        return self.name is None and self.selector is None

    def applies_to(self, name: str, labels: dict[str, str]) -> bool:
        """Return True if the fault is global or picks the server with this name and labels."""
        if self.name is not None:
            return self.name == name
        if self.selector is not None:
            return self.selector.matches(labels)
        return True

    def to_json(self) -> dict[str, Any]:
        """Return the fault as the admin API shows it."""
        data: dict[str, Any] = {"id": self.id, "kind": self.kind.value, "set_at": self.set_at}
        data["name"] = self.name
        data["label_selector"] = self.label_selector
        if self.kind in DURATION_FIELDS:
            data[DURATION_FIELDS[self.kind]] = self.seconds
        if self.kind is FaultKind.CREATE_ACTION_ERROR:
            data["message"] = self.message
        if self.kind is FaultKind.HTTP_ERROR:
            data.update(status=self.status, count=self.remaining)
        if self.kind is FaultKind.RATE_LIMIT:
            data["per_minute"] = self.per_minute
        return data


def parse_fault(body: dict[str, Any], fault_id: int) -> Fault:
    """Build a Fault from an admin request body, raising 422 invalid_input on a bad field."""
    kind = _parse_kind(body.get("kind"))
    fault = Fault(fault_id, kind, time.time())

    _parse_scope(fault, body)
    if kind in DURATION_FIELDS:
        fault.seconds = _parse_number(body, DURATION_FIELDS[kind])
    if kind is FaultKind.CREATE_ACTION_ERROR:
        fault.message = _parse_message(body)
    if kind is FaultKind.HTTP_ERROR:
        fault.status, fault.remaining = _parse_http_error(body)
    if kind is FaultKind.RATE_LIMIT:
        fault.per_minute = _parse_per_minute(body, fault)

    return fault


def _parse_kind(raw: object) -> FaultKind:
    try:
        return FaultKind(raw)
    except ValueError:
        kinds = ", ".join(kind.value for kind in FaultKind)
        raise invalid_field("kind", f"Unknown fault kind {raw!r}; expected one of: {kinds}.") from None


def _parse_scope(fault: Fault, body: dict[str, Any]) -> None:
    name = body.get("name")
    selector_text = body.get("label_selector")
    if name is not None and selector_text is not None:
        raise invalid_field("name", "Give name or label_selector, not both.")

    if name is not None:
        if not isinstance(name, str) or not name:
            raise invalid_field("name", "name must be a non-empty string.")
        fault.name = name

    if selector_text is not None:
        if not isinstance(selector_text, str) or not selector_text:
            raise invalid_field("label_selector", "label_selector must be a non-empty string.")
        fault.selector = parse_selector(selector_text)
        fault.label_selector = selector_text


def _parse_number(body: dict[str, Any], field_name: str) -> float:
    value = body.get(field_name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise invalid_field(field_name, f"{field_name} must be a number of seconds >= 0.")
    return float(value)


def _parse_message(body: dict[str, Any]) -> str:
    message = body.get("message", "Action failed")
    if not isinstance(message, str) or not message:
        raise invalid_field("message", "message must be a non-empty string.")
    return message


def _parse_http_error(body: dict[str, Any]) -> tuple[int, int]:
    status = body.get("status", 500)
    if status not in HTTP_ERROR_CODES:
        allowed = ", ".join(str(code) for code in HTTP_ERROR_CODES)
        raise invalid_field("status", f"status must be one of {allowed}.")

    count = body.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise invalid_field("count", "count must be an integer >= 1.")

    return status, count


def _parse_per_minute(body: dict[str, Any], fault: Fault) -> int:
    if not fault.is_global:
        raise invalid_field("kind", "A rate_limit fault is global; remove name and label_selector.")

    per_minute = body.get("per_minute")
    if isinstance(per_minute, bool) or not isinstance(per_minute, int) or per_minute < 1:
        raise invalid_field("per_minute", "per_minute must be an integer >= 1.")
    return per_minute


@dataclass
class FaultBook:
    """The active faults. Thread safe."""

    _faults: list[Fault] = field(default_factory=list)
    _next_id: int = 1
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, body: dict[str, Any]) -> Fault:
        """Parse and store a fault from an admin request body."""
        with self._lock:
            fault = parse_fault(body, self._next_id)
            self._next_id += 1
            self._faults.append(fault)
            return fault

    def remove(self, fault_id: int) -> bool:
        """Remove one fault; return False if no fault has that id."""
        with self._lock:
            kept = [fault for fault in self._faults if fault.id != fault_id]
            removed = len(kept) != len(self._faults)
            self._faults = kept
            return removed

    def clear(self) -> int:
        """Remove every fault and return how many there were."""
        with self._lock:
            count = len(self._faults)
            self._faults = []
            return count

    def all(self) -> list[Fault]:
        """Return the active faults, oldest first."""
        with self._lock:
            return list(self._faults)

    def find(self, kind: FaultKind, name: str, labels: dict[str, str]) -> Fault | None:
        """Return the fault of `kind` that applies to the server, or None."""
        with self._lock:
            return self._find(kind, name, labels)

    def find_global(self, kind: FaultKind) -> Fault | None:
        """Return the latest global fault of `kind`, or None."""
        with self._lock:
            matches = [f for f in self._faults if f.kind is kind and f.is_global]
            return matches[-1] if matches else None

    def take_http_error(self, name: str | None, labels: dict[str, str]) -> Fault | None:
        """Spend one request of a matching `http_error` burst and return its fault.

        With `name` None only global bursts count; otherwise only per-server
        bursts that pick this server. A burst is removed when it is spent.
        """
        with self._lock:
            fault = self._find_burst(name, labels)
            if fault is None or fault.remaining is None:
                return None

            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.remove(fault)
            return fault

    def _find(self, kind: FaultKind, name: str, labels: dict[str, str]) -> Fault | None:
        candidates = [f for f in self._faults if f.kind is kind and f.applies_to(name, labels)]
        targeted = [f for f in candidates if not f.is_global]
        if targeted:
            return targeted[-1]
        return candidates[-1] if candidates else None

    def _find_burst(self, name: str | None, labels: dict[str, str]) -> Fault | None:
        for fault in self._faults:
            if fault.kind is not FaultKind.HTTP_ERROR:
                continue
            if name is None and fault.is_global:
                return fault
            if name is not None and not fault.is_global and fault.applies_to(name, labels):
                return fault
        return None
