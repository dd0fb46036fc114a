#!/usr/bin/env bash
# Train the Fashion-MNIST models on a lent GPU, measure their quality tables, and bring them back
# (issue #3). docs/gpu-runbook.md gives the exact device `run` calls; in short:
#
#   here:    bash scripts/gpu_models.sh prepare     # data/ and .whl/ (git-ignored, carried): the IDX files, the
#                                                   # commit, the wheels of scripts/gpu-models-wheels.txt
#   device:  bash scripts/gpu_models.sh start       # copy the code to /tmp, start the pipeline in its own
#                                                   # session (setsid), wait up to WAIT_S, then pack $OUT
#   device:  bash scripts/gpu_models.sh wait        # only if `start` returned before the end: wait, pack
#   here:    bash scripts/gpu_models.sh unpack DIR  # DIR = the files_at of the call that packed
#   here:    bash scripts/gpu_models.sh smoke       # the whole pipeline on the CPU at tiny sizes (~2 min)
#
# The pipeline: a preflight of the CUDA paths (scripts/gpu_preflight.py, under a minute), the guidance
# classifier (GCLF_MINUTES, 0 by default: the store's newest is kept), the generator (TRAIN_MINUTES),
# exported into a copy of the store, then its evaluation with the full 1,000 images per class for the
# time left before the deadline (--max-minutes: a setting starts only if it should end in time; the rest
# is listed as not measured), the tables and chosen defaults written into its card, docs/model-card.md
# rendered with its PNGs. The deadline is WAIT_S after the start, less PACK_S: the pipeline ends inside
# the `start` call, whose wait packs what is done. Each phase is bounded by `timeout`.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
MODE=${1:-help}
PY=${PYTHON:-python3}
case "$PY" in /*) ;; */*) PY="$PWD/$PY" ;; esac   # a relative path would break after the cd's below
WORK=${GPU_WORK:-/tmp/imagegen-gpu}
OUT=${OUT:-$WORK/out}
WAIT_S=${WAIT_S:-570}                   # `start`/`wait`: seconds to wait for the pipeline before packing
GEN_PRESET=${GEN_PRESET:-fmnist}        # U-Net preset of the generator (diffusion/unet.py)
GEN_BATCH=${GEN_BATCH:-512}
GEN_LR=${GEN_LR:-3e-4}
TRAIN_MINUTES=${TRAIN_MINUTES:-3.5}     # the generator's training, torch.compile included when it is used
GEN_COMPILE=${GEN_COMPILE:-auto}        # torch.compile the generator: 1, 0, or auto (the preflight decides)
GCLF_MINUTES=${GCLF_MINUTES:-0}         # the guidance classifier's; 0 = keep the store's newest one
GCLF_INIT=${GCLF_INIT-fashion-mnist-guidance-classifier}  # continue from the store's newest; "" = from scratch
EVAL_MINUTES=${EVAL_MINUTES:-6}        # the evaluation's most minutes; the deadline usually gives it fewer
PACK_S=${PACK_S:-25}                    # seconds kept after the deadline for packing, within WAIT_S
RENDER_S=${RENDER_S:-60}                # seconds kept before the deadline for rendering the doc
EVAL_BATCH=${EVAL_BATCH:-2048}
PER_CLASS=${PER_CLASS:-1000}
DEVICE=${DEVICE:-cuda}

log() { echo "=== [$(date -u +%H:%M:%S)] $*"; }

