#!/usr/bin/env bash
# Fails when any C++ file of ours is not clang-format (Google style) clean.
# With --fix, rewrites them instead.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files -co --exclude-standard '*.cc' '*.h' | sort -u)
[ ${#files[@]} -gt 0 ] || exit 0
if [ "${1:-}" = "--fix" ]; then
  clang-format -i "${files[@]}"
  exit 0
fi
if ! clang-format --dry-run --Werror "${files[@]}" 2>/tmp/halftime-format.log; then
  grep -E '^[^ ].*: error' /tmp/halftime-format.log | cut -d: -f1 | sort -u |
    sed 's/^/not clang-formatted: /'
  echo "format check failed: run scripts/check-format.sh --fix" >&2
  exit 1
fi
echo "format check: ${#files[@]} files clean"
