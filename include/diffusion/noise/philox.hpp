/// @file
/// @brief Counter-based Gaussian noise: the Philox4x32-10 block function, the
/// @ref diffusion::philox_normal source (Box–Muller over Philox uniforms) and the
/// @ref diffusion::noise_source concept.
///
/// Customization point: any type `S` with
/// @code
/// s.fill(sample, step, offset, std::span<float>(...));   // std::uint64_t sample, step, offset
/// s.fill(sample, step, offset, std::span<double>(...));
/// @endcode
/// is a @ref diffusion::noise_source. It writes the normals `offset, offset+1, ...` of
/// the stream named by (sample, step). Samplers take the noise as an explicit argument
/// of such a type; there is no hidden global generator.
///
/// Dependencies: config.hpp, tensor.hpp, the standard library and xsimd only (the
/// "noise" layer includes no other diffusion header).
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <type_traits>
#include <utility>

#include <xsimd/xsimd.hpp>

#include "../core/config.hpp"
#include "../core/simd.hpp"
#include "../core/tensor.hpp"

// GCC up to 12.2 warns "'__Y' may be used uninitialized" inside its own AVX-512 intrinsics (their
// _mm512_undefined_* operand; GCC bug 105593, fixed in 12.3) wherever one is inlined, which a
// -Werror build of the AVX-512 path turns into an error: silenced for this header's code only.
#if defined(__GNUC__) && !defined(__clang__) && defined(__AVX512F__)
#define DIFFUSION_PHILOX_AVX512_PRAGMA 1
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

/// @defgroup noise Noise
/// @brief Counter-based random numbers: Philox4x32-10 and normals that are a pure
/// function of (seed, sample, step, index).
/// @{

namespace diffusion {

/// @brief A source of standard normal noise addressed by (sample, step, index).
///
/// `s.fill(sample, step, offset, out)` writes the normals with indices
/// `offset, ..., offset + out.size() - 1` of the stream (sample, step) into `out`, for
/// `out` a `std::span<float>` and a `std::span<double>`. A counter-based source such as
/// @ref diffusion::philox_normal makes every value a pure function of its address, so a sampler
/// gives the same result whatever the batching, chunking or thread split.
template <class S>
concept noise_source = requires(S& source, std::uint64_t index, std::span<float> f, std::span<double> d) {
  source.fill(index, index, index, f);
  source.fill(index, index, index, d);
};

/// @brief A source of standard normal noise for tensors of T: `s.fill(sample, step, offset,
/// std::span<T>)` (what a sampler over T needs; @ref diffusion::noise_source "noise_source" asks for both float and double).
template <class S, class T>
concept noise_source_for = requires(S& source, std::uint64_t index, std::span<T> out) {
  source.fill(index, index, index, out);
};

namespace detail {

inline constexpr std::uint32_t philox_m0 = 0xD2511F53u;  // Salmon et al. 2011, Philox4x32 multipliers
inline constexpr std::uint32_t philox_m1 = 0xCD9E8D57u;
inline constexpr std::uint32_t philox_w0 = 0x9E3779B9u;  // Weyl key increments (golden ratio, √3 − 1)
inline constexpr std::uint32_t philox_w1 = 0xBB67AE85u;
inline constexpr int philox_rounds = 10;

/// One Philox4x32 round in place:
/// (c0, c1, c2, c3) ← (hi(M1·c2) ⊕ c1 ⊕ k0, lo(M1·c2), hi(M0·c0) ⊕ c3 ⊕ k1, lo(M0·c0)).
constexpr void philox_round(std::uint32_t& c0, std::uint32_t& c1, std::uint32_t& c2, std::uint32_t& c3,
                            std::uint32_t k0, std::uint32_t k1) noexcept {
  const std::uint64_t p0 = std::uint64_t{philox_m0} * c0;
  const std::uint64_t p1 = std::uint64_t{philox_m1} * c2;
  c0 = static_cast<std::uint32_t>(p1 >> 32) ^ c1 ^ k0;
  c1 = static_cast<std::uint32_t>(p1);
  c2 = static_cast<std::uint32_t>(p0 >> 32) ^ c3 ^ k1;
  c3 = static_cast<std::uint32_t>(p0);
}

}  // namespace detail

/// @brief The Philox4x32-10 block function (Salmon, Moraes, Dror, Shaw 2011, "Parallel
/// random numbers: as easy as 1, 2, 3", SC11, §4.2).
///
/// Ten rounds of
/// \f[ (c_0, c_1, c_2, c_3) \leftarrow \bigl(\mathrm{hi}(M_1 c_2) \oplus c_1 \oplus k_0,\;
///     \mathrm{lo}(M_1 c_2),\; \mathrm{hi}(M_0 c_0) \oplus c_3 \oplus k_1,\; \mathrm{lo}(M_0 c_0)\bigr) \f]
/// with \f$M_0 = \mathtt{D2511F53}_{16}\f$, \f$M_1 = \mathtt{CD9E8D57}_{16}\f$, hi/lo the
/// upper/lower 32 bits of the 64-bit product, and the key bumped by
/// \f$(\mathtt{9E3779B9}_{16}, \mathtt{BB67AE85}_{16})\f$ (mod \f$2^{32}\f$) between rounds.
/// Tested against the Random123 known-answer vectors (tests/test_noise.cpp).
/// @param[in] counter the 128-bit counter, word 0 first.
/// @param[in] key the 64-bit key, word 0 first.
/// @return the four 32-bit output words.
[[nodiscard]] constexpr std::array<std::uint32_t, 4> philox4x32_10(std::array<std::uint32_t, 4> counter,
                                                                   std::array<std::uint32_t, 2> key) noexcept {
  for (int round = 0; round < detail::philox_rounds; ++round) {
    detail::philox_round(counter[0], counter[1], counter[2], counter[3], key[0], key[1]);
    key[0] += detail::philox_w0;
    key[1] += detail::philox_w1;
  }
  return counter;
}

namespace detail {

// ---------------------------------------------------------------------------------------
// The normal transform, written once over a "lane" type V: float, double, or an
// xsimd::batch of either. Both the scalar and the SIMD path execute exactly the same
// IEEE operations (+, −, ×, ÷, √, fused or unfused multiply–add, bit operations), so
// their results are bit-identical. Every product that feeds a sum is written as
// madd(), never as a*b + c, so compiler contraction (-ffp-contract) cannot make the
// two paths differ.

/// N independent batches that act as one value: each operation is applied to all N
/// before the next one, so the N dependency chains interleave instruction by instruction
/// (the transform is latency-bound with one chain). Lane results are those of B.
template <class B, std::size_t N>
struct lane_group {
  using batch_type = B;
  B v[N];

  lane_group() = default;
  explicit(false) lane_group(typename B::value_type x) noexcept {  // broadcast, like B's own constructor
    for (auto& e : v) e = B(x);
  }
  template <class F, class... G>
  DIFFUSION_INLINE static auto map(F f, const G&... g) noexcept {
    return map_each(std::make_index_sequence<N>{}, f, g...);
  }

 private:
  template <std::size_t I, class F, class... G>
  DIFFUSION_INLINE static auto at(F f, const G&... g) noexcept {
    return f(g.v[I]...);
  }
  template <std::size_t... I, class F, class... G>
  DIFFUSION_INLINE static auto map_each(std::index_sequence<I...>, F f, const G&... g) noexcept {
    lane_group<decltype(f(g.v[0]...)), N> r;
    ((r.v[I] = at<I>(f, g...)), ...);
    return r;
  }

