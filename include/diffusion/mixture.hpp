/// @file
/// @brief Compatibility header (the pre-0.2 path): includes its new home in the layered folders (docs/layers.md).
#pragma once

#include "models/mixture.hpp"
#include "process.hpp"  // what the pre-0.2 header provided through its includes
