#!/usr/bin/env bash
# The test command: set everything up (scripts/setup.sh), then run the whole suite.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh tests/diffusion -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# A shared Redis on the standard port for anything that looks for one there; the suite itself runs
# against private servers on free ports, so that tests that stop Redis disturb nothing else
if command -v redis-server >/dev/null && ! redis-cli -p 6379 ping >/dev/null 2>&1; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
fi
# fail, rather than skip, a test whose data set the set-up should have installed
export REQUIRE_DATASETS=1
# likewise for the browser tests of the page, whose Chromium and Playwright the set-up installs
export REQUIRE_BROWSER=1
# and for the Kubernetes manifests' tests, which render them with the machine's kubectl (kustomize)
export REQUIRE_KUBECTL=1
# the layers (import-linter's contracts in pyproject.toml) and the lint: either failing fails the run
.venv/bin/lint-imports
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