 public:
  DIFFUSION_INLINE friend lane_group operator+(const lane_group& a, const lane_group& b) noexcept {
    return map(std::plus<>{}, a, b);
  }
  DIFFUSION_INLINE friend lane_group operator-(const lane_group& a, const lane_group& b) noexcept {
    return map(std::minus<>{}, a, b);
  }
  DIFFUSION_INLINE friend lane_group operator*(const lane_group& a, const lane_group& b) noexcept {
    return map(std::multiplies<>{}, a, b);
  }
  DIFFUSION_INLINE friend lane_group operator/(const lane_group& a, const lane_group& b) noexcept {
    return map(std::divides<>{}, a, b);
  }
  DIFFUSION_INLINE friend lane_group operator&(const lane_group& a, const lane_group& b) noexcept {
    return map(std::bit_and<>{}, a, b);
  }
  DIFFUSION_INLINE friend lane_group operator|(const lane_group& a, const lane_group& b) noexcept {
    return map(std::bit_or<>{}, a, b);
  }
  DIFFUSION_INLINE friend lane_group operator^(const lane_group& a, const lane_group& b) noexcept {
    return map(std::bit_xor<>{}, a, b);
  }
  DIFFUSION_INLINE friend lane_group operator>>(const lane_group& a, int n) noexcept {
    return map([n](const B& x) { return x >> n; }, a);
  }
  DIFFUSION_INLINE friend lane_group operator<<(const lane_group& a, int n) noexcept {
    return map([n](const B& x) { return x << n; }, a);
  }
};

/// Whether the generator's SIMD path uses AVX-512: AVX-512F (its 32- and 64-bit integer and
/// float operations are all the generator needs) and FMA3, which every AVX-512 processor has
/// (a build that enables AVX-512F without FMA, e.g. `-mavx512f` alone, keeps simd::arch).
inline constexpr bool noise_avx512 = XSIMD_WITH_AVX512F && XSIMD_WITH_FMA3_AVX2;

/// The xsimd architecture of the generator's SIMD path: AVX-512 where the build has it, else
/// the library's one choice, simd::arch (see core/simd.hpp; it stays AVX2 on AVX-512 builds
/// for the kernels). The generator may be wider than the kernels because its results do not
/// depend on the width: its Philox part is exact integer work, and its transform executes
/// the same IEEE operations in every lane, fused where the FMA3 path fuses (madd and nmadd
/// below call the AVX-512 FMA instructions, since xsimd 8.1's fma is not fused there). The
/// normals of an AVX-512 build are those of every FMA build, bit for bit (tests/test_noise.cpp
/// checks them against recorded checksums).
#if XSIMD_WITH_AVX512F && XSIMD_WITH_FMA3_AVX2
using noise_arch = xsimd::avx512f;
#else
using noise_arch = simd::arch;
#endif

/// Whether the generator has a SIMD path for T.
template <class T>
inline constexpr bool noise_has_batch = noise_avx512 || simd::has_batch<T>;

/// Whether V is an xsimd batch on an AVX-512 architecture (xsimd 8.1 has no fused
/// multiply–add kernel there: its fma is a rounded product and a rounded sum).
template <class V>
inline constexpr bool is_avx512_batch = false;
#if XSIMD_WITH_AVX512F
template <class T, class A>
inline constexpr bool is_avx512_batch<xsimd::batch<T, A>> = std::is_base_of_v<xsimd::avx512f, A>;
#endif

template <class V>
struct noise_lane;
template <>
struct noise_lane<float> {
  using scalar = float;
  using bits = std::uint32_t;
  static constexpr int kind = 0;  // scalar
};
template <>
struct noise_lane<double> {
  using scalar = double;
  using bits = std::uint64_t;
  static constexpr int kind = 0;
};
template <class T, class A>
struct noise_lane<xsimd::batch<T, A>> {
  using scalar = T;
  using bits = xsimd::batch<typename noise_lane<T>::bits, A>;
  static constexpr int kind = 1;  // one xsimd batch
};
template <class B, std::size_t N>
struct noise_lane<lane_group<B, N>> {
  using scalar = typename noise_lane<B>::scalar;
  using bits = lane_group<typename noise_lane<B>::bits, N>;
  static constexpr int kind = 2;  // a group of batches
};

/// Constants of the transform for one precision. Polynomial coefficients are minimax
/// (Remez, 60 digits, mpmath) fits rounded to T; the levelled errors are quoted.
template <class T>
struct noise_constants;

template <>
struct noise_constants<float> {
  static constexpr int mantissa_bits = 23;
  static constexpr std::uint32_t mantissa_mask = 0x007FFFFFu;
  static constexpr std::uint32_t one_bits = 0x3F800000u;        // 1.0f
  static constexpr std::uint32_t sqrt_half_bits = 0x3F3504F3u;  // nearest float to √½
  static constexpr std::uint32_t two_pow_p_bits = 0x4B000000u;  // 2^23
  static constexpr float exponent_offset = 0x1p23f + 127.0f;    // 2^23 + bias
  static constexpr int uniform_shift = 9;                       // m = top 23 bits of a 32-bit word
  static constexpr float uniform_offset = 1.0f - 0x1p-24f;      // (1 + m·2^-23) − this = (2m+1)·2^-24
  static constexpr std::uint32_t eighth_turn = 0x20000000u;     // 2^29: half a quadrant of u
  static constexpr std::uint32_t angle_mask = 0x003FFFFEu;      // 2·(2^21 − 1): 2j in place
  static constexpr std::uint32_t angle_bits = 0x3F000001u;      // ½ with mantissa field 1
  static constexpr std::uint32_t sign_bit = 0x80000000u;
  static constexpr float ln2_hi = 0x1.62p-1f;      // k·ln2_hi exact for |k| < 2^15
  static constexpr float ln2_lo = 0x1.c85fep-10f;  // ln 2 − ln2_hi
  // sin(2πf)/f ≈ S(f²) = s0 + f²·S'(f²), |f| ≤ 1/8; relative error 3.2e-9. s0 = sin_hi + sin_lo.
  static constexpr float sin_hi = 0x1.921fb6p+2f, sin_lo = -0x1.a32bdp-23f;
  static constexpr std::array<float, 3> sin_poly{-0x1.4abbbap+5f, 0x1.465e92p+6f, -0x1.2d9302p+6f};
  // (cos(2πf) − 1)/f² ≈ C(f²), |f| ≤ 1/8; error in cos 6.4e-11.
  static constexpr std::array<float, 4> cos_poly{-0x1.3bd3ccp+4f, 0x1.03c1dep+6f, -0x1.55c5ep+6f, 0x1.d9d57ep+5f};
  // (2 atanh(s)/s − 2)/s² ≈ P(s²), |s| ≤ (√2−1)/(√2+1); error in ln(1+f) relative 8.1e-10.
  static constexpr std::array<float, 3> log_poly{0x1.55557ap-1f, 0x1.995ebap-2f, 0x1.31e2f2p-2f};
};

template <>
struct noise_constants<double> {
  static constexpr int mantissa_bits = 52;
  static constexpr std::uint64_t mantissa_mask = 0x000FFFFFFFFFFFFFull;
  static constexpr std::uint64_t one_bits = 0x3FF0000000000000ull;
  static constexpr std::uint64_t sqrt_half_bits = 0x3FE6A09E667F3BCDull;
  static constexpr std::uint64_t two_pow_p_bits = 0x4330000000000000ull;  // 2^52
  static constexpr double exponent_offset = 0x1p52 + 1023.0;
  static constexpr int uniform_shift = 12;
  static constexpr double uniform_offset = 1.0 - 0x1p-53;
  static constexpr std::uint64_t eighth_turn = 0x2000000000000000ull;  // 2^61
  static constexpr std::uint64_t angle_mask = 0x0007FFFFFFFFFFFEull;   // 2·(2^50 − 1)
  static constexpr std::uint64_t angle_bits = 0x3FE0000000000001ull;   // ½ with mantissa field 1
  static constexpr std::uint64_t sign_bit = 0x8000000000000000ull;
  static constexpr double ln2_hi = 0x1.62e42p-1;  // 25 significant bits: k·ln2_hi exact for |k| < 2^28
  static constexpr double ln2_lo = 0x1.fdf473de6af28p-22;
  // relative error 3.3e-18
  static constexpr double sin_hi = 0x1.921fb54442d18p+2, sin_lo = 0x1.02644f254497fp-52;
  static constexpr std::array<double, 6> sin_poly{-0x1.4abbce625be41p+5, 0x1.466bc677587p+6,    -0x1.32d2cce2d5361p+6,
                                                  0x1.50782fca38c0ep+5,  -0x1.e30063a031f57p+3, 0x1.e3eed5d16d705p+1};
  // error in cos 3.9e-20
  static constexpr std::array<double, 7> cos_poly{-0x1.3bd3cc9be45dep+4, 0x1.03c1f081b5aaep+6,  -0x1.55d3c7e3c928p+6,
                                                  0x1.e1f5068367b18p+5,  -0x1.a6d1ec7e0b368p+4, 0x1.f9cc40ac768b5p+2,
                                                  -0x1.b263c33cd3134p+0};
  // error in ln(1+f) relative 1.2e-18
  static constexpr std::array<double, 7> log_poly{0x1.5555555555592p-1, 0x1.999999997fdb7p-2, 0x1.24924941f124fp-2,
                                                  0x1.c71c52095d16fp-3, 0x1.74663ee86e841p-3, 0x1.39a1bab73fcacp-3,
                                                  0x1.2f0563862e5fdp-3};
};

template <class V>
DIFFUSION_INLINE typename noise_lane<V>::bits to_bits(const V& x) noexcept {
  if constexpr (noise_lane<V>::kind == 2)
    return V::map([](const auto& b) { return to_bits(b); }, x);
  else if constexpr (noise_lane<V>::kind == 1)
    return xsimd::bitwise_cast<typename noise_lane<V>::bits>(x);
  else
    return std::bit_cast<typename noise_lane<V>::bits>(x);
}

template <class V>
DIFFUSION_INLINE V from_bits(const typename noise_lane<V>::bits& b) noexcept {
  if constexpr (noise_lane<V>::kind == 2)
    return noise_lane<V>::bits::map([](const auto& x) { return from_bits<typename V::batch_type>(x); }, b);
  else if constexpr (noise_lane<V>::kind == 1)
    return xsimd::bitwise_cast<V>(b);
  else
    return std::bit_cast<V>(b);
}

/// a·b + c: one fused operation when the build's batches have a fused FMA, else a
/// rounded product and a rounded sum — the same in the scalar and the SIMD path.
template <class V>
DIFFUSION_INLINE V madd(const V& a, const V& b, const V& c) noexcept {
  if constexpr (noise_lane<V>::kind == 2)
    return V::map([](const auto& x, const auto& y, const auto& z) { return madd(x, y, z); }, a, b, c);
#if XSIMD_WITH_AVX512F
  else if constexpr (simd::fused_madd && is_avx512_batch<V> && std::is_same_v<typename noise_lane<V>::scalar, float>)
    return V(_mm512_fmadd_ps(a, b, c));  // the fused instruction, as xsimd::fma is on FMA3
  else if constexpr (simd::fused_madd && is_avx512_batch<V>)
    return V(_mm512_fmadd_pd(a, b, c));
#endif
  else
    return simd::madd(a, b, c);
}

/// Whether xsimd::fnma is one fused instruction on arch A (xsimd 8.1: FMA3 and FMA4 only;
/// elsewhere it is a rounded product and sum, so nmadd uses fma(−a, b, c) instead).
template <class A>
inline constexpr bool noise_fused_fnma =
    std::is_base_of_v<xsimd::fma3<xsimd::sse4_2>, A> || std::is_base_of_v<xsimd::fma3<xsimd::avx>, A> ||
    std::is_base_of_v<xsimd::fma3<xsimd::avx2>, A> || std::is_same_v<xsimd::fma4, A>;

/// c − a·b, with the same rounding rule as madd.
template <class V>
DIFFUSION_INLINE V nmadd(const V& a, const V& b, const V& c) noexcept {
  if constexpr (noise_lane<V>::kind == 2)
    return V::map([](const auto& x, const auto& y, const auto& z) { return nmadd(x, y, z); }, a, b, c);
  else if constexpr (!simd::fused_madd)
    return c - a * b;
#if XSIMD_WITH_AVX512F
  else if constexpr (is_avx512_batch<V> && std::is_same_v<typename noise_lane<V>::scalar, float>)
    return V(_mm512_fnmadd_ps(a, b, c));  // −(a·b) + c with one rounding = fma(−a, b, c)
  else if constexpr (is_avx512_batch<V>)
    return V(_mm512_fnmadd_pd(a, b, c));
#endif
  else if constexpr (noise_lane<V>::kind == 1) {
    if constexpr (noise_fused_fnma<typename V::arch_type>)
      return xsimd::fnma(a, b, c);
    else
      return xsimd::fma(-a, b, c);  // exact negation: one rounding, like the scalar path
  } else
    return std::fma(-a, b, c);
}

template <class V>
DIFFUSION_INLINE V sqrt_lane(const V& x) noexcept {
  if constexpr (noise_lane<V>::kind == 2)
    return V::map([](const auto& y) { return sqrt_lane(y); }, x);
  else if constexpr (noise_lane<V>::kind == 1)
    return xsimd::sqrt(x);
  else
    return std::sqrt(x);
}

template <class V, class T, std::size_t N, std::size_t... I>
DIFFUSION_INLINE V horner_each(const V& x, const std::array<T, N>& c, std::index_sequence<I...>) noexcept {
  V p(c[N - 1]);
  ((p = madd(p, x, V(c[N - 2 - I]))), ...);  // p = p·x + c[i], i = N−2, ..., 0
  return p;
}

template <class V, class T, std::size_t N>
DIFFUSION_INLINE V horner(const V& x, const std::array<T, N>& c) noexcept {
  return horner_each(x, c, std::make_index_sequence<N - 1>{});
}

/// Natural logarithm of a positive normal number (the transform only needs (0, 1)).
/// x = 2^k·m, m ∈ [√½, √2), f = m − 1 (exact), s = f/(2 + f), z = s²:
/// ln x = k ln 2 + f − s·(f − z·P(z)), since 2 atanh(s) = ln(1 + f) and f − 2s = s·f.
template <class V>
DIFFUSION_INLINE V log_positive(V x) noexcept {
  using T = typename noise_lane<V>::scalar;
  using K = noise_constants<T>;
  using U = typename noise_lane<V>::bits;
  const U t = to_bits(x) + U(K::one_bits - K::sqrt_half_bits);
  // k = biased exponent of t − bias, made exact in floating point without a conversion.
  const V k = from_bits<V>((t >> K::mantissa_bits) | U(K::two_pow_p_bits)) - V(K::exponent_offset);
  const V f = from_bits<V>((t & U(K::mantissa_mask)) + U(K::sqrt_half_bits)) - V(T(1));
  const V s = f / (V(T(2)) + f);
  const V z = s * s;
  const V log1p_f = nmadd(s, nmadd(z, horner(z, K::log_poly), f), f);
  return madd(k, V(K::ln2_hi), madd(k, V(K::ln2_lo), log1p_f));
}

/// Lane by lane, `if_set` where the top bit of the unsigned word `m` is set, else `if_clear`.
/// On AVX and SSE4.1 one blendv instruction, which reads exactly that bit; elsewhere a
/// comparison and xsimd::select.
template <class U, class V>
DIFFUSION_INLINE V select_top_bit(const U& m, const V& if_set, const V& if_clear) noexcept {
  if constexpr (noise_lane<V>::kind == 2) {
    return V::map([](const auto& x, const auto& a, const auto& b) { return select_top_bit(x, a, b); }, m, if_set,
                  if_clear);
  } else if constexpr (noise_lane<V>::kind == 0) {
    return (m >> (8 * sizeof(U) - 1)) != 0 ? if_set : if_clear;
  } else {
    using T = typename noise_lane<V>::scalar;
    [[maybe_unused]] constexpr std::size_t bytes = sizeof(typename V::register_type);
#if defined(__AVX__)
    if constexpr (bytes == 32 && std::is_same_v<T, float>)
      return V(_mm256_blendv_ps(if_clear, if_set, _mm256_castsi256_ps(m)));
    else if constexpr (bytes == 32)
      return V(_mm256_blendv_pd(if_clear, if_set, _mm256_castsi256_pd(m)));
#endif
#if defined(__SSE4_1__)
    if constexpr (bytes == 16 && std::is_same_v<T, float>)
      return V(_mm_blendv_ps(if_clear, if_set, _mm_castsi128_ps(m)));
    else if constexpr (bytes == 16)
      return V(_mm_blendv_pd(if_clear, if_set, _mm_castsi128_pd(m)));
#endif
    using S = xsimd::batch<std::make_signed_t<typename noise_lane<T>::bits>, typename V::arch_type>;
    const S x = xsimd::bitwise_cast<S>(m);
    return from_bits<V>(xsimd::bitwise_cast<U>(
        xsimd::select(x < S(0), xsimd::bitwise_cast<S>(to_bits(if_set)), xsimd::bitwise_cast<S>(to_bits(if_clear)))));
  }
}

/// The uniform of a word w: u(w) = (2m + 1)·2^−(p+1) with m = w >> (W − p) its top p bits
/// (W = 32, p = 23 for float; W = 64, p = 52 for double), computed exactly as
/// (1 + m·2^−p) − (1 − 2^−(p+1)). u ∈ [2^−(p+1), 1 − 2^−(p+1)]: never 0 or 1.
template <class V>
DIFFUSION_INLINE V uniform_from_word(typename noise_lane<V>::bits w) noexcept {
  using T = typename noise_lane<V>::scalar;
  using K = noise_constants<T>;
  using U = typename noise_lane<V>::bits;
  return from_bits<V>((w >> K::uniform_shift) | U(K::one_bits)) - V(K::uniform_offset);
}

/// cos 2πu and sin 2πu for u = u(w) (see uniform_from_word) as `a ⊕ n` and `b ⊕ n`: two
/// values and one sign (n is 0 or the sign bit in every lane), so that Box–Muller can put
/// the sign on r once instead of on both products (r·(±x) = ±(r·x) exactly).
///
/// Exact reduction on the integer word: t = w + 2^(W−3) (mod 2^W) has q = round(4u) mod 4
/// in its top two bits, and with j = (t >> (W − p)) mod 2^(p−2) the remainder is
/// f = u − q/4 = (2j + 1)·2^−(p+1) − 1/8, |f| < 1/8, computed exactly as X − 5/8 with
/// X = ½ + (2j + 1)·2^−(p+1) (the float with exponent of ½ and mantissa field 2j + 1,
/// built by masking and or-ing; X and 5/8 lie within a factor 2, so the difference is
/// exact). Then s = sin 2πf = f·S(f²), c = cos 2πf = 1 + f²·C(f²), and the quadrant:
/// q = 0, 1, 2, 3 give (cos, sin) = (c, s), (−s, c), (−c, −s), (s, −c), that is
/// (a, b) = (c, s) for even q and (−s, c) for odd q (bit 0 of q is the top bit of t << 1),
/// and n = the sign bit for q ≥ 2 (the sign bit of t).
template <class V>
DIFFUSION_INLINE void sincos_2pi_parts(typename noise_lane<V>::bits w, V& a, V& b,
                                       typename noise_lane<V>::bits& n) noexcept {
  using T = typename noise_lane<V>::scalar;
  using K = noise_constants<T>;
  using U = typename noise_lane<V>::bits;
  const U t = w + U(K::eighth_turn);
  const V f = from_bits<V>(((t >> (K::uniform_shift - 1)) & U(K::angle_mask)) | U(K::angle_bits)) - V(T(0.625));
  const V y = f * f;
  // f·(s0 + y·S'(y)) with s0 split in two, so its rounding does not reach the result.
  const V s = madd(f, V(K::sin_hi), f * madd(y, horner(y, K::sin_poly), V(K::sin_lo)));
  const V c = madd(y, horner(y, K::cos_poly), V(T(1)));
  const U odd = t << 1;
  a = select_top_bit(odd, from_bits<V>(to_bits(s) ^ U(K::sign_bit)), c);
  b = select_top_bit(odd, c, s);
  n = t & U(K::sign_bit);
}

/// sin 2πu and cos 2πu for u = u(w) (see sincos_2pi_parts).
template <class V>
DIFFUSION_INLINE void sincos_2pi_word(typename noise_lane<V>::bits w, V& sin_out, V& cos_out) noexcept {
  V a, b;
  typename noise_lane<V>::bits n;
  sincos_2pi_parts<V>(w, a, b, n);
  sin_out = from_bits<V>(to_bits(b) ^ n);
  cos_out = from_bits<V>(to_bits(a) ^ n);
}

/// Box–Muller from two words: z0 = r cos 2πu(w1), z1 = r sin 2πu(w1), r = √(−2 ln u(w0)),
/// the quadrant's sign applied to r (see sincos_2pi_parts).
template <class V>
DIFFUSION_INLINE void box_muller(typename noise_lane<V>::bits radius_word,
                                 typename noise_lane<V>::bits angle_word, V& z0, V& z1) noexcept {
  using T = typename noise_lane<V>::scalar;
  const V r = sqrt_lane(log_positive(uniform_from_word<V>(radius_word)) * V(T(-2)));
  V a, b;
  typename noise_lane<V>::bits n;
  sincos_2pi_parts<V>(angle_word, a, b, n);
  const V signed_r = from_bits<V>(to_bits(r) ^ n);
  z0 = signed_r * a;
  z1 = signed_r * b;
}

template <class T>
inline constexpr std::size_t normals_per_block = std::is_same_v<T, float> ? 4 : 2;

// ---------------------------------------------------------------------------------------
// Philox on xsimd batches of 64-bit lanes: one block per lane, each 32-bit word in the
// low half of a lane (the high half holds garbage that never reaches a low half: the
// multiply reads only low halves, and ⊕ and >> 32 keep it out).

/// (x mod 2^32)·m in every 64-bit lane: the widening 32×32→64-bit multiply of Philox.
/// xsimd 8.1 has no such operation (its 64-bit multiply is a three-multiply emulation,
/// and GCC vectorizes the plain-C++ form into widen/narrow shuffles), so on x86 the one
/// instruction that computes exactly this (PMULUDQ) is applied to the batch's register
/// (batch ↔ register conversion is public xsimd API); elsewhere a per-lane loop. All
/// variants give the same exact integers.
template <class A>
DIFFUSION_INLINE xsimd::batch<std::uint64_t, A> mul_lo32(const xsimd::batch<std::uint64_t, A>& x,
                                                               std::uint32_t m) noexcept {
  using batch = xsimd::batch<std::uint64_t, A>;
  [[maybe_unused]] constexpr std::size_t bytes = sizeof(typename batch::register_type);
#if defined(__AVX512F__)
  if constexpr (bytes == 64) return batch(_mm512_mul_epu32(x, _mm512_set1_epi64(m)));
#endif
#if defined(__AVX2__)
  if constexpr (bytes == 32) return batch(_mm256_mul_epu32(x, _mm256_set1_epi64x(m)));
#endif
#if defined(__SSE2__) || defined(_M_X64)
  if constexpr (bytes == 16) return batch(_mm_mul_epu32(x, _mm_set1_epi64x(m)));
#endif
  alignas(64) std::uint64_t v[batch::size];
  x.store_aligned(v);
  for (auto& e : v) e = (e & 0xFFFFFFFFu) * m;
  return batch::load_aligned(v);
}

/// One general Philox round on a batch of blocks (the same round as the scalar one).
template <class B>
DIFFUSION_INLINE void philox_round(B& c0, B& c1, B& c2, B& c3, const B& k0, const B& k1) noexcept {
  const B p0 = mul_lo32(c0, philox_m0);
  const B p1 = mul_lo32(c2, philox_m1);
  c0 = (p1 >> 32) ^ c1 ^ k0;
  c1 = p1;
  c2 = (p0 >> 32) ^ c3 ^ k1;
  c3 = p0;
}

/// Batches of blocks that philox_normal::fill processes together (their instructions
/// interleaved), for instruction-level parallelism: 4 for every type and width. The
/// transform is a long dependency chain (Philox: 10 × (multiply, shift, xor); then ln with a
/// division, √, the polynomials), so fewer groups leave the core waiting on latencies, and
/// more spill registers. Measured with GCC 12 on AMD Zen 5 (benchmarks/bench_noise.cpp, float
/// and double): 4 groups beat 2 by 1.2–1.3× on AVX2 (despite the spills of 16 ymm registers)
/// and on AVX-512; 8 gain nothing.
template <class T>
inline constexpr std::size_t noise_fill_groups = 4;

/// Batches of blocks per SIMD chunk of philox_row, the unit the fused kernels take their
/// normals in: as fill's 4, except 2 on 512-bit batches. A kernel consumes a chunk with one
/// call of its body per 8 floats (AVX2), unrolled; 128 floats (4 groups of AVX-512) make 16
/// calls, which GCC 12 stopped inlining for the DDPM step's body (2.5× slower, measured),
/// while 64 floats make 8, as on AVX2.
template <class T>
inline constexpr std::size_t noise_chunk_groups =
    xsimd::batch<std::uint64_t, noise_arch>::size > 4 ? 2 : noise_fill_groups<T>;

/// Blocks per SIMD chunk of philox_row.
template <class T>
inline constexpr std::size_t noise_chunk_blocks =
    (xsimd::batch<std::uint64_t, noise_arch>::size) * noise_chunk_groups<T>;

/// Blocks per step of philox_normal::fill's SIMD loop.
template <class T>
inline constexpr std::size_t noise_fill_blocks = (xsimd::batch<std::uint64_t, noise_arch>::size) * noise_fill_groups<T>;

/// Whether the SIMD chunk interleaves its (cos, sin) batches with xsimd::zip_lo/zip_hi.
/// Those interleave within each 128-bit part of the register on x86 (SSE, AVX, AVX-512
/// unpack instructions); on a 128-bit register that is the whole interleave everywhere.
/// Elsewhere (wider non-x86 registers) the chunk interleaves through a stack buffer.
inline constexpr bool noise_zip_store =
#if defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
    false;
#elif defined(__x86_64__) || defined(__i386__) || defined(_M_X64) || defined(_M_IX86)
    true;
#else
    sizeof(typename xsimd::batch<std::uint64_t, noise_arch>::register_type) == 16;
#endif

/// The block, relative to the batch's first, that 64-bit lane i of a batch of S lanes
/// computes. With zip stores, lane i ↦ (i mod 2)·S/2 + ⌊i/2⌋: zip_lo(cos, sin) takes the
/// even 64-bit lanes of every 128-bit part, in order, so it holds the normals of blocks
/// 0, ..., S/2 − 1 and zip_hi those of S/2, ..., S − 1, both in output order. Otherwise i ↦ i.
constexpr std::uint64_t noise_lane_block(std::size_t i, std::size_t lanes) noexcept {
  return noise_zip_store ? (i % 2) * (lanes / 2) + i / 2 : i;
}

/// The SIMD Philox of one fill. Within a chunk only the low counter word varies (the
/// chunk never crosses a multiple of 2^32 blocks; fill checks), so the words that
/// depend only on (block high word, sample, step, key) in rounds 0–2 are computed once
/// in scalar code: round 0 multiplies one vector word instead of two, round 1 one.
template <class B>
struct philox_simd_plan {
  std::array<std::uint32_t, philox_rounds> k0{}, k1{};  // round keys
  std::array<B, philox_rounds> k0_lanes, k1_lanes;
  std::uint64_t m1_sample;  // M1·lo32(sample): round 0's product of the constant word
  B x20, x01;               // round 0's word 2 and round 1's word 0, less the per-lane terms
  B last_k0_high, last_k1_high;  // the last round's key words, each in the high half of every lane
  B last_key;                    // the last round's key, k0 in the low half, k1 in the high half

