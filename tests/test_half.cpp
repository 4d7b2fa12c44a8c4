// The 16-bit storage types (core/half.hpp, core/half_simd.hpp): every one of the 65536 bit
// patterns of each type widened against an independent decoder, float → 16-bit rounding against an
// independent nearest-value search on a dense set of floats (every value, both midpoints, ±1 float
// ulp around each, the overflow boundary, subnormals, NaN payloads), and the SIMD array
// conversions bit for bit against the scalar ones on the same inputs.
//
// The reference here shares no code with the header: it decodes a pattern as
// (−1)^s · m · 2^(e − bias − p) with std::ldexp in long double, and rounds a float by searching the
// sorted table of decoded values for the nearest one (ties to the pattern with an even last bit),
// with the pattern after the largest finite one standing for 2^(emax+1), as IEEE 754's rounding with
// an unbounded exponent followed by overflow to ∞ prescribes.
#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include <diffusion/core/half.hpp>
#include <diffusion/core/half_simd.hpp>

namespace {

using diffusion::bfloat16;
using diffusion::float16;

// The format of each type: exponent bits, fraction bits.
template <class S>
struct format;
template <>
struct format<float16> {
  static constexpr int exponent_bits = 5, fraction_bits = 10;
};
template <>
struct format<bfloat16> {
  static constexpr int exponent_bits = 8, fraction_bits = 7;
};

// The value of a non-NaN pattern (the infinity pattern as 2^(emax+1) when `inf_as_power` is set).
template <class S>
long double decode(std::uint32_t bits, bool inf_as_power = false) {
  constexpr int eb = format<S>::exponent_bits, fb = format<S>::fraction_bits;
  constexpr int bias = (1 << (eb - 1)) - 1;
  const bool negative = ((bits >> (eb + fb)) & 1u) != 0;
  const int e = static_cast<int>((bits >> fb) & ((1u << eb) - 1u));
  const long double m = static_cast<long double>(bits & ((1u << fb) - 1u));
  long double v;
  if (e == (1 << eb) - 1)
    v = inf_as_power ? std::ldexp(1.0L, bias + 1) : std::numeric_limits<long double>::infinity();
  else if (e == 0)
    v = std::ldexp(m, 1 - bias - fb);  // subnormal: 0.m · 2^(1 − bias)
  else
    v = std::ldexp(std::ldexp(1.0L, fb) + m, e - bias - fb);
  return negative ? -v : v;
}

template <class S>
constexpr std::uint32_t infinity_pattern() {
  return ((1u << format<S>::exponent_bits) - 1u) << format<S>::fraction_bits;
}
template <class S>
constexpr std::uint32_t sign_bit() {
  return 1u << (format<S>::exponent_bits + format<S>::fraction_bits);
}

// The nearest pattern to a non-NaN float, ties to even, overflow to ∞ (see the file comment).
template <class S>
std::uint16_t reference_round(float f) {
  static const std::vector<long double> table = [] {
    std::vector<long double> t;
    for (std::uint32_t b = 0; b <= infinity_pattern<S>(); ++b) t.push_back(decode<S>(b, true));
    return t;
  }();
  const std::uint32_t sign = std::signbit(f) ? sign_bit<S>() : 0u;
  const long double a = std::fabs(static_cast<long double>(f));
  if (a >= table.back()) return static_cast<std::uint16_t>(sign | infinity_pattern<S>());
  const auto it = std::upper_bound(table.begin(), table.end(), a);  // first value > a
  const auto hi = static_cast<std::uint32_t>(it - table.begin()), lo = hi - 1;
  const long double below = a - table[lo], above = table[hi] - a;
  std::uint32_t r;
  if (below < above)
    r = lo;
  else if (above < below)
    r = hi;
  else
    r = (lo & 1u) == 0 ? lo : hi;
  return static_cast<std::uint16_t>(sign | r);
}

std::uint32_t float_bits(float f) { return std::bit_cast<std::uint32_t>(f); }

// The dense set of floats of the rounding tests for S.
template <class S>
std::vector<float> rounding_inputs() {
  std::vector<float> in;
  const auto add = [&](float f) {
    in.push_back(f);
    in.push_back(-f);
  };
  const float inf = std::numeric_limits<float>::infinity();
  for (std::uint32_t b = 0; b < infinity_pattern<S>(); ++b) {
    const auto v = static_cast<float>(decode<S>(b));
    // The midpoint to the next value (2^(emax+1) after the largest): one bit more than S's
    // precision, exact in float unless it lies past the largest float (bfloat16's last one).
    const long double mid = (decode<S>(b) + decode<S>(b + 1, true)) / 2;
    std::vector<float> points{v};
    if (mid <= std::numeric_limits<float>::max()) {
      points.push_back(static_cast<float>(mid));
      REQUIRE(static_cast<long double>(points.back()) == mid);
    }
    for (float g : points) {
      add(g);
      add(std::nextafter(g, inf));
      add(std::nextafter(g, 0.0f));
    }
  }
  // Beyond the largest finite value, the float extremes, the float subnormals.
  for (float g : {std::numeric_limits<float>::max(), inf, std::numeric_limits<float>::denorm_min(),
                  std::numeric_limits<float>::min(), std::nextafter(std::numeric_limits<float>::min(), 0.0f), 65504.0f,
                  65519.0f, 65520.0f, 65536.0f, 1e10f, 0x1p-25f, 0x1p-24f, 0x1.8p-24f, 0x1p-126f})
    add(g);
  // A sweep of bit patterns (a fixed linear congruential sequence: every exponent is visited).
  std::uint32_t state = 12345u;
  for (int i = 0; i < 200000; ++i) {
    state = state * 1664525u + 1013904223u;
    const float f = std::bit_cast<float>(state);
    if (!std::isnan(f)) in.push_back(f);
  }
  return in;
}

// NaN inputs: signalling and quiet, both signs, payloads in every bit position.
std::vector<float> nan_inputs() {
  std::vector<float> in;
  for (std::uint32_t sign : {0u, 0x80000000u})
    for (std::uint32_t quiet : {0u, 0x00400000u})
      for (int bit = 0; bit < 22; ++bit)
        for (std::uint32_t extra : {0u, 1u, 0x3FFFFFu})
          if (const std::uint32_t payload = ((1u << bit) | extra) & 0x3FFFFFu | quiet; payload != 0)
            in.push_back(std::bit_cast<float>(sign | 0x7F800000u | payload));
  return in;
}

}  // namespace

