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

// ---------------------------------------------------------------------------------------
// Steps on 16-bit buffers
// ---------------------------------------------------------------------------------------
//
// The claim under test: a step on 16-bit arrays returns S(r), where r is the float step's output on
// the widened inputs. Why it holds: widening is exact, so the 16-bit kernel's lanes hold exactly the
// float kernel's inputs; the coefficients are the same doubles rounded to float; the body evaluates
// the same IEEE float operations in the same order (kernels::map's one body; its SIMD bulk and scalar
// tail agree bit for bit); so both compute the same float r, and the 16-bit kernel rounds it once on
// store (nearest even, the constructor S(r), itself tested above). In-kernel Philox noise is generated
// in float in both. Exact equality is therefore the right tolerance, on the SIMD bulk and the tail
// (sizes 1, 7, 33, 1000), sequentially and split over threads.

#include <diffusion/samplers/ancestral.hpp>
#include <diffusion/samplers/ode.hpp>
#include <diffusion/samplers/sde.hpp>

namespace {

// Values of S in about [−3, 3] (a fixed SplitMix-style sequence), and their float widening.
template <class S>
struct half_array {
  std::vector<S> h;
  std::vector<float> f;
  half_array(std::size_t n, std::uint64_t seed) : h(n), f(n) {
    for (std::size_t i = 0; i < n; ++i) {
      seed += 0x9E3779B97F4A7C15ull;
      std::uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      z ^= z >> 31;
      const float u = static_cast<float>(static_cast<double>(z >> 11) * 0x1p-53 * 6.0 - 3.0);
      h[i] = S(u);
      f[i] = static_cast<float>(h[i]);
    }
  }
  std::span<S> hs() { return h; }
  std::span<float> fs() { return f; }
  std::span<const S> chs() const { return h; }
  std::span<const float> cfs() const { return f; }
  // Sets the float copy to the widened 16-bit values (the next step's inputs).
  void widen() {
    for (std::size_t i = 0; i < h.size(); ++i) f[i] = static_cast<float>(h[i]);
  }
};

// Every 16-bit element equals the float result rounded once.
template <class S>
void require_rounded_once(std::span<const S> h, std::span<const float> f) {
  REQUIRE(h.size() == f.size());
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < h.size(); ++i)
    if (h[i].bits() != S(f[i]).bits()) {
      if (mismatches++ == 0) INFO("element " << i << " of " << h.size() << ": float " << f[i]);
      CHECK(h[i].bits() == S(f[i]).bits());
    }
  REQUIRE(mismatches == 0);
}

const diffusion::parallel_policy threads{.threads = 3, .min_elements_per_thread = 1};

}  // namespace

TEMPLATE_TEST_CASE("half: Euler and Euler-ancestral steps on 16-bit arrays are the float step rounded once", "[half]",
                   float16, bfloat16) {
  using S = TestType;
  const diffusion::philox_normal noise(777);
  for (std::size_t n : {1u, 7u, 33u, 1000u}) {
    for (bool parallel : {false, true}) {
      INFO("n = " << n << (parallel ? ", 3 threads" : ", sequential"));
      half_array<S> x(n, 1 + n), d(n, 2 + n);
      const diffusion::sigma_step s{2.5, 1.75};
      if (parallel) {
        diffusion::euler_step<S>(s, d.chs(), x.hs(), threads);
        diffusion::euler_step<float>(s, d.cfs(), x.fs(), threads);
      } else {
        diffusion::euler_step<S>(s, d.chs(), x.hs());
        diffusion::euler_step<float>(s, d.cfs(), x.fs());
      }
      require_rounded_once<S>(x.chs(), x.cfs());
      // Euler-ancestral with in-kernel Philox noise (float normals) from the state just written.
      x.widen();
      const auto z = diffusion::step_stream(noise, 3);
      if (parallel) {
        diffusion::euler_ancestral_step<S>(s, d.chs(), x.hs(), z, {}, threads);
        diffusion::euler_ancestral_step<float>(s, d.cfs(), x.fs(), z, {}, threads);
      } else {
        diffusion::euler_ancestral_step<S>(s, d.chs(), x.hs(), z);
        diffusion::euler_ancestral_step<float>(s, d.cfs(), x.fs(), z);
      }
      require_rounded_once<S>(x.chs(), x.cfs());
      // And with a caller's buffer of float normals.
      x.widen();
      const half_array<S> normals(n, 3 + n);
      const std::span<const float> zb = normals.cfs();
      diffusion::euler_ancestral_step<S>(s, d.chs(), x.hs(), zb);
      diffusion::euler_ancestral_step<float>(s, d.cfs(), x.fs(), zb);
      require_rounded_once<S>(x.chs(), x.cfs());
    }
  }
}

