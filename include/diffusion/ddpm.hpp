/// @file
/// @brief The whole public API of the library: include this one header.
///
/// @code
/// #include <diffusion/ddpm.hpp>
/// @endcode
#pragma once

#include "analytic.hpp"
#include "betas.hpp"
#include "config.hpp"
#include "denoiser.hpp"
#include "distributions.hpp"
#include "execution.hpp"
#include "gaussian.hpp"
#include "guidance.hpp"
#include "kernels.hpp"
#include "losses.hpp"
#include "mixture.hpp"
#include "noise.hpp"
#include "reductions.hpp"
#include "sampler_ddpm.hpp"
#include "sampler_karras.hpp"
#include "sampler_langevin.hpp"
#include "sampling.hpp"
#include "schedule.hpp"
#include "sigmas.hpp"
#include "tensor.hpp"
#include "timestep_sampler.hpp"
#include "timesteps.hpp"
#include "torch_compat.hpp"
