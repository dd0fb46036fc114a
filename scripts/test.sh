#!/usr/bin/env bash
# The test command: set everything up (scripts/setup.sh), then run the whole suite.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh tests/diffusion -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# fail, rather than skip, a test whose data set the set-up should have installed
export REQUIRE_DATASETS=1
exec .venv/bin/python -m pytest "$@"
