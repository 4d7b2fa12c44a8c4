/// @file
/// @brief The two 16-bit storage types, @ref diffusion::float16 (IEEE 754 binary16) and
/// @ref diffusion::bfloat16 (the upper half of a binary32), with exact conversions from and to
/// float in constexpr C++; the @ref diffusion::storage_scalar concept and the compute type of
/// each storage type. A light header (`<bit>`, `<cstdint>`, `<concepts>`): no xsimd; the SIMD
/// conversions are core/half_simd.hpp.
///
/// **Storage, not arithmetic.** Neither type has arithmetic operators: a value is widened to
/// float (exactly), computed on in float, and rounded once when it is stored. The kernels do
/// this lane by lane (kernels::map over `std::span<float16>`), so a step on half buffers is the
/// float step on the widened inputs, rounded once (docs/conventions.md).
///
/// **Rounding (float → 16 bits).** IEEE 754 round to nearest, ties to even, in every range:
/// - float16: subnormal results (|x| < 2⁻¹⁴) are rounded exactly on the 2⁻²⁴ grid (no flush to
///   zero); |x| ≥ 65520 (the midpoint between 65504 and 2¹⁶) rounds to ±∞, as IEEE RNE overflow
///   does; ±∞ stays ±∞; a NaN stays a NaN, made quiet, with the upper 9 bits of its payload:
///   sign | 0x7E00 | (payload >> 13) — the bits F16C's `vcvtps2ph` writes.
/// - bfloat16: \f$(u + \mathtt{0x7FFF} + \text{lsb}) \gg 16\f$ on the bit pattern u (float
///   subnormals rounded exactly; values past the largest bfloat16 round to ±∞); a NaN stays a NaN,
///   made quiet: (u >> 16) | 0x0040. (AVX-512 BF16's `vcvtneps2bf16` flushes subnormal inputs and
///   outputs to zero, so it is not used.)
///
/// **Widening (16 bits → float)** is exact. A float16 NaN becomes the float NaN with the same
/// sign and payload, made quiet (sign | 0x7FC00000 | payload << 13, as F16C's `vcvtph2ps`); a
/// bfloat16 widens by a 16-bit shift, NaNs included (the pattern is kept as it is).
#pragma once

#include <bit>
#include <concepts>
#include <cstdint>
#include <type_traits>

#include "config.hpp"

namespace diffusion {

namespace detail {

/// binary32 → binary16 bits, round to nearest even (see the file comment for NaN and overflow).
constexpr std::uint16_t float_to_half_bits(float f) noexcept {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  const auto sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u)  // NaN: quiet, the payload's upper bits
    return static_cast<std::uint16_t>(sign | 0x7E00u | ((a >> 13) & 0x3FFu));
  if (a >= 0x477FF000u)  // ≥ 65520 = 65504 + half an ulp (ties to the even 2^16): overflow, or ∞
    return static_cast<std::uint16_t>(sign | 0x7C00u);
  if (a >= 0x38800000u) {  // ≥ 2^-14: a normal result; the carry of the rounding may step the exponent
    const std::uint32_t rebiased = a - (112u << 23);  // exponent bias 127 → 15
    return static_cast<std::uint16_t>(sign | ((rebiased + 0x0FFFu + ((rebiased >> 13) & 1u)) >> 13));
  }
  // A subnormal (or zero) result: the integer m·2^(e−150) / 2^-24 rounded, m the 24-bit significand.
  const std::uint32_t e = a >> 23;
  const std::uint32_t shift = 126u - e;  // ≥ 14 here
  if (shift > 24u) return sign;  // |x| < 2^-25: below half the smallest subnormal (float subnormals too)
  const std::uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
  std::uint32_t q = m >> shift;
  const std::uint32_t rem = m & ((1u << shift) - 1u), half_way = 1u << (shift - 1u);
  if (rem > half_way || (rem == half_way && (q & 1u) != 0u)) ++q;  // may reach 0x400, the smallest normal
  return static_cast<std::uint16_t>(sign | q);
}

/// binary16 bits → binary32, exact (a NaN made quiet, as F16C).
constexpr float half_bits_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
  if (e == 0x1Fu)  // ∞ or NaN
    return std::bit_cast<float>(sign | 0x7F800000u | (m << 13) | (m != 0u ? 0x00400000u : 0u));
  if (e == 0u)  // zero or subnormal: m·2^-24, exact in float
    return std::bit_cast<float>(sign | std::bit_cast<std::uint32_t>(static_cast<float>(m) * 0x1p-24f));
  return std::bit_cast<float>(sign | ((e + 112u) << 23) | (m << 13));
}

/// binary32 → bfloat16 bits, round to nearest even (a NaN made quiet).
constexpr std::uint16_t float_to_bfloat16_bits(float f) noexcept {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((u >> 16) | 0x0040u);
  return static_cast<std::uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);  // cannot wrap: |u| ≤ ∞'s pattern
}

