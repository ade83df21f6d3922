"""
Server names, labels and label selectors, checked and matched the way the API does.

The label regexes are the ones the Hetzner SDKs use. Selector terms are
joined by commas (logical AND) and take the forms `k=v`, `k==v`, `k!=v`, `k`,
`!k`, `k in (v1,v2)` and `k notin (v1,v2)`. `!=` and `notin` also match a
server that lacks the key, as Kubernetes selectors do.
NOTE: the API documents no rule for that case, so this follows Kubernetes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ApiError

LABEL_KEY_RE = re.compile(
    r"^([a-z0-9A-Z]((?:[\-_.]|[a-z0-9A-Z]){0,253}[a-z0-9A-Z])?/)?"
    r"[a-z0-9A-Z]((?:[\-_.]|[a-z0-9A-Z]|){0,61}[a-z0-9A-Z])?$"
)
LABEL_VALUE_RE = re.compile(r"^(([a-z0-9A-Z](?:[\-_.]|[a-z0-9A-Z]){0,61})?[a-z0-9A-Z]$|$)")
HOSTNAME_LABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")

#: Label keys with this prefix belong to Hetzner and are rejected.
RESERVED_LABEL_PREFIX = "hetzner.cloud/"

#: Longest hostname RFC 1123 allows, in characters.
MAX_HOSTNAME_LENGTH = 253

SET_TERM_RE = re.compile(r"^(?P<key>[^\s!=()]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
COMPARE_TERM_RE = re.compile(r"^(?P<key>[^\s!=()]+)\s*(?P<op>==|!=|=)\s*(?P<value>[^\s!=()]*)$")


def is_valid_hostname(name: str) -> bool:
    """Return True if `name` is a valid RFC 1123 hostname."""
    if not name or len(name) > MAX_HOSTNAME_LENGTH:
        return False

    return all(HOSTNAME_LABEL_RE.match(part) for part in name.split("."))


def label_problems(labels: object) -> list[str]:
    """Return one message per invalid key or value in `labels`; empty when all are valid."""
    if not isinstance(labels, dict):
        return ["Labels must be an object of string keys and string values."]

    problems = []
    for key, value in labels.items():
        if not isinstance(key, str) or not LABEL_KEY_RE.match(key):
            problems.append(f"Label key {key!r} is invalid.")
        elif key.startswith(RESERVED_LABEL_PREFIX):
            problems.append(f"Label key {key!r} uses the reserved prefix {RESERVED_LABEL_PREFIX!r}.")

        if not isinstance(value, str) or not LABEL_VALUE_RE.match(value):
            problems.append(f"Label value {value!r} of key {key!r} is invalid.")

    return problems


@dataclass(frozen=True)
class SelectorTerm:
    """One term of a label selector."""

    key: str
    # One of "=", "!=", "exists", "!exists", "in", "notin".
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        """Return True if `labels` satisfy this term."""
        present = self.key in labels
        value = labels.get(self.key)

        if self.operator == "exists":
            return present
        if self.operator == "!exists":
            return not present
        if self.operator in ("=", "in"):
            return present and value in self.values
        return not present or value not in self.values


@dataclass(frozen=True)
class LabelSelector:
    """A parsed label selector; all terms must match."""

    terms: tuple[SelectorTerm, ...]

    def matches(self, labels: dict[str, str]) -> bool:
        """Return True if `labels` satisfy every term."""
        return all(term.matches(labels) for term in self.terms)


def parse_selector(text: str) -> LabelSelector:
    """Parse a label selector, raising a 422 invalid_input error that names the bad term."""
    terms = tuple(_parse_term(raw.strip(), text) for raw in _split_terms(text))
    return LabelSelector(terms)


def _split_terms(text: str) -> list[str]:
    """Split on the commas that sit outside parentheses."""
    parts: list[str] = []
    depth = 0
    current = ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def _parse_term(raw: str, text: str) -> SelectorTerm:
    set_match = SET_TERM_RE.match(raw)
    compare_match = COMPARE_TERM_RE.match(raw)

    if set_match:
        values = tuple(v.strip() for v in set_match["values"].split(","))
        term = SelectorTerm(set_match["key"], set_match["op"], values)
    elif compare_match:
        operator = "!=" if compare_match["op"] == "!=" else "="
        term = SelectorTerm(compare_match["key"], operator, (compare_match["value"],))
    elif raw.startswith("!"):
        term = SelectorTerm(raw[1:].strip(), "!exists")
    else:
        term = SelectorTerm(raw, "exists")

    _check_term(term, raw, text)
    return term


def _check_term(term: SelectorTerm, raw: str, text: str) -> None:
    valid_key = bool(LABEL_KEY_RE.match(term.key))
    valid_values = all(LABEL_VALUE_RE.match(value) for value in term.values)
    if valid_key and valid_values:
        return

    message = f"Label selector term {raw!r} is invalid."
    raise ApiError(
        "invalid_input",
        f"invalid label_selector {text!r}",
        {"fields": [{"name": "label_selector", "messages": [message]}]},
    )
