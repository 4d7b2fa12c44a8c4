/// @file
/// @brief The kernel layer: element-wise kernels, reductions and dense row products (include-all
/// header of kernels/).
#pragma once

#include "kernels/elementwise.hpp"
#include "kernels/linear.hpp"
#include "kernels/reductions.hpp"
