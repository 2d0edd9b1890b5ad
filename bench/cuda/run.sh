#!/bin/bash
# Runs the engine's precision checks on a CUDA machine (issue #21): builds
# the training engine and bench/cuda/precision_checks against the CUDA
# libtorch of the machine's PyTorch wheel, then runs every check on GPU 0:
# the probe, gating of the precisions the GPU lacks, fine-tuning quality of
# every native precision against fp32 on gpt-small (within 2%), fp16/bf16
# overflow handling, loss and loss-scale parity with PyTorch's autocast and
# GradScaler, and step time, tokens/s, MFU and CUDA peak memory of
# gpt-small per precision beside PyTorch's own step time.
#
# usage: bench/cuda/run.sh RESULTS_DIR [BUILD_DIR]
# Writes into RESULTS_DIR: env.txt (GPU, driver, torch, compilers),
# build.log, checks.log and results.json (every figure, rewritten after each
# section). Stops by itself: the checks get HALFTIME_CHECKS_TIMEOUT seconds
# (default 420), the build HALFTIME_BUILD_TIMEOUT (default 240).
# Rehearsal on a machine without a GPU: HALFTIME_CHECK_DEVICE=cpu and
# TORCH_PREFIX=<libtorch's cmake prefix> (e.g. /usr/lib/x86_64-linux-gnu).
# Needs: cmake >= 3.18, a C++17 compiler, the CUDA toolkit, python3 (or
# $PYTHON) with a CUDA build of torch, and nlohmann-json's headers: the
# system's, else HALFTIME_JSON_INCLUDE=<folder holding nlohmann/json.hpp>
# (PyTorch wheels lack them; from a machine that has them, copy
# /usr/include/nlohmann into the tree, e.g. build-deps/nlohmann, and point
# HALFTIME_JSON_INCLUDE at build-deps). Exit status: 0 when every check
# passed, 1 when one failed, 2 when the machine cannot run them, 3 when the
# build failed (its first error is printed), 124 when the checks timed out.
set -uo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 RESULTS_DIR [BUILD_DIR]" >&2
  exit 2
fi
root=$(cd "$(dirname "$0")/../.." && pwd)
results=$(mkdir -p "$1" && cd "$1" && pwd)
build=${2:-$root/build-cuda}
python=${PYTHON:-python3}
device=${HALFTIME_CHECK_DEVICE:-cuda}

{
  date -u +"date: %Y-%m-%dT%H:%M:%SZ"
  echo "host: $(uname -srm), $(nproc) CPUs"
  command -v nvidia-smi >/dev/null &&
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
      --format=csv,noheader
  "$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1
  command -v nvcc >/dev/null && nvcc --version | tail -1
  c++ --version | head -1
  cmake --version | head -1
} >"$results/env.txt" 2>&1
cat "$results/env.txt"

if [ -n "${TORCH_PREFIX:-}" ]; then
  prefix=$TORCH_PREFIX
elif ! prefix=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)'); then
  echo "run.sh: $python cannot import torch" >&2
  exit 2
fi
if [ "$device" = cuda ] &&
   ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "run.sh: $python's torch sees no CUDA device" >&2
  exit 2
fi

# The build stops at its first failing translation unit (ninja's default)
# and the first compiler error is printed on its own.
first_error() {
  grep -m1 -B2 -A12 -E 'error:|Error|CMake Error' "$results/build.log" >&2
}
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
echo "== configure (log: $results/build.log)"
if ! cmake -S "$root/bench/cuda/standalone" -B "$build" "${generator[@]}" \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
    -DTORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" \
    >"$results/build.log" 2>&1; then
  echo "run.sh: cmake failed; first error:" >&2
  first_error
  exit 3
fi
echo "== build"
start=$(date +%s)
if ! timeout "${HALFTIME_BUILD_TIMEOUT:-240}" \
    cmake --build "$build" --target precision_checks -j "$(nproc)" \
    >>"$results/build.log" 2>&1; then
  echo "run.sh: build failed; first error:" >&2
  first_error
  exit 3
fi
echo "built in $(( $(date +%s) - start )) s"

echo "== checks (log: $results/checks.log)"
speed=()
if [ "$device" = cuda ]; then speed=(--speed); fi
timeout "${HALFTIME_CHECKS_TIMEOUT:-420}" \
  "$build/cuda/precision_checks" --device "$device" "${speed[@]}" \
  --python "$python" --fixtures "$root/tests/engine/python" \
  --work "$build/work" --json "$results/results.json" 2>&1 |
  tee "$results/checks.log"
rc=${PIPESTATUS[0]}
echo "run.sh: precision_checks exited $rc; results in $results/results.json"
exit "$rc"
