/// @file
/// @brief Compatibility header (the pre-0.2 path): includes its new home in the layered folders (docs/layers.md).
#pragma once

#include "core/tensor.hpp"
