"""
A guard that makes any connection to a host outside loopback fail at once.

Tests may only talk to 127.0.0.0/8, ::1 and Unix sockets. `install()` wraps
`socket.socket.connect` and `connect_ex` so that any other address raises
`NetworkGuardError` naming it, instead of sending a packet. The root conftest
installs it in the test process, and test workers load this module with
`--include`, which installs it in the worker and its pool processes.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

_original_connect = socket.socket.connect
_original_connect_ex = socket.socket.connect_ex


class NetworkGuardError(ConnectionRefusedError):
    """A test tried to reach a host outside loopback."""


def check_address(family: int, address: Any) -> None:
    """Raise NetworkGuardError unless `address` is a loopback or Unix socket address."""
    if family not in (socket.AF_INET, socket.AF_INET6):
        return
    host = address[0]
    try:
        loopback = ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise NetworkGuardError(f"test network guard: connection to {host} refused; tests may only reach loopback")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    check_address(self.family, address)
    _original_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    check_address(self.family, address)
    return _original_connect_ex(self, address)


def install() -> None:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]


install()
