#!/usr/bin/env bash
# Make sure everything the tests need is in place, starting only what is missing:
#
#   1. Debian packages: redis-server, docker.io, busybox-static, git, and python3
#      with its venv module (apt-get update runs only when something is missing);
#   2. a Redis that responds to PING at $REDIS_URL (default redis://127.0.0.1:6379/0);
#      when nothing responds on a loopback host, a redis-server that keeps nothing
#      on disk is started with its files under .run/redis/;
#   3. a Docker engine that responds to `docker info`; when none does, dockerd is
#      started with no bridge network and no iptables rules, logging to
#      .run/dockerd.log. PROVISIONER_SKIP_DOCKER=1 skips this step, docker.io
#      and busybox-static;
#   4. the virtualenv .venv with `pip install -e '.[test]'`, rerun only when
#      pyproject.toml changed since the last successful install.
#
# Runs as root on Debian 12 (apt-get and dockerd need root). Safe to run again
# and from several shells at once: a lock file serializes the runs. Progress
# goes to stderr, one line per step.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUN_DIR="$REPO_ROOT/.run"
VENV_DIR="$REPO_ROOT/.venv"
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
SKIP_DOCKER=${PROVISIONER_SKIP_DOCKER:-0}

REDIS_START_TIMEOUT_S=10
DOCKER_START_TIMEOUT_S=60

log() {
    printf 'ensure-services: %s\n' "$*" >&2
}

die() {
    printf 'ensure-services: error: %s\n' "$*" >&2
    exit 1
}

# Print the URL with any user:password part replaced, for messages.
redacted_url() {
    sed -E 's#//[^@/]*@#//***@#' <<<"$1"
}

# Print the last lines of a log file, indented, to stderr.
show_log_tail() {
    local file=$1
    if [[ -s $file ]]; then
        printf '  last lines of %s:\n' "$file" >&2
        tail -n 20 "$file" | sed 's/^/    /' >&2
    fi
}

# --- packages ---------------------------------------------------------------

package_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

# Print the Debian packages this machine still needs, one per line.
missing_packages() {
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null || echo redis-server
    command -v git >/dev/null || echo git
    command -v python3 >/dev/null || echo python3
    if ! command -v python3 >/dev/null || ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        echo python3-venv
    fi

    if [[ $SKIP_DOCKER != 1 ]]; then
        command -v dockerd >/dev/null && command -v docker >/dev/null || echo docker.io
        package_installed busybox-static || echo busybox-static
    fi
}

ensure_packages() {
    local missing
    missing=$(missing_packages | sort -u | tr '\n' ' ')
    missing=${missing% }
    if [[ -z $missing ]]; then
        log "packages: all present"
        return
    fi

    [[ $(id -u) == 0 ]] || die "packages missing ($missing); run this script as root so it can install them with apt-get"
    log "packages: installing $missing"
    export DEBIAN_FRONTEND=noninteractive
    mkdir -p "$RUN_DIR"
    if ! { apt-get update && apt-get install -y --no-install-recommends $missing; } >"$RUN_DIR/apt.log" 2>&1; then
        show_log_tail "$RUN_DIR/apt.log"
        die "apt-get could not install $missing (full log in $RUN_DIR/apt.log)"
    fi
}

# --- Redis --------------------------------------------------------------------

redis_responds() {
    [[ $(redis-cli -u "$REDIS_URL" ping 2>/dev/null) == PONG ]]
}

# Print "host port" of $REDIS_URL; fail on a URL this script cannot start a server for.
redis_host_and_port() {
    local pattern='^rediss?://([^@/]*@)?(\[[^]]+\]|[^:/]+)?(:([0-9]+))?(/[0-9]*)?$'
    [[ $REDIS_URL =~ $pattern ]] || die "REDIS_URL $(redacted_url "$REDIS_URL") is not a redis://host:port/db URL; start that Redis yourself"
    [[ -z ${BASH_REMATCH[1]} ]] || die "nothing responds at $(redacted_url "$REDIS_URL"), and this script does not start a Redis with a password; start it yourself"

    local host=${BASH_REMATCH[2]:-127.0.0.1} port=${BASH_REMATCH[4]:-6379}
    host=${host#[}
    host=${host%]}
    echo "$host $port"
}

is_loopback() {
    [[ $1 == localhost || $1 == ::1 || $1 =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+$ ]]
}

