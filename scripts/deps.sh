#!/usr/bin/env bash
# Installs the Debian 12 packages dispatch needs to build, test and run.
# Idempotent: only calls apt-get when something is missing. Needs root (or sudo).
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build pkg-config git
  libsqlite3-dev libsqlitecpp-dev sqlite3
  libfmt-dev libcereal-dev nlohmann-json3-dev
  libuv1-dev libwebsockets-dev libssl-dev
  libvterm-dev libzstd-dev liblz4-dev libpq-dev
  doctest-dev
  python3 python3-dev python3-pytest python3-websockets pybind11-dev
  curl procps asciinema
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# node/npm (for the JavaScript interop tests) may come from another source than Debian;
# only install Debian's when no node is on PATH at all.
if ! command -v node >/dev/null 2>&1; then missing+=(nodejs); fi
if ! command -v npm >/dev/null 2>&1; then missing+=(npm); fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
