#!/usr/bin/env bash
# Issue 26's report on this machine's CPU, in about 15 minutes on 2 cores: configs A, B and C,
# every kernel cell, forward and training, quiet and beside one busy process; jaxrnn, Flax and
# PyTorch three times each (median of 3), Equinox and Keras once; each library alone in its own
# fresh process; every peer row re-timed alone (the solo check). The run keeps to 14 minutes
# (--budget): a job that would not end within it by the times measured so far (a whole repeat
# after the first, a solo check, Equinox or Keras) is skipped and named in the report; the
# report says how many runs each row's median has. From the repository root:
#
#   bash benchmarks/run_report.sh            # rewrites this CPU's section of BENCHMARKS.md and
#                                            # benchmarks/summaries/<cpu>.json; raw files in
#                                            # bench-results/ (BENCH_OUT=DIR to move them)
#   bash benchmarks/run_report.sh --smoke    # the same jobs at tiny sizes (a minute or two):
#                                            # checks the plumbing, writes no report
#
# Run it on a quiet machine: the report records the load average and warns when it was high.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_BACKEND=jax
out="${BENCH_OUT:-bench-results}"
py="${PYTHON:-python3}"
echo "== $(date -u +%FT%TZ) benchmarks/run_report.sh; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
# the CPU kernels are built on first use (about a minute): build them before the clock starts
"$py" -m jaxrnn.kernels || echo "(jaxrnn's kernels are off here: the report says so)"
exec "$py" -m benchmarks --report --out "$out" "$@"