  /// The words of rounds 1 and 2 that depend on the counter's high word H only; a run of
  /// chunks that does not cross a multiple of 2^32 blocks shares them.
  struct high_words {
    B x21, x22;
  };

  philox_simd_plan(std::array<std::uint32_t, 2> key, std::uint64_t sample, std::uint64_t step_index) noexcept
      : m1_sample(std::uint64_t{philox_m1} * static_cast<std::uint32_t>(sample)) {
    for (std::size_t r = 0; r < static_cast<std::size_t>(philox_rounds); ++r) {
      k0[r] = key[0];
      k1[r] = key[1];
      k0_lanes[r] = B(key[0]);
      k1_lanes[r] = B(key[1]);
      key[0] += philox_w0;
      key[1] += philox_w1;
    }
    last_k0_high = B(std::uint64_t{k0[philox_rounds - 1]} << 32);
    last_k1_high = B(std::uint64_t{k1[philox_rounds - 1]} << 32);
    last_key = B(k0[philox_rounds - 1] | std::uint64_t{k1[philox_rounds - 1]} << 32);
    x20 = B(static_cast<std::uint32_t>(step_index) ^ k1[0]);
    x01 = B(static_cast<std::uint32_t>(m1_sample) ^ k0[1]);
  }

  /// The high_words of counter high word `high`.
  [[nodiscard]] DIFFUSION_INLINE high_words at_high(std::uint32_t high) const noexcept {
    const std::uint32_t a0 = static_cast<std::uint32_t>(m1_sample >> 32) ^ high ^ k0[0];
    const std::uint64_t q0 = std::uint64_t{philox_m0} * a0;
    return {B(static_cast<std::uint32_t>(q0 >> 32) ^ k1[1]), B(static_cast<std::uint32_t>(q0) ^ k1[2])};
  }

