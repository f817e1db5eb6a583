#!/usr/bin/env bash
# Run the whole test suite on this machine: sets everything up first (see setup.sh).
# Extra arguments go to pytest, e.g. scripts/test.sh tests/unit -k eta
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
exec .venv/bin/pytest "$@"
