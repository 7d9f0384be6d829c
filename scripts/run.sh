#!/usr/bin/env bash
# Command (1) of the README: install what is missing, build, and start
# dispatch-host on the embedded default (SQLite file under ./data, loopback,
# a generated key printed once). Arguments are passed to dispatch-host.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
BUILD=${DISPATCH_BUILD_DIR:-build}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
if cmake --build "$BUILD" --target help | grep -q '^dispatch-host:'; then
  cmake --build "$BUILD" -j"$(nproc)" --target dispatch-host
  exec "$BUILD/host/dispatch-host" "$@"
fi
# Until the host lands: the store quick-start example.
cmake --build "$BUILD" -j"$(nproc)" --target store_quickstart
exec "$BUILD/examples/store_quickstart" "${1:-data/dispatch.db}"