  /// The first `Rounds` (≥ 3) rounds of Philox4x32-10 of the counters (L + p(lane), H, sample,
  /// step) for `Groups` batches of blocks, L = low + g·lanes for batch g, p = noise_lane_block,
  /// hw = at_high(H); the words are left in c0..c3 (low halves).
  template <std::size_t Rounds = philox_rounds, std::size_t Groups>
  DIFFUSION_INLINE void run(std::uint32_t low, const high_words& hw, B (&c0)[Groups], B (&c1)[Groups],
                            B (&c2)[Groups], B (&c3)[Groups]) const noexcept {
    static_assert(Rounds >= 3 && Rounds <= philox_rounds);
    run<Rounds>(std::make_index_sequence<Groups>{}, low, hw, c0, c1, c2, c3);
  }

 private:
  template <std::size_t Rounds, std::size_t Groups, std::size_t... G>
  DIFFUSION_INLINE void run(std::index_sequence<G...>, std::uint32_t low, const high_words& hw, B (&c0)[Groups],
                            B (&c1)[Groups], B (&c2)[Groups], B (&c3)[Groups]) const noexcept {
    constexpr std::size_t lanes = B::size;
    alignas(64) static constexpr std::array<std::uint64_t, lanes> lane_blocks = [] {
      std::array<std::uint64_t, lanes> a{};
      for (std::size_t i = 0; i < lanes; ++i) a[i] = noise_lane_block(i, lanes);
      return a;
    }();
    // Round 0: words 0, 1 are shared by all lanes; round 1: word 3 is.
    const B base = B(std::uint64_t{low}) + B::load_aligned(lane_blocks.data());
    ((c3[G] = mul_lo32(base + B(std::uint64_t{G * lanes}), philox_m0)), ...);  // round 0
    ((c2[G] = (c3[G] >> 32) ^ x20), ...);
    ((c1[G] = mul_lo32(c2[G], philox_m1)), ...);  // round 1
    ((c0[G] = (c1[G] >> 32) ^ x01), ...);
    ((c2[G] = c3[G] ^ hw.x21), ...);
    B p0[Groups], p1[Groups];  // round 2: word 3 of round 1 is shared
    ((p0[G] = mul_lo32(c0[G], philox_m0)), ...);
    ((p1[G] = mul_lo32(c2[G], philox_m1)), ...);
    ((c0[G] = (p1[G] >> 32) ^ c1[G] ^ k0_lanes[2]), ...);
    ((c1[G] = p1[G]), ...);
    ((c2[G] = (p0[G] >> 32) ^ hw.x22), ...);
    ((c3[G] = p0[G]), ...);
    for (std::size_t r = 3; r < Rounds; ++r) (philox_round(c0[G], c1[G], c2[G], c3[G], k0_lanes[r], k1_lanes[r]), ...);
  }
};

/// A batch_bool_constant true in the odd lanes of B.
template <class B, std::size_t... I>
constexpr auto odd_lanes(std::index_sequence<I...>) noexcept {
  return xsimd::batch_bool_constant<B, (I % 2 == 1)...>{};
}

/// Stands for the SIMD plan where T has no batch (no SIMD path).
struct no_philox_plan {
  constexpr no_philox_plan(std::array<std::uint32_t, 2>, std::uint64_t, std::uint64_t) noexcept {}
};

/// The SIMD Philox plan of a stream for normals of type T.
template <class T>
using philox_plan =
    std::conditional_t<noise_has_batch<T>, philox_simd_plan<xsimd::batch<std::uint64_t, noise_arch>>, no_philox_plan>;

/// Block indices wrap with k: ⌊k/per_block⌋ < 2^64/per_block.
template <class T>
inline constexpr std::uint64_t philox_block_mask = ~std::uint64_t{0} / normals_per_block<T>;

/// The normals of block b of stream (sample, step), scalar path.
template <class T>
[[nodiscard]] std::array<T, normals_per_block<T>> philox_block(std::array<std::uint32_t, 2> key, std::uint64_t sample,
                                                               std::uint64_t step, std::uint64_t b) noexcept {
  const auto x = philox4x32_10({static_cast<std::uint32_t>(b), static_cast<std::uint32_t>(b >> 32),
                                static_cast<std::uint32_t>(sample), static_cast<std::uint32_t>(step)},
                               key);
  std::array<T, normals_per_block<T>> z{};
  if constexpr (std::is_same_v<T, float>) {
    box_muller<float>(x[0], x[1], z[0], z[1]);
    box_muller<float>(x[2], x[3], z[2], z[3]);
  } else {
    box_muller<double>((std::uint64_t{x[0]} << 32) | x[1], (std::uint64_t{x[2]} << 32) | x[3], z[0], z[1]);
  }
  return z;
}

/// `Groups` batches of blocks from block b on (lanes · Groups blocks), SIMD path, written to
/// out[0, lanes · Groups · normals_per_block).
/// Lane j of a 64-bit batch is block b + p(j), p = noise_lane_block. float: the 32-bit
/// lanes (2j, 2j+1) carry the pairs (x0, x1) and (x2, x3) of that block, i.e. its normals
/// (0, 1) and (2, 3); double: lane j gives its normals 0 and 1. Either way the output is
/// interleave(cos, sin), in block order.
/// @pre the chunk does not cross a multiple of 2^32 blocks.
template <class T, std::size_t Groups>
DIFFUSION_INLINE void philox_simd_chunk(const philox_plan<T>& plan, const typename philox_plan<T>::high_words& hw,
                                        std::uint64_t b, T* out) noexcept {
  static_assert(std::endian::native == std::endian::little, "the lane layout assumes little-endian lanes");
  using u64 = xsimd::batch<std::uint64_t, noise_arch>;
  using real = xsimd::batch<T, noise_arch>;
  constexpr std::size_t groups = Groups, nb = u64::size * groups;
  constexpr std::size_t per_group = real::size;  // (cos, sin) pairs per group
  static_assert(per_group * groups * 2 == nb * normals_per_block<T>);

  u64 c0[groups], c1[groups], c2[groups], c3[groups];
  plan.template run<philox_rounds - 1>(static_cast<std::uint32_t>(b), hw, c0, c1, c2, c3);

  // The last round, fused with the packing of its words into the transform's lanes: its
  // outputs are x0 = hi(p1) ⊕ c1 ⊕ k0, x1 = lo(p1), x2 = hi(p0) ⊕ c3 ⊕ k1, x3 = lo(p0) with
  // p0 = M0·c0 and p1 = M1·c2, and a 64-bit product holds hi in its high half and lo in its
  // low half, which is where the packing wants x2 (float) and all four words (double): no
  // shift down for the round and back up for the packing.
  using group = lane_group<real, groups>;
  using group_bits = typename noise_lane<group>::bits;
  group_bits radius_words, angle_words;
  for (std::size_t g = 0; g < groups; ++g) {
    const u64 p0 = mul_lo32(c0[g], philox_m0), p1 = mul_lo32(c2[g], philox_m1);
    if constexpr (std::is_same_v<T, float>) {
      // 32-bit lane 2j: x0 (radius) and x1 (angle) of block j; lane 2j + 1: x2 and x3.
      using u32 = xsimd::batch<std::uint32_t, noise_arch>;
      constexpr auto odd = odd_lanes<u32>(std::make_index_sequence<u32::size>{});
      const auto w = [](const u64& x) { return xsimd::bitwise_cast<u32>(x); };
      const u32 hi = xsimd::select(odd, w(p0), w(p1 >> 32));             // hi(p1) | hi(p0)
      const u32 xor_in = xsimd::select(odd, w(c3[g] << 32), w(c1[g]));  // c1 | c3
      radius_words.v[g] = hi ^ xor_in ^ w(plan.last_key);
      angle_words.v[g] = xsimd::select(odd, w(p0 << 32), w(p1));  // lo(p1) | lo(p0)
    } else {
      // The 64-bit words x0:x1 and x2:x3 (first word high): x0:x1 = p1 ⊕ (c1 ⊕ k0)·2^32.
      radius_words.v[g] = p1 ^ (c1[g] << 32) ^ plan.last_k0_high;
      angle_words.v[g] = p0 ^ (c3[g] << 32) ^ plan.last_k1_high;
    }
  }

  // The transform on all groups at once (a lane_group), for instruction-level parallelism.
  group z0, z1;
  box_muller<group>(radius_words, angle_words, z0, z1);
  if constexpr (noise_zip_store) {
    // The lanes hold their blocks in the order of noise_lane_block.
    for (std::size_t g = 0; g < groups; ++g) {
      xsimd::zip_lo(z0.v[g], z1.v[g]).store_unaligned(out + 2 * g * per_group);
      xsimd::zip_hi(z0.v[g], z1.v[g]).store_unaligned(out + (2 * g + 1) * per_group);
    }
  } else {
    alignas(64) T zc[per_group * groups], zs[per_group * groups];
    for (std::size_t g = 0; g < groups; ++g) {
      z0.v[g].store_aligned(zc + g * per_group);
      z1.v[g].store_aligned(zs + g * per_group);
    }
    for (std::size_t i = 0; i < per_group * groups; ++i) {
      out[2 * i] = zc[i];
      out[2 * i + 1] = zs[i];
    }
  }
}

/// philox_normal::fill of stream (sample, step) under `key`; make_plan() gives the stream's
/// philox_plan<T> (built on the spot, or a reference to one built before), called at most
/// once and only when a whole SIMD chunk is wanted.
template <class T, class MakePlan>
void philox_fill(std::array<std::uint32_t, 2> key, std::uint64_t sample, std::uint64_t step, std::uint64_t offset,
                 std::span<T> out, MakePlan&& make_plan) noexcept {
  constexpr std::size_t per_block = normals_per_block<T>;
  const std::size_t n = out.size();
  std::size_t done = 0;
  std::uint64_t k = offset;
  const auto scalar_block = [&] {  // the rest of block ⌊k/per_block⌋ that is wanted
    const auto z = philox_block<T>(key, sample, step, k / per_block);
    const auto first = static_cast<std::size_t>(k % per_block);
    const std::size_t take = std::min(per_block - first, n - done);
    std::copy_n(z.begin() + static_cast<std::ptrdiff_t>(first), take, out.begin() + static_cast<std::ptrdiff_t>(done));
    done += take;
    k += take;
  };
  if (n != 0 && k % per_block != 0) scalar_block();
  if constexpr (noise_has_batch<T>) {
    // Whole SIMD steps of `Groups` batches, up to the next multiple of 2^32 blocks; a step
    // that would cross it (or wrap) goes to the scalar path.
    const auto simd_steps = [&]<std::size_t Groups>(const philox_plan<T>& plan) {
      constexpr std::size_t step_blocks = xsimd::batch<std::uint64_t, noise_arch>::size * Groups;
      constexpr std::size_t step_normals = step_blocks * per_block;
      while (n - done >= step_normals) {
        const std::uint64_t b = k / per_block;
        const std::uint64_t before_boundary = (std::uint64_t{1} << 32) - (b & 0xFFFFFFFFu);
        const std::size_t steps =
            static_cast<std::size_t>(std::min<std::uint64_t>((n - done) / step_normals, before_boundary / step_blocks));
        if (steps != 0) {
          const auto hw = plan.at_high(static_cast<std::uint32_t>(b >> 32));
          for (std::size_t i = 0; i < steps; ++i)
            philox_simd_chunk<T, Groups>(plan, hw, b + i * step_blocks, out.data() + done + i * step_normals);
          done += steps * step_normals;
          k += steps * step_normals;
        } else {
          for (std::size_t j = 0; j < step_blocks; ++j) {
            const auto z = philox_block<T>(key, sample, step, (b + j) & philox_block_mask<T>);
            std::copy_n(z.begin(), per_block, out.begin() + static_cast<std::ptrdiff_t>(done + j * per_block));
          }
          done += step_normals;
          k += step_normals;
        }
      }
    };
    if (n - done >= noise_chunk_blocks<T> * per_block) {
      const auto& plan = make_plan();
      simd_steps.template operator()<noise_fill_groups<T>>(plan);
      if constexpr (noise_chunk_groups<T> != noise_fill_groups<T>)  // what is left in smaller steps
        simd_steps.template operator()<noise_chunk_groups<T>>(plan);
    }
  }
  while (done < n) scalar_block();
}

/// One stream (key, sample, step) with its SIMD plan built once, for callers that fill it
/// piece by piece (the fused kernels): fill(offset, out) writes exactly what
/// philox_normal::fill(sample, step, offset, out) writes.
template <class T>
class philox_row {
 public:
  philox_row(std::array<std::uint32_t, 2> key, std::uint64_t sample, std::uint64_t step) noexcept
      : key_(key), sample_(sample), step_(step), plan_(key, sample, step) {}

