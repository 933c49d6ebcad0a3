#!/usr/bin/env bash
# The prepared GPU run for genesis-kernels: versions, `verify` (fp32, fp16, bf16, S up to 4096), then `bench`
# (head_dim 64, causal, 16k tokens a batch, S = 512..8192, Triton beside SDPA default / flash / naive).
# Every result lands in $OUT (default ./gpu_results). Exit status: verify's.
#   GPU:        bash packages/genesis-kernels/gpu_check.sh
#   CPU rehearsal (tiny shapes, torch backend only): GENESIS_KERNELS_DRY_RUN=1 bash packages/genesis-kernels/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-gpu_results}
mkdir -p "$out"
python=${PYTHON:-python3}
export PYTHONPATH="$PWD/packages/genesis-kernels/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export TRITON_INTERPRET=0  # compiled kernels

if [[ ${GENESIS_KERNELS_DRY_RUN:-0} == 1 ]]; then
    device=(--device cpu)
    bench_args=(--seq-lens 64,128 --tokens 256 --heads 2 --reps 2 --swiglu-width 64 --norm-width 64)
else
    device=()
    bench_args=()
fi

{ nvidia-smi || true
  "$python" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
} 2>&1 | tee "$out/versions.txt"

"$python" -m genesis_kernels.cli verify "${device[@]}" 2>&1 | tee "$out/verify.txt"
verify_status=${PIPESTATUS[0]}
"$python" -m genesis_kernels.cli bench "${device[@]}" "${bench_args[@]}" 2>&1 | tee "$out/bench.txt"
exit "$verify_status"
