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

/// @brief \f$a x + c\f$ with one rounding where the target has a fused multiply-add
/// (`__FMA__`, e.g. `-march=native` on x86-64), two roundings otherwise: a portable build must
/// not call `std::fma`, which is a slow software routine without the instruction.
template <real_scalar T>
constexpr T madd(T a, T x, T c) noexcept {
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA)
  return std::fma(a, x, c);
#else
  return a * x + c;
#endif
}

/// @brief \f$out_k = a\,x_k + b\,y_k\f$, evaluated as `madd(a, x, b*y)` in T.
///
/// Error: with exact a, b, \f$|out - (ax + by)| \le u(|ax| + 2|by|)\f$ without FMA and
/// \f$u(|by| + |ax + by|)\f$ with it; in both cases at most \f$2u(|ax| + |by|)\f$, u the unit roundoff of T.
/// @pre all three spans have the same size (asserted).
template <real_scalar T>
void affine2(T a, std::span<const T> x, T b, std::span<const T> y, std::span<T> out) noexcept {
  DIFFUSION_ASSERT(x.size() == out.size() && y.size() == out.size());
  const std::size_t n = out.size();
  for (std::size_t k = 0; k < n; ++k) out[k] = madd(a, x[k], b * y[k]);
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
