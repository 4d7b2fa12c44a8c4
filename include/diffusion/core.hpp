/// @file
/// @brief The core layer: version and errors, tensor views, execution policies, the SIMD choice, the 16-bit storage types (include-all header of core/).
#pragma once

#include "core/config.hpp"
#include "core/errors.hpp"
#include "core/execution.hpp"
#include "core/half.hpp"
#include "core/half_simd.hpp"
#include "core/simd.hpp"
#include "core/tensor.hpp"
