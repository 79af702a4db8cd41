#!/usr/bin/env bash
# The GPU measurements of the README's Performance section, in one run on a machine with a CUDA GPU:
#
#   bash benchmarks/gpu_suite.sh OUTDIR        (PYTHON=... to choose the interpreter, TIMEOUT=seconds per step)
#
# Steps, each printed and written to OUTDIR/<step>.txt:
#   nvidia-smi           the device and driver
#   bench_gpu            images/s and regularized ÷ plain step time for ResNet-18 and FastResNet at batch 512
#                        (bf16 autocast, channels-last), PGD / APGD-CE throughput, twin trials/s
#   bench_fast_backbone  FastResNet against ResNet-18 on ClutteredDigits at equal epochs (accuracy, s/epoch)
#   cuda_tests           the tests that need a CUDA device (random-state round trip)
# Exits 2 without a CUDA device (nothing is written), 1 when a step failed (the others still run), else 0.
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_suite.sh OUTDIR}
py=${PYTHON:-python3}
cd "$(dirname "$0")/.." || exit 1
if ! "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_suite: expected a CUDA device visible to torch ($py), found none; nothing was run" >&2
    exit 2
fi
mkdir -p "$out" || exit 1
export PYTHONUNBUFFERED=1
status=0
step() {
    local name=$1
    shift
    echo "== $name: $*"
    if ! timeout "${TIMEOUT:-900}" "$@" 2>&1 | tee "$out/$name.txt"; then
        echo "gpu_suite: step $name failed (log: $out/$name.txt)" >&2
        status=1
    fi
}
step nvidia-smi nvidia-smi
step bench_gpu "$py" benchmarks/bench_gpu.py
step bench_fast_backbone "$py" benchmarks/bench_fast_backbone.py --size 32 --epochs 8 --batch 32 --lr 0.05
step cuda_tests "$py" -m pytest -q -p no:cacheprovider tests/runs/test_random_state.py
exit $status
