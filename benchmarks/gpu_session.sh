#!/usr/bin/env bash
# Issue 16's GPU section in one session of about 8 minutes on a GPU machine (e.g. the `device`
# tool's H200, whose plain `python3` holds JAX with CUDA, Flax, Optax and PyTorch with CUDA).
# From the repository root:
#
#   bash benchmarks/gpu_session.sh          # files in $OUT if set (the device tool's folder),
#                                           # else bench-results
#
# Stage 1 (<= 5 min): LSTM, GRU and Elman at configs A, B, C and the LSTM/GRU sequence-length
# sweep, forward and training, jaxrnn vs Flax vs PyTorch cuDNN. Stage 2 (what is left of 7.5
# min): the other cells at A, B, C. Each stage rewrites its JSON after every timed group, so a
# stage cut short by its time limit keeps what it measured. Then, back on the development
# machine, with the files copied into bench-results:
#
#   python -m benchmarks.gpu --render bench-results/gpu-*-gpu-*.json --markdown BENCHMARKS.md
#
# GPU_SESSION_SMOKE=1 runs both stages with --smoke (tiny sizes, CPU allowed): a self-test of
# this script where there is no GPU; GPU_SESSION_SECONDS sets the budget (default 450).
set -u
cd "$(dirname "$0")/.."
out="${OUT:-bench-results}"
py="${PYTHON:-python3}"
budget="${GPU_SESSION_SECONDS:-450}"
mkdir -p "$out"
log="$out/gpu-session.log"
start=$(date +%s)
export PYTHONUNBUFFERED=1
# JAX would take 75% of the card at start-up and leave PyTorch short
export XLA_PYTHON_CLIENT_PREALLOCATE=false
# jaxrnn's C++ kernels are CPU-only: skip their build (about a minute) on the GPU machine
export JAXRNN_KERNELS=0

{
  echo "== $(date -u +%FT%TZ) benchmarks/gpu_session.sh (budget ${budget} s)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv \
    || echo "nvidia-smi: not available"
  "$py" -c 'import jax; print("jax", jax.__version__, jax.default_backend(), jax.devices())'
  "$py" -c 'import torch; print("torch", torch.__version__, torch.version.cuda, torch.cuda.is_available())' \
    || echo "torch: not importable"
} 2>&1 | tee "$log"

smoke=()
if [ "${GPU_SESSION_SMOKE:-0}" = 1 ]; then
  smoke=(--smoke --reps 2)
  echo "== smoke run (tiny sizes, not a measurement)" | tee -a "$log"
elif ! "$py" -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")'; then
  echo "no GPU backend for JAX: nothing measured" | tee -a "$log"
  exit 2
fi

left() { echo $(( budget - ($(date +%s) - start) )); }

stage1=$(( $(left) < 300 ? $(left) : 300 ))
echo "== stage 1 (core cells + T sweep), limit ${stage1} s" | tee -a "$log"
timeout --signal=INT --kill-after=10 "$stage1" \
  "$py" -m benchmarks.gpu --cells lstm gru elman --reps 20 --out "$out" --tag core "${smoke[@]}" \
  2>&1 | tee -a "$log"

stage2=$(left)
if [ "$stage2" -gt 30 ]; then
  echo "== stage 2 (other cells, A B C), limit ${stage2} s" | tee -a "$log"
  timeout --signal=INT --kill-after=10 "$stage2" \
    "$py" -m benchmarks.gpu --skip-cells lstm gru elman --no-sweep --reps 10 --out "$out" \
    --tag rest "${smoke[@]}" 2>&1 | tee -a "$log"
else
  echo "== stage 2 skipped: ${stage2} s left" | tee -a "$log"
fi
echo "== done in $(( $(date +%s) - start )) s; files in $out:" | tee -a "$log"
ls -l "$out" | tee -a "$log"
