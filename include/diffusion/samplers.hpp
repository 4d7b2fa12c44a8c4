/// @file
/// @brief The samplers layer: DDPM/DDIM, the σ-space ODE/SDE samplers (with UniPC, SA-Solver, DEIS, PLMS, iPNDM), Langevin, the likelihood loop (include-all header of samplers/).
#pragma once

#include "samplers/common.hpp"
#include "samplers/sigma_common.hpp"
#include "samplers/ode.hpp"
#include "samplers/unipc.hpp"
#include "samplers/sa_solver.hpp"
#include "samplers/multistep.hpp"
#include "samplers/dpm_solver.hpp"
#include "samplers/sde.hpp"
#include "samplers/cfg_pp.hpp"
#include "samplers/consistency.hpp"
#include "samplers/singlestep.hpp"
#include "samplers/res.hpp"
#include "samplers/ancestral.hpp"
#include "samplers/karras.hpp"
#include "samplers/langevin.hpp"
#include "samplers/likelihood.hpp"
#include "samplers/scheduler.hpp"