TEMPLATE_TEST_CASE("half: every bit pattern widens exactly", "[half]", float16, bfloat16) {
  using S = TestType;
  std::vector<S> all(65536);
  for (std::uint32_t b = 0; b < 65536; ++b) all[b] = S::from_bits(static_cast<std::uint16_t>(b));
  std::vector<float> wide(all.size());
  diffusion::convert(std::span<const S>(all), std::span<float>(wide));  // the SIMD path
  std::size_t nan_count = 0;
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const S h = S::from_bits(static_cast<std::uint16_t>(b));
    const float f = static_cast<float>(h);
    INFO("pattern " << b);
    REQUIRE(h.bits() == b);
    REQUIRE(float_bits(wide[b]) == float_bits(f));  // SIMD = scalar, bit for bit
    const std::uint32_t magnitude = b & (sign_bit<S>() - 1u);
    if (magnitude > infinity_pattern<S>()) {  // NaN: same sign, payload kept in the upper bits
      ++nan_count;
      REQUIRE(std::isnan(f));
      REQUIRE(std::signbit(f) == ((b & sign_bit<S>()) != 0));
      constexpr int shift = 23 - format<S>::fraction_bits;
      const std::uint32_t payload = (magnitude & ((1u << format<S>::fraction_bits) - 1u)) << shift;
      if constexpr (std::is_same_v<S, float16>)
        REQUIRE((float_bits(f) & 0x7FFFFFu) == (payload | 0x400000u));  // quiet, as F16C
      else
        REQUIRE((float_bits(f) & 0x7FFFFFu) == payload);  // a shift: the pattern as it is
      continue;
    }
    const long double v = decode<S>(b);
    REQUIRE(static_cast<long double>(f) == v);
    REQUIRE(std::signbit(f) == ((b & sign_bit<S>()) != 0));  // −0 too
    // The round trip is the identity on every non-NaN pattern.
    REQUIRE(S(f).bits() == b);
  }
  REQUIRE(nan_count == 2 * (sign_bit<S>() - 1u - infinity_pattern<S>()));
}

