"""Safe workspace names from provision ids of any shape."""

from __future__ import annotations

import re

import pytest

from workers.backends.names import hostname_label, safe_name

SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


@pytest.mark.parametrize("provision_id", ["ws-42", "abc_DEF-1", "a"])
def test_safe_name_keeps_clean_ids(provision_id: str) -> None:
    assert safe_name(provision_id) == provision_id


@pytest.mark.parametrize(
    "provision_id",
    ["../../etc/passwd", "..", ".", "a/b", "-rf", "ws 42", "ünïcode", "tab\there", "nul\0byte", "x" * 300, "___", "-", "a..b", "end.lock"],
)
def test_safe_name_reduces_hostile_ids(provision_id: str) -> None:
    name = safe_name(provision_id)

    assert SAFE.match(name), name
    assert len(name) <= 64
    assert ".." not in name
    assert "/" not in name


def test_safe_name_keeps_similar_ids_apart() -> None:
    assert safe_name("a/b") != safe_name("a-b")
    assert safe_name("a/b") != safe_name("a b")


@pytest.mark.parametrize(
    ("provision_id", "expected_stem"),
    [
        ("WS-Upper", "ws-upper-"),
        ("under_score", "under-score-"),
        ("--lead-and-trail--", "lead-and-trail-"),
        ("___", "ws-"),
        ("", "ws-"),
        ("x" * 100, "x" * 54 + "-"),
    ],
)
def test_hostname_label_rules(provision_id: str, expected_stem: str) -> None:
    label = hostname_label(provision_id)

    assert HOSTNAME.match(label), label
    assert len(label) <= 63
    assert label.startswith(expected_stem)


def test_hostname_label_keeps_clean_ids() -> None:
    assert hostname_label("ws-42") == "ws-42"
