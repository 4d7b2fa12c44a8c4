/// @file
/// @brief The core layer: version and errors, tensor views, execution policies, the SIMD choice (include-all header of core/).
#pragma once

#include "core/config.hpp"
#include "core/errors.hpp"
#include "core/execution.hpp"
#include "core/simd.hpp"
#include "core/tensor.hpp"
