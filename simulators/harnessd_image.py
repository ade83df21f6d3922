"""
Build the harnessd simulator image: a `FROM scratch` image that holds only a static busybox.

The image replaces a real workspace image in tests: its busybox httpd plays
the harnessd that the provisioner probes. It needs no registry, because the
build context (Dockerfile, busybox, entry point script, `/www/healthz`) is an
in-memory tar sent through the Docker SDK, and `FROM scratch` pulls nothing. The static busybox comes from Debian's
busybox-static package (`apt-get install busybox-static`).

The container reads its behaviour from the environment:

* `HARNESS_ADDR` (required): `[IP:]PORT` that busybox httpd binds, for example
  `127.0.0.1:8080`.
* `HARNESSD_BOOT_DELAY`: seconds to sleep before doing anything else (default 0,
  fractions allowed).
* `HARNESSD_MODE`:
  * `serve` (default): serve `/www` on HARNESS_ADDR, so `GET /healthz` returns
    200 with `{"status": "ok"}` and any other path returns 404;
  * `never`: sleep forever and never bind;
  * `exit`: exit with code `HARNESSD_EXIT_CODE` (default 3);
  * `crash-after`: serve for `HARNESSD_CRASH_AFTER` seconds, then exit with code 4.

Each phase prints one line to stdout (booting, serving on ADDR, exiting with
CODE), so `docker logs` shows how far the container got. SIGTERM and SIGINT
stop the container at once with code 143 (128 + 15) or 130.

Usage:

    python -m simulators.harnessd_image [--tag TAG]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import struct
import sys
import tarfile
from pathlib import Path

import docker
import docker.errors

DEFAULT_TAG = "workspace-provisioner/harnessd-sim:latest"

# Label holding the SHA-256 of the build context, so an unchanged image is not rebuilt.
CONTENT_LABEL = "workspace-provisioner.content-sha256"

# Paths of the binary in Debian's busybox-static package. `busybox` on PATH is tried after them.
BUSYBOX_PATHS = (Path("/bin/busybox"), Path("/usr/bin/busybox"))

HEALTHZ_BODY = b'{"status": "ok"}\n'

DOCKERFILE = b"""\
FROM scratch
COPY busybox /bin/busybox
COPY entrypoint.sh /entrypoint.sh
COPY www /www
ENV PATH=/bin
ENTRYPOINT ["/bin/busybox", "sh", "/entrypoint.sh"]
"""

# The shell runs each long step as a background child and waits for it, because
# a trapped signal interrupts `wait` but not a foreground command: the container
# runs as PID 1, which ignores SIGTERM unless it installs a handler.
ENTRYPOINT = b"""\
#!/bin/busybox sh
# Entry point of the harnessd simulator; simulators/harnessd_image.py documents it.
set -u
bb=/bin/busybox
child=
httpd=

log() {
    echo "harnessd-sim: $*"
}

stop() {
    log "stopping on $1"
    for pid in $child $httpd; do kill "$pid" 2>/dev/null; done
    exit "$2"
}
trap 'stop SIGTERM 143' TERM
trap 'stop SIGINT 130' INT

run() {
    "$@" &
    child=$!
    wait "$child"
}

addr="${HARNESS_ADDR:-}"
mode="${HARNESSD_MODE:-serve}"
delay="${HARNESSD_BOOT_DELAY:-0}"
if [ -z "$addr" ]; then
    log "HARNESS_ADDR is missing; set it to [IP:]PORT, for example 127.0.0.1:8080"
    exit 2
fi

log "booting (mode $mode, boot delay ${delay}s)"
run $bb sleep "$delay"

case "$mode" in
serve)
    log "serving on $addr"
    run $bb httpd -f -p "$addr" -h /www
    code=$?
    log "httpd stopped; exiting with code $code"
    exit "$code"
    ;;
never)
    log "never binding $addr; sleeping until stopped"
    while true; do run $bb sleep 3600; done
    ;;
exit)
    code="${HARNESSD_EXIT_CODE:-3}"
    log "exiting with code $code"
    exit "$code"
    ;;
crash-after)
    after="${HARNESSD_CRASH_AFTER:-}"
    if [ -z "$after" ]; then
        log "HARNESSD_CRASH_AFTER is missing; set it to the seconds to serve before exiting"
        exit 2
    fi
    log "serving on $addr for ${after}s"
    $bb httpd -f -p "$addr" -h /www &
    httpd=$!
    run $bb sleep "$after"
    kill "$httpd" 2>/dev/null
    log "exiting with code 4"
    exit 4
    ;;
