# Per-target build settings for dispatch's own code (never global flags).

# Warnings (as errors when DISPATCH_WERROR) and sanitizers for one target.
function(dispatch_target_defaults target)
  target_compile_features(${target} PUBLIC cxx_std_20)
  set_target_properties(${target} PROPERTIES CXX_EXTENSIONS OFF)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow
      -Wnon-virtual-dtor -Wno-missing-field-initializers)
    if(DISPATCH_WERROR)
      target_compile_options(${target} PRIVATE -Werror)
    endif()
    if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
      target_compile_options(${target} PRIVATE -Wthread-safety)
    endif()
    # GCC 12 at -O3 reports std::string concatenation inside libstdc++ as
    # overlapping memcpy (-Wrestrict, GCC bug 105329, a false positive): keep
    # it a warning there so Release builds (-O3) work with -Werror.
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
      target_compile_options(${target} PRIVATE -Wno-error=restrict)
    endif()
  endif()
  dispatch_sanitize(${target})
endfunction()

# Adds -fsanitize=address,undefined when DISPATCH_SANITIZE is on.
function(dispatch_sanitize target)
  if(DISPATCH_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=address,undefined
      -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
    target_link_options(${target} PRIVATE -fsanitize=address,undefined)
  endif()
endfunction()
