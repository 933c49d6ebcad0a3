#!/usr/bin/env bash
# One prepared run for a session lent a GPU (see benchmarks/README.md and the project's GPU notes): environment,
# `genesis-kernels verify`, compiled decoding against HF (the GPU decoding target), the benchmark suite's GPU groups
# with HF peers, a short genesis-train run, `genesis-kernels bench` and a profile of decoding, every result under
# $OUT. Budget: 9.5 minutes in all (one device call runs 10 at most); each step also has its own time limit so a
# slow one cannot starve the rest, and a failed step does not stop the later ones (the exit status says).
#
#   OUT=/path benchmarks/gpu.sh            # on the GPU machine ($OUT is the folder that comes back)
#   benchmarks/gpu.sh --smoke              # the same steps on a CPU with tiny work, to catch mistakes first
#   OUT=/path benchmarks/gpu.sh --pack     # everything in $OUT packed into one gpu-results.tar.gz (the device tool
#                                          # brings back 8 files at most, 2 folders down)
#   OUT=/path benchmarks/gpu.sh --budget 420   # the same steps in 420 s (default 570): later steps are skipped
#   SUITE_FILTER="decode or reference" ...     # the suite step runs only these groups (a pytest -k expression)
#
# The GPU machine has no editable installs and no ../shared: packages run from packages/*/src, the training text
# is written here, and the data groups (pythonbible, ../shared/bible) skip.
set -uo pipefail

SMOKE=0
PACK=0
BUDGET=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --pack) PACK=1 ;;
    --budget)
      [[ "${2:-}" =~ ^[0-9]+$ ]] || { echo "gpu.sh: --budget needs a number of seconds, e.g. --budget 420" >&2; exit 2; }
      BUDGET=$2
      shift ;;
    *) echo "gpu.sh: unknown argument '$1'; the options are --smoke, --pack and --budget SECONDS" >&2; exit 2 ;;
  esac
  shift
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
OUT="${OUT:-$(mktemp -d -t genesis-gpu.XXXXXX)}"
mkdir -p "$OUT"
PYTHON="${PYTHON:-python3}"  # the GPU image's python3 holds torch
export PYTHONUNBUFFERED=1
PYTHONPATH="$(printf '%s:' "$REPO"/packages/*/src)$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH
unset TRITON_INTERPRET

# The whole script, so a session's device time is predictable; a smoke run on a busy 2-core CPU may take longer.
# --budget lowers it to leave device time for a second, shorter call: the steps past it are skipped.
BUDGET_SECONDS=${BUDGET:-$((SMOKE ? 900 : 570))}
FAILED=()
# step NAME SECONDS COMMAND...: run with a time limit (cut to what is left of the budget), output to the terminal
# and $OUT/NAME.log.
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET_SECONDS - SECONDS))
  ((limit > left)) && limit=$left
  if ((limit < 10)); then
    echo "=== $name: skipped, the ${BUDGET_SECONDS}s budget is spent"
    FAILED+=("$name (no time left)")
    return
  fi
  echo "=== $name (limit ${limit}s): $*"
  local start=$SECONDS
  timeout --signal=INT --kill-after=15 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local status=${PIPESTATUS[0]}
  echo "=== $name: exit $status after $((SECONDS - start))s"
  [[ $status -eq 0 ]] || FAILED+=("$name (exit $status)")
}

if [[ $SMOKE -eq 1 ]]; then
  # Every benchmark body once, untimed; the compiled steps and the data groups take minutes on a CPU and do not
  # run on the GPU machine anyway.
  PYTEST_OPTS=(--benchmark-disable -k "not compiled and not read_bible_dir and not tokenizer and not sampler")
  TRAIN_OPTS=(--mode tiny --steps 2 --batch-size 2 --block-size 64 --eval-interval 2 --eval-batches 1)
  KERNEL_BENCH_OPTS=(--seq-lens 128 --tokens 256 --reps 1)
  TEXT_LINES=3000
else
  # The compiled decode case compiles 40 layers per side: it runs as a step of its own.
  PYTEST_OPTS=(--benchmark-max-time=0.5 -k "not compiled${SUITE_FILTER:+ and ($SUITE_FILTER)}")
  TRAIN_OPTS=(--mode deep_narrow_40 --steps 30 --batch-size 16 --block-size 1024 --dtype bfloat16
              --eval-interval 30 --eval-batches 2)
  KERNEL_BENCH_OPTS=()
  TEXT_LINES=60000
fi

environment() {
  date -u
  nvidia-smi || echo "nvidia-smi: not available (no NVIDIA GPU here)"
  "$PYTHON" - <<'EOF'
import importlib, platform
print("python", platform.python_version())
for name in ("torch", "triton", "transformers", "pytest_benchmark", "tokenizers", "safetensors", "numpy"):
    try:
        print(name, importlib.import_module(name).__version__)
    except ImportError as error:
        print(name, "missing:", error)
import torch
print("cuda", torch.version.cuda, "available:", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(), "capability", torch.cuda.get_device_capability())
from genesis_kernels import available_backends
print("genesis_kernels backends:", available_backends())
EOF
}

