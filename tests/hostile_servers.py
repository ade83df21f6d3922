"""
Misbehaving HTTP servers on 127.0.0.1 for readiness probe tests.

Each server is a context manager that listens on a free loopback port, serves
every connection in its own thread, and yields its base URL
(`http://127.0.0.1:PORT`). On exit it stops accepting and shuts down every open
connection, so that blocked reads and writes return. Then it joins all its
threads. No test leaves a thread or socket behind this way, even one whose
client stopped reading halfway through a response that never ends.

Servers speak raw HTTP/1.1 over the socket instead of going through
`http.server`, because several of them must break the protocol on purpose.
Every server takes `received`, a list to which it appends the request line of
each request it reads, so a test can check that a server was never asked.

    with hanging_server() as url:
        result = probe_healthz(url, budget_s=1.0)
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import struct
import threading
from collections.abc import Callable, Iterator

# Largest request head read; a longer one is cut off there.
MAX_REQUEST_HEAD_BYTES = 64 * 1024

HEALTHY_BODY = json.dumps({"status": "ok"}).encode()
STARTING_BODY = json.dumps({"status": "starting"}).encode()

REASONS = {200: "OK", 302: "Found", 404: "Not Found", 503: "Service Unavailable"}

Behaviour = Callable[[socket.socket, "HostileServer"], None]


class HostileServer(socketserver.ThreadingTCPServer):
    """A TCP server on a free 127.0.0.1 port that hands each connection to one behaviour function."""

    daemon_threads = False
    block_on_close = True

    def __init__(self, behaviour: Behaviour, received: list[str] | None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.behaviour = behaviour
        self.received = received if received is not None else []
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def process_request(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        # Registered in the accepting thread, so stop() finds every connection
        # accepted before serve_forever() returned.
        with self._lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:  # type: ignore[no-untyped-def]
        with self._lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def stop(self) -> None:
        """Stop accepting, break every open connection and join the connection threads."""
        self.stopping.set()
        self.shutdown()

        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

        self.server_close()


class _Handler(socketserver.BaseRequestHandler):
    server: HostileServer

    def handle(self) -> None:
        with contextlib.suppress(OSError):
            self.server.behaviour(self.request, self.server)


@contextlib.contextmanager
def serve(behaviour: Behaviour, received: list[str] | None = None) -> Iterator[str]:
    """Run `behaviour` for every connection to a new server and yield the server's base URL."""
    server = HostileServer(behaviour, received)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="hostile-server")
    thread.start()
    try:
        yield server.url
    finally:
        server.stop()
        thread.join()


# --- helpers for behaviours ----------------------------------------------------


def read_request_head(connection: socket.socket, server: HostileServer) -> bytes:
    """Read up to the blank line that ends the request head, and record the request line."""
    head = b""
    while b"\r\n\r\n" not in head and len(head) < MAX_REQUEST_HEAD_BYTES:
        chunk = connection.recv(4096)
        if not chunk:
            break
        head += chunk

    request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    if request_line:
        server.received.append(request_line)
    return head


def request_path(head: bytes) -> str:
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    return parts[1].decode("latin-1") if len(parts) >= 2 else ""


def response_head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def send_response(connection: socket.socket, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    all_headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), "Connection": "close"}
    all_headers.update(headers or {})
    connection.sendall(response_head(status, all_headers) + body)


# --- servers -------------------------------------------------------------------


def healthy_server(received: list[str] | None = None) -> contextlib.AbstractContextManager[str]:
    """Serve `GET /healthz` with 200 `{"status": "ok"}` and any other path with 404."""

    def behaviour(connection: socket.socket, server: HostileServer) -> None:
        head = read_request_head(connection, server)
        if request_path(head) == "/healthz":
            send_response(connection, 200, HEALTHY_BODY)
        else:
            send_response(connection, 404, b'{"error": "not found"}')

    return serve(behaviour, received)


