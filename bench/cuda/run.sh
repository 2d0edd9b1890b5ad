#!/bin/bash
# Runs the engine's precision checks on a CUDA machine (issue #3): builds the
# training engine and bench/cuda/precision_checks against the CUDA libtorch
# of a PyTorch wheel, then runs every check on GPU 0: the probe, gating of
# the precisions the GPU lacks, fine-tuning quality of every native
# precision against fp32 (within 2%), fp16/bf16 overflow handling, loss
# parity with PyTorch (fp32, bf16-mixed and fp16-mixed autocast with
# GradScaler), and step time and CUDA peak memory of gpt-small per precision.
#
# usage: bench/cuda/run.sh [BUILD_DIR]
# Needs: cmake >= 3.18, a C++17 compiler, the CUDA toolkit, and python3 (or
# $PYTHON) with a CUDA build of torch. Exit status: 0 when every check
# passed, 1 when one failed, 2 when the machine cannot run them.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build-cuda}
python=${PYTHON:-python3}

if ! prefix=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)'); then
  echo "run.sh: $python cannot import torch" >&2
  exit 2
fi
if ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "run.sh: $python's torch sees no CUDA device" >&2
  exit 2
fi
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
cmake -S "$root/bench/cuda/standalone" -B "$build" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix"
cmake --build "$build" --target precision_checks -j "$(nproc)"
exec "$build/cuda/precision_checks" --device cuda --speed --python "$python" \
  --fixtures "$root/tests/worker/trainer/python" --work "$build/work"