  /// Normals per SIMD chunk; 0 where T has no SIMD path.
  static constexpr std::size_t chunk = noise_has_batch<T> ? noise_chunk_blocks<T> * normals_per_block<T> : 0;

  DIFFUSION_INLINE void fill(std::uint64_t offset, std::span<T> out) const noexcept {
    philox_fill<T>(key_, sample_, step_, offset, out, [this]() -> const philox_plan<T>& { return plan_; });
  }

  /// How many whole SIMD chunks simd_chunk may write from normal k on within n normals: 0
  /// unless k starts a block; none crosses a multiple of 2^32 blocks (fill's rule).
  [[nodiscard]] std::size_t simd_chunks_at(std::uint64_t k, std::size_t n) const noexcept {
    if constexpr (chunk == 0) {
      return 0;
    } else {
      constexpr std::size_t per_block = normals_per_block<T>;
      if (k % per_block != 0) return 0;
      const std::uint64_t before_boundary = (std::uint64_t{1} << 32) - ((k / per_block) & 0xFFFFFFFFu);
      return static_cast<std::size_t>(std::min<std::uint64_t>(n / chunk, before_boundary / noise_chunk_blocks<T>));
    }
  }

  /// The words a run of SIMD chunks from normal k on shares (see simd_chunks_at).
  [[nodiscard]] DIFFUSION_INLINE auto simd_run(std::uint64_t k) const noexcept
    requires(chunk != 0)
  {
    return plan_.at_high(static_cast<std::uint32_t>((k / normals_per_block<T>) >> 32));
  }

