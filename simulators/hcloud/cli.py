"""
The `hcloud-sim` command: starts the simulator and serves it until SIGTERM or SIGINT.

Once the server listens, one line `hcloud-sim listening on http://HOST:PORT/v1`
goes to stdout, so a caller that passed `--port 0` can read the port. On
SIGTERM or SIGINT the simulator kills every VM process group it started and
exits 0.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import sys
import threading
from types import FrameType

from .httpserver import SimulatorHTTPServer
from .lifecycle import SimConfig
from .simulation import Simulation

logger = logging.getLogger(__name__)

#: Exit status for invalid command-line arguments (argparse uses the same).
EXIT_USAGE = 2


def loopback_host(text: str) -> str:
    """Return `text` if it is an IP address in 127.0.0.0/8 or ::1; raise otherwise."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address; use e.g. 127.0.0.1") from None

    if not address.is_loopback:
        raise argparse.ArgumentTypeError(f"{text} is not a loopback address; use 127.0.0.0/8 or ::1")
    return str(address)


def non_negative_seconds(text: str) -> float:
    """Return `text` as a number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative; give seconds >= 0")
    return value


def positive_int(text: str) -> int:
    """Return `text` as an integer >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
    return int(text)


def loopback_ipv4(text: str) -> str:
    """Return `text` if it is an IPv4 address in 127.0.0.0/8, else raise ArgumentTypeError."""
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 address") from None
    if not address.is_loopback:
        raise argparse.ArgumentTypeError(f"{text} is not in 127.0.0.0/8")
    return text


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of `hcloud-sim`."""
    parser = argparse.ArgumentParser(
        prog="hcloud-sim",
        description="Local simulator of the Hetzner Cloud API; servers run as local processes on loopback addresses.",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port to listen on; 0 picks a free port (default: 0)")
    parser.add_argument("--host", type=loopback_host, default="127.0.0.1",
                        help="loopback address to listen on, in 127.0.0.0/8 or ::1 (default: 127.0.0.1)")
    parser.add_argument("--boot-delay", type=non_negative_seconds, default=1.0,
                        help="seconds from create or power on until a server is running (default: 1.0)")
    parser.add_argument("--bootstrap-delay", type=non_negative_seconds, default=0.5,
                        help="seconds from running until user_data starts (default: 0.5)")
    parser.add_argument("--broken-bootstrap", action="store_true",
                        help="never run user_data, so harnessd never starts")
    parser.add_argument("--rate-limit", type=positive_int, metavar="N_PER_MINUTE",
                        help="a bucket of N requests, refilled at N per minute (default: a bucket of 3600 refilled at 1 per second, like the real API)")
    parser.add_argument("--token", help="the only accepted API token (default: any non-empty token)")
    parser.add_argument("--first-address", type=loopback_ipv4, default="127.0.0.2",
                        help="first loopback address given to a server; give simulators that run side by side "
                             "different ones (default: 127.0.0.2)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log level of the messages on stderr (default: INFO)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until SIGTERM or SIGINT; return the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    config = SimConfig(
        host=args.host,
        boot_delay=args.boot_delay,
        bootstrap_delay=args.bootstrap_delay,
        broken_bootstrap=args.broken_bootstrap,
        rate_limit_per_minute=args.rate_limit,
        token=args.token,
        first_address=args.first_address,
    )
    simulation = Simulation(config)
    try:
        httpd = SimulatorHTTPServer((config.host, args.port), simulation)
    except OSError as exc:
        logger.error("Cannot listen on %s port %d: %s", config.host, args.port, exc)
        simulation.close()
        return EXIT_USAGE

    return serve(httpd, simulation)


def serve(httpd: SimulatorHTTPServer, simulation: Simulation) -> int:
    """Serve until a stop signal, then kill the VMs and return 0."""
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        logger.info("Received signal %d; stopping.", signum)
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    simulation.start()
    serving = threading.Thread(target=httpd.serve_forever, name="hcloud-sim-http", daemon=True)
    serving.start()

    host, port = httpd.socket.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    print(f"hcloud-sim listening on http://{shown_host}:{port}/v1", flush=True)

    try:
        while not stop_requested.wait(0.5):
            pass
    finally:
        httpd.shutdown()
        httpd.server_close()
        simulation.close()
    return 0
