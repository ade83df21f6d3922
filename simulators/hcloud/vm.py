"""
The local "VM" behind a simulated server: a loopback address and a process group.

Each server gets its own address in 127.0.0.0/8 as its public IPv4. After
boot the simulator runs the server's user_data with `/bin/sh` in a new
session, so the script and everything it starts in the background (harnessd)
share one process group that the simulator can kill as a whole.
"""

from __future__ import annotations

import ipaddress
import socket
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

#: Name of the harnessd stand-in that user_data finds on PATH.
HARNESSD_COMMAND = "harnessd"

#: Seconds to wait for a killed process group to disappear.
KILL_TIMEOUT_SECONDS = 5.0

#: Directory that contains the `simulators` package, put on the stand-in's PYTHONPATH.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class IpPool:
    """
    Hands out loopback addresses from `first` upward, lowest free first.

    An address whose harnessd port another process already listens on (a second
    simulator on the same machine, say) is skipped, so a probe of one simulator's
    server never reaches another's harnessd. Simulators that run side by side
    should still start at different `first` addresses, because a server that has
    not bound its port yet cannot be seen.
    """

    def __init__(self, reserved: set[str], first: str = "127.0.0.2", port: int = 8080) -> None:
        self._reserved = set(reserved)
        self._in_use: set[str] = set()
        self._first = first
        self._port = port

    def allocate(self) -> str | None:
        """Return a free address, or None when 127.0.0.0/8 is used up."""
        candidate = int(ipaddress.IPv4Address(self._first))
        last = int(ipaddress.IPv4Address("127.255.255.254"))
        while candidate <= last:
            address = str(ipaddress.IPv4Address(candidate))
            if candidate % 256 not in (0, 255) and address not in self._in_use | self._reserved and self._port_free(address):
                self._in_use.add(address)
                return address
            candidate += 1
        return None

    def _port_free(self, address: str) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe_socket:
            # SO_REUSEADDR lets connections in TIME_WAIT pass: only a listener makes the address busy.
            probe_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe_socket.bind((address, self._port))
            except OSError:
                return False
        return True

    def release(self, address: str) -> None:
        """Make an address available again."""
        self._in_use.discard(address)


def write_harnessd_command(bin_dir: Path) -> Path:
    """Write the `harnessd` stand-in into `bin_dir` and return its path.

    The stand-in is a shell script that runs `simulators.hcloud.harnessd`
    with the simulator's own Python interpreter.
    """
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / HARNESSD_COMMAND
    pythonpath = shlex.quote(str(PACKAGE_ROOT))
    path.write_text(
        "#!/bin/sh\n"
        "# harnessd stand-in written by hcloud-sim; see simulators/hcloud/harnessd.py.\n"
        f"PYTHONPATH={pythonpath}${{PYTHONPATH:+:$PYTHONPATH}}\n"
        "export PYTHONPATH\n"
        f'exec {shlex.quote(sys.executable)} -m simulators.hcloud.harnessd "$@"\n'
    )
    path.chmod(0o755)
    return path


class VmProcess:
    """The user_data script of one boot and the process group it leads."""

    def __init__(self, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self._process = process
        self.log_path = log_path

    @property
    def pgid(self) -> int:
        """Process group id; equal to the script's pid because it leads a new session."""
        return self._process.pid

    @classmethod
    def start(cls, vm_dir: Path, user_data: str, env: dict[str, str]) -> VmProcess:
        """Run `user_data` with /bin/sh in `vm_dir`, output appended to user_data.log."""
        vm_dir.mkdir(parents=True, exist_ok=True)
        script = vm_dir / "user_data"
        script.write_text(user_data)
        log_path = vm_dir / "user_data.log"

        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                ["/bin/sh", str(script)],
                cwd=vm_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(process, log_path)

    def kill(self) -> bool:
        """Kill the whole process group and wait until it is gone; False on timeout.

        NOTE: the script is reaped only here. Until then its pid stays a
        zombie, so the pid (and with it the group id) cannot be reused by an
        unrelated process while the group is still being tracked.
        """
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass

        gone = wait_for_group_exit(self.pgid, KILL_TIMEOUT_SECONDS)
        self._process.wait(timeout=KILL_TIMEOUT_SECONDS)
        if not gone:
            logger.error("Process group %d: still alive %.1f s after SIGKILL.", self.pgid, KILL_TIMEOUT_SECONDS)
        return gone


def wait_for_group_exit(pgid: int, timeout: float) -> bool:
    """Poll until no live process is left in group `pgid`; False on timeout."""
    deadline = time.monotonic() + timeout
    while group_is_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def group_is_alive(pgid: int) -> bool:
    """Return True if a process other than a zombie belongs to group `pgid`.

    Reads /proc, because orphaned members may be reparented to an init that
    never reaps them, and a zombie would keep `killpg(pgid, 0)` succeeding.
    """
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue

        # The command name may contain spaces, so parse after its closing paren.
        fields = stat[stat.rindex(")") + 2:].split()
        state, process_group = fields[0], int(fields[2])
        if process_group == pgid and state not in ("Z", "X"):
            return True
    return False
