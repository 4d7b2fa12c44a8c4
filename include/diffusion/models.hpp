/// @file
/// @brief The models layer: the denoiser concept, the σ-space adapter, guidance, analytic and mixture models (include-all header of models/).
#pragma once

#include "models/denoiser.hpp"
#include "models/sigma_space.hpp"
#include "models/guidance.hpp"
#include "models/analytic.hpp"
#include "models/mixture.hpp"
#include "models/edm.hpp"
