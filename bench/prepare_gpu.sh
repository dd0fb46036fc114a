#!/usr/bin/env bash
# Run HERE, on the development machine, right before the device `run` call of bench/run_all_gpu.sh:
# downloads into .whl/ (ignored by git, carried to the device) the wheels of bench/gpu-wheels.txt,
# which the device machine's image lacks and cannot download itself, and writes .whl/stamp.json
# (the commit and whether the tree is dirty): the device gets the working tree without .git.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl -r bench/gpu-wheels.txt
commit=$(git rev-parse HEAD)
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then dirty=true; else dirty=false; fi
printf '{"commit": "%s", "dirty": %s}\n' "$commit" "$dirty" > .whl/stamp.json
echo "prepare_gpu: $(ls .whl/*.whl | wc -l) wheels ($(du -sh .whl | cut -f1)) in .whl/; stamp: $(cat .whl/stamp.json)"
