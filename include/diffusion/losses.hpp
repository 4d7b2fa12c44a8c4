/// @file
/// @brief The losses layer: distributions, VLB terms and L_simple with gradients, timestep samplers, the batched training step (include-all header of losses/).
#pragma once

#include "losses/distributions.hpp"
#include "losses/losses.hpp"
#include "losses/timestep_sampler.hpp"
#include "losses/flow_matching.hpp"
#include "losses/training.hpp"
// The whole variational bound calls the model, so it lives in samplers/ (the losses layer does not
// know the model concept); losses.hpp provided it before 0.2 and still does.
#include "samplers/likelihood.hpp"
