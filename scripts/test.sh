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

# One sanitizer build (Clang, ASan/UBSan, libFuzzer; no libtorch) of the
# code that reads untrusted input: the spec parser and CLI tests, the
# hostile request table against a real scheduler, and each fuzzer for a
# short while on its seed corpus (CTest label "fuzz").
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DHALFTIME_FUZZ=ON \
  -DHALFTIME_WITH_TORCH=OFF -DHALFTIME_WITH_SERVER=ON >/dev/null
ninja -C build-fuzz -j"$jobs" halftime common_tests client_tests \
  hostile_requests_test fuzz_spec fuzz_scheduler fuzz_worker_gateway
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
build-fuzz/tests/common/common_tests --gtest_brief=1
build-fuzz/tests/client/client_tests --gtest_brief=1
build-fuzz/tests/fuzz/hostile_requests_test --gtest_brief=1
ctest --test-dir build-fuzz --output-on-failure -L fuzz