# --- here, before the device call ----------------------------------------------------------------
prepare() {
    local src=${FASHION_MNIST_ROOT:-/usr/share/datasets/fashion-mnist}
    cd "$REPO"
    git check-ignore -q data/ || { echo "prepare: data/ is not git-ignored; it must be, to be carried"; return 1; }
    mkdir -p data/fashion-mnist
    for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
        cp "$src/$f.gz" data/fashion-mnist/ 2>/dev/null || cp "$src/$f" data/fashion-mnist/ \
            || { echo "prepare: $src has no $f(.gz)"; return 1; }
    done
    local commit dirty=false
    commit=$(git rev-parse HEAD)
    [ -n "$(git status --porcelain --untracked-files=no)" ] && dirty=true
    printf '{"commit": "%s", "dirty": %s}\n' "$commit" "$dirty" > data/stamp.json
    # what the device image lacks (the engine reads its settings with pydantic): its wheels, carried
    git check-ignore -q .whl/ || { echo "prepare: .whl/ is not git-ignored; it must be, to be carried"; return 1; }
    "${PYTHON:-.venv/bin/python}" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        -d .whl -r scripts/gpu-models-wheels.txt || { echo "prepare: the wheels could not be downloaded"; return 1; }
    "${PYTHON:-.venv/bin/python}" - <<'PY' || return 1
from model_store import ModelStore
store = ModelStore()
kinds = {c.name: c.kind for c in store.list()}
missing = [n for n, k in (("fmnist-eval-classifier", "eval-classifier"), ("fashion-mnist", "generator"),
                          ("fashion-mnist-guidance-classifier", "guidance-classifier")) if kinds.get(n) != k]
if missing:
    raise SystemExit(f"prepare: the store at {store.root} lacks {missing}: commit them before the device run")
print("prepare: the store has", ", ".join(c.ref for c in store.list()))
PY
    echo "prepare: data/ holds $(du -sh data | cut -f1), .whl/ $(du -sh .whl | cut -f1) (carry both: \"carry\": [\"data\", \".whl\"]); stamp: $(cat data/stamp.json)"
    [ "$dirty" = true ] && echo "prepare: WARNING: tracked files have uncommitted changes; the cards will say +dirty"
    return 0
}

