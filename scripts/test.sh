#!/usr/bin/env bash
# Run the test suite: start or install what the tests need, then pytest in .venv.
#
#   scripts/test.sh [PYTEST ARGS...]     e.g. scripts/test.sh -k probe -x
#
# Arguments go to pytest unchanged. CI, when set, is passed on to the tests, and
# with CI=true tests that need Docker fail instead of skipping. A run in which
# pytest collects no test (its exit code 5) fails, so a broken test selection
# cannot pass unnoticed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/ensure-services.sh

if [[ -v CI ]]; then
    export CI
fi
# Tests run `provisioner` and `hcloud-sim` as commands: take the ones of this checkout.
export PATH="$PWD/.venv/bin:$PATH"

status=0
.venv/bin/python -m pytest -p no:cacheprovider "$@" || status=$?

if ((status == 5)); then
    echo "test.sh: error: pytest ran no tests (exit code 5); check the test paths and the -k or -m filter" >&2
    exit 1
fi
exit "$status"
