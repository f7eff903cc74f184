#!/usr/bin/env bash
# clang-format over our C++ sources. With --check, lists files that differ and fails.
set -euo pipefail
cd "$(dirname "$0")/.."
files=$(git ls-files '*.cc' '*.h' 2>/dev/null || find src tests bench -name '*.cc' -o -name '*.h')
if [ "${1:-}" = "--check" ]; then
  bad=0
  for f in $files; do
    if ! clang-format --style=file "$f" | cmp -s - "$f"; then
      echo "needs formatting: $f"
      bad=1
    fi
  done
  if [ $bad = 1 ]; then
    echo "run 'make format' to fix" >&2
    exit 1
  fi
  echo "format: ok"
else
  clang-format --style=file -i $files
fi
