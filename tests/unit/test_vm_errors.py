"""Hetzner API errors map to the provisioner's error kinds, which decide retry or failure."""

from __future__ import annotations

import pytest
from hcloud import APIException

from workers.backends.vm import _mapped, _NameTaken, _NotFound, user_data
from workflows.errors import BackendError, BackendUnavailable, RateLimited, is_transient


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("rate_limit_exceeded", RateLimited),
        (429, RateLimited),
        ("locked", BackendUnavailable),
        ("conflict", BackendUnavailable),
        ("server_error", BackendUnavailable),
        ("unavailable", BackendUnavailable),
        ("timeout", BackendUnavailable),
        ("bad_gateway", BackendUnavailable),
        (502, BackendUnavailable),
        (503, BackendUnavailable),
        ("uniqueness_error", _NameTaken),
        ("not_found", _NotFound),
    ],
)
def test_retryable_codes_map_to_their_kind(code: str | int, expected: type[BackendError]) -> None:
    mapped = _mapped("create server", APIException(code, "message", None))

    assert type(mapped) is expected


@pytest.mark.parametrize("code", ["invalid_input", "resource_unavailable", "forbidden", "unauthorized", "resource_limit_exceeded", 400])
def test_terminal_codes_fail_at_once(code: str | int) -> None:
    mapped = _mapped("create server", APIException(code, "server type not available", None, correlation_id="abc123"))

    assert type(mapped) is BackendError
    assert not is_transient(mapped)
    assert str(mapped) == f"Hetzner API failed to create server: server type not available ({code}, abc123)"


def test_user_data_quotes_secret_values() -> None:
    script = user_data({"TOKEN": "a b'c$(rm -rf /)"}, install_command="")

    assert "export TOKEN='a b'\"'\"'c$(rm -rf /)'" in script.splitlines()
    assert script.splitlines()[-1] == "HARNESS_ADDR=:8080 harnessd &"