start_redis() {
    local endpoint host port bind_address
    endpoint=$(redis_host_and_port)
    read -r host port <<<"$endpoint"
    is_loopback "$host" || die "no Redis responds at $(redacted_url "$REDIS_URL"); $host is not a loopback address, so start that Redis yourself or point REDIS_URL at 127.0.0.1"
    bind_address=$host
    [[ $host != localhost ]] || bind_address=127.0.0.1

    local redis_dir="$RUN_DIR/redis/$port"
    mkdir -p "$redis_dir"
    log "redis: nothing responds at $REDIS_URL; starting redis-server on $bind_address:$port"
    redis-server --daemonize yes --bind "$bind_address" --port "$port" --save "" --appendonly no \
        --dir "$redis_dir" --logfile "$redis_dir/redis.log" --pidfile "$redis_dir/redis.pid" >/dev/null 9>&-

    local deadline=$((SECONDS + REDIS_START_TIMEOUT_S))
    until redis_responds; do
        if ((SECONDS >= deadline)); then
            show_log_tail "$redis_dir/redis.log"
            die "redis-server on $bind_address:$port did not respond to PING within ${REDIS_START_TIMEOUT_S}s"
        fi
        sleep 0.1
    done
}

ensure_redis() {
    if redis_responds; then
        log "redis: responds at $(redacted_url "$REDIS_URL")"
        return
    fi

    start_redis
    log "redis: started, responds at $REDIS_URL"
}

# --- Docker -------------------------------------------------------------------

docker_responds() {
    docker info --format '{{.ServerVersion}}' >/dev/null 2>&1
}

start_dockerd() {
    local options=(--bridge=none --iptables=false)
    if dockerd --help 2>&1 | grep -q -- '--ip6tables'; then
        options+=(--ip6tables=false)
    fi

    # A dockerd killed without cleaning up leaves its pid file behind, and a new
    # dockerd refuses to start while that file exists.
    local pid_file=/var/run/docker.pid
    if [[ -f $pid_file ]] && ! kill -0 "$(cat "$pid_file")" 2>/dev/null; then
        rm -f "$pid_file"
    fi

    mkdir -p "$RUN_DIR"
    log "docker: no engine responds; starting dockerd ${options[*]} (log: $RUN_DIR/dockerd.log)"
    # 9>&- keeps the lock of this script out of the daemon, which outlives it.
    setsid dockerd "${options[@]}" >>"$RUN_DIR/dockerd.log" 2>&1 </dev/null 9>&- &
    disown
}

wait_for_docker() {
    local deadline=$((SECONDS + DOCKER_START_TIMEOUT_S))
    until docker_responds; do
        if ((SECONDS >= deadline)); then
            show_log_tail "$RUN_DIR/dockerd.log"
            die "the Docker engine did not respond within ${DOCKER_START_TIMEOUT_S}s"
        fi
        sleep 0.5
    done
}

ensure_docker() {
    if [[ $SKIP_DOCKER == 1 ]]; then
        log "docker: skipped (PROVISIONER_SKIP_DOCKER=1)"
        return
    fi
    if docker_responds; then
        log "docker: engine $(docker info --format '{{.ServerVersion}}') responds"
        return
    fi

    if [[ -n ${DOCKER_HOST:-} && $DOCKER_HOST != unix:///var/run/docker.sock ]]; then
        die "no Docker engine responds at DOCKER_HOST=$DOCKER_HOST; this script starts one only on the default socket, so start that engine yourself or unset DOCKER_HOST"
    fi
    [[ $(id -u) == 0 ]] || die "no Docker engine responds, and only root can start dockerd; run this script as root or set PROVISIONER_SKIP_DOCKER=1"

    if pgrep -x dockerd >/dev/null; then
        log "docker: a dockerd is running but does not respond yet; waiting for it"
    else
        start_dockerd
    fi
    wait_for_docker
    log "docker: engine $(docker info --format '{{.ServerVersion}}') responds"
}

# --- virtualenv -----------------------------------------------------------------

ensure_venv() {
    local stamp="$VENV_DIR/.pyproject.sha256" wanted
    wanted=$(sha256sum "$REPO_ROOT/pyproject.toml" | cut -d' ' -f1)

    if [[ ! -x $VENV_DIR/bin/python ]]; then
        log "venv: creating $VENV_DIR"
        python3 -m venv "$VENV_DIR"
    fi
    if [[ -f $stamp && $(cat "$stamp") == "$wanted" ]]; then
        log "venv: up to date"
        return
    fi

    local reason="pyproject.toml changed since the last install"
    [[ -f $stamp ]] || reason="no install recorded yet"
    log "venv: pip install -e '.[test]' because $reason (log: $RUN_DIR/pip.log)"
    mkdir -p "$RUN_DIR"
    if ! "$VENV_DIR/bin/python" -m pip install --disable-pip-version-check -e "$REPO_ROOT[test]" >"$RUN_DIR/pip.log" 2>&1; then
        show_log_tail "$RUN_DIR/pip.log"
        die "pip install -e '.[test]' failed (full log in $RUN_DIR/pip.log)"
    fi
    echo "$wanted" >"$stamp"
}

main() {
    mkdir -p "$RUN_DIR"
    exec 9>"$RUN_DIR/ensure-services.lock"
    flock 9

    ensure_packages
    ensure_redis
    ensure_docker
    ensure_venv
}

main "$@"
