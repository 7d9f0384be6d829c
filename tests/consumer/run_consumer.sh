#!/usr/bin/env bash
# Builds and runs a consumer project against dispatch.
#   run_consumer.sh find_package SOURCE_DIR BUILD_DIR WORK_DIR
#   run_consumer.sh add_subdirectory SOURCE_DIR BUILD_DIR WORK_DIR
set -euo pipefail
mode=$1 src=$2 build=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
case "$mode" in
  find_package)
    cmake --install "$build" --prefix "$work/prefix" >/dev/null
    test -f "$work/prefix/lib/cmake/dispatch/dispatchConfig.cmake"
    test -f "$work/prefix/lib/cmake/dispatch/dispatchConfigVersion.cmake"
    test -f "$work/prefix/include/dispatch/dispatch.h"
    cmake -S "$src/tests/consumer/find_package" -B "$work/build" "${gen[@]}" \
      -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
    ;;
  add_subdirectory)
    cmake -S "$src/tests/consumer/add_subdirectory" -B "$work/build" "${gen[@]}" \
      -DDISPATCH_SOURCE_DIR="$src" -DCMAKE_BUILD_TYPE=Release >/dev/null
    ;;
  *) echo "unknown mode $mode" >&2; exit 2 ;;
esac
cmake --build "$work/build" -j2 >/dev/null
"$work/build/consumer"
