/// @file
/// @brief The library's one SIMD architecture choice, its multiply–add rule and its one
/// force-inline macro: everything that decides how the kernels and the noise generator round.
///
/// **Architecture.** @ref diffusion::simd::arch is AVX2 with FMA whenever the build has it, even
/// on AVX-512 (xsimd 8.1 has no fused multiply–add kernel for AVX-512 batches; its generic one is
/// a rounded product and sum), else xsimd's best for the build. Every SIMD loop of the library
/// (element-wise kernels, reductions, the normal transform) uses it, so a build has one answer.
///
/// **Multiply–add rule.** Every product that feeds a sum is written as @ref diffusion::simd::madd "simd::madd":
/// one fused operation where the SIMD target has a fused multiply–add (FMA3, FMA4, NEON), a
/// rounded product and a rounded sum elsewhere — never a software `std::fma`. The scalar and the
/// SIMD form round alike, so a loop's bulk and its scalar tail give the same bits, and compiler
/// contraction (`-ffp-contract`) cannot change a result.
#pragma once

#include <cmath>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "config.hpp"

/// Forces inlining of the kernels' and the generator's per-lane bodies into their loops (their
/// values must stay in registers: a call would pass every batch through memory).
#if defined(__GNUC__) || defined(__clang__)
#define DIFFUSION_INLINE inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define DIFFUSION_INLINE __forceinline
#else
#define DIFFUSION_INLINE inline
#endif

/// @brief The SIMD architecture choice and the multiply–add rule (see simd.hpp).
namespace diffusion::simd {

/// The xsimd architecture of every SIMD loop of the library (`void` where xsimd has none).
#if XSIMD_WITH_FMA3_AVX2
using arch = xsimd::fma3<xsimd::avx2>;
#elif !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
using arch = xsimd::default_arch;
#else
using arch = void;
#endif

/// Whether xsimd's fma is one fused instruction on @ref arch (FMA3, FMA4, NEON). When it is,
/// madd() is fused in the scalar path as well; otherwise both paths round a·b, then the sum.
inline constexpr bool fused_madd =
#if XSIMD_WITH_FMA3_SSE || XSIMD_WITH_FMA3_AVX || XSIMD_WITH_FMA3_AVX2 || XSIMD_WITH_FMA4 || XSIMD_WITH_NEON || \
    XSIMD_WITH_NEON64
    true;
#else
    false;
#endif

/// Whether xsimd offers a batch of T on @ref arch in this build (no double batches on 32-bit NEON).
#if defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
template <class T>
inline constexpr bool has_batch = false;
#else
template <class T>
inline constexpr bool has_batch = std::is_same_v<T, float> || !(XSIMD_WITH_NEON && !XSIMD_WITH_NEON64);
#endif

/// @brief \f$a x + c\f$ for float or double: one rounding where @ref fused_madd, a rounded product and a
/// rounded sum otherwise. Error: \f$\le u|ax + c|\f$ fused, \f$\le u(|ax| + |ax + c|)\f$ otherwise.
/// @param[in] a multiplier; @param[in] x multiplicand; @param[in] c addend.
template <real_scalar T>
constexpr T madd(T a, T x, T c) noexcept {
  if constexpr (fused_madd)
    return std::fma(a, x, c);
  else
    return a * x + c;
}

/// @brief @ref madd lane by lane on xsimd batches, with the same rounding as the scalar form.
/// @param[in] a multiplier; @param[in] x multiplicand; @param[in] c addend.
template <class T, class A>
DIFFUSION_INLINE xsimd::batch<T, A> madd(const xsimd::batch<T, A>& a, const xsimd::batch<T, A>& x,
                                         const xsimd::batch<T, A>& c) noexcept {
  if constexpr (fused_madd)
    return xsimd::fma(a, x, c);
  else
    return a * x + c;
}

}  // namespace diffusion::simd
