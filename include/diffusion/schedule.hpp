/// @file
/// @brief The schedule layer: β families, the noise schedule, σ lists, timestep selection (include-all header of schedule/).
#pragma once

#include "schedule/betas.hpp"
#include "schedule/noise_schedule.hpp"
#include "schedule/sigmas.hpp"
#include "schedule/timesteps.hpp"
#include "schedule/flow.hpp"
