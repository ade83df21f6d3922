#!/usr/bin/env bash
# The demo: provision a local, a worktree, a container and a VM workspace through real workers.
#
#   scripts/demo.sh
#
# Starts what is missing (Redis at $REDIS_URL or a private one, dockerd, the
# virtualenv), builds the busybox harnessd stand-in image, starts the Hetzner
# API simulator and one Celery worker, runs scripts/demo.py, then stops the
# worker and the simulator. Containers use host networking and 127.0.0.1 ports;
# the VM's "public" address is a loopback address of the simulator's. Logs go
# to .run/demo/.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/ensure-services.sh

RUN_DIR="$PWD/.run/demo"
mkdir -p "$RUN_DIR"
export PATH="$PWD/.venv/bin:$PATH"
export PROVISIONER_CONTAINER_NETWORK=host
export PROVISIONER_HOME="$RUN_DIR/home"
# The demo's Hetzner token is only good for the simulator; a real one is never needed here.
export HCLOUD_TOKEN=demo-token

pids=()
stop_all() {
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap stop_all EXIT

echo "demo: building the harnessd stand-in image" >&2
image=$(python -m simulators.harnessd_image)

echo "demo: starting the Hetzner API simulator" >&2
# A range of its own keeps its servers apart from those of a test run's simulator.
first_address="127.$((RANDOM % 250 + 1)).0.2"
hcloud-sim --port 0 --boot-delay 2 --bootstrap-delay 2 --first-address "$first_address" \
    >"$RUN_DIR/hcloud-sim.out" 2>"$RUN_DIR/hcloud-sim.log" &
pids+=($!)
for _ in $(seq 100); do
    endpoint=$(sed -n 's/^hcloud-sim listening on //p' "$RUN_DIR/hcloud-sim.out")
    [[ -n $endpoint ]] && break
    sleep 0.1
done
[[ -n ${endpoint:-} ]] || { echo "demo: error: hcloud-sim did not start; see $RUN_DIR/hcloud-sim.log" >&2; exit 1; }
export HCLOUD_ENDPOINT=$endpoint

echo "demo: starting a Celery worker (log: $RUN_DIR/worker.log)" >&2
celery -A workers worker -l info -c 4 -n "demo-$$@%h" >"$RUN_DIR/worker.log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do
    grep -q "ready\." "$RUN_DIR/worker.log" && break
    sleep 0.1
done
grep -q "ready\." "$RUN_DIR/worker.log" || { echo "demo: error: the worker did not start; see $RUN_DIR/worker.log" >&2; exit 1; }

python scripts/demo.py --image "$image" --work-dir "$RUN_DIR"
