#!/usr/bin/env bash
# The test command (README, CI): installs what is missing, builds, and runs
# every test; then rebuilds the input-parsing code with Clang under
# ASan/UBSan, runs its tests again and fuzzes it briefly. Exits non-zero on
# any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/check-format.sh

jobs=$(nproc)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build -j"$jobs"
# Tests labelled "long" are for hand runs (see README).
ctest --test-dir build --output-on-failure -j"$jobs" -LE long

# The other bf16 path. On a CPU with native bf16 (avx512_bf16/amx_bf16) the
# run above took the native path; the bf16 numerics, trainer and e2e suites
# (label bf16) run again capped as a CPU without it, so every CI run covers
# emulated bf16 too. HALFTIME_CPU_ISA=avx2 hides the AVX-512 and AMX flags
# from the probe and the engine; the others cap libtorch's kernels, oneDNN
# and OpenBLAS (halftime-train sets them itself from HALFTIME_CPU_ISA).
# On a CPU without native bf16 the run above was the emulated path, and the
# tests that need the native one said so where they skipped.
if grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo; then
  echo "test: native bf16 here; the bf16 suites again as a CPU without it"
  HALFTIME_CPU_ISA=avx2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 \
    OPENBLAS_CORETYPE=HASWELL \
    ctest --test-dir build --output-on-failure -j"$jobs" -L bf16 -LE long
else
  echo "test: no native bf16 on this CPU: the run above covered emulated bf16"
fi

# One Clang build (ASan/UBSan, libFuzzer; no libtorch) of the code that
# reads untrusted input: the spec parser and CLI tests, the hostile request
# table against a real scheduler, the engine's file formats, the tokenizer
# and instruction data (chat templates, jsonl rows), and each fuzzer
# for a short while on its seed corpus (CTest label "fuzz"). Being Clang, it
# also compiles the scheduler and the worker daemon with -Wthread-safety
# -Werror=thread-safety: a guarded field read without its lock, or a store
# read under the JobManager's lock, does not build.
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DHALFTIME_FUZZ=ON \
  -DHALFTIME_WITH_TORCH=OFF -DHALFTIME_WITH_SERVER=ON >/dev/null
# The lock analysis is live: a guarded read without the lock must not build.
if clang++ -std=c++17 -fsyntax-only -Wthread-safety -Werror=thread-safety \
    tests/scripts/guarded_read_without_lock.cc 2>/dev/null; then
  echo "test: clang accepted a guarded read without its lock" >&2
  exit 1
fi
ninja -C build-fuzz -j"$jobs" halftime halftime-scheduler halftime-worker \
  common_tests client_tests \
  hostile_requests_test hf_formats_test tokenizer_test instruction_data_test \
  fuzz_spec \
  fuzz_scheduler fuzz_worker_gateway fuzz_safetensors_header fuzz_hf_config \
  fuzz_peft_config \
  fuzz_tokenizer_json fuzz_instruction_jsonl
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
build-fuzz/tests/common/common_tests --gtest_brief=1
build-fuzz/tests/client/client_tests --gtest_brief=1
build-fuzz/tests/fuzz/hostile_requests_test --gtest_brief=1
build-fuzz/tests/engine/hf/hf_formats_test --gtest_brief=1
build-fuzz/tests/tokenizer/tokenizer_test --gtest_brief=1
build-fuzz/tests/tokenizer/instruction_data_test --gtest_brief=1
ctest --test-dir build-fuzz --output-on-failure -L fuzz
