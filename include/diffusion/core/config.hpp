/// @file
/// @brief The library version, the hot-loop assertion and the element-type concept: the
/// lightest header of the library (only `<cassert>`, `<concepts>` and `<string_view>`), included
/// by every other.
///
/// The version lives here once: CMake reads `DIFFUSION_VERSION_MAJOR/MINOR/PATCH` from this
/// file (`project(diffusion VERSION ...)`), and @ref diffusion::version is spelled from them
/// (tests/test_config.cpp checks that both agree).
#pragma once

#include <cassert>
#include <concepts>
#include <string_view>

/// @defgroup config Configuration and errors
/// @brief Version, exceptions and argument checks shared by every header.
/// @{

/// Major version of the library.
#define DIFFUSION_VERSION_MAJOR 0
/// Minor version of the library.
#define DIFFUSION_VERSION_MINOR 2
/// Patch version of the library.
#define DIFFUSION_VERSION_PATCH 0

/// @cond DIFFUSION_INTERNAL
#define DIFFUSION_STRINGIFY_IMPL(x) #x
#define DIFFUSION_STRINGIFY(x) DIFFUSION_STRINGIFY_IMPL(x)
/// @endcond

/// Assertion for hot inner loops: active unless `NDEBUG` (or `DIFFUSION_NO_ASSERT`)
/// is defined. API entry points validate with exceptions instead (core/errors.hpp).
#ifndef DIFFUSION_ASSERT
#if defined(DIFFUSION_NO_ASSERT)
#define DIFFUSION_ASSERT(cond) ((void)0)
#else
#define DIFFUSION_ASSERT(cond) assert(cond)
#endif
#endif

/// @}

/// @brief Everything public in the library: schedules, the forward process and posterior,
/// parameterizations, timesteps, tensors and kernels.
namespace diffusion {

/// @ingroup config
/// @brief The library version as a string, "major.minor.patch" (from the three macros).
inline constexpr std::string_view version = DIFFUSION_STRINGIFY(DIFFUSION_VERSION_MAJOR) "." DIFFUSION_STRINGIFY(
    DIFFUSION_VERSION_MINOR) "." DIFFUSION_STRINGIFY(DIFFUSION_VERSION_PATCH);

/// @ingroup config
/// @brief float or double: the element types of every tensor in the library.
template <class T>
concept real_scalar = std::same_as<T, float> || std::same_as<T, double>;

}  // namespace diffusion