  /// Normals k, ..., k + chunk − 1 into out, the SIMD path of fill; run = simd_run(k0) for
  /// a k0 ≤ k whose simd_chunks_at(k0, ...) covers this chunk.
  DIFFUSION_INLINE void simd_chunk(const typename philox_plan<T>::high_words& run, std::uint64_t k,
                                         T* out) const noexcept
    requires(chunk != 0)
  {
    philox_simd_chunk<T, noise_chunk_groups<T>>(plan_, run, k / normals_per_block<T>, out);
  }

 private:
  std::array<std::uint32_t, 2> key_;
  std::uint64_t sample_, step_;
  philox_plan<T> plan_;
};

}  // namespace detail

/// @brief Counter-based standard normal noise: Philox4x32-10 uniforms, Box–Muller transform.
///
/// **Addressing.** Normal number k (k = 0, 1, 2, ...) of the stream (sample, step) is a
/// pure function of (seed, sample, step, k). The Philox key is
/// \f$(\mathrm{lo}_{32}(\mathit{seed}), \mathrm{hi}_{32}(\mathit{seed}))\f$; block b of the
/// stream is
/// \f[ x = \mathrm{Philox4x32\text{-}10}\bigl((\mathrm{lo}_{32}(b), \mathrm{hi}_{32}(b),
///     \mathrm{lo}_{32}(\mathit{sample}), \mathrm{lo}_{32}(\mathit{step})),\ \mathit{key}\bigr), \f]
/// i.e. only the low 32 bits of `sample` and `step` are used (they are taken mod \f$2^{32}\f$),
/// and k is taken mod \f$2^{64}\f$. Typical use in a sampler: `sample` = index of the
/// sample in the batch, `step` = the 0-based code index of the sampling step.
///
/// **float.** A block gives 4 normals, b = ⌊k/4⌋: words \f$(x_0, x_1)\f$ give normals
/// 4b, 4b+1 and \f$(x_2, x_3)\f$ give 4b+2, 4b+3. A word x gives the uniform
/// \f$u = (2m+1)\,2^{-24}\f$, \f$m = \lfloor x/2^9 \rfloor\f$ (its top 23 bits), which is exact in
/// float and lies in \f$[2^{-24}, 1 - 2^{-24}]\f$: never 0 or 1. (With 24 bits,
/// \f$(2m+1)2^{-25}\f$ would need 25 significant bits and round to 1 at the top.)
///
/// **double.** A block gives 2 normals, b = ⌊k/2⌋: the 64-bit words \f$x_0{:}x_1\f$ and
/// \f$x_2{:}x_3\f$ (first word high) give \f$u = (2m+1)\,2^{-53}\f$ with m their top 52 bits,
/// exact, in \f$[2^{-53}, 1 - 2^{-53}]\f$.
///
/// **Transform** (Box–Muller 1958): with \f$(u_0, u_1)\f$ the pair's uniforms,
/// \f[ r = \sqrt{-2\ln u_0},\quad z_{\text{first}} = r\cos 2\pi u_1,\quad z_{\text{second}} = r\sin 2\pi u_1. \f]
/// Hence |z| ≤ \f$\sqrt{48\ln 2}\f$ ≈ 5.77 in float and \f$\sqrt{106\ln 2}\f$ ≈ 8.57 in double
/// (the float tail beyond 5.77σ, probability 8·10⁻⁹, is never produced).
/// ln, sin and cos are the library's own polynomials (minimax, exact argument reduction),
/// evaluated by one template for scalars and xsimd batches.
///
/// **Accuracy** (tests/test_noise.cpp, against long double; float exhaustively over all
/// 2^23 uniforms, double on 4·10⁶): with a fused multiply–add, ln u ≤ 0.95 ulp (float)
/// and ≤ 1.17 ulp (double), sin 2πu and cos 2πu ≤ 0.99 ulp (float) and ≤ 1.03 ulp
/// (double); without one, sin/cos ≤ 1.7 ulp (float) and ≤ 1.56 ulp (double), ln ≤ 1.29 ulp
/// (double). Each normal is within \f$4u(r + |z|)\f$ of Box–Muller evaluated exactly on
/// the same uniforms (u the unit roundoff). Statistics (fixed seeds, 10⁷ draws, 10⁶ in unoptimized builds; tails on
/// 10⁷): mean, variance, Kolmogorov–Smirnov against Φ at α = 10⁻⁶, correlation between
/// streams and between neighbours, and the frequencies beyond 4σ and 5σ.
///
/// **Use.** One source per sampling run; each (batch row, step) is its own stream:
/// @code
/// const diffusion::philox_normal noise(seed);
/// std::vector<float> eps(rows * n);
/// for (std::size_t b = 0; b < rows; ++b)  // the noise of row b at step i
///   noise.fill(b, i, 0, std::span<float>(eps).subspan(b * n, n));
/// @endcode
///
/// **Reproducibility.** @ref fill and @ref at give bit-identical values for a given
/// (seed, sample, step, k), whatever the offset, the chunking and the SIMD width. The
/// Philox words are the same on every platform; the normals are the same in every build
/// whose SIMD target has a fused multiply–add (x86-64 with FMA3/AVX2/AVX-512, AArch64),
/// and in every build without one (plain x86-64, SSE2–SSE4.2, AVX), but the two
/// families may differ in the last bits. (Not under -ffast-math, which lets the compiler
/// reassociate the polynomials.)
class philox_normal {
 public:
  /// @brief A source with the given 64-bit seed (the Philox key is its two 32-bit halves).
  explicit constexpr philox_normal(std::uint64_t seed) noexcept : seed_(seed) {}

