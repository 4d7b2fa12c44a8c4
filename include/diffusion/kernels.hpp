/// @file
/// @brief Element-wise kernels: the only loops over tensor elements. They know arrays and
/// coefficients, not diffusion vocabulary; the coefficients come from the formula layers.
///
/// This is the portable reference implementation (a plain loop the compiler may
/// vectorize). Aliasing: `out` may be the same array as any input (element i is read
/// before it is written); partially overlapping arrays are not allowed.
#pragma once

#include <cmath>
#include <cstddef>
#include <span>

#include "config.hpp"
#include "tensor.hpp"

/// @defgroup kernels Element-wise kernels
/// @brief out = a·x + b·y and friends over spans of float or double.
/// @{

namespace diffusion::kernels {

/// @brief \f$out_k = a\,x_k + b\,y_k\f$, evaluated as `fma(a, x, b*y)` in T.
///
/// Error: with exact a, b, \f$|out - (ax + by)| \le u(|by| + |ax + by|)\f$, u the unit roundoff of T.
/// @pre all three spans have the same size (asserted).
template <real_scalar T>
void affine2(T a, std::span<const T> x, T b, std::span<const T> y, std::span<T> out) noexcept {
  DIFFUSION_ASSERT(x.size() == out.size() && y.size() == out.size());
  const std::size_t n = out.size();
  for (std::size_t k = 0; k < n; ++k) out[k] = std::fma(a, x[k], b * y[k]);
}

/// @brief \f$out_k = a\,x_k\f$.
/// @pre same sizes (asserted).
template <real_scalar T>
void scale(T a, std::span<const T> x, std::span<T> out) noexcept {
  DIFFUSION_ASSERT(x.size() == out.size());
  const std::size_t n = out.size();
  for (std::size_t k = 0; k < n; ++k) out[k] = a * x[k];
}

}  // namespace diffusion::kernels

/// @}
