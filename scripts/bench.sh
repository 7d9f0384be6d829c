#!/usr/bin/env bash
# Builds and runs every benchmark under tests/bench/ (JSON lines on stdout).
# Not part of the test command. Pass --quick for a shorter run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
BUILD=${DISPATCH_BUILD_DIR:-build-bench}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j"$(nproc)"
for b in "$BUILD"/tests/bench/*_bench; do
  [ -x "$b" ] || continue
  echo "# $(basename "$b")" >&2
  "$b" "$@"
done
for p in tests/bench/*_bench.py; do
  [ -f "$p" ] || continue
  echo "# $(basename "$p")" >&2
  PYTHONPATH="$BUILD/bindings/python" /usr/bin/python3 "$p"
done