  /// @brief The seed.
  [[nodiscard]] constexpr std::uint64_t seed() const noexcept { return seed_; }

  /// @brief The Philox key: (low 32 bits, high 32 bits) of the seed.
  [[nodiscard]] constexpr std::array<std::uint32_t, 2> key() const noexcept {
    return {static_cast<std::uint32_t>(seed_), static_cast<std::uint32_t>(seed_ >> 32)};
  }

  /// @brief Writes normals `offset, ..., offset + out.size() − 1` of stream (sample, step).
  ///
  /// Cost: one Philox4x32-10 block per 4 (float) or 2 (double) normals; whole steps of 4
  /// SIMD batches of blocks (float: 32 normals per step with SSE2, 64 with AVX2, 128 with
  /// AVX-512) take the SIMD path, the ends the scalar one (bit-identical). Measured: about
  /// 1.0 G float normals/s per core with AVX2 + FMA and 2.4 G/s with AVX-512 (AMD Zen 5; see
  /// docs/performance.md and benchmarks/bench_noise.cpp).
  /// @param[in] sample stream coordinate, taken mod \f$2^{32}\f$ (e.g. the batch row).
  /// @param[in] step stream coordinate, taken mod \f$2^{32}\f$ (e.g. the 0-based sampler step).
  /// @param[in] offset index of the first normal written (indices are taken mod \f$2^{64}\f$).
  /// @param[out] out where the normals go; any size, any alignment.
  template <real_scalar T>
  void fill(std::uint64_t sample, std::uint64_t step, std::uint64_t offset, std::span<T> out) const noexcept {
    detail::philox_fill<T>(key(), sample, step, offset, out,
                           [&] { return detail::philox_plan<T>(key(), sample, step); });
  }

  /// @brief Normal number k of stream (sample, step): the scalar path, equal bit for bit to
  /// the value @ref fill writes there.
  template <real_scalar T>
  [[nodiscard]] T at(std::uint64_t sample, std::uint64_t step, std::uint64_t k) const noexcept {
    constexpr std::size_t per_block = detail::normals_per_block<T>;
    return detail::philox_block<T>(key(), sample, step, k / per_block)[static_cast<std::size_t>(k % per_block)];
  }

 private:
  std::uint64_t seed_;
};

static_assert(noise_source<philox_normal>);
static_assert(noise_source<const philox_normal>);

}  // namespace diffusion

/// @}

#if defined(DIFFUSION_PHILOX_AVX512_PRAGMA)
#pragma GCC diagnostic pop
#undef DIFFUSION_PHILOX_AVX512_PRAGMA
#endif
