"""
The HTTP front of the simulator: parses requests and sends JSON responses.

Requests below `/v1` pass, in order: the rate-limit bucket (429), the bearer
token (401), a global `http_error` burst, then the route. Every `/v1`
response carries the `RateLimit-*` headers. Requests below `/_sim` go to the
admin routes unchecked and uncounted.
"""

from __future__ import annotations

import json
import logging
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .admin import dispatch_admin
from .api import Response, dispatch
from .errors import ApiError
from .simulation import Simulation

logger = logging.getLogger(__name__)

API_PREFIX = "/v1"
ADMIN_PREFIX = "/_sim"


class SimulatorHTTPServer(ThreadingHTTPServer):
    """Threaded HTTP server bound to one Simulation, on IPv4 or IPv6."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], simulation: Simulation) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.simulation = simulation
        super().__init__(address, SimulatorRequestHandler)


class SimulatorRequestHandler(BaseHTTPRequestHandler):
    """Serves one connection; keep-alive, because the SDK reuses a requests.Session."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, each keep-alive
    # response would wait about 40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    server: SimulatorHTTPServer

    def do_GET(self) -> None:  # noqa: N802 - names fixed by BaseHTTPRequestHandler
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def do_PATCH(self) -> None:  # noqa: N802 - no route takes PATCH, so this yields 405 as JSON
        self._handle("PATCH")

    def _handle(self, method: str) -> None:
        raw = self._read_body()
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)

        if url.path == API_PREFIX or url.path.startswith(API_PREFIX + "/"):
            self._handle_api(method, url.path[len(API_PREFIX):], query, raw)
        elif url.path.startswith(ADMIN_PREFIX + "/"):
            self._handle_admin(method, url.path[len(ADMIN_PREFIX):], query, raw)
        else:
            error = ApiError("not_found", f"no endpoint {url.path}; the API is served under {API_PREFIX}", None)
            self._send_json(error.status, error.to_json(), {})

    def _handle_api(self, method: str, path: str, query: dict[str, list[str]], raw: bytes) -> None:
        sim = self.server.simulation
        rate = sim.admit_request()

        try:
            if not rate.allowed:
                raise ApiError("rate_limit_exceeded", sim.rate_limit_message(), None)
            sim.check_token(self.headers.get("Authorization"))
            sim.raise_global_http_error()
            status, body = dispatch(sim, method, path, query, raw)
        except ApiError as exc:
            status, body = exc.status, exc.to_json()
        except Exception:
            # A bug in the simulator: respond with the API's 500 envelope so the client gets JSON.
            logger.exception("%s %s%s failed inside the simulator.", method, API_PREFIX, path)
            error = ApiError("server_error", "internal error in hcloud-sim; see its log", None)
            status, body = error.status, error.to_json()

        sim.record_response(status)
        logger.debug("%s %s%s -> %d", method, API_PREFIX, path, status)
        self._send_json(status, body, rate.headers())

    def _handle_admin(self, method: str, path: str, query: dict[str, list[str]], raw: bytes) -> None:
        response: Response
        try:
            response = dispatch_admin(self.server.simulation, method, path, query, raw)
        except ApiError as exc:
            response = exc.status, exc.to_json()

        logger.debug("%s %s%s -> %d", method, ADMIN_PREFIX, path, response[0])
        self._send_json(response[0], response[1], {})

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send_json(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - inherited name
        # Called for protocol errors and the access log; the access log is also
        # written by _handle_api, so both stay at DEBUG.
        logger.debug("%s: " + format, self.address_string(), *args)
