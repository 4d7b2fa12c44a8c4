/// @file
/// @brief The kernel layer: element-wise kernels and reductions (include-all header of kernels/).
#pragma once

#include "kernels/elementwise.hpp"
#include "kernels/reductions.hpp"
