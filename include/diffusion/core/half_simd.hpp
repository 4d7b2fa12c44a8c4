/// @file
/// @brief The SIMD conversions between batches of float on the library's one architecture
/// (@ref diffusion::simd::arch) and arrays of @ref diffusion::float16 / @ref diffusion::bfloat16,
/// bit-identical to the scalar conversions of core/half.hpp; and the array conversions
/// @ref diffusion::convert built on them.
///
/// **Instructions.** float16 uses F16C (`vcvtph2ps` / `vcvtps2ph` with round-to-nearest-even)
/// when the build enables it (`__F16C__`: `-mf16c`, `-march=haswell` or later) and the batch is 4
/// or 8 floats; elsewhere each lane is converted by the exact scalar code. bfloat16 is integer
/// arithmetic on the float's bit pattern in xsimd (any architecture): the rounding
/// \f$(u + \mathtt{0x7FFF} + \text{lsb}) \gg 16\f$ and a select for NaN. AVX-512 BF16's
/// `vcvtneps2bf16` is not used: it flushes subnormal inputs and outputs to zero, which the
/// scalar conversion does not. These are the only intrinsics of the library.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "tensor.hpp"
#include "half.hpp"
#include "simd.hpp"

namespace diffusion::simd {

/// @brief Loads B::size values of S from p (unaligned) widened to a batch of float (exact).
/// @param[in] p the first of B::size values.
template <class B, half_scalar S>
DIFFUSION_INLINE B load_widened(const S* p) noexcept {
  static_assert(std::is_same_v<typename B::value_type, float>);
  constexpr std::size_t w = B::size;
#if defined(__F16C__)
  if constexpr (std::is_same_v<S, float16> && w == 8) {
    return B(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  } else if constexpr (std::is_same_v<S, float16> && w == 4) {
    return B(_mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  } else
#endif
  if constexpr (std::is_same_v<S, bfloat16>) {
    using U = xsimd::batch<std::uint32_t, typename B::arch_type>;
    alignas(64) std::uint32_t u[w];
    for (std::size_t i = 0; i < w; ++i) u[i] = static_cast<std::uint32_t>(p[i].bits()) << 16;
    return xsimd::bitwise_cast<B>(U::load_aligned(u));
  } else {
    alignas(64) float f[w];
    for (std::size_t i = 0; i < w; ++i) f[i] = static_cast<float>(p[i]);
    return B::load_aligned(f);
  }
}

/// @brief Rounds a batch of float to S (nearest even, as the scalar constructor) and stores it at p
/// (unaligned); returns the stored values widened back (for the kernels' finiteness flag: a
/// finite float may round to ±∞).
/// @param[out] p where the B::size values go; @param[in] v the values.
template <half_scalar S, class B>
DIFFUSION_INLINE B store_narrowed(S* p, const B& v) noexcept {
  static_assert(std::is_same_v<typename B::value_type, float>);
  constexpr std::size_t w = B::size;
#if defined(__F16C__)
  if constexpr (std::is_same_v<S, float16> && w == 8) {
    const __m128i h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), h);
    return B(_mm256_cvtph_ps(h));
  } else if constexpr (std::is_same_v<S, float16> && w == 4) {
    const __m128i h = _mm_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), h);
    return B(_mm_cvtph_ps(h));
  } else
#endif
  if constexpr (std::is_same_v<S, bfloat16>) {
    using U = xsimd::batch<std::uint32_t, typename B::arch_type>;
    const U u = xsimd::bitwise_cast<U>(v);
    const U rounded = (u + U(0x7FFFu) + ((u >> 16) & U(1u))) >> 16;
    const U quiet = (u >> 16) | U(0x0040u);
    // The select runs on float lanes (a bitwise blend: the patterns are not interpreted).
    const U r = xsimd::bitwise_cast<U>(
        xsimd::select(xsimd::isnan(v), xsimd::bitwise_cast<B>(quiet), xsimd::bitwise_cast<B>(rounded)));
    alignas(64) std::uint32_t out[w];
    r.store_aligned(out);
    for (std::size_t i = 0; i < w; ++i) p[i] = bfloat16::from_bits(static_cast<std::uint16_t>(out[i]));
    return xsimd::bitwise_cast<B>(r << 16);
  } else {
    alignas(64) float f[w];
    v.store_aligned(f);
    for (std::size_t i = 0; i < w; ++i) {
      p[i] = S(f[i]);
      f[i] = static_cast<float>(p[i]);
    }
    return B::load_aligned(f);
  }
}

}  // namespace diffusion::simd

namespace diffusion {

/// @brief Rounds an array of float to float16 or bfloat16 (nearest even, NaN quiet; core/half.hpp),
/// the bulk in SIMD (core/half_simd.hpp), bit-identical to the scalar constructor.
/// @param[in] in the floats; @param[out] out the rounded values (same size).
/// @throws std::invalid_argument when the sizes differ.
template <half_scalar S>
void convert(std::span<const float> in, std::span<S> out) {
  detail::check_same_size("diffusion::convert", "in", in.size(), "out", out.size());
  const std::size_t n = in.size();
  std::size_t k = 0;
  if constexpr (simd::has_batch<float>) {
    using B = xsimd::batch<float, simd::arch>;
    for (const std::size_t bulk = n - n % B::size; k < bulk; k += B::size)
      simd::store_narrowed(out.data() + k, B::load_unaligned(in.data() + k));
  }
  for (; k < n; ++k) out.data()[k] = S(in.data()[k]);
}

/// @brief Widens an array of float16 or bfloat16 to float (exact), the bulk in SIMD.
/// @param[in] in the 16-bit values; @param[out] out the floats (same size).
/// @throws std::invalid_argument when the sizes differ.
template <half_scalar S>
void convert(std::span<const S> in, std::span<float> out) {
  detail::check_same_size("diffusion::convert", "in", in.size(), "out", out.size());
  const std::size_t n = in.size();
  std::size_t k = 0;
  if constexpr (simd::has_batch<float>) {
    using B = xsimd::batch<float, simd::arch>;
    for (const std::size_t bulk = n - n % B::size; k < bulk; k += B::size)
      simd::load_widened<B>(in.data() + k).store_unaligned(out.data() + k);
  }
  for (; k < n; ++k) out.data()[k] = static_cast<float>(in.data()[k]);
}

}  // namespace diffusion