def catch_all_server(
    status: int = 200, body: bytes = HEALTHY_BODY, received: list[str] | None = None
) -> contextlib.AbstractContextManager[str]:
    """Respond to every request, whatever its path or target, with `status` and `body`, as a proxy would."""

    def behaviour(connection: socket.socket, server: HostileServer) -> None:
        read_request_head(connection, server)
        send_response(connection, status, body)

    return serve(behaviour, received)


def lying_server(received: list[str] | None = None) -> contextlib.AbstractContextManager[str]:
    """Respond with 200 and the JSON body `{"status": "starting"}`."""
    return catch_all_server(200, STARTING_BODY, received)


def unavailable_server(received: list[str] | None = None) -> contextlib.AbstractContextManager[str]:
    """Respond with 503 Service Unavailable."""
    return catch_all_server(503, b'{"status": "unavailable"}', received)


def redirect_server(location: str, received: list[str] | None = None) -> contextlib.AbstractContextManager[str]:
    """Respond to every request with 302 Found and `location` in the Location header."""

    def behaviour(connection: socket.socket, server: HostileServer) -> None:
        read_request_head(connection, server)
        send_response(connection, 302, b"", {"Location": location})

    return serve(behaviour, received)


def hanging_server(received: list[str] | None = None) -> contextlib.AbstractContextManager[str]:
    """Accept and read the request, then send nothing until the server stops."""

    def behaviour(connection: socket.socket, server: HostileServer) -> None:
        read_request_head(connection, server)
        server.stopping.wait()

    return serve(behaviour, received)


def dripping_server(interval_s: float = 1.0, received: list[str] | None = None) -> contextlib.AbstractContextManager[str]:
    """
    Send a 200 response one byte every `interval_s` seconds, without end.

    The status line and headers drip too, and the body that follows them
    never reaches its Content-Length, so each read returns within the interval
    but the response never completes.
    """
    head = response_head(200, {"Content-Type": "application/json", "Content-Length": str(10**9)})

    def endless_bytes() -> Iterator[bytes]:
        yield from (head[index : index + 1] for index in range(len(head)))
        while True:
            yield b" "

    def behaviour(connection: socket.socket, server: HostileServer) -> None:
        read_request_head(connection, server)
        for byte in endless_bytes():
            connection.sendall(byte)
            if server.stopping.wait(interval_s):
                return

    return serve(behaviour, received)


def huge_body_server(
    total_bytes: int = 100 * 2**20, received: list[str] | None = None
) -> contextlib.AbstractContextManager[str]:
    """Respond with 200 and a `total_bytes` body (100 MiB by default), sent as fast as the client reads."""

    def behaviour(connection: socket.socket, server: HostileServer) -> None:
        read_request_head(connection, server)
        connection.sendall(response_head(200, {"Content-Type": "application/json", "Content-Length": str(total_bytes)}))
        _send_filler(connection, server, total_bytes)

    return serve(behaviour, received)


def endless_chunked_server(received: list[str] | None = None) -> contextlib.AbstractContextManager[str]:
    """Respond with 200 and a chunked body that never ends."""
    chunk = b"x" * 65536
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"

    def behaviour(connection: socket.socket, server: HostileServer) -> None:
        read_request_head(connection, server)
        connection.sendall(response_head(200, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}))
        while not server.stopping.is_set():
            connection.sendall(framed)

    return serve(behaviour, received)


def resetting_server(received: list[str] | None = None) -> contextlib.AbstractContextManager[str]:
    """Read the request, then reset the connection (TCP RST) without a response."""

    def behaviour(connection: socket.socket, server: HostileServer) -> None:
        read_request_head(connection, server)
        # SO_LINGER on with a zero timeout makes close() send RST instead of FIN.
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()

    return serve(behaviour, received)


def _send_filler(connection: socket.socket, server: HostileServer, total_bytes: int) -> None:
    chunk = b"x" * 65536
    remaining = total_bytes
    while remaining > 0 and not server.stopping.is_set():
        sent = connection.send(chunk[: min(remaining, len(chunk))])
        remaining -= sent
