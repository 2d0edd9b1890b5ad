#!/usr/bin/env bash
# The test command (README, CI): installs what is missing, builds, and runs
# every test; then rebuilds the input-parsing code under ASan/UBSan and runs
# its tests again. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/check-format.sh

jobs=$(nproc)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build -j"$jobs"
# Tests labelled "long" are for hand runs (see README).
ctest --test-dir build --output-on-failure -j"$jobs" -LE long

cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug \
  -DHALFTIME_SANITIZE=ON -DHALFTIME_WITH_TORCH=OFF >/dev/null
ninja -C build-asan -j"$jobs" halftime common_tests client_tests
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
build-asan/tests/common/common_tests --gtest_brief=1
build-asan/tests/client/client_tests --gtest_brief=1
