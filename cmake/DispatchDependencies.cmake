# Finds the libraries dispatch links, as imported targets. Used by the build
# and installed next to dispatchConfig.cmake so a consumer of the static
# library gets the same targets (see doc/dependencies.md for why each exists).
include(CMakeFindDependencyMacro)

find_package(SQLiteCpp REQUIRED)
find_package(fmt REQUIRED)

# Libraries Debian ships without a CMake package: wrap them as imported targets.
function(_dispatch_import name header lib)
  if(TARGET dispatch::dep_${name})
    return()
  endif()
  find_path(DISPATCH_${name}_INCLUDE_DIR ${header})
  find_library(DISPATCH_${name}_LIBRARY NAMES ${lib})
  if(NOT DISPATCH_${name}_INCLUDE_DIR OR NOT DISPATCH_${name}_LIBRARY)
    message(FATAL_ERROR "dispatch: ${name} not found (${header}, lib${lib}); run scripts/deps.sh")
  endif()
  add_library(dispatch::dep_${name} UNKNOWN IMPORTED)
  set_target_properties(dispatch::dep_${name} PROPERTIES
    IMPORTED_LOCATION "${DISPATCH_${name}_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${DISPATCH_${name}_INCLUDE_DIR}")
endfunction()

_dispatch_import(uv uv.h uv)
_dispatch_import(zstd zstd.h zstd)
_dispatch_import(lz4 lz4.h lz4)
_dispatch_import(vterm vterm.h vterm)
_dispatch_import(util pty.h util)

find_package(Threads REQUIRED)
