"""
When a harnessd stand-in starts serving: the moment its port starts listening.

`ListenWatcher` queries the kernel for the TCP sockets in LISTEN state every
millisecond, through NETLINK_SOCK_DIAG (the interface `ss -lt` uses), and
records when each (address, port) pair appears. Containers on the host network
differ by port. Simulated VMs differ by address, because every VM's harnessd
listens on port 8080 of its own loopback address. That is the earliest moment a probe can
succeed, and it needs no connection to the container, so it does not disturb
what it measures. It lists only sockets in the benchmark's own network
namespace, which is where host-network containers bind.

The stand-in also prints "serving on ADDR" just before it starts busybox
httpd; `serving_log_time` reads the Docker timestamp of that line, which the
benchmark reports as a cross-check.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections import defaultdict
from datetime import datetime

from docker.models.containers import Container

# Linux netlink constants, from <linux/netlink.h>, <linux/sock_diag.h> and <net/tcp_states.h>.
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
TCP_LISTEN = 10

_NLMSG_HEADER = struct.Struct("=IHHII")
# inet_diag_req_v2: family, protocol, ext, pad, states, then a 48-byte inet_diag_sockid of zeros.
_DIAG_REQUEST = struct.Struct("=BBBBI48x")
# Offsets inside inet_diag_msg of the source port (big-endian) and of the source address
# (the first 4 of its 16 bytes for IPv4).
_MESSAGE_SPORT_OFFSET = 4
_MESSAGE_SRC_OFFSET = 8

SERVING_MARKER = "harnessd-sim: serving on "


class ListenWatcher:
    """
    Records when each TCP port starts listening, polled in a background thread.

    A recorded time is the start of the poll that first saw the socket, so it
    is off by at most one interval plus any delay in scheduling the thread.

    **Usage**

        with ListenWatcher() as watcher:
            ...
        serving_at = watcher.first_listen(port, after=batch_started_at)
        serving_at = watcher.first_listen(8080, after=batch_started_at, address="127.5.0.2")
    """

    def __init__(self, interval_s: float = 0.001) -> None:
        self.interval_s = interval_s
        self._appearances: dict[tuple[str, int], list[float]] = defaultdict(list)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="listen-watcher", daemon=True)
        self._netlink = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)

    def __enter__(self) -> ListenWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stopped.set()
        self._thread.join()
        self._netlink.close()

    def first_listen(self, port: int, after: float, address: str | None = None) -> float | None:
        """
        Return the first time (Unix seconds) `port` started listening at or after `after`.

        With `address`, only a socket bound to that IPv4 address counts; without it, any address.
        """
        moments = [
            moment
            for (bound_address, bound_port), appearances in list(self._appearances.items())
            if bound_port == port and address in (None, bound_address)
            for moment in appearances
            if moment >= after
        ]
        return min(moments, default=None)

    def _watch(self) -> None:
        listening = listening_sockets(self._netlink)
        while not self._stopped.wait(self.interval_s):
            polled_at = time.time()
            current = listening_sockets(self._netlink)
            for bound in current - listening:
                self._appearances[bound].append(polled_at)
            listening = current


def listening_sockets(netlink: socket.socket) -> set[tuple[str, int]]:
    """Return the (address, port) of every IPv4 TCP socket in LISTEN state, through one sock_diag dump."""
    request = _DIAG_REQUEST.pack(socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 1 << TCP_LISTEN)
    header = _NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
    netlink.send(header + request)

    sockets: set[tuple[str, int]] = set()
    while True:
        data = netlink.recv(65536)
        offset = 0
        while offset < len(data):
            length, kind, _flags, _sequence, _pid = _NLMSG_HEADER.unpack_from(data, offset)
            if kind == NLMSG_DONE:
                return sockets
            if kind == NLMSG_ERROR:
                raise OSError("sock_diag dump of listening TCP sockets failed")
            message_offset = offset + _NLMSG_HEADER.size
            (port,) = struct.unpack_from("!H", data, message_offset + _MESSAGE_SPORT_OFFSET)
            address = socket.inet_ntoa(data[message_offset + _MESSAGE_SRC_OFFSET : message_offset + _MESSAGE_SRC_OFFSET + 4])
            sockets.add((address, port))
            offset += (length + 3) & ~3


def serving_log_time(container: Container) -> float | None:
    """Return the Docker timestamp (Unix seconds) of the stand-in's "serving on" line, or None."""
    for line in container.logs(timestamps=True).decode("utf-8", "replace").splitlines():
        stamp, _, message = line.partition(" ")
        if message.startswith(SERVING_MARKER):
            return parse_docker_timestamp(stamp)
    return None


def parse_docker_timestamp(stamp: str) -> float:
    """Parse an RFC 3339 time with nanoseconds, like 2024-05-01T12:00:00.123456789Z, to Unix seconds."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    fraction = (fraction + "000000")[:6]
    return datetime.fromisoformat(f"{whole}.{fraction}+00:00").timestamp()
