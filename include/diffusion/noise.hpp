/// @file
/// @brief The noise layer: the counter-based generator, the Brownian tree and the compatibility streams (include-all header of noise/).
#pragma once

#include "noise/brownian_tree.hpp"
#include "noise/philox.hpp"
#include "noise/torch_compat.hpp"