# --- on the device -------------------------------------------------------------------------------
setup_work() {  # a private copy of the code, data and store: later calls re-send the tree, this stays
    if [ -f "$WORK/pipeline.pid" ] && kill -0 "$(cat "$WORK/pipeline.pid")" 2>/dev/null; then
        echo "a pipeline is already running (pid $(cat "$WORK/pipeline.pid")): use 'wait', not 'start'"
        return 1
    fi
    rm -rf "$WORK" && mkdir -p "$WORK/src" "$WORK/runs" "$OUT"
    cp -a "$REPO"/{diffusion,model_store,contract,worker,imagegen,evaluation,scripts,docs,tests,pyproject.toml} "$WORK/src/"
    cp -a "$REPO/model_store/models" "$WORK/store"
    if [ -d "$REPO/data/fashion-mnist" ]; then
        cp -a "$REPO/data/fashion-mnist" "$WORK/data"
    else
        echo "no data/fashion-mnist here: run 'bash scripts/gpu_models.sh prepare' on the development machine and carry data"
        return 1
    fi
    [ -f "$REPO/data/stamp.json" ] && cp "$REPO/data/stamp.json" "$WORK/stamp.json"
    if ls "$REPO"/.whl/*.whl > /dev/null 2>&1; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
            "$REPO"/.whl/*.whl || { echo "the carried wheels would not install"; return 1; }
    else
        echo "no .whl/ here: the device image lacks pydantic, which the engine needs; run 'prepare' and carry .whl"
        return 1
    fi
    return 0
}

pipeline() {  # runs from $WORK/src; writes $WORK/status when it ends
    cd "$WORK/src"
    export PYTHONPATH="$WORK/src:$WORK/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 FASHION_MNIST_ROOT=${FASHION_MNIST_ROOT:-$WORK/data}
    local commit
    commit=$("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["commit"] + ("+dirty" if d["dirty"] else ""))' \
             "$WORK/stamp.json" 2>/dev/null || echo unknown)
    export IMAGEGEN_COMMIT=$commit
    log "pipeline: commit $commit, device $DEVICE, preset $GEN_PRESET, train $TRAIN_MINUTES min, eval $EVAL_MINUTES min"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true
    "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
    local store="$WORK/store" status=0 gclf
    # the deadline: `start` waits WAIT_S for the pipeline, then packs; end PACK_S before that
    DEADLINE=${DEADLINE:-$(( $(date +%s) + WAIT_S - PACK_S ))}
    log "pipeline: deadline $(date -u -d "@$DEADLINE" +%H:%M:%S) ($(left) s from now)"

    # fail in seconds, not after minutes of training: the CUDA paths the next minutes depend on (graphs
    # at the evaluation's sizes, an engine step at its batch, torch.compile under bf16), the evaluation
    # on the store's generator, the renderer's imports; and whether compiling the generator pays
    local skip=""
    [ "$GEN_COMPILE" != auto ] && skip="--skip compile"
    log "preflight: scripts/gpu_preflight.py on $DEVICE"
    timeout --kill-after=15 "${PREFLIGHT_S:-150}" "$PY" scripts/gpu_preflight.py --device "$DEVICE" --store "$store" \
        --preset "$GEN_PRESET" --images "$(( 10 * PER_CLASS ))" --batch "$EVAL_BATCH" \
        --engine-images "${PREFLIGHT_ENGINE_IMAGES:-$EVAL_BATCH}" --train-minutes "$TRAIN_MINUTES" $skip \
        --out "$WORK/preflight.json" || { echo "pipeline: the preflight failed (preflight.json says which check)"; return 1; }
    # the CUDA tests of the fast path (skipped on the CPU): graphs, padding, bf16 against fp32, the
    # engine; and the evaluation's sampling. Seconds; a failure is reported but training goes on
    log "tests: tests/worker/test_worker_accel.py tests/evaluation/test_sampling.py"
    PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 timeout --kill-after=15 "${TESTS_S:-120}" "$PY" -m pytest -q -p pytest_timeout \
        -p no:cacheprovider -rs tests/worker/test_worker_accel.py tests/evaluation/test_sampling.py \
        || { echo "pipeline: the GPU tests failed (above)"; status=1; }
    local compile_flag=""
    case "$GEN_COMPILE" in
        0) compile_flag="--no-compile" ;;
        auto) "$PY" -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))["compile"]["use"] else 1)' \
                  "$WORK/preflight.json" || compile_flag="--no-compile" ;;
    esac

    if [ "$GCLF_MINUTES" != 0 ]; then
        log "guidance classifier: $GCLF_MINUTES min${GCLF_INIT:+, continuing from $GCLF_INIT}"
        timeout --kill-after=15 "$(secs "$GCLF_MINUTES" 150)" "$PY" -m imagegen train --task guidance-classifier \
            ${GCLF_INIT:+--init-from "$GCLF_INIT"} \
            --preset fmnist --batch-size 512 --lr 1e-3 --warmup-steps 200 --lr-decay constant --steps 1000000 --no-compile \
            --ema-decay 0.999 --max-minutes "$GCLF_MINUTES" --device "$DEVICE" --run-dir "$WORK/runs/gclf" \
            --log-every 100 --checkpoint-every 0 ${SMOKE_GCLF:-} \
            --export-name fashion-mnist-guidance-classifier --store "$store" || { echo "pipeline: guidance classifier failed"; status=1; }
    fi
    # the newest classifier, trained now or kept (a kept one has its commit: nothing to stamp)
    gclf=$(stamp_commit "$store" fashion-mnist-guidance-classifier)

    log "generator ($GEN_PRESET): $TRAIN_MINUTES min, linked to $gclf, ${compile_flag:-with torch.compile}"
    timeout --kill-after=15 "$(secs "$TRAIN_MINUTES" 240)" "$PY" -m imagegen train --preset "$GEN_PRESET" \
        --batch-size "$GEN_BATCH" --lr "$GEN_LR" --warmup-steps 500 --lr-decay constant --steps 1000000 \
        --ema-decay 0.9995 --max-minutes "$TRAIN_MINUTES" --device "$DEVICE" --run-dir "$WORK/runs/gen" \
        --log-every 100 --sample-every 2000 --checkpoint-every 0 $compile_flag ${SMOKE_GEN:-} \
        --export-name fashion-mnist --guidance-classifier "$gclf" --store "$store" \
        || { echo "pipeline: generator training failed"; return 1; }
    local gen eval_minutes
    gen=$(stamp_commit "$store" fashion-mnist)
    echo "$gen" > "$WORK/generator"

    # what the deadline leaves, less the render's share, and at most EVAL_MINUTES
    eval_minutes=$("$PY" -c "import sys; print(round(max(0.0, min(float(sys.argv[1]), (int(sys.argv[2]) - int(sys.argv[3])) / 60)), 2))" \
                   "$EVAL_MINUTES" "$(left)" "$RENDER_S")
    log "evaluate $gen: $PER_CLASS per class, at most $eval_minutes min (the deadline leaves $(left) s)"
    timeout --kill-after=15 "$(secs "$eval_minutes" 90)" "$PY" -m evaluation evaluate --model "$gen" --store "$store" \
        --tables floor guidance classifier steps spread --paired-with ddpm:50 --per-class "$PER_CLASS" --batch-size "$EVAL_BATCH" \
        --device "$DEVICE" --max-minutes "$eval_minutes" --out "$WORK/results.json" --write-card --choose-defaults \
        || { echo "pipeline: evaluate failed"; status=1; }
    if [ ! -s "$WORK/results.json" ] || ! grep -q '"fd"' "$WORK/results.json"; then status=1; fi

    log "render docs/model-card.md ($(left) s to the deadline)"
    timeout --kill-after=15 "$(( $(left) > RENDER_S ? $(left) : RENDER_S ))" "$PY" -m evaluation model-card --model "$gen" --store "$store" \
        --out "$WORK/src/docs/model-card.md" --sample-grid --grid-per-class "${GRID_PER_CLASS:-10}" --device "$DEVICE" \
        && touch "$WORK/rendered" || { echo "pipeline: render failed"; status=1; }
    log "pipeline: done, status $status"
    return $status
}

left() {  # whole seconds from now to DEADLINE (negative once it has passed)
    echo $(( DEADLINE - $(date +%s) ))
}

secs() {  # MINUTES SLACK_S -> whole seconds for `timeout`
    "$PY" -c "import sys; print(int(float(sys.argv[1]) * 60 + int(sys.argv[2])))" "$1" "$2"
}

stamp_commit() {  # STORE NAME: the newest version's ref on stdout; a card exported without git gets the
    # stamped commit as training.commit (one Python start for both: each costs seconds on the device)
    "$PY" - "$1" "$2" <<'PY'
import os, sys
from model_store import ModelStore
store, name = ModelStore(sys.argv[1]), sys.argv[2]
card = store.resolve(name)
commit = os.environ.get("IMAGEGEN_COMMIT", "unknown")
if card.training.get("commit") == "unknown" and commit != "unknown":
    store.update_card(card, {"training": {**card.training, "commit": commit}})
    print(f"{card.ref}: training.commit set to {commit} (exported from a copy without git)", file=sys.stderr)
print(card.ref)
PY
}

pack() {  # what comes back, at most 8 files, none over 16 MiB, no deeper than $OUT/a/b/file
    mkdir -p "$OUT"
    cp "$WORK/pipeline.log" "$OUT/gpu_models.log" 2>/dev/null
    [ -f "$WORK/results.json" ] && cp "$WORK/results.json" "$OUT/results.json"
    [ -f "$WORK/preflight.json" ] && cp "$WORK/preflight.json" "$OUT/preflight.json"
    local store="$WORK/store" name dir
    # the versions this run exported: directories newer than the store copied at the start
    for name in fashion-mnist fashion-mnist-guidance-classifier; do
        for dir in "$store/$name"/*/; do
            dir=${dir%/}
            [ -e "$REPO/model_store/models/$name/$(basename "$dir")" ] && continue
            [ -f "$dir/card.json" ] || continue
            tar -cf "$OUT/model-$name-$(basename "$dir").tar" -C "$store" "$name/$(basename "$dir")"
        done
    done
    if [ -f "$WORK/rendered" ]; then  # not the checkout's own doc, copied at the start
        tar -czf "$OUT/docs.tar.gz" -C "$WORK/src" docs/model-card.md \
            $(cd "$WORK/src" && ls docs/images/model-card-*.png 2>/dev/null)
    fi
    # the training logs and the last sample grid of each run, for the record
    (cd "$WORK/runs" 2>/dev/null && tar -czf "$OUT/runs.tar.gz" */log.jsonl $(ls */samples_*.png 2>/dev/null | tail -n 1)) 2>/dev/null
    ls -l "$OUT"
}

