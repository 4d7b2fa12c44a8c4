/// @file
/// @brief The whole public API of the library: include this one header.
///
/// @code
/// #include <diffusion/ddpm.hpp>
/// @endcode
///
/// It includes the include-all header of every layer, lowest first (docs/layers.md):
/// core, noise, kernels, schedule, process, losses, models, samplers.
#pragma once

#include "core.hpp"
#include "noise.hpp"
#include "kernels.hpp"
#include "schedule.hpp"
#include "process.hpp"
#include "losses.hpp"
#include "models.hpp"
#include "samplers.hpp"