TEMPLATE_TEST_CASE("half: float rounds to nearest even, as IEEE 754", "[half]", float16, bfloat16) {
  using S = TestType;
  const std::vector<float> in = rounding_inputs<S>();
  std::vector<S> simd(in.size());
  diffusion::convert(std::span<const float>(in), std::span<S>(simd));
  for (std::size_t i = 0; i < in.size(); ++i) {
    const std::uint16_t expected = reference_round<S>(in[i]);
    const S h(in[i]);
    if (h.bits() != expected || simd[i].bits() != expected) {
      INFO("float " << in[i] << " (bits " << float_bits(in[i]) << ")");
      REQUIRE(h.bits() == expected);
      REQUIRE(simd[i].bits() == expected);
    }
  }
  // Named cases (decimal statements of the boundary facts).
  if constexpr (std::is_same_v<S, float16>) {
    CHECK(float16(65504.0f).bits() == 0x7BFF);
    CHECK(float16(65519.996f).bits() == 0x7BFF);
    CHECK(float16(65520.0f).bits() == 0x7C00);     // the tie goes to the even "2^16": overflow
    CHECK(float16(0x1p-25f).bits() == 0x0000);     // half the smallest subnormal: tie to even 0
    CHECK(float16(0x1.8p-24f).bits() == 0x0002);   // 1.5 · 2^-24: tie to even 2
    CHECK(float16(1.0f + 0x1p-11f).bits() == 0x3C00);  // tie below 1 + 2^-10: even 1
  } else {
    CHECK(bfloat16(1.0f + 0x1p-8f).bits() == 0x3F80);   // tie: even 1
    CHECK(bfloat16(1.0f + 0x3p-8f).bits() == 0x3F82);   // tie: even 1 + 2^-6
    CHECK(bfloat16(std::numeric_limits<float>::max()).bits() == 0x7F80);  // overflow to ∞
    CHECK(bfloat16(std::numeric_limits<float>::denorm_min()).bits() == 0x0000);
    CHECK(bfloat16(0x1p-133f).bits() == 0x0001);  // the smallest bfloat16 subnormal (exact: no flush)
  }
}

TEMPLATE_TEST_CASE("half: NaN stays NaN, quiet, with its sign and upper payload", "[half]", float16, bfloat16) {
  using S = TestType;
  const std::vector<float> in = nan_inputs();
  std::vector<S> simd(in.size());
  diffusion::convert(std::span<const float>(in), std::span<S>(simd));
  constexpr int shift = 23 - format<S>::fraction_bits;
  constexpr std::uint32_t quiet_bit = 1u << (format<S>::fraction_bits - 1);
  for (std::size_t i = 0; i < in.size(); ++i) {
    const std::uint32_t u = float_bits(in[i]);
    const auto expected = static_cast<std::uint16_t>((u & 0x80000000u ? sign_bit<S>() : 0u) | infinity_pattern<S>() |
                                                     quiet_bit | ((u & 0x7FFFFFu) >> shift));
    INFO("float bits " << u);
    REQUIRE(S(in[i]).bits() == expected);
    REQUIRE(simd[i].bits() == expected);
  }
}

TEST_CASE("half: conversions are constexpr", "[half]") {
  static_assert(float16(1.0f).bits() == 0x3C00);
  static_assert(static_cast<float>(float16::from_bits(0x0001)) == 0x1p-24f);
  static_assert(bfloat16(-2.0f).bits() == 0xC000);
  static_assert(static_cast<float>(bfloat16::from_bits(0x3F80)) == 1.0f);
  REQUIRE(diffusion::to_compute(float16(0.5f)) == 0.5f);
  REQUIRE(diffusion::to_storage<bfloat16>(3.0f).bits() == 0x4040);
}

TEST_CASE("half: convert checks its sizes", "[half]") {
  std::vector<float> f(3);
  std::vector<float16> h(2);
  REQUIRE_THROWS_WITH(diffusion::convert(std::span<const float>(f), std::span<float16>(h)),
                      Catch::Contains("diffusion::convert") && Catch::Contains("in.size() = 3"));
}
