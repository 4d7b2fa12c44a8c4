// The version is written once (core/config.hpp); CMake reads it from there. This test checks
// that the string, the macros and the version CMake configured agree.
#include <catch2/catch.hpp>

#include <diffusion/ddpm.hpp>

#include <string>

#ifndef DIFFUSION_CMAKE_VERSION
#error "DIFFUSION_CMAKE_VERSION must be the PROJECT_VERSION CMake read"
#endif

TEST_CASE("one version: the macros, the string and CMake's PROJECT_VERSION agree", "[config]") {
  const std::string macros = std::to_string(DIFFUSION_VERSION_MAJOR) + "." + std::to_string(DIFFUSION_VERSION_MINOR) +
                             "." + std::to_string(DIFFUSION_VERSION_PATCH);
  CHECK(std::string(diffusion::version) == macros);
  CHECK(std::string(diffusion::version) == DIFFUSION_CMAKE_VERSION);
}