training_text() {
  # Synthetic verse-like lines: enough running text for 1024-token blocks, nothing to download.
  "$PYTHON" - "$OUT/train_text.txt" "$TEXT_LINES" <<'EOF'
import random, sys
words = ("and the lord said unto them let there be light in the beginning god created heaven earth was without "
         "form void darkness upon face of deep spirit moved waters saw that it good divided from day night").split()
rng = random.Random(0)
with open(sys.argv[1], "w") as out:
    for _ in range(int(sys.argv[2])):
        out.write(" ".join(rng.choice(words) for _ in range(rng.randint(8, 30))).capitalize() + ".\n")
EOF
}

kernels_verify() {
  local dtype status=0 pids=()
  for dtype in fp32 fp16 bf16; do
    "$PYTHON" -m genesis_kernels.cli verify --dtypes "$dtype" >"$OUT/verify_$dtype.log" 2>&1 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  cat "$OUT"/verify_*.log
  return $status
}

export -f environment training_text kernels_verify  # `timeout` runs them through bash
export PYTHON OUT TEXT_LINES
step environment 30 bash -c environment
# The GPU decoding target first: compiled decoding of deep_narrow_40 (the product, with the Triton decoding kernels
# where auto picks them, and its peer on the torch path) against HF's static cache compiled. Its limit leaves room
# for three 40-layer compiles and a slow exit (benchmarks/RESULTS.md, "Where the shipped constants come from").
step decode_compiled 200 "$PYTHON" -m pytest benchmarks/test_decode.py -p no:cacheprovider -k "compiled and deep_narrow_40" \
  --benchmark-json="$OUT/decode_compiled.json"
if [[ -s "$OUT/decode_compiled.json" ]]; then
  step decode_compiled_report 15 "$PYTHON" benchmarks/report.py "$OUT/decode_compiled.json"
fi
# Compiling every case's Triton kernels took over 170 s in one process on an H200: one process per dtype, the
# decoding ops and the norms first, flash attention last.
step kernels_verify 130 bash -c kernels_verify
step training_text 15 bash -c training_text
step train 45 "$PYTHON" -m genesis_train.cli --text-file "$OUT/train_text.txt" "${TRAIN_OPTS[@]}" \
  --out-dir "$OUT/train" --cache-dir "$OUT/cache" --log-interval 5 --checkpoint-interval 1000 --no-progress
# Why a compiled token costs what it does, per variant of the step.
step decode_profile 130 "$PYTHON" benchmarks/tuning/decode_profile.py --variants "product,both: torch" --json "$OUT/decode_profile.json"
# Where an eager token's host time goes (eager decoding ran at 0.86x HF's eager generate on an H200).
step decode_profile_eager 40 "$PYTHON" benchmarks/tuning/decode_profile.py --eager --variants "product,both: torch" \
  --json "$OUT/decode_profile_eager.json"

SLUG="$("$PYTHON" -c 'from benchmarks.workloads import device_name, device_slug; print(device_slug(device_name()))')"
# The suite (~200 s on an H200) gets what is left of the budget ($SUITE_FILTER narrows it).
step benchmarks 220 "$PYTHON" -m pytest benchmarks/ -p no:cacheprovider "${PYTEST_OPTS[@]}" \
  --benchmark-json="$OUT/benchmarks.json" --benchmark-save=gpu --benchmark-storage="file://$OUT/baselines/$SLUG"
if [[ -s "$OUT/benchmarks.json" ]]; then
  step report 15 "$PYTHON" benchmarks/report.py "$OUT/benchmarks.json"
  cp "$OUT/report.log" "$OUT/report.md"
  rm "$OUT/benchmarks.json"  # 16 MB of rounds on a GPU; the baseline under baselines/ holds the same
fi
step kernels_bench 30 "$PYTHON" -m genesis_kernels.cli bench "${KERNEL_BENCH_OPTS[@]}"

# Weights, optimizer state and the text do not need to come back (deep_narrow_40 is ~1 GB of them).
rm -rf "$OUT/cache" "$OUT/train_text.txt"
find "$OUT/train" \( -name '*.safetensors' -o -name '*.pt' \) -delete 2>/dev/null
# The figures that matter, last, where a reply that carries only the end of the output still has them: the
# suite's long report first, the GPU decoding target's report at the very end.
echo "=== summary"
for log in report decode_profile decode_profile_eager; do
  [[ -s "$OUT/$log.log" ]] && { echo "--- $log"; cat "$OUT/$log.log"; }
done
for log in "$OUT"/verify_*.log; do
  [[ -s "$log" ]] && { echo "--- $(basename "$log") (failures and last line)"; grep -a FAIL "$log"; tail -n 1 "$log"; }
done
[[ -s "$OUT/train.log" ]] && { echo "--- train (last lines)"; tail -n 6 "$OUT/train.log"; }
[[ -s "$OUT/decode_compiled_report.log" ]] && { echo "--- decode_compiled_report"; cat "$OUT/decode_compiled_report.log"; }
if [[ $PACK -eq 1 ]]; then
  tar -czf "$REPO/.gpu-results.tar.gz" -C "$OUT" . && find "$OUT" -mindepth 1 -delete &&
    mv "$REPO/.gpu-results.tar.gz" "$OUT/gpu-results.tar.gz"
  echo "results packed in $OUT/gpu-results.tar.gz; baseline to commit: baselines/$SLUG -> benchmarks/baselines/$SLUG"
else
  echo "results in $OUT; baseline to commit: $OUT/baselines/$SLUG -> benchmarks/baselines/$SLUG"
fi
if [[ ${#FAILED[@]} -gt 0 ]]; then
  echo "FAILED steps: ${FAILED[*]}"
  exit 1
fi
