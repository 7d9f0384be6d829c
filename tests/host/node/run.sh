#!/usr/bin/env bash
# Runs the JavaScript interop tests: installs the pinned npm packages
# (package-lock.json) on first use, then drives the real dispatch-host with
# node `ws` and `socket.io-client`. Needs DISPATCH_HOST_BIN.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -d node_modules/socket.io-client ] || [ ! -d node_modules/ws ]; then
  npm ci --no-audit --no-fund --loglevel=error >&2
fi
exec node interop.mjs
