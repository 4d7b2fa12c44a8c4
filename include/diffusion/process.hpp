/// @file
/// @brief The process layer: noise levels, the conversion table, the forward process and the posterior (include-all header of process/).
#pragma once

#include "process/prediction.hpp"
#include "process/parameterization.hpp"
#include "process/forward.hpp"
#include "process/posterior.hpp"
#include "process/convert.hpp"
#include "process/edm.hpp"
