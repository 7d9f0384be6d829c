#!/usr/bin/env bash
# Command (2) of the README: install what is missing, build everything, run
# every test. Extra CMake arguments: DISPATCH_CMAKE_ARGS="-DDISPATCH_SANITIZE=ON".
# Build directory: DISPATCH_BUILD_DIR (default build/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
BUILD=${DISPATCH_BUILD_DIR:-build}
# shellcheck disable=SC2086
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo ${DISPATCH_CMAKE_ARGS:-}
cmake --build "$BUILD" -j"$(nproc)"
ctest --test-dir "$BUILD" --output-on-failure -j"$(nproc)" ${DISPATCH_CTEST_ARGS:-}