TEMPLATE_TEST_CASE("half: DPM-Solver++(2M) on 16-bit arrays and history is the float step rounded once", "[half]",
                   float16, bfloat16) {
  using S = TestType;
  for (std::size_t n : {1u, 7u, 33u, 1000u}) {
    for (bool parallel : {false, true}) {
      INFO("n = " << n << (parallel ? ", 3 threads" : ", sequential"));
      half_array<S> x(n, 10 + n), hist(n, 11 + n);
      diffusion::dpmpp_2m_state<S> state_h{hist.hs()};
      diffusion::dpmpp_2m_state<float> state_f{hist.fs()};
      const double sigmas[] = {3.0, 2.0, 1.2, 0.5};
      for (std::size_t i = 0; i + 1 < 4; ++i) {  // first order, then second order from the stored history
        const half_array<S> d(n, 20 + i + n);
        const diffusion::level_step s = diffusion::as_level_step(diffusion::sigma_step{sigmas[i], sigmas[i + 1]});
        if (parallel) {
          diffusion::dpmpp_2m_step<S>(s, d.chs(), x.hs(), state_h, false, threads);
          diffusion::dpmpp_2m_step<float>(s, d.cfs(), x.fs(), state_f, false, threads);
        } else {
          diffusion::dpmpp_2m_step<S>(s, d.chs(), x.hs(), state_h);
          diffusion::dpmpp_2m_step<float>(s, d.cfs(), x.fs(), state_f);
        }
        require_rounded_once<S>(x.chs(), x.cfs());
        require_rounded_once<S>(hist.chs(), hist.cfs());
        REQUIRE(state_h.previous_h == state_f.previous_h);
        x.widen();  // the next step's float inputs: the 16-bit state widened
        hist.widen();
      }
    }
  }
}

TEMPLATE_TEST_CASE("half: DDIM steps on 16-bit arrays are the float step rounded once", "[half]", float16, bfloat16) {
  using S = TestType;
  const diffusion::noise_schedule sched(diffusion::linear_betas(1000));
  const diffusion::philox_normal noise(4242);
  for (std::size_t n : {1u, 7u, 33u, 1000u}) {
    for (bool parallel : {false, true}) {
      INFO("n = " << n << (parallel ? ", 3 threads" : ", sequential"));
      half_array<S> x(n, 30 + n), eps(n, 31 + n), x0(n, 32 + n);
      diffusion::ddim_step_options opt{.eta = 0.0, .x0 = {.clip = true}, .execution = parallel ? threads : diffusion::parallel_policy{1}};
      // η = 0 with x̂₀ (clipped) written too.
      diffusion::ddim_step<S>(sched, {700, 500}, eps.chs(), x.hs(), diffusion::kernels::no_noise{}, opt, {x0.hs()});
      diffusion::ddim_step<float>(sched, {700, 500}, eps.cfs(), x.fs(), diffusion::kernels::no_noise{}, opt, {x0.fs()});
      require_rounded_once<S>(x.chs(), x.cfs());
      require_rounded_once<S>(x0.chs(), x0.cfs());
      // η = 1 with in-kernel Philox noise (float normals).
      x.widen();
      opt.eta = 1.0;
      diffusion::ddim_step<S>(sched, {500, 300}, eps.chs(), x.hs(), diffusion::step_stream(noise, 1), opt);
      diffusion::ddim_step<float>(sched, {500, 300}, eps.cfs(), x.fs(), diffusion::step_stream(noise, 1), opt);
      require_rounded_once<S>(x.chs(), x.cfs());
    }
  }
  // Dynamic thresholding is refused on 16-bit storage, naming the function.
  half_array<S> x(8, 1), eps(8, 2), x0(8, 3), scratch(8, 4);
  const diffusion::ddim_step_options opt{.x0 = {.threshold = true}};
  REQUIRE_THROWS_WITH(diffusion::ddim_step<S>(sched, {700, 500}, eps.chs(), x.hs(), diffusion::kernels::no_noise{}, opt,
                                              {x0.hs(), scratch.hs()}),
                      Catch::Contains("diffusion::ddim_step") && Catch::Contains("16-bit"));
}

TEMPLATE_TEST_CASE("half: a step whose float result overflows the 16-bit type is refused", "[half]", float16, bfloat16) {
  using S = TestType;
  // x = 60000 (float16) or 3e38 (bfloat16), D = 0: the Euler step from σ = 1 to σ' = 1.5 scales x by 1.5,
  // finite in float for float16 (90000) and past both types' largest value.
  const float big = std::is_same_v<S, float16> ? 60000.0f : 3e38f;
  std::vector<S> x(9, S(big)), d(9, S(0.0f));
  const diffusion::level_step s{diffusion::noise_level::exploding(1.0), diffusion::noise_level::exploding(1.5)};
  REQUIRE_THROWS_AS(diffusion::euler_step<S>(s, std::span<const S>(d), std::span<S>(x)), std::domain_error);
  std::vector<float> xf(9, big), df(9, 0.0f);  // the same step in float is finite for float16's case
  if constexpr (std::is_same_v<S, float16>) {
    diffusion::euler_step<float>(s, std::span<const float>(df), std::span<float>(xf));
    REQUIRE(xf[0] == 90000.0f);
  }
}
