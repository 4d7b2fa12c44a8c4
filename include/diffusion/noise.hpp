/// @file
/// @brief The noise layer: the counter-based generator and the compatibility streams (include-all header of noise/).
#pragma once

#include "noise/philox.hpp"
#include "noise/torch_compat.hpp"
