# Install rules: headers, the library, an export set with NAMESPACE dispatch::,
# a package config that finds what a static link needs, and a version file.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/dispatch
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS dispatch EXPORT dispatchTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
set(DISPATCH_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/dispatch)
install(EXPORT dispatchTargets NAMESPACE dispatch:: DESTINATION ${DISPATCH_CMAKE_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/dispatchConfig.cmake.in
  ${PROJECT_BINARY_DIR}/dispatchConfig.cmake INSTALL_DESTINATION ${DISPATCH_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/dispatchConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/dispatchConfig.cmake
              ${PROJECT_BINARY_DIR}/dispatchConfigVersion.cmake
              ${PROJECT_SOURCE_DIR}/cmake/DispatchDependencies.cmake
        DESTINATION ${DISPATCH_CMAKE_DIR})