/// bfloat16 bits → binary32, exact (a shift).
constexpr float bfloat16_bits_to_float(std::uint16_t b) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

}  // namespace detail

/// @ingroup config
/// @brief IEEE 754 binary16 as a storage type (1 sign, 5 exponent, 10 fraction bits; largest
/// finite 65504, smallest normal 2⁻¹⁴, smallest subnormal 2⁻²⁴): PyTorch's `torch.float16`.
///
/// Trivially copyable, 2 bytes, no arithmetic: construct it from a float (round to nearest even,
/// see core/half.hpp) and widen it to float (exact). The kernels accept spans of it, computing in
/// float and rounding once on store.
struct float16 {
  std::uint16_t storage;  ///< The bit pattern (public: a standard-layout, trivially copyable 16-bit value).

  /// Uninitialized, like float.
  float16() = default;
  /// @brief Rounds f to the nearest float16, ties to even (overflow to ±∞, NaN quiet).
  /// @param[in] f the value.
  constexpr explicit float16(float f) noexcept : storage(detail::float_to_half_bits(f)) {}
  /// @brief The value as a float (exact).
  constexpr explicit operator float() const noexcept { return detail::half_bits_to_float(storage); }
  /// @brief The float16 with bit pattern b.
  /// @param[in] b the 16 bits.
  static constexpr float16 from_bits(std::uint16_t b) noexcept {
    float16 h{};
    h.storage = b;
    return h;
  }
  /// @brief The bit pattern.
  [[nodiscard]] constexpr std::uint16_t bits() const noexcept { return storage; }
};

/// @ingroup config
/// @brief bfloat16 as a storage type (1 sign, 8 exponent, 7 fraction bits: the upper 16 bits of a
/// float, the same range): PyTorch's `torch.bfloat16`.
///
/// Trivially copyable, 2 bytes, no arithmetic: construct it from a float (round to nearest even,
/// NaN quiet) and widen it to float (exact, a shift).
struct bfloat16 {
  std::uint16_t storage;  ///< The bit pattern.

  /// Uninitialized, like float.
  bfloat16() = default;
  /// @brief Rounds f to the nearest bfloat16, ties to even (overflow to ±∞, NaN quiet).
  /// @param[in] f the value.
  constexpr explicit bfloat16(float f) noexcept : storage(detail::float_to_bfloat16_bits(f)) {}
  /// @brief The value as a float (exact).
  constexpr explicit operator float() const noexcept { return detail::bfloat16_bits_to_float(storage); }
  /// @brief The bfloat16 with bit pattern b.
  /// @param[in] b the 16 bits.
  static constexpr bfloat16 from_bits(std::uint16_t b) noexcept {
    bfloat16 h{};
    h.storage = b;
    return h;
  }
  /// @brief The bit pattern.
  [[nodiscard]] constexpr std::uint16_t bits() const noexcept { return storage; }
};

static_assert(sizeof(float16) == 2 && std::is_trivially_copyable_v<float16> && std::is_standard_layout_v<float16>);
static_assert(sizeof(bfloat16) == 2 && std::is_trivially_copyable_v<bfloat16> && std::is_standard_layout_v<bfloat16>);

/// @ingroup config
/// @brief float16 or bfloat16: the 16-bit storage types.
template <class S>
concept half_scalar = std::same_as<S, float16> || std::same_as<S, bfloat16>;

/// @ingroup config
/// @brief What the kernels and the step functions store: float, double (@ref diffusion::real_scalar),
/// or a 16-bit storage type (@ref diffusion::half_scalar) computed on in float.
template <class S>
concept storage_scalar = real_scalar<S> || half_scalar<S>;

namespace detail {
template <class S>
struct compute_type {
  using type = S;
};
template <half_scalar S>
struct compute_type<S> {
  using type = float;
};
}  // namespace detail

/// @ingroup config
/// @brief The arithmetic type of a storage type: T itself for float and double, float for the 16-bit types.
template <storage_scalar S>
using compute_t = typename detail::compute_type<S>::type;

/// @ingroup config
/// @brief A storage value widened to its compute type (exact): `to_compute(float16(x))` is a float.
/// @param[in] v the stored value.
template <storage_scalar S>
constexpr compute_t<S> to_compute(S v) noexcept {
  if constexpr (half_scalar<S>)
    return static_cast<float>(v);
  else
    return v;
}

/// @ingroup config
/// @brief A compute value rounded once to the storage type (round to nearest even; identity for float and double).
/// @param[in] v the value.
template <storage_scalar S>
constexpr S to_storage(compute_t<S> v) noexcept {
  if constexpr (half_scalar<S>)
    return S(v);
  else
    return v;
}

}  // namespace diffusion