*)
    log "HARNESSD_MODE '$mode' is invalid; expected serve, never, exit or crash-after"
    exit 2
    ;;
esac
"""


class HarnessdImageError(RuntimeError):
    """Failure to build the simulator image: no static busybox, or the engine rejected the build."""


def build_image(client: docker.DockerClient, tag: str = DEFAULT_TAG) -> str:
    """
    Build the simulator image as `tag` and return the tag.

    Does nothing when `tag` already names an image built from the same context,
    as recorded in its CONTENT_LABEL. Raises HarnessdImageError when no static
    busybox is installed or the engine rejects the build.
    """
    busybox = find_static_busybox().read_bytes()
    context = _build_context(busybox)
    digest = hashlib.sha256(context).hexdigest()

    if _existing_digest(client, tag) == digest:
        return tag

    try:
        client.images.build(
            fileobj=io.BytesIO(context),
            custom_context=True,
            tag=tag,
            labels={CONTENT_LABEL: digest},
            rm=True,
            forcerm=True,
        )
    except docker.errors.BuildError as exc:
        output = "".join(str(entry.get("stream", entry.get("error", ""))) for entry in exc.build_log)
        raise HarnessdImageError(f"docker build of {tag} failed: {exc.msg}\n{output[-2000:]}") from exc
    except docker.errors.APIError as exc:
        raise HarnessdImageError(f"docker build of {tag} failed: {exc.explanation or exc}") from exc
    return tag


def find_static_busybox() -> Path:
    """Return the path of a statically linked busybox, which is the only thing a scratch image can run."""
    on_path = shutil.which("busybox")
    candidates = [*BUSYBOX_PATHS, *([Path(on_path)] if on_path else [])]

    dynamic = []
    for path in candidates:
        if not path.is_file():
            continue
        if _is_static_elf(path.read_bytes()):
            return path.resolve()
        dynamic.append(str(path))

    found = f"; found only dynamically linked ones ({', '.join(dynamic)})" if dynamic else ""
    raise HarnessdImageError(
        f"no static busybox in {', '.join(map(str, BUSYBOX_PATHS))} or on PATH{found}; "
        "install Debian's busybox-static (apt-get install busybox-static)"
    )


def _is_static_elf(data: bytes) -> bool:
    """Return True if `data` is an ELF executable with no PT_INTERP header, that is, no dynamic loader."""
    if len(data) < 64 or data[:4] != b"\x7fELF":
        return False

    is_64_bit = data[4] == 2
    endian = "<" if data[5] == 1 else ">"
    if is_64_bit:
        (phoff,) = struct.unpack_from(endian + "Q", data, 0x20)
        phentsize, phnum = struct.unpack_from(endian + "HH", data, 0x36)
    else:
        (phoff,) = struct.unpack_from(endian + "I", data, 0x1C)
        phentsize, phnum = struct.unpack_from(endian + "HH", data, 0x2A)

    pt_interp = 3
    for index in range(phnum):
        offset = phoff + index * phentsize
        if offset + 4 > len(data):
            return False
        if struct.unpack_from(endian + "I", data, offset)[0] == pt_interp:
            return False
    return True


def _build_context(busybox: bytes) -> bytes:
    """Return the build context as tar bytes; fixed owners and times make it reproducible."""
    files = [
        ("Dockerfile", DOCKERFILE, 0o644),
        ("busybox", busybox, 0o755),
        ("entrypoint.sh", ENTRYPOINT, 0o755),
        ("www/healthz", HEALTHZ_BODY, 0o644),
    ]

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, content, mode in files:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = mode
            info.mtime = 0
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _existing_digest(client: docker.DockerClient, tag: str) -> str | None:
    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None
    return (image.labels or {}).get(CONTENT_LABEL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.harnessd_image",
        description="Build the harnessd simulator image (FROM scratch, static busybox) and print its tag.",
    )
    parser.add_argument("--tag", default=DEFAULT_TAG, help=f"image tag to build (default: {DEFAULT_TAG})")
    args = parser.parse_args(argv)

    try:
        client = docker.from_env()
        tag = build_image(client, args.tag)
    except docker.errors.DockerException as exc:
        print(f"error: Docker engine request failed: {exc}", file=sys.stderr)
        return 1
    except HarnessdImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