wait_for_pipeline() {
    local waited=0
    while [ ! -f "$WORK/status" ] && [ "$waited" -lt "$WAIT_S" ]; do sleep 5; waited=$((waited + 5)); done
    if [ -f "$WORK/status" ]; then
        log "the pipeline ended with status $(cat "$WORK/status")"
    else
        log "the pipeline is still running after $WAIT_S s; call 'bash scripts/gpu_models.sh wait' again (carry data)"
    fi
    tail -n 40 "$WORK/pipeline.log" 2>/dev/null
    pack
    [ -f "$WORK/status" ] && return "$(cat "$WORK/status")"
    return 3
}

case "$MODE" in
    prepare) prepare ;;
    start)
        setup_work || exit 1
        # its own session: it outlives this call if the call returns first (device README)
        setsid nohup bash "$WORK/src/scripts/gpu_models.sh" pipeline-bg > "$WORK/pipeline.log" 2>&1 < /dev/null &
        echo $! > "$WORK/pipeline.pid"
        wait_for_pipeline ;;
    wait) wait_for_pipeline ;;
    pipeline-bg)
        pipeline
        echo $? > "$WORK/status" ;;
    smoke)
        # everything above on the CPU at tiny sizes, in the foreground, into $OUT (default $WORK/out)
        # evaluation bounded by --max-minutes: what does not fit is listed as not measured, as on the GPU
        export DEVICE=cpu GCLF_MINUTES=${SMOKE_GCLF_MINUTES:-0} GCLF_INIT= TRAIN_MINUTES=0.05 EVAL_MINUTES=${SMOKE_EVAL_MINUTES:-0.75} PER_CLASS=2
        export EVAL_BATCH=20 GRID_PER_CLASS=2 PREFLIGHT_ENGINE_IMAGES=16
        export GEN_PRESET=tiny SMOKE_GCLF="--preset tiny --steps 5 --limit 256 --batch-size 16"
        export SMOKE_GEN="--steps 5 --limit 256 --batch-size 16 --sample-every 0"
        export FASHION_MNIST_ROOT=${FASHION_MNIST_ROOT:-/usr/share/datasets/fashion-mnist}
        export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
        rm -rf "$WORK" && mkdir -p "$WORK/src" "$WORK/runs" "$OUT"
        cp -a "$REPO"/{diffusion,model_store,contract,worker,imagegen,evaluation,scripts,docs,tests,pyproject.toml} "$WORK/src/"
        cp -a "$REPO/model_store/models" "$WORK/store"
        printf '{"commit": "%s", "dirty": true}\n' "$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)" > "$WORK/stamp.json"
        # the store copy gets a tiny evaluation classifier of its own: the smoke needs none shipped
        rm -rf "$WORK/store/fmnist-eval-classifier"
        (cd "$WORK/src" && PYTHONPATH="$WORK/src${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m imagegen train --task eval-classifier --preset tiny \
            --steps 5 --limit 256 --batch-size 16 --device cpu --run-dir "$WORK/runs/evalcls" \
            --export-name fmnist-eval-classifier --store "$WORK/store") > "$WORK/pipeline.log" 2>&1 || { cat "$WORK/pipeline.log"; exit 1; }
        pipeline >> "$WORK/pipeline.log" 2>&1
        status=$?
        pack
        echo "smoke: pipeline status $status"
        [ "$status" = 0 ] || tail -n 60 "$WORK/pipeline.log"
        exit $status ;;
    unpack)
        # here, after the device call: the files of its files_at into the store and docs/
        from=$(cd "${2:?usage: gpu_models.sh unpack FILES_AT_DIR}" && pwd)
        root=${UNPACK_ROOT:-$REPO}   # another checkout-like folder, for the tests
        mkdir -p "$root/model_store/models" "$root/runs/gpu" && cd "$root"
        for t in "$from"/model-*.tar; do [ -f "$t" ] && tar -xvf "$t" -C model_store/models; done
        [ -f "$from/docs.tar.gz" ] && tar -xzvf "$from/docs.tar.gz" -C "$root"
        for f in results.json preflight.json gpu_models.log runs.tar.gz; do
            [ -f "$from/$f" ] && cp "$from/$f" runs/gpu/
        done
        echo "unpack: done; check with: .venv/bin/imagegen models && git status" ;;
    *)
        sed -n '2,18p' "$0"; exit 2 ;;
esac
