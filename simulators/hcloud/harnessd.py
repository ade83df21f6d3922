"""
A stand-in for harnessd that runs inside a simulated server.

Run it as `python -m simulators.hcloud.harnessd` (the simulator puts a
`harnessd` command on the user_data PATH that does this). It serves
`GET /healthz` with 200 `{"status": "ok"}` and 404 for every other path.

Environment:
- `HARNESS_ADDR`: `host:port` or `:port` to listen on. An empty host or a
  wildcard (0.0.0.0, ::) means the server's own address.
- `SIM_PUBLIC_IPV4`: the server's loopback address, set by the simulator.
  Any other host is rejected, so harnessd binds only to its server.
- `SIM_HARNESSD_CRASH_AFTER`: if set (by a `harnessd_crash` fault), seconds
  after which harnessd exits with status 1.

Exit status 2 means the environment is invalid.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

logger = logging.getLogger("simulators.hcloud.harnessd")

#: Hosts that mean "every address" and are narrowed to the server's own address.
WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")

#: Exit status for an invalid environment.
EXIT_USAGE = 2

#: Exit status of an injected crash.
EXIT_CRASH = 1


class HealthHandler(BaseHTTPRequestHandler):
    """Serves `/healthz` and rejects every other path with 404."""

    def do_GET(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
        if self.path.split("?", 1)[0] == "/healthz":
            self._send_json(200, {"status": "ok"})
        else:
            self._send_json(404, {"error": "not found", "path": self.path})

    def _send_json(self, status: int, body: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - inherited name
        logger.info("%s - %s", self.address_string(), format % args)


def resolve_bind_address(harness_addr: str, server_ip: str) -> tuple[str, int]:
    """Return (host, port) to bind, raising ValueError for an address outside the server."""
    host, separator, port_text = harness_addr.rpartition(":")
    if not separator or not port_text.isdigit():
        raise ValueError(f"HARNESS_ADDR {harness_addr!r} is invalid; expected host:port or :port")

    if not server_ip:
        raise ValueError("SIM_PUBLIC_IPV4 is empty; the server has no address to listen on")

    if host in WILDCARD_HOSTS:
        host = server_ip
    if host != server_ip:
        raise ValueError(f"HARNESS_ADDR host {host!r} is not this server's address {server_ip}")

    return host, int(port_text)


def schedule_crash(seconds: float) -> None:
    """Exit the process with EXIT_CRASH after `seconds`, as an injected crash."""

    def crash() -> None:
        logger.warning("Crashing on purpose after %.1f s (harnessd_crash fault).", seconds)
        os._exit(EXIT_CRASH)

    timer = threading.Timer(seconds, crash)
    timer.daemon = True
    timer.start()


def main() -> int:
    """Serve /healthz until SIGTERM or an injected crash."""
    logging.basicConfig(level=logging.INFO, format="harnessd: %(message)s", stream=sys.stderr)

    try:
        host, port = resolve_bind_address(
            os.environ.get("HARNESS_ADDR", ":8080"), os.environ.get("SIM_PUBLIC_IPV4", "")
        )
    except ValueError as exc:
        logger.error("%s", exc)
        return EXIT_USAGE

    server = ThreadingHTTPServer((host, port), HealthHandler)
    logger.info("Listening on http://%s:%d/healthz.", host, port)

    crash_after = os.environ.get("SIM_HARNESSD_CRASH_AFTER")
    if crash_after:
        schedule_crash(float(crash_after))

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
