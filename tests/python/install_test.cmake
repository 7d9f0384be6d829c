# `cmake --install` of the python component into a temp prefix, then
# `import dispatch` from there with PYTHONPATH set to the documented site dir
# (<prefix>/DISPATCH_PYTHON_INSTALL_DIR), from a directory outside the build.
# Also checks that /usr/bin/python3 searches that dir for the default prefix
# /usr/local, so a plain `cmake --install` needs no PYTHONPATH.
# Run by ctest (python_install) with -D BUILD_DIR, PREFIX, SITE_DIR, PYTHON,
# PY_ENV ('|'-separated VAR=value, e.g. the ASan preload), CHECK_SCRIPT.
file(REMOVE_RECURSE ${PREFIX})
file(MAKE_DIRECTORY ${PREFIX})
execute_process(COMMAND ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${PREFIX}
                        --component python
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed (${rc}):\n${out}\n${err}")
endif()
set(site ${PREFIX}/${SITE_DIR})
foreach(f __init__.py __init__.pyi _errors.py py.typed)
  if(NOT EXISTS ${site}/dispatch/${f})
    message(FATAL_ERROR "not installed: ${site}/dispatch/${f}")
  endif()
endforeach()

string(REPLACE "|" ";" env "${PY_ENV}")
list(FILTER env EXCLUDE REGEX "^PYTHONPATH=")
execute_process(COMMAND ${CMAKE_COMMAND} -E env --unset=PYTHONPATH ${env} PYTHONPATH=${site}
                        ${PYTHON} ${CHECK_SCRIPT} ${site} ${PREFIX}/check.db
                WORKING_DIRECTORY ${PREFIX}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "import from ${site} failed (${rc}):\n${out}\n${err}")
endif()
message(STATUS "${out}")

execute_process(COMMAND ${PYTHON} -c "import sys; print('\\n'.join(sys.path))"
                OUTPUT_VARIABLE path RESULT_VARIABLE rc)
string(FIND "${path}" "/usr/local/${SITE_DIR}\n" at)
if(at EQUAL -1)
  message(FATAL_ERROR "${PYTHON} does not search /usr/local/${SITE_DIR}:\n${path}")
endif()
file(REMOVE_RECURSE ${PREFIX})
