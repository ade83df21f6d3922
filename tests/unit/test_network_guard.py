"""The test network guard lets loopback through and stops every other address before a packet leaves."""

from __future__ import annotations

import socket

import pytest

from tests.network_guard import NetworkGuardError, check_address


@pytest.mark.parametrize("address", [("127.0.0.1", 80), ("127.45.0.2", 8080), ("::1", 80, 0, 0), ("localhost", 80)])
def test_loopback_passes(address: tuple) -> None:  # type: ignore[type-arg]
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET

    check_address(family, address)


@pytest.mark.parametrize("host", ["192.0.2.1", "10.0.0.1", "169.254.169.254", "8.8.8.8", "api.hetzner.cloud"])
def test_other_hosts_are_stopped(host: str) -> None:
    with pytest.raises(NetworkGuardError) as raised:
        check_address(socket.AF_INET, (host, 443))

    assert str(raised.value) == f"test network guard: connection to {host} refused; tests may only reach loopback"


def test_guard_is_installed_in_test_process() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        with pytest.raises(NetworkGuardError):
            sock.connect(("192.0.2.1", 9))
