include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS diffusion EXPORT diffusionTargets)
install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/diffusion"
        DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")

set(DIFFUSION_CMAKE_DIR "${CMAKE_INSTALL_DATADIR}/cmake/diffusion")
install(EXPORT diffusionTargets
        NAMESPACE diffusion::
        DESTINATION "${DIFFUSION_CMAKE_DIR}")
configure_package_config_file(
  "${PROJECT_SOURCE_DIR}/cmake/diffusionConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/diffusionConfig.cmake"
  INSTALL_DESTINATION "${DIFFUSION_CMAKE_DIR}")
# Header-only: the version file must not depend on the architecture.
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/diffusionConfigVersion.cmake"
  COMPATIBILITY SameMinorVersion
  ARCH_INDEPENDENT)
install(FILES
  "${PROJECT_BINARY_DIR}/diffusionConfig.cmake"
  "${PROJECT_BINARY_DIR}/diffusionConfigVersion.cmake"
  DESTINATION "${DIFFUSION_CMAKE_DIR}")
